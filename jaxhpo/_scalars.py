"""Concrete 0-d arrays taken as the Python numbers they hold (a leaf module: spaces,
strategies and hypergradients all check their numeric arguments with it)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

__all__ = ["scalar_item"]


def scalar_item(value: Any) -> Any:
    """A concrete 0-d NumPy or JAX array of a real dtype as its Python number; anything else as it is."""
    if (isinstance(value, (np.ndarray, jax.Array)) and not isinstance(value, jax.core.Tracer)
            and value.ndim == 0 and np.dtype(value.dtype).kind in "fiu"):
        return value.item()
    return value
