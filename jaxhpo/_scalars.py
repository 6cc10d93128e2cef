"""Concrete 0-d arrays taken as the Python numbers they hold (a leaf module: spaces,
strategies and hypergradients all check their numeric arguments with it)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["scalar_item", "host_ints_as_floats"]


def scalar_item(value: Any) -> Any:
    """A concrete 0-d NumPy or JAX array of a real dtype as its Python number; anything else as it is."""
    if (isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer)
            and value.ndim == 0 and np.dtype(value.dtype).kind in "fiu"):
        return value.item()
    return value


def host_ints_as_floats(values: Any) -> Any:
    """Host integers (NumPy arrays and scalars, Python ints and their lists) as
    float64 NumPy, so that ``jnp.asarray`` gives floats: without x64 it would
    wrap an integer beyond int32 to another (``2**32`` to 0). Anything else
    (floats, JAX arrays, tracers, what holds no numbers) as it is."""
    if isinstance(values, (jax.Array, jax.core.Tracer)):
        return values
    try:
        host = np.asarray(values)
    except (TypeError, ValueError):
        return values
    return host.astype(np.float64) if host.dtype.kind in "iu" else values
