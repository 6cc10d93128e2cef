"""Calling user code that jaxhpo traces (objectives, trainers): JAX's errors
for Python control flow or NumPy on traced values, explained in jaxhpo's terms."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp

__all__ = ["call_traced", "check_returned_like", "is_traced"]

# Raised where user code needs a concrete value from a traced one: float(x),
# int(x), `if x > 0:`, np.asarray(x). (All are TypeErrors.)
_CONCRETE_VALUE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def is_traced(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a tracer: a value being traced, that no
    check on concrete values can read."""
    return any(isinstance(v, jax.core.Tracer) for v in jax.tree_util.tree_leaves(tree))


# jnp.zeros(n), jnp.ones((n, 3)) with a traced n: a plain TypeError.
_TRACED_SHAPE = "Shapes must be 1D sequences of concrete values of integer type"
# jnp.arange(n) with a traced n: a concretization error naming it.
_TRACED_ARANGE = "It arose in the jnp.arange argument"
# x[:n] with a traced n: an IndexError.
_TRACED_SLICE = "Slice entries must be static integers"


def call_traced(what: str, fn: Callable, *args: Any, config: Any = None) -> Any:
    """``fn(*args)`` while jaxhpo traces it; a concrete-value error names
    ``what``. ``config`` is the hyperparameters' dict among ``args``: a
    ``KeyError`` for a name it lacks gets a note listing the names it has.

    ``config`` reaches ``fn`` as the plain dict it is: a dict subclass that
    said so in its own ``KeyError`` was another pytree node type, and
    ``tree_map`` over it and a plain dict, or a ``lax.scan`` carrying it,
    failed on the mismatch. The note cannot tell which dict missed (the
    objective's own tables raise the same error), so it says what it knows,
    and the error's ``args`` stay as they were."""
    if isinstance(config, dict):  # a copy: what fn writes into it stays fn's
        args = tuple(dict(a) if a is config else a for a in args)
    try:
        out = fn(*args)
    except KeyError as e:
        key = e.args[0] if len(e.args) == 1 else None
        if isinstance(config, Mapping) and isinstance(key, str) and key not in config and hasattr(e, "add_note"):
            e.add_note(f"{what}: {key!r} is not a hyperparameter of the space; its hyperparameters are "
                       f"{', '.join(map(repr, config))}")
        raise
    except (*_CONCRETE_VALUE_ERRORS, TypeError, IndexError) as e:
        shape = str(e).startswith(_TRACED_SHAPE) or _TRACED_ARANGE in str(e)
        sliced = isinstance(e, IndexError) and str(e).startswith(_TRACED_SLICE)
        if not (shape or sliced or isinstance(e, _CONCRETE_VALUE_ERRORS)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        host = (" For an objective that is not JAX code, use jaxhpo.Study, which calls it on the host."
                if what == "objective" else "")
        masks = (" An array's shape (an arange's length, a slice's bounds) cannot come from a hyperparameter: "
                 "make the array its largest size and mask what lies past the value, e.g. "
                 "jnp.where(jnp.arange(largest) < n, x, 0) (jaxhpo.training.models' masked MLP realises width "
                 "and depth that way)." if shape or sliced else "")
        raise TypeError(
            f"{what} is traced by JAX (compiled and vmapped over the population), so it must compute "
            "with jax.numpy on its arguments: no float() or int() of them, no Python `if` on them "
            f"(use jnp.where or lax.cond), no NumPy on them.{masks}{host} JAX said: {type(e).__name__}: {first}"
        ) from e
    text = [x for x in jax.tree_util.tree_leaves(out) if isinstance(x, (str, bytes))]
    if text:  # (JAX's own error names neither the function nor the value)
        raise TypeError(f"{what} returned text ({text[0]!r:.60}); it must return arrays of numbers")
    return out


def check_returned_like(what: str, rule: str, name: str, old: Any, new: Any) -> None:
    """Refuse ``new``, what ``what`` returned for ``old`` (called ``name``),
    unless it has ``old``'s pytree structure, shapes and dtypes (loops carry it
    as such): ``what must return {rule}``."""
    old_leaves, old_def = jax.tree_util.tree_flatten_with_path(old)
    new_leaves, new_def = jax.tree_util.tree_flatten(new)
    if new_def != jax.tree_util.tree_structure(old):
        raise TypeError(f"{what} must return {rule} (the same pytree, shapes and dtypes); it returned "
                        f"{new_def} for {old_def}")
    for (path, a), b in zip(old_leaves, new_leaves):
        if jnp.shape(a) != jnp.shape(b) or _dtype(a) != _dtype(b):
            raise TypeError(f"{what} must return {rule}; {name}{jax.tree_util.keystr(path)} went from shape "
                            f"{jnp.shape(a)} {_dtype(a)} to {jnp.shape(b)} {_dtype(b)}")


def _dtype(a: Any) -> Any:
    return a.dtype if hasattr(a, "dtype") else jnp.result_type(a)
