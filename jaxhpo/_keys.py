"""Checking the ``key`` argument of jaxhpo's entry points."""

from __future__ import annotations

import numbers
from typing import Any

import jax
import numpy as np

__all__ = ["check_key"]


def check_key(key: Any, allow_seed: bool = False) -> Any:
    """One ``jax.random`` key: a typed key of shape ``()`` or raw ``uint32`` key data
    (``jax.random.PRNGKey``); with ``allow_seed``, also an integer seed, made ``jax.random.key(seed)``."""
    if allow_seed and isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not -2**63 <= key < 2**63:
            raise ValueError(f"key as an integer seed must fit in 64 bits, got {key!r}")
        return jax.random.key(int(key))
    rule = "a jax.random key or an integer seed" if allow_seed else "a jax.random key"
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if shape is None or not (typed or dtype == np.uint32):
        got = type(key).__name__ if dtype is None else f"{type(key).__name__} of dtype {dtype}"
        raise TypeError(f"key must be {rule}, got {got}")
    if len(shape) != (0 if typed else 1):
        raise ValueError(f"key must be a single jax.random key (vmap over a batch of keys), "
                         f"got key data of shape {tuple(shape)}")
    return key
