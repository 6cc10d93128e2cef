"""Checking the ``key`` argument of jaxhpo's entry points."""

from __future__ import annotations

import functools
import numbers
from typing import Any

import jax
import numpy as np

__all__ = ["check_key", "check_batchable_keys", "seed_key", "key_bits", "is_key_dtype"]


def seed_key(seed: int) -> jax.Array:
    """``jax.random.key(seed)`` for a 64-bit ``seed``, all its bits kept.

    Without ``jax_enable_x64``, ``jax.random.key`` keeps a seed's low 32 bits
    only (``2**32`` and ``0`` give one key). Seeds in ``[0, 2**32)`` give
    ``jax.random.key(seed)``; others the key JAX makes with 64-bit integers
    on (threefry key data ``[high 32 bits, low 32 bits]``), or, under another
    default key implementation, the low bits' key folded with the high ones.
    """
    if 0 <= seed < 2**32:
        return jax.random.key(seed)
    bits = seed % 2**64
    high, low = bits >> 32, bits & 0xFFFFFFFF
    if jax.config.jax_default_prng_impl == "threefry2x32":
        return jax.random.wrap_key_data(np.array([high, low], np.uint32))
    return jax.random.fold_in(jax.random.key(low), high)


@functools.lru_cache(maxsize=None)
def _raw_key_shape(impl: str) -> tuple[int, ...]:
    """The shape of ``jax.random.PRNGKey``'s key data under the default implementation ``impl``."""
    return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape


def is_key_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` is a typed PRNG key's (``None``: no)."""
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def key_bits(keys: Any) -> np.ndarray:
    """Typed keys or raw key data, as the raw bits on the host."""
    return np.asarray(jax.random.key_data(keys) if is_key_dtype(getattr(keys, "dtype", None)) else keys)


def _key_parts(keys: Any, must: str) -> tuple[bool, tuple]:
    """``(typed, shape)`` of typed keys or raw ``uint32`` key data, else
    ``TypeError(f"{must}, got ...")``."""
    dtype, shape = getattr(keys, "dtype", None), getattr(keys, "shape", None)
    if shape is None or not (is_key_dtype(dtype) or dtype == np.uint32):
        got = type(keys).__name__ if dtype is None else f"{type(keys).__name__} of dtype {dtype}"
        raise TypeError(f"{must}, got {got}")
    return is_key_dtype(dtype), tuple(shape)


def check_key(key: Any, allow_seed: bool = False) -> Any:
    """One ``jax.random`` key: a typed key of shape ``()`` or raw ``uint32`` key data
    (``jax.random.PRNGKey``); with ``allow_seed``, also an integer seed, made
    ``seed_key(seed)``: a Python or NumPy integer, or a 0-d integer array. A
    traced seed (under ``vmap`` or ``jit``: ``vmap`` over ``jnp.arange(n)``)
    makes ``jax.random.key(seed)``, the key of the same seed given concretely
    for seeds in ``[0, 2**31)``."""
    dtype = getattr(key, "dtype", None)
    if (allow_seed and getattr(key, "shape", None) == () and dtype is not None and not is_key_dtype(dtype)
            and np.issubdtype(dtype, np.integer)):
        if isinstance(key, jax.core.Tracer):
            return jax.random.key(key)
        key = int(key)
    if allow_seed and isinstance(key, numbers.Integral) and not isinstance(key, bool):
        if not -2**63 <= key < 2**63:
            raise ValueError(f"key as an integer seed must fit in 64 bits, got {key!r}")
        return seed_key(int(key))
    rule = "a jax.random key or an integer seed" if allow_seed else "a jax.random key"
    typed, shape = _key_parts(key, f"key must be {rule}")
    if len(shape) != (0 if typed else 1):
        raise ValueError(f"key must be a single jax.random key (vmap over a batch of keys), "
                         f"got key data of shape {tuple(shape)}")
    if not typed:
        want = _raw_key_shape(jax.config.jax_default_prng_impl)
        if tuple(shape) != want:
            raise ValueError(f"key as raw uint32 key data must have shape {want} (jax.random.PRNGKey of the "
                             f"default implementation), got {tuple(shape)}")
    return key


# Under vmap these implementations draw a whole batch's bits from one of its
# keys (JAX documents them as not invariant to vmap): a member's draws would
# depend on which members share its batch.
_BATCH_DEPENDENT_IMPLS = ("rbg", "unsafe_rbg")


def check_batchable_keys(name: str, keys: Any) -> Any:
    """Refuse keys (one or a batch, typed or raw data of the default
    implementation) whose draws change under ``vmap``: searches that train
    each member as it would train alone need a vmap-invariant implementation."""
    impl = (str(jax.random.key_impl(keys)) if is_key_dtype(getattr(keys, "dtype", None))
            else jax.config.jax_default_prng_impl)
    if impl in _BATCH_DEPENDENT_IMPLS:
        raise ValueError(f"{name} must be a key of a vmap-invariant implementation (threefry2x32), got a {impl!r} "
                         f"key: under vmap {impl!r} draws every member's bits from one key of its batch, so a "
                         "member would not train as it does alone")
    return keys


def check_member_keys(name: str, keys: Any, n: int) -> Any:
    """``n`` keys, one per member: typed keys of shape ``(n,)`` or raw ``uint32``
    key data of shape ``(n,) + key_shape``, of a vmap-invariant implementation."""
    typed, shape = _key_parts(keys, f"{name} must be jax.random keys, one per member (jax.random.split(key, {n}))")
    want = (n,) if typed else (n,) + _raw_key_shape(jax.config.jax_default_prng_impl)
    if shape != want:
        raise ValueError(f"{name} must hold one key per member, shape {want}{'' if typed else ' of raw key data'}, "
                         f"got {shape}")
    return check_batchable_keys(name, keys)

