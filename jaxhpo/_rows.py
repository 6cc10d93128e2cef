"""Row selection over a population pytree (a leaf module: the trainer and the
gradient tuning driver both keep or restore whole members with it)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["where_rows"]


def where_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """``new``'s rows where ``mask``, else ``old``'s, leaf by leaf.

    ``mask`` is ``(n,)`` bool; ``new`` and ``old`` are pytrees of the same
    structure whose leaves have a leading axis of ``n`` (any trailing shape)."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(mask.reshape(mask.shape + (1,) * (jnp.ndim(a) - mask.ndim)), a, b), new, old)
