"""Search spaces mapped to the unit cube.

Every search space is a product of one-coordinate dimensions, so a space of
``d`` parameters is the cube ``[0, 1]^d``. Strategies only ever see the cube;
``Space.decode`` turns cube points into the values an objective reads and
``Space.encode`` goes back. Both are jit-able, vmap-able and fixed-shape.

| dimension                  | cube -> value                                    |
| -------------------------- | ------------------------------------------------ |
| ``Float(low, high)``       | affine                                           |
| ``Float(..., log=True)``   | affine in log space                              |
| ``Int(low, high)``         | ``high - low + 1`` equal-width bins, then floor  |
| ``Int(..., log=True)``     | log-uniform on ``[low, high + 1)``, then floor   |
| ``Categorical(choices)``   | ``k`` equal-width bins, an ``int32`` index       |
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import numbers
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._keys import check_key
from ._scalars import scalar_item
from ._traced import is_traced

__all__ = ["Float", "Int", "Categorical", "Space"]

# Integers are decoded through float32 arithmetic; beyond 2**22 values per
# dimension a bin centre is no longer exactly representable.
_MAX_INT_VALUES = 2**22


def _same_label(a: Any, b: Any) -> bool:
    """Label equality that keeps ``True`` and ``1`` apart, within tuples too
    (a 0-d array, such as ``np.asarray(True)``, as its item)."""
    a, b = _scalar_item(a), _scalar_item(b)
    if a is b:
        return True
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(_same_label(x, y) for x, y in zip(a, b)))
    if isinstance(a, (bool, np.bool_)) != isinstance(b, (bool, np.bool_)):
        return False
    try:
        return bool(a == b)
    except Exception:  # labels with odd __eq__ (arrays) are simply different
        return False


def _scalar_item(a: Any) -> Any:
    """A concrete 0-d array (NumPy's, JAX's) as its Python item; anything else as it is."""
    if isinstance(a, (np.ndarray, jax.Array)) and not isinstance(a, jax.core.Tracer) and np.ndim(a) == 0:
        return np.asarray(a).item()
    return a


def _holds_nan(a: Any) -> bool:
    """NaN, or a tuple holding one (at any depth)."""
    if isinstance(a, tuple):
        return any(_holds_nan(x) for x in a)
    return isinstance(a, float) and math.isnan(a)


def _label_key(a: Any) -> tuple:
    """What makes a label itself: its type and value, within tuples too."""
    if isinstance(a, tuple):
        return ("tuple", tuple(_label_key(x) for x in a))
    return (type(a).__name__, a)


def _plain_label(a: Any) -> Any:
    """A NumPy scalar label (``np.unique``'s strings and numbers) or a 0-d array as its Python value."""
    if isinstance(a, np.generic):
        return a.item()
    a = _scalar_item(a)
    if isinstance(a, tuple):
        return tuple(_plain_label(x) for x in a)
    return a


def _normalise_when(when: Any) -> tuple:
    """``{"parent": choice or [choices]}`` -> ``(("parent", (choices...)), ...)``."""
    if when is None:
        return ()
    if not isinstance(when, Mapping) or not when:
        raise TypeError(
            f"when must be a non-empty mapping of categorical name -> choice(s), got {when!r}"
        )
    out = []
    for parent, allowed in when.items():
        if not isinstance(parent, str):
            raise TypeError(f"when: parent names must be strings, got {parent!r}")
        if isinstance(allowed, (list, tuple, set, frozenset)):
            allowed = tuple(allowed)
        else:
            allowed = (allowed,)
        if not allowed:
            raise ValueError(f"when[{parent!r}] must name at least one choice")
        out.append((parent, allowed))
    return tuple(out)


_F32 = np.finfo(np.float32)
_MIN_LINEAR_WIDTH = np.float32(2.0**24 * float(_F32.tiny))


def _check_bound(name: str, value: Any) -> float:
    value = scalar_item(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be of magnitude at most {float(_F32.max):.4g} (float32), "
                         f"got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    # The cube decodes in float32: a bound must be a normal float32 number.
    if abs(value) > float(_F32.max) or 0.0 < abs(value) < float(_F32.tiny):
        raise ValueError(f"{name} must be 0 or of magnitude in [{float(_F32.tiny):.4g}, "
                         f"{float(_F32.max):.4g}] (float32), got {value!r}")
    return value


@jax.custom_jvp
def clip_passing_gradient(x: jax.Array, low: float, high: float) -> jax.Array:
    """``jnp.clip(x, low, high)`` whose derivative is 1 everywhere: the map's
    interior slope at a bound, where float32 rounding of a face of the cube
    lands (``jnp.clip``'s is 0 past a bound and 1/2 on it). Projected
    gradient steps (``gradient_tune(transform="clip")``) then leave a bound
    when the gradient points back inside."""
    return jnp.clip(x, low, high)


@clip_passing_gradient.defjvp
def _clip_passing_gradient_jvp(primals, tangents):
    x, low, high = primals
    return jnp.clip(x, low, high), tangents[0]


def _when_key(when: tuple) -> tuple:
    """``when`` for equality and hashing, labels told apart as ``Categorical`` tells them
    (``1`` and ``True`` are different choices, so conditions on them differ)."""
    return tuple((parent, tuple(_label_key(a) for a in allowed)) for parent, allowed in when)


def _when_repr(when: tuple) -> str:
    return f", when={ {p: list(a) for p, a in when} !r}" if when else ""


def _check_log(log: Any) -> bool:
    if not isinstance(log, (bool, np.bool_)):
        raise TypeError(f"log must be True or False, got {log!r}")
    return bool(log)


class _Dimension:
    """One coordinate of the unit cube. Immutable and hashable."""

    kind: str = ""
    when: tuple = ()

    def _key(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **fields: Any) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    # Subclasses implement the three maps below on arrays of any shape.
    def decode(self, u: jax.Array) -> jax.Array:
        """Cube coordinates in ``[0, 1]`` (any shape) -> values of the same shape
        (float32; int32 for ``Int``; int32 indices for ``Categorical``)."""
        raise NotImplementedError

    def encode(self, v: jax.Array) -> jax.Array:
        """Values (any shape; categorical indices) -> float32 cube coordinates,
        each at the centre of its bin for discrete dimensions: ``decode(encode(v)) == v``."""
        raise NotImplementedError

    def grid_values(self, num: int | None) -> np.ndarray:
        """Cube coordinates of this dimension's grid levels, ascending."""
        raise NotImplementedError


class Float(_Dimension):
    """A real parameter in ``[low, high]``, uniform or log-uniform in the cube.

    Args:
      low, high: bounds with ``low < high``, each 0 or of a normal float32
        magnitude (``1.2e-38`` to ``3.4e38``: values decode in float32), and
        distinct in float32, ``high - low`` finite in float32 unless
        ``log``. ``Space.to_python`` gives the shortest decimal
        of each float32 value, within the bounds. A point decoded inside a
        compiled program can differ from the same point decoded op by op by
        an ulp, a few more on a log scale (XLA fuses ``low + u * width``
        into one multiply-add); the faces give the bounds exactly in both.
      log: search ``log(value)`` uniformly; needs ``low > 0``.
      when: make the parameter conditional, e.g. ``{"optimizer": "sgd"}`` or
        ``{"optimizer": ["sgd", "nesterov"]}``: active only for those choices.
        A list, tuple or set names several choices; a tuple label goes in a
        list: ``{"shape": [(1, 2)]}``.
    """

    kind = "float"

    def __init__(self, low: float, high: float, log: bool = False, *, when: Any = None):
        low = _check_bound("Float.low", low)
        high = _check_bound("Float.high", high)
        if not low < high:
            raise ValueError(f"Float needs low < high, got low={low}, high={high}")
        if not np.float32(low) < np.float32(high):
            raise ValueError(f"Float needs low < high in float32 (the cube's precision), got low={low}, "
                             f"high={high}, both {float(np.float32(low))!r} in float32")
        log = _check_log(log)
        if log and low <= 0:
            raise ValueError(f"Float(log=True) needs low > 0, got low={low}")
        with np.errstate(over="ignore"):
            # as decode rounds it: the float64 difference, then float32
            width = np.float32(high - low)
        if not log and not np.isfinite(width):
            raise ValueError(f"Float needs high - low within float32's range (values decode as low + u * "
                             f"(high - low)), got low={low}, high={high}")
        if not log and width < _MIN_LINEAR_WIDTH:
            # u * (high - low) would be subnormal, which XLA flushes to zero, for
            # more than a cube point's width (2**-24) of the cube.
            raise ValueError(f"Float needs high - low >= {_MIN_LINEAR_WIDTH:.3g} (2**24 times float32's smallest "
                             f"normal number, so its values decode as normal float32 numbers), got low={low}, "
                             f"high={high}; rescale the parameter, or search a positive range with log=True")
        self._set(low=low, high=high, log=log, when=_normalise_when(when))

    def _key(self) -> tuple:
        return (self.low, self.high, self.log, _when_key(self.when))

    def __repr__(self) -> str:
        return f"Float({self.low}, {self.high}, log={self.log}{_when_repr(self.when)})"

    def _span(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.low), math.log(self.high)
        return self.low, self.high

    def decode(self, u):
        a, b = self._span()
        u = jnp.asarray(u, jnp.float32)  # float32 also from a float64 u under x64, as Space.decode gives
        t = a + u * (b - a)
        # Clipped first: near float32's largest number exp(t) can round up to inf.
        v = clip_passing_gradient(jnp.exp(t) if self.log else t, self.low, self.high)
        # The cube's faces decode to the bounds exactly (the float32 map can
        # miss them by an ulp: 0.099999994 for 0.1); the slope stays the map's.
        # Not v + (face - v): near the smallest normal number that difference
        # is subnormal, and XLA flushes it to zero.
        face = jnp.where(u <= 0.0, np.float32(self.low), np.float32(self.high))
        return jnp.where((u <= 0.0) | (u >= 1.0), face + (v - jax.lax.stop_gradient(v)), v)

    def encode(self, v):
        a, b = self._span()
        v = jnp.asarray(v, jnp.float32)
        t = jnp.log(v) if self.log else v
        # Scaled by a power of two (exact) first: XLA divides by a constant as a
        # product with its reciprocal, which is subnormal, and flushed to zero,
        # for a width above ~8.5e37.
        wide = b - a > 2.0 ** 100
        scale = np.float32(2.0 ** -64 if wide else 1.0)
        offset = t * scale - np.float32(a) * scale
        if wide:
            # Where a * scale is 0 (a = 0, or a tiny low) XLA would otherwise fold
            # the scale into the division: t * (scale / width), subnormal again.
            offset = jax.lax.optimization_barrier(offset)
        u = jnp.clip(offset / np.float32((b - a) * scale), 0.0, 1.0)
        # The bounds encode to the faces exactly, as the faces decode to them
        # (a float32 log may miss by an ulp, and differ by one between a
        # vectorised and a scalar evaluation).
        return jnp.where(v >= np.float32(self.high), 1.0, jnp.where(v <= np.float32(self.low), 0.0, u))

    def grid_values(self, num):
        num = 10 if num is None else num
        if num == 1:
            return np.array([0.5], np.float32)
        return np.linspace(0.0, 1.0, num, dtype=np.float32)


class Int(_Dimension):
    """An integer parameter in ``[low, high]`` (both inclusive), decoded as ``int32``.

    Args:
      low, high: integer bounds with ``low <= high`` and at most ``2**22`` values.
        Sampled uniformly from the float32 cube (``Space.sample``, random
        search), every value is as likely as another up to the cube's
        ``2**23`` equally spaced draws: with ``n`` values, probabilities
        differ by at most a factor ``(k + 1) / k``, ``k = floor(2**23 /
        n)`` (1.00012 at ``n = 1000``, 1.125 at ``n = 10**6``).
      log: log-uniform: the cube maps to ``[log low, log(high + 1))`` and the
        value is the floor of its exponential, so value ``v`` has the bin
        ``[log v, log(v + 1))``, a share ``log((v+1)/v) / log((high+1)/low)``
        of the cube (a small value gets a wider bin than a large one). Needs
        ``low > 0``, and the top value's bin at least ``2**-22`` of the cube
        (float32 cube points then reach every integer).
      when: see ``Float``.
    """

    kind = "int"

    def __init__(self, low: int, high: int, log: bool = False, *, when: Any = None):
        low, high = scalar_item(low), scalar_item(high)
        for name, value in (("Int.low", low), ("Int.high", high)):
            if isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if not isinstance(value, numbers.Integral):
                if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
                    continue
                if isinstance(value, numbers.Real) and not math.isfinite(value):
                    raise ValueError(f"{name} must be finite, got {value!r}")
                raise TypeError(f"{name} must be an integer, got {value!r}")
        low, high = int(low), int(high)
        if low > high:
            raise ValueError(f"Int needs low <= high, got low={low}, high={high}")
        log = _check_log(log)
        if log and low <= 0:
            raise ValueError(f"Int(log=True) needs low > 0, got low={low}")
        if high - low + 1 > _MAX_INT_VALUES:
            raise ValueError(
                f"Int range must hold at most 2**22 values (float32 cube), got {high - low + 1}"
            )
        if low < -(2**31) or high > 2**31 - 1:
            raise ValueError(f"Int bounds must fit in int32 ([-2**31, 2**31 - 1]), got low={low}, high={high}")
        if log:
            # The top value's bin is the narrowest: log((high+1)/high) of the
            # cube's log((high+1)/low). Below 2**-22 of the cube (the linear
            # rule's bin) float32 cube points stop reaching every integer.
            top_bin = math.log1p(1.0 / high) / math.log((high + 1) / low)
            if top_bin < 1.0 / _MAX_INT_VALUES:
                raise ValueError(
                    f"Int(log=True) range too wide for a float32 cube: the top value's bin would be "
                    f"{top_bin:.3g} of it, under 2**-22; narrow [{low}, {high}] or drop log"
                )
        self._set(low=low, high=high, log=log, when=_normalise_when(when))

    def _key(self) -> tuple:
        return (self.low, self.high, self.log, _when_key(self.when))

    def __repr__(self) -> str:
        return f"Int({self.low}, {self.high}, log={self.log}{_when_repr(self.when)})"

    @property
    def cardinality(self) -> int:
        """Number of integers in ``[low, high]``."""
        return self.high - self.low + 1

    def _log_span(self) -> float:
        return math.log((self.high + 1) / self.low)

    def decode(self, u):
        u = jnp.asarray(u, jnp.float32)  # float32 also from a float64 u under x64, as Space.decode gives
        if self.log:
            offset = log_int_offset(u, np.float32(self.low), np.float32(self._log_span()),
                                    np.float32(self.high - self.low))
            return offset.astype(jnp.int32) + jnp.int32(self.low)
        n = self.cardinality
        idx = jnp.clip(jnp.floor(u * n), 0, n - 1).astype(jnp.int32)
        return idx + jnp.int32(self.low)

    def encode(self, v):
        v = jnp.asarray(v)
        if self.log:
            # clipped into the range as the linear rule clips (log1p of an offset below -low is nan)
            offset = jnp.clip((v - self.low).astype(jnp.float32), 0.0, np.float32(self.high - self.low))
            centre = log_int_centre(offset, np.float32(self.low), np.float32(self._log_span()),
                                    np.float32(self.high - self.low))
            return jnp.clip(centre, 0.0, 1.0)
        idx = (v - self.low).astype(jnp.float32)
        return jnp.clip((idx + 0.5) / self.cardinality, 0.0, 1.0)

    def grid_values(self, num):
        if num is None or num >= self.cardinality:
            values = np.arange(self.low, self.high + 1)
        else:
            spaced = np.geomspace(self.low, self.high, num) if self.log else np.linspace(self.low, self.high, num)
            values = _distinct_integers(np.round(spaced).astype(np.int64), self.low, self.high)
        # Compiled, on a power-of-two length: op by op, each operation compiles
        # for every new grid length (a log scale's centre search: seconds).
        n = len(values)
        padded = np.pad(values, (0, (1 << (n - 1).bit_length()) - n), mode="edge")
        return np.asarray(_encode_compiled(self, padded), np.float32)[:n]


@functools.partial(jax.jit, static_argnums=0)
def _encode_compiled(dim: "Dimension", values: jax.Array) -> jax.Array:
    return dim.encode(values)


@functools.partial(jax.jit, static_argnums=0)
def _decode_compiled(space: "Space", u: jax.Array) -> dict[str, jax.Array]:
    return space._decode(u)


def _log_int_edge(offset: jax.Array, low: np.ndarray, span: np.ndarray) -> jax.Array:
    """Cube coordinate where the bin of ``low + offset`` starts: ``log1p(offset / low) / span``
    (relative to ``low``, so large bounds keep their precision), as products with
    reciprocals rounded once on the host, so that encode's and decode's programs
    compute the same edges (a compiler may turn a division by a constant into a
    product, or not). Measured on XLA:CPU with ``log_int_centre``'s check: every
    value of ``Int(1e8, 1.04e8, log=True)`` round-trips, encoded and decoded op
    by op or compiled, at the default and at LLVM -O1; at -O0, whose compiled
    edges differ from op-by-op ones, 6 of the 4e6 decode one lower when
    decoding is compiled."""
    inv_low, inv_span = np.float32(1.0) / low, np.float32(1.0) / span
    return jnp.log1p(offset * inv_low) * inv_span


def log_int_offset(u: jax.Array, low: Any, span: Any, top: Any) -> jax.Array:
    """Offset from ``low`` (float32, ``0 .. top``) of the log-integer whose bin holds cube point ``u``.

    ``floor(low * expm1(u span))``, ``span = log((high + 1) / low)``, then
    moved one integer where rounding put ``u`` outside the bin's edges as
    ``log_int_centre`` computes them: every integer's centre decodes to it
    even where a bin is a few float32 steps wide. ``low``, ``span``, ``top``:
    float32 NumPy scalars or arrays (host constants); arrays broadcast.
    """
    low, span = np.asarray(low, np.float32), np.asarray(span, np.float32)
    o = jnp.clip(jnp.floor(low * jnp.expm1(u * span)), 0.0, top)
    o = jnp.where(u < _log_int_edge(o, low, span), o - 1.0, o)
    o = jnp.where(u >= _log_int_edge(o + 1.0, low, span), o + 1.0, o)
    return jnp.clip(o, 0.0, top)


def log_int_centre(offset: jax.Array, low: Any, span: Any, top: Any) -> jax.Array:
    """Cube coordinate of the centre of the bin of ``low + offset``: the midpoint of its
    edges in float32, or where that does not decode to it, the nearest float32 number
    (at most 2 steps away) that does.

    In a bin a few float32 steps wide the midpoint can round onto an edge, and
    compiled programs can place an edge a step apart (fused operations round
    differently: ``Int(1e8, 1.04e8, log=True)`` had 6 of its 4e6 values
    decode one lower at XLA:CPU's default optimisation). ``low``, ``span``,
    ``top``: as for ``log_int_offset``.
    """
    low, span = np.asarray(low, np.float32), np.asarray(span, np.float32)
    c = 0.5 * (_log_int_edge(offset, low, span) + _log_int_edge(offset + 1.0, low, span))
    found = log_int_offset(c, low, span, top) == offset
    bits = jax.lax.bitcast_convert_type(c, jnp.int32)  # c > 0: +-1 is one float32 step
    for step in (-1, 1, -2, 2):
        alt = jax.lax.bitcast_convert_type(bits + step, jnp.float32)
        use = ~found & (log_int_offset(alt, low, span, top) == offset)
        c, found = jnp.where(use, alt, c), found | use
    return c


def _distinct_integers(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """Ascending rounded targets made strictly increasing inside ``[low, high]``
    (``len(values) <= high - low + 1``): where two round to one integer (the
    crowded low end of a log scale), the later moves up, and back down
    from the top so the last stays ``<= high``."""
    out = values.copy()
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + 1)
    for i in range(len(out) - 1, -1, -1):
        out[i] = min(out[i], high - (len(out) - 1 - i))
    return out


def _concrete_count(n: Any) -> int | None:
    """``n`` as a Python int where it is a concrete integer (a NumPy or JAX
    0-d integer array too), else ``None`` (bools, floats, traced values)."""
    if isinstance(n, (bool, np.bool_)) or isinstance(n, jax.core.Tracer):
        return None
    if isinstance(n, numbers.Integral):
        return int(n)
    dtype = getattr(n, "dtype", None)
    if dtype is not None and np.shape(n) == () and jnp.issubdtype(dtype, jnp.integer):
        return int(n)
    return None


def _config_rows(config: Any) -> tuple[bool, list]:
    """``(single, rows)``: one configuration dict, or a sequence of them."""
    if isinstance(config, Mapping):
        return True, [config]
    if isinstance(config, (str, bytes)) or not isinstance(config, Iterable):
        raise TypeError(f"config must be a dict of parameter values or a list of such dicts, "
                        f"got {type(config).__name__}")
    return False, list(config)


def _check_encodable(name: str, d: Any, a: np.ndarray) -> None:
    """Refuse concrete decoded values outside ``d``'s bounds (or fractional for
    an integer or an index): ``encode`` would clip them into another, valid
    configuration."""
    if a.size == 0:
        return
    if isinstance(d, Float):
        lo, hi = np.float32(d.low), np.float32(d.high)
        x = a.astype(np.float32)
        ok = (x >= lo) & (x <= hi)
        rule = f"in [{d.low}, {d.high}]"
    else:
        lo, hi = (0, len(d.choices) - 1) if isinstance(d, Categorical) else (d.low, d.high)
        x = a.astype(np.float64)
        ok = (x >= lo) & (x <= hi) & (x == np.floor(x))
        rule = (f"a choice index in [0, {hi}]" if isinstance(d, Categorical) else f"an integer in [{lo}, {hi}]")
    if not np.all(ok):
        bad = x[~ok].reshape(-1)[0].item()
        raise ValueError(f"encode input {name!r} must be {rule}, got {bad!r}")


def _decoded_value(name: str, d: "Dimension", v: Any) -> Any:
    """One parameter's Python value (a label for a categorical) -> its decoded value, checked."""
    if isinstance(d, Categorical):
        try:
            return d.index(v)
        except ValueError as e:
            raise ValueError(f"parameter {name!r}: {e}") from None
    if isinstance(v, (jax.Array, np.ndarray)) and np.ndim(v) == 0 and not isinstance(v, jax.core.Tracer):
        v = v.item()  # a 0-d array, as a number
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"parameter {name!r} must be a number, got {v!r}")
    # a float's value as decode gives it on a bound is the bound in float32
    inside = d.low <= v <= d.high or (isinstance(d, Float) and abs(v) <= float(_F32.max)
                                      and np.float32(d.low) <= np.float32(v) <= np.float32(d.high))
    if not inside:
        raise ValueError(f"parameter {name!r} = {v!r} is outside [{d.low}, {d.high}]")
    if isinstance(d, Int) and not float(v).is_integer():
        raise ValueError(f"parameter {name!r} must be an integer, got {v!r}")
    return v


def _python_float(v: Any, d: "Float") -> float:
    """A decoded float32 as the shortest Python float that rounds back to it,
    clipped to ``[d.low, d.high]``: a value on a bound stays inside it
    (``0.99``, not float32's ``0.9900000095``), so ``from_python`` takes it back."""
    if np.asarray(v).dtype == np.float32:
        v = float(str(np.float32(v)))  # NumPy prints the shortest round-trip digits
    return min(max(float(v), d.low), d.high)


class Categorical(_Dimension):
    """A choice among hashable Python values, decoded as an ``int32`` index.

    ``Space.to_python`` gives the label back. Labels may be strings, numbers,
    ``None`` or booleans; ``True`` and ``1`` are different labels.
    """

    kind = "categorical"

    def __init__(self, choices: Sequence[Hashable], *, when: Any = None):
        if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
            raise TypeError(f"Categorical.choices must be a list or tuple, got {choices!r}")
        choices = tuple(_plain_label(c) for c in choices)
        if not choices:
            raise ValueError("Categorical.choices must not be empty")
        if any(_holds_nan(c) for c in choices):
            raise ValueError("Categorical.choices must not hold NaN (it equals no value, not even itself, so it "
                             "could not be found again)")
        # Equal labels hash alike (1 and 1.0 too, though one could never be chosen by label).
        buckets: dict[int, list] = {}
        for c in choices:
            try:
                bucket = buckets.setdefault(hash(c), [])
            except TypeError:
                raise TypeError(f"Categorical.choices must be hashable, got {c!r}") from None
            for b in bucket:
                if _same_label(b, c):
                    what = f"{c!r} appears twice" if type(b) is type(c) else f"{b!r} and {c!r} are equal"
                    raise ValueError(f"Categorical.choices must be distinct, {what}")
            bucket.append(c)
        self._set(choices=choices, when=_normalise_when(when))

    def _key(self) -> tuple:
        return (tuple(_label_key(c) for c in self.choices), _when_key(self.when))

    def __repr__(self) -> str:
        return f"Categorical({list(self.choices)!r}{_when_repr(self.when)})"

    @property
    def cardinality(self) -> int:
        """Number of choices."""
        return len(self.choices)

    def index(self, label: Any) -> int:
        """Position of ``label`` in ``choices``; ValueError if absent."""
        for i, c in enumerate(self.choices):
            if _same_label(c, label):
                return i
        raise ValueError(f"{label!r} is not one of the choices {list(self.choices)!r}")

    def decode(self, u):
        u = jnp.asarray(u, jnp.float32)  # float32 also from a float64 u under x64, as Space.decode gives
        k = self.cardinality
        return jnp.clip(jnp.floor(u * k), 0, k - 1).astype(jnp.int32)

    def encode(self, v):
        v = jnp.asarray(v).astype(jnp.float32)
        return jnp.clip((v + 0.5) / self.cardinality, 0.0, 1.0)

    def grid_values(self, num):
        k = self.cardinality
        return ((np.arange(k) + 0.5) / k).astype(np.float32)


Dimension = Union[Float, Int, Categorical]


class Space:
    """A named product of dimensions, mapped to ``[0, 1]^dim``.

    ``Space(lr=Float(1e-4, 1e-1, log=True), layers=Int(1, 4))`` or
    ``Space({"lr": ..., "layers": ...})``. Parameter order is the order given
    and fixes the cube coordinate of each parameter.

    Spaces are immutable and hashable: two spaces with the same dimensions are
    equal, so jitted code keyed on a space compiles once.
    """

    def __init__(self, dims: Mapping[str, Dimension] | None = None, /, **kwargs: Dimension):
        if dims is not None and not isinstance(dims, Mapping):
            raise TypeError(f"Space takes a mapping of name -> dimension, got {type(dims).__name__}")
        items = list((dims or {}).items()) + list(kwargs.items())
        if not items:
            raise ValueError("Space needs at least one dimension")
        names = [n for n, _ in items]
        for n, d in items:
            if not isinstance(n, str) or not n:
                raise TypeError(f"Space parameter names must be non-empty strings, got {n!r}")
            if not isinstance(d, (Float, Int, Categorical)):
                raise TypeError(
                    f"Space parameter {n!r} must be a Float, Int or Categorical, got {d!r}"
                )
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"Space parameter {dup!r} is given twice")
        object.__setattr__(self, "_items", tuple(items))
        self._validate_conditions()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Space is immutable")

    # ------------------------------------------------------------------ basics
    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in cube-coordinate order."""
        return tuple(n for n, _ in self._items)

    @property
    def dims(self) -> dict[str, Dimension]:
        """Name -> dimension, in cube-coordinate order."""
        return dict(self._items)

    @property
    def dim(self) -> int:
        """Number of unit-cube coordinates."""
        return len(self._items)

    def __len__(self) -> int:
        return self.dim

    def __getitem__(self, name: str) -> Dimension:
        return self.dims[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={d!r}" for n, d in self._items)
        return f"Space({inner})"

    # ---------------------------------------------------------------- metadata
    @property
    def kinds(self) -> tuple[str, ...]:
        """``"float"``, ``"int"`` or ``"categorical"`` per coordinate."""
        return tuple(d.kind for _, d in self._items)

    @property
    def cardinalities(self) -> np.ndarray:
        """Number of values per coordinate (0 for floats), shape ``(dim,)``."""
        return np.array([getattr(d, "cardinality", 0) for _, d in self._items], np.int64)

    @property
    def categorical_mask(self) -> np.ndarray:
        """``(dim,)`` bool: which coordinates are categorical."""
        return np.array([k == "categorical" for k in self.kinds])

    @property
    def integer_mask(self) -> np.ndarray:
        """``(dim,)`` bool: which coordinates are integers."""
        return np.array([k == "int" for k in self.kinds])

    @property
    def is_conditional(self) -> bool:
        """Whether any parameter has a ``when=`` condition."""
        return any(d.when for _, d in self._items)

    # ------------------------------------------------------------ conditions
    def _validate_conditions(self) -> None:
        dims = self.dims
        for name, d in self._items:
            for parent, allowed in d.when:
                if parent not in dims:
                    raise ValueError(
                        f"condition of {name!r} names unknown parameter {parent!r}"
                    )
                if parent == name:
                    raise ValueError(f"parameter {name!r} cannot be conditional on itself")
                p = dims[parent]
                if not isinstance(p, Categorical):
                    raise ValueError(
                        f"condition of {name!r}: parent {parent!r} must be Categorical, "
                        f"got {p!r}"
                    )
                for a in allowed:
                    try:
                        p.index(a)
                    except ValueError:
                        hint = ""
                        if any(_same_label(allowed, c) for c in p.choices):
                            hint = (f"; a tuple names several choices: to name the tuple "
                                    f"label {allowed!r}, put it in a list, "
                                    f"when={{{parent!r}: [{allowed!r}]}}")
                        raise ValueError(
                            f"condition of {name!r}: {a!r} is not a choice of {parent!r} "
                            f"({list(p.choices)!r}){hint}"
                        ) from None
        # The parent graph must be acyclic.
        state: dict[str, int] = {}

        def visit(n: str, path: tuple) -> None:
            if state.get(n) == 2:
                return
            if state.get(n) == 1:
                raise ValueError(f"conditions form a cycle: {' -> '.join(path + (n,))}")
            state[n] = 1
            for parent, _ in dims[n].when:
                visit(parent, path + (n,))
            state[n] = 2

        for n in self.names:
            visit(n, ())
        self._check_satisfiable()
        self._canonical_conditions()

    def _check_satisfiable(self) -> None:
        """Refuse a parameter that could never be active. It counts where every
        condition up its chain holds: a conjunction of "this parent's choice
        is among these", satisfiable unless two of them on one parent (from
        different links of the chain) share no choice."""
        dims, needs = self.dims, {}

        def requirements(n: str) -> dict:
            if n not in needs:
                req: dict[str, frozenset] = {}
                for parent, allowed in dims[n].when:
                    own = frozenset(dims[parent].index(a) for a in allowed)
                    for ancestor, choices in [*requirements(parent).items(), (parent, own)]:
                        both = req.get(ancestor, choices) & choices
                        if not both:
                            shown = [[dims[ancestor].choices[i] for i in sorted(c)] for c in (req[ancestor], choices)]
                            raise ValueError(
                                f"parameter {n!r} could never be active: its conditions need {ancestor!r} to be "
                                f"one of {shown[0]!r} and one of {shown[1]!r}, which share no choice")
                        req[ancestor] = both
                needs[n] = req
            return needs[n]

        for n in self.names:
            requirements(n)

    def _canonical_conditions(self) -> None:
        """Each condition as the parents hold it: parents in space order, each
        one's choices in its order, once each, as its own labels. A set's
        order varies between processes, and numpy labels are not JSON: written
        any way, one condition makes one space and one stored spec."""
        dims, position = self.dims, {n: i for i, n in enumerate(self.names)}
        items = []
        for name, d in self._items:
            when = tuple(
                (parent, tuple(dims[parent].choices[i] for i in sorted({dims[parent].index(a) for a in allowed})))
                for parent, allowed in sorted(d.when, key=lambda c: position[c[0]]))
            if when:  # (a copy: the caller's dimension stays as given)
                d = copy.copy(d)
                d._set(when=when)
            items.append((name, d))
        object.__setattr__(self, "_items", tuple(items))

    def _condition_order(self) -> list[str]:
        """Names with every parent before its children."""
        dims, order, done = self.dims, [], set()

        def visit(n: str) -> None:
            if n in done:
                return
            for parent, _ in dims[n].when:
                visit(parent)
            done.add(n)
            order.append(n)

        for n in self.names:
            visit(n)
        return order

    def _active_labels(self, row: Mapping[str, Any]) -> dict[str, bool]:
        """``active`` for one configuration of Python labels (missing parents: inactive)."""
        dims, out = self.dims, {}
        for n in self._condition_order():
            out[n] = all(out[parent] and parent in row
                         and any(_same_label(row[parent], a) for a in allowed)
                         for parent, allowed in dims[n].when)
        return out

    def active(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        """Which parameters count, given decoded values (jit-able).

        Args:
          params: decoded values, each of shape ``(...)``.
        Returns:
          dict of boolean arrays of shape ``(...)``; unconditional parameters
          are always ``True``.
        """
        params = self._check_keys(params, "params", allow_missing_inactive=False)
        dims = self.dims
        shape = jnp.shape(params[self.names[0]])
        out: dict[str, jax.Array] = {}
        for n in self._condition_order():
            act = jnp.ones(shape, bool)
            for parent, allowed in dims[n].when:
                idx = jnp.asarray(params[parent])
                codes = jnp.array([dims[parent].index(a) for a in allowed], jnp.int32)
                ok = jnp.any(idx[..., None] == codes, axis=-1)
                act = act & ok & out[parent]
            out[n] = act
        return {n: out[n] for n in self.names}

    # ------------------------------------------------------------ the maps
    def _check_cube(self, u: Any, what: str) -> jax.Array:
        if getattr(u, "dtype", None) is None:
            u = np.asarray(u)
        if not (jnp.issubdtype(u.dtype, jnp.floating) or jnp.issubdtype(u.dtype, jnp.integer)
                or u.dtype == bool):
            raise TypeError(f"{what} must hold real cube coordinates, got dtype {u.dtype}")
        if isinstance(u, jax.core.Tracer) or not jnp.issubdtype(u.dtype, jnp.floating):
            nan = None  # traced (see decode), or integer coordinates
        elif isinstance(u, np.ndarray):
            nan = np.isnan(u)  # a host array checked on the host, with no device program
        else:
            nan = jnp.isnan(u)
        u = jnp.asarray(u)
        if u.ndim < 1 or u.shape[-1] != self.dim:
            raise ValueError(
                f"{what} must have trailing dimension {self.dim} (one per parameter of "
                f"{list(self.names)}), got shape {tuple(u.shape)}"
            )
        if nan is not None and bool(nan.any()):
            column = int(np.argwhere(np.asarray(nan))[0][-1])
            raise ValueError(f"{what} holds nan coordinates (first for {self.names[column]!r}); a cube point "
                             "is a number in [0, 1] for each parameter")
        if u.dtype != jnp.float32:  # the cube is float32, also under x64 (float64 in, float32 out)
            u = u.astype(jnp.float32)
        return u

    def decode(self, u: Any) -> dict[str, jax.Array]:
        """Cube points -> parameter values (jit-able, vmap-able).

        Args:
          u: array of shape ``(..., dim)``; coordinates are clipped to ``[0, 1]``.
            A concrete ``nan`` is refused; a traced one (inside ``jit``)
            decodes to ``nan`` for a ``Float``, and for an ``Int`` or
            ``Categorical`` to its lowest value or first choice.
        Returns:
          dict name -> array of shape ``(...)``: float32 for ``Float``, int32
          for ``Int`` and int32 indices for ``Categorical``.
        """
        u = self._check_cube(u, "decode input")
        if is_traced(u):
            return self._decode(u)
        # Concrete points (a result decoded after a search): one compiled
        # program per space and shape; op by op, each operation of each
        # parameter compiled on its own at every new shape. (A jitted
        # function returns a dict's keys sorted: the space's order restored.)
        out = _decode_compiled(self, u)
        return {name: out[name] for name in self.names}

    def _decode(self, u: jax.Array) -> dict[str, jax.Array]:
        u = clip_passing_gradient(u, 0.0, 1.0)
        return {n: d.decode(u[..., i]) for i, (n, d) in enumerate(self._items)}

    def _check_keys(self, params: Any, what: str, allow_missing_inactive: bool) -> dict:
        if not isinstance(params, Mapping):
            raise TypeError(f"{what} must be a dict of name -> array, got {type(params).__name__}")
        unknown = [k for k in params if k not in self.dims]
        if unknown:
            raise ValueError(f"{what} has unknown parameter(s) {unknown}; the space has {list(self.names)}")
        missing = [n for n in self.names if n not in params]
        if allow_missing_inactive:
            missing = [n for n in missing if not self.dims[n].when]
        if missing:
            raise ValueError(f"{what} is missing parameter(s) {missing}")
        return dict(params)

    def encode(self, params: Mapping[str, Any]) -> jax.Array:
        """Parameter values -> cube points; the inverse of ``decode``.

        Args:
          params: dict name -> array of shape ``(...)`` in decoded form
            (categorical indices, not labels; see ``from_python``). A
            conditional parameter may be left out where the values given
            make it inactive: it encodes to 0.5 (left out where it is
            active, it is refused; traced values are not checked).
            Concrete values must lie in their dimension's bounds (integers
            and indices whole), as ``from_python`` requires; traced ones
            are clipped to them.
        Returns:
          float32 array of shape ``(..., dim)``.
        """
        params = self._check_keys(params, "encode input", allow_missing_inactive=True)
        shapes = {jnp.shape(v) for v in params.values()}
        if len(shapes) != 1:
            raise ValueError(f"encode input arrays must share one shape, got {sorted(shapes)}")
        shape = shapes.pop()
        for n, v in params.items():
            kind = getattr(v, "dtype", np.asarray(v).dtype if not isinstance(v, jax.core.Tracer) else None)
            if kind is not None and np.dtype(kind).kind not in "biuf":
                raise TypeError(f"encode input {n!r} must be numbers (categorical indices, not labels: "
                                f"see from_python), got dtype {np.dtype(kind)}")
            if not isinstance(v, jax.core.Tracer):
                _check_encodable(n, self.dims[n], np.asarray(v))
        left_out = [n for n in self.names if n not in params]
        if left_out and not is_traced(params):
            # Any value stands in for a left-out parameter: one that is active is refused
            # below whatever it holds, and an inactive one makes its children inactive.
            full = {n: np.asarray(params[n]) if n in params else np.zeros(shape, np.int32) for n in self.names}
            act = self.active(full)
            wrong = [n for n in left_out if np.any(np.asarray(act[n]))]
            if wrong:
                raise ValueError(f"encode input leaves out parameter(s) {wrong}, which the values given make "
                                 "active: a conditional parameter may be left out only where it is inactive")
        cols = []
        for n, d in self._items:
            if n in params:
                cols.append(d.encode(params[n]).astype(jnp.float32))
            else:
                cols.append(jnp.full(shape, 0.5, jnp.float32))
        return jnp.stack(cols, axis=-1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` uniform cube points, shape ``(n, dim)``; ``key`` a ``jax.random`` key or an integer seed."""
        count = _concrete_count(n)
        if count is None or not 0 <= count <= 2**31 - 1:
            raise ValueError(f"sample n must be an integer in [0, 2**31 - 1] (points to draw), got {n!r}")
        return jax.random.uniform(check_key(key, allow_seed=True), (count, self.dim), jnp.float32)

    # ------------------------------------------------------------- grids
    def grid(self, num: int = 10, sizes: Mapping[str, int] | None = None) -> np.ndarray:
        """Every point of a grid over the space, as cube points of shape ``(N, dim)``.

        Floats get ``num`` points (log-spaced for log dimensions); integers
        get every integer; categoricals every choice. ``sizes`` overrides the
        number of points per parameter by name (for an integer: that many
        evenly spaced integers). For conditional spaces, points that differ
        only in inactive parameters are kept once.
        """
        if isinstance(num, bool) or not isinstance(num, numbers.Integral) or num < 1:
            raise ValueError(f"grid num must be a positive integer, got {num!r}")
        if sizes is not None and not isinstance(sizes, Mapping):
            raise TypeError(f"grid sizes must be a mapping of parameter name to number of points, got {sizes!r}")
        sizes = dict(sizes or {})
        for k, v in sizes.items():
            if k not in self.dims:
                raise ValueError(f"grid sizes names unknown parameter {k!r}")
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"grid sizes[{k!r}] must be a positive integer, got {v!r}")
            if isinstance(self.dims[k], Categorical):
                raise ValueError(f"grid sizes[{k!r}]: {k!r} is categorical; its grid is every choice")
        def length(n: str, d: Dimension) -> int:  # of d.grid_values(...), known before building it
            if isinstance(d, Float):
                return sizes.get(n, num)
            return min(sizes.get(n, d.cardinality), d.cardinality)

        total = math.prod(length(n, d) for n, d in self._items)
        if total > 50_000_000:
            raise ValueError(f"grid would hold {total} points; reduce num or sizes")
        levels = [d.grid_values(sizes.get(n, num) if isinstance(d, Float) else sizes.get(n)) for n, d in self._items]
        pts = np.array(list(itertools.product(*levels)), np.float32).reshape(-1, self.dim)
        if self.is_conditional:
            act = self.active(self.decode(pts))
            act = np.stack([np.asarray(act[n]) for n in self.names], axis=-1)
            pts = np.where(act, pts, np.float32(0.5))
            _, first = np.unique(pts, axis=0, return_index=True)
            pts = pts[np.sort(first)]
        return pts

    # ------------------------------------------------------- python values
    def to_python(self, params: Mapping[str, Any]) -> dict | list:
        """Decoded arrays -> plain Python values with labels restored.

        Args:
          params: decoded values of shape ``()`` or ``(n,)``.
        Returns:
          a dict for scalars, a list of ``n`` dicts for a batch. Inactive
          conditional parameters are left out.
        """
        params = self._check_keys(params, "to_python input", allow_missing_inactive=False)
        arrays = {n: np.asarray(params[n]) for n in self.names}
        shape = arrays[self.names[0]].shape
        if any(a.shape != shape for a in arrays.values()):
            raise ValueError("to_python input arrays must share one shape, got "
                             f"{ {n: a.shape for n, a in arrays.items()} }")
        if len(shape) > 1:
            raise ValueError(f"to_python input arrays must have shape () or (n,), got {shape}: reshape a batch "
                             "of batches to (n,) first")
        if self.is_conditional:
            act = {n: np.asarray(a) for n, a in self.active(params).items()}
        else:
            act = {n: np.ones(shape, bool) for n in self.names}
        # Only active entries are values: an inactive one may hold anything.
        for n, d in self.dims.items():
            a = arrays[n][np.broadcast_to(act[n], shape)] if self.is_conditional else arrays[n]
            if not a.size:
                continue
            if isinstance(d, Categorical) and not (
                    0 <= a.min() and a.max() < d.cardinality and np.all(a == np.round(a))):
                raise ValueError(f"to_python input {n!r} holds values that are no index in [0, {d.cardinality}) "
                                 f"(its choices {list(d.choices)!r})")
            if isinstance(d, Int) and not (d.low <= a.min() and a.max() <= d.high and np.all(a == np.round(a))):
                raise ValueError(f"to_python input {n!r} holds values that are no integer in [{d.low}, {d.high}]")
            if isinstance(d, Float):
                # float32 rounding of a bound (0.1 as 0.100000001) still counts as inside
                lo, hi = np.float32(d.low), np.float32(d.high)
                if not (np.all(np.isfinite(a)) and lo <= a.min() and a.max() <= hi):
                    raise ValueError(f"to_python input {n!r} holds values outside [{d.low}, {d.high}]")
        flat = {n: a.reshape(-1) for n, a in arrays.items()}
        flat_act = {n: a.reshape(-1) for n, a in act.items()}
        dims = self.dims
        out = []
        for i in range(int(np.prod(shape, dtype=np.int64))):
            row = {}
            for n in self.names:
                if not flat_act[n][i]:
                    continue
                d, v = dims[n], flat[n][i]
                if isinstance(d, Float):
                    row[n] = _python_float(v, d)
                elif isinstance(d, Int):
                    row[n] = int(v)
                else:
                    row[n] = d.choices[int(v)]
            out.append(row)
        return out[0] if shape == () else out

    def fixed_coordinates(self, config: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Python configuration(s), any subset of the parameters, -> cube coordinates.

        For configurations to try before (or among) a strategy's own
        proposals: the parameters given are fixed, the others left to the
        strategy.

        Args:
          config: one dict, or a list of ``n`` dicts, of parameter values
            with labels (as ``from_python`` takes them), each naming any
            subset of the parameters.
        Returns:
          float32 ``(dim,)`` or ``(n, dim)``: each given parameter's cube
          coordinate (``encode`` of its value), ``nan`` for the parameters
          not given and for those the given ones make inactive (their values
          are checked, then left to the strategy, as ``canonical_python``
          leaves them out).
        """
        single, rows = _config_rows(config)
        dims = self.dims
        out = np.full((len(rows), self.dim), np.nan, np.float32)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"a configuration must be a dict of parameter values, got {type(row).__name__}")
            unknown = [k for k in row if k not in dims]
            if unknown:
                raise ValueError(f"configuration names unknown parameter(s) {unknown}; "
                                 f"known: {list(self.names)}")
            off = self._made_inactive(row)
            for j, n in enumerate(self.names):
                if n in row:
                    d = dims[n]
                    value = _decoded_value(n, d, row[n])
                    if off[n]:
                        continue
                    dtype = jnp.float32 if isinstance(d, Float) else jnp.int32
                    out[i, j] = np.asarray(d.encode(jnp.asarray(value, dtype)))
        return out[0] if single else out

    def _made_inactive(self, config: Mapping[str, Any]) -> dict[str, bool]:
        """Per parameter: inactive whatever the parameters ``config`` does not give are."""
        dims, off = self.dims, {}
        for n in self._condition_order():
            off[n] = any(off[parent] or (parent in config and not any(_same_label(config[parent], a)
                                                                      for a in allowed))
                         for parent, allowed in dims[n].when)
        return off

    def canonical_python(self, config: Mapping[str, Any]) -> dict:
        """A configuration (any subset of the parameters, checked) with each value as
        ``to_python`` reports one: a float as the shortest decimal of its float32
        value within its bounds, an integer as ``int``, a label as the choice itself.
        A parameter that the given ones make inactive is left out, as ``to_python``
        leaves it out."""
        dims, out = self.dims, {}
        for n in config:
            if n not in dims:
                raise ValueError(f"configuration names unknown parameter {n!r}; known: {list(self.names)}")
        off = self._made_inactive(config)
        for n, v in config.items():
            d = dims[n]
            value = _decoded_value(n, d, v)  # checked also where it is then left out
            if off[n]:
                continue
            if isinstance(d, Float):
                out[n] = _python_float(np.float32(value), d)
            elif isinstance(d, Int):
                out[n] = int(value)
            else:
                out[n] = d.choices[value]
        return out

    def from_python(self, config: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Python configuration(s) with labels -> decoded arrays (the input of ``encode``).

        Args:
          config: one dict, or a list of ``n`` dicts. Inactive conditional
            parameters may be missing.
        Returns:
          dict name -> array of shape ``()`` or ``(n,)``.
        """
        single, rows = _config_rows(config)
        dims = self.dims
        cols: dict[str, list] = {n: [] for n in self.names}
        for row in rows:
            row = self._check_keys(row, "configuration", allow_missing_inactive=True)
            active = self._active_labels(row)
            for n in self.names:
                d = dims[n]
                if n not in row:
                    if active[n]:
                        raise ValueError(f"configuration is missing parameter {n!r}, which is active "
                                         f"(its condition {dict(d.when)!r} holds)")
                    cols[n].append(d.decode(jnp.float32(0.5)).item())
                    continue
                cols[n].append(_decoded_value(n, d, row[n]))
        out = {}
        for n in self.names:
            dtype = np.float32 if isinstance(dims[n], Float) else np.int32
            arr = np.asarray(cols[n], dtype)
            out[n] = arr[0] if single else arr
        return out
