"""Calling user code that jaxhpo traces (objectives, trainers): JAX's errors
for Python control flow or NumPy on traced values, explained in jaxhpo's terms."""

from __future__ import annotations

from typing import Any, Callable

import jax

__all__ = ["call_traced"]

# Raised where user code needs a concrete value from a traced one: float(x),
# int(x), `if x > 0:`, np.asarray(x). (All are TypeErrors.)
_CONCRETE_VALUE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def call_traced(what: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` while jaxhpo traces it; a concrete-value error names ``what``."""
    try:
        return fn(*args)
    except _CONCRETE_VALUE_ERRORS as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        host = (" For an objective that is not JAX code, use jaxhpo.Study, which calls it on the host."
                if what == "objective" else "")
        raise TypeError(
            f"{what} is traced by JAX (compiled and vmapped over the population), so it must compute "
            "with jax.numpy on its arguments: no float() or int() of them, no Python `if` on them "
            f"(use jnp.where or lax.cond), no NumPy on them.{host} JAX said: {type(e).__name__}: {first}"
        ) from e
