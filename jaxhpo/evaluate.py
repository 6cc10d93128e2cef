"""Vectorised evaluation of a per-configuration objective over a batch."""

from __future__ import annotations

import numbers
from typing import Any, Callable

import jax
from jax import lax

__all__ = ["evaluate", "check_chunk_size"]


def check_chunk_size(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


def evaluate(objective: Callable[[Any], Any], params: Any, chunk_size: int | None = None) -> Any:
    """Evaluate ``objective`` on every configuration of a batch.

    Args:
      objective: ``f(config) -> value`` for one configuration, where ``config``
        is a pytree (usually the dict from ``Space.decode``) of arrays of
        shape ``()``; jax-traceable.
      params: the same pytree with a leading batch axis ``(n, ...)``.
      chunk_size: ``None`` vmaps the whole batch at once; an integer ``c``
        evaluates ``c`` configurations at a time (a ``lax.map`` over chunks),
        bounding memory at the cost of a sequential loop. Results are the same.
    Returns:
      the objective's outputs with a leading axis ``(n, ...)``.
    """
    chunk_size = check_chunk_size(chunk_size)
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("evaluate: params holds no arrays")
    n = leaves[0].shape[0] if leaves[0].ndim else None
    if n is None or any(leaf.ndim == 0 or leaf.shape[0] != n for leaf in leaves):
        raise ValueError("evaluate: every array in params needs the same leading batch axis")
    if chunk_size is None or chunk_size >= n:
        return jax.vmap(objective)(params)
    return lax.map(objective, params, batch_size=chunk_size)
