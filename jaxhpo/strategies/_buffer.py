"""Which rows a full observation buffer keeps (TPE, MOTPE, GPBO).

A model-based strategy holds its observations in a buffer of ``capacity``
rows. Once a tell would overflow it, the strategy chooses ``capacity`` rows
of the old ones and the new. Keeping only the best would forget every
failed evaluation, and the model would then propose the failing region
again and again; so failures keep their share: of the rows chosen from,
failed ones take the fraction of ``capacity`` that they make up there (the
most recent failures; the count rounded to the nearest, half to even),
successful ones the rest (the best of them).
Failures thus hold about the share they have among recent evaluations.

Keeping only the best successful rows forgets a poor point as soon as it
is told. A model whose proposal there was driven by its uncertainty (GP-BO's
acquisition) then proposes it again and again: so GP-BO keeps, of its
successful rows, the newest half as well as the best half (``newest_half``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._checks import check_int

__all__ = ["kept_rows", "buffer_capacity"]


def buffer_capacity(capacity: Any, popsize: int, default: int) -> int:
    """A model-based strategy's ``capacity`` setting, checked: ``None`` is
    ``default``, or ``popsize`` where that is larger (a large population is
    not refused for a default the user never gave); a given one must hold a
    generation (``>= popsize``)."""
    if capacity is None:
        return max(default, popsize)
    capacity = check_int("capacity", capacity, 1)
    if capacity < popsize:
        raise ValueError(f"capacity must be >= popsize ({popsize}), got {capacity}")
    return capacity


def kept_rows(merit_order: jax.Array, ok: jax.Array, failed: jax.Array, recency: jax.Array,
              capacity: int, newest_half: bool = False) -> jax.Array:
    """``(N,)`` bool: the rows a full buffer keeps, ``min(capacity, ok + failed)`` of them.

    Args:
      merit_order: ``(N,)`` a permutation of the rows, best first (only the
        order of the ``ok`` rows in it matters).
      ok: ``(N,)`` bool, successful rows.
      failed: ``(N,)`` bool, failed rows (neither: padding, never kept).
      recency: ``(N,)`` int, larger for rows told later.
      capacity: the buffer's rows.
      newest_half: of the successful rows kept, half (rounded down) are the
        newest whatever their merit; the best of the others fill the rest.
    """
    n = ok.shape[0]
    num_ok = ok.sum(dtype=jnp.int32)
    num_failed = failed.sum(dtype=jnp.int32)
    share = jnp.round(capacity * (num_failed / jnp.maximum(num_ok + num_failed, 1).astype(jnp.float32)))
    keep_failed = jnp.clip(share.astype(jnp.int32), jnp.maximum(capacity - num_ok, 0),
                           jnp.minimum(num_failed, capacity))
    keep_ok = jnp.minimum(capacity - keep_failed, num_ok)
    # Each row's place among its kind: successful rows in merit order,
    # failed ones newest first.
    rank = jnp.arange(n, dtype=jnp.int32)
    recent = jnp.zeros((n,), bool)
    if newest_half:
        newest_ok = jnp.lexsort((-recency, ~ok))
        place_new = jnp.zeros((n,), jnp.int32).at[newest_ok].set(rank)
        recent = ok & (place_new < keep_ok // 2)
    rest = ok & ~recent
    place_ok = jnp.zeros((n,), jnp.int32).at[merit_order].set(jnp.cumsum(rest[merit_order], dtype=jnp.int32) - 1)
    newest = jnp.lexsort((-recency, ~failed))
    place_failed = jnp.zeros((n,), jnp.int32).at[newest].set(rank)
    return recent | (rest & (place_ok < keep_ok - recent.sum(dtype=jnp.int32))) | (
        failed & (place_failed < keep_failed))
