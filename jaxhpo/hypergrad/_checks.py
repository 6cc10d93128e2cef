"""Argument checks shared by the hypergradient functions (raised at construction)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp

from ..strategies._checks import check_bool, check_choice, scalar_item

# check_bool and check_choice are the strategies' own, named here with the rest.
__all__ = ["check_bool", "check_choice", "check_positive_int", "check_real", "check_real_unless_traced",
           "check_callable", "real_scalar"]


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    if value > 2**31 - 1:
        raise ValueError(f"{name} must be at most 2**31 - 1 (an int32 count), got {value!r}")
    return int(value)


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite real in ``[low, high]`` (open ends where asked), as a Python float."""
    value = scalar_item(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        op = "<" if high_open else "<="
        raise ValueError(f"{name} must be {op} {high}, got {value!r}")
    return value


def check_real_unless_traced(name: str, value: Any, **rule: Any) -> Any:
    """``check_real`` for a concrete number; a traced one (under
    ``optax.inject_hyperparams`` and jit) passes as it is."""
    if isinstance(value, jax.core.Tracer):
        return value
    return check_real(name, value, **rule)


def check_callable(name: str, value: Any) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def real_scalar(name: str, value: Any, what: str = "a scalar") -> jax.Array:
    """A loss to differentiate, checked at trace time: one real floating-point
    number (an integer one has no gradient, a complex one no real-valued one)."""
    if value is None or isinstance(value, (tuple, list, dict, str, bytes)):
        # (a (loss, aux) pair is the likely slip: there is no has_aux)
        raise TypeError(f"{name} must return {what}: one real number, got {type(value).__name__}")
    value = jnp.asarray(value)
    if value.shape != ():
        raise ValueError(f"{name} must return {what}, got shape {value.shape}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating-point value to be differentiated, got {value.dtype}")
    return value
