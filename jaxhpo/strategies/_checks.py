"""Validation of strategy settings and hyperparameters, with messages that name them."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._scalars import scalar_item
from .._traced import is_traced

__all__ = ["scalar_item", "check_real", "check_bool", "check_int", "check_choice", "check_concrete_params",
           "check_param_kind"]


def check_real(name: str, value: Any, low: float = -math.inf, high: float = math.inf,
               low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float inside the interval; ``ValueError``/``TypeError`` naming ``name``.

    A concrete 0-d array of a real dtype (a ``jnp.float32(0.1)``) counts as its number."""
    value = scalar_item(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not math.isfinite(value) or not (lo_ok and hi_ok):
        # an infinite end is never in: the number must be finite
        lb = "(" if low_open or math.isinf(low) else "["
        rb = ")" if high_open or math.isinf(high) else "]"
        raise ValueError(f"{name} must lie in {lb}{low}, {high}{rb}, got {value!r}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_int(name: str, value: Any, low: int, high: int | None = None, *, int32: bool = True) -> int:
    """An integer in ``[low, high]``; without ``high``, at most ``2**31 - 1``
    where it becomes an int32 inside compiled programs (``int32=True``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {rng}, got {value}")
    if high is None and int32 and value > 2**31 - 1:
        raise ValueError(f"{name} must be at most 2**31 - 1 (an int32 count), got {value}")
    return value


def check_choice(name: str, value: Any, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_concrete_params(params: dict | None, checks: dict) -> None:
    """Apply ``checks[name](value)`` to every concrete scalar in ``params``.

    Traced values (``init`` under ``jit`` or ``vmap`` over params) cannot be
    inspected and are left to the caller; batched concrete arrays are checked
    element by element.
    """
    if not params:
        return
    for name, value in params.items():
        if name not in checks or is_traced(value):
            continue
        a = np.asarray(value)
        if not (a.dtype == np.bool_ or jnp.issubdtype(a.dtype, jnp.integer) or jnp.issubdtype(a.dtype, jnp.floating)):
            raise TypeError(f"params[{name!r}] must be a real number, got {value!r}")
        for v in np.ravel(a):
            checks[name](v.item())


def check_param_kind(what: str, value: Any, default: Any) -> None:
    """Refuse a concrete value that its default's dtype would silently cast:
    None or text (NaN or an error naming nothing), a bool for a number, a
    fraction, a non-finite value or one out of range for an integer."""
    def kind_of(dtype: Any) -> str | None:
        for kind, family in (("a bool", jnp.bool_), ("an integer", jnp.integer), ("a real number", jnp.floating)):
            if jnp.issubdtype(dtype, family):
                return kind
        return None

    want = jnp.asarray(default).dtype
    kind = kind_of(want)
    if kind is None:
        return  # a key or another array setting: its own rules
    try:
        a = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        a = np.asarray(None)
    if a.dtype == object and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                 for v in np.ravel(a)):
        a = np.asarray([int(v) for v in np.ravel(a)], dtype=float).reshape(a.shape)  # Python ints past int64
    given = kind_of(a.dtype)
    if given is None or (given == "a bool") != (kind == "a bool"):
        raise TypeError(f"{what} must be {kind} (its default is {want}), got {value!r}")
    if kind == "an integer" and given != "a bool":
        info = jnp.iinfo(want)
        wide = a.astype(np.float64)
        if not np.all(np.isfinite(wide) & (wide == np.round(wide))):
            raise ValueError(f"{what} must be {kind} (its default is {want}), got {value!r}")
        if not np.all((wide >= info.min) & (wide <= info.max)):
            raise ValueError(f"{what} must be an integer in [{info.min}, {info.max}] (its default is {want}), "
                             f"got {value!r}")
