"""Moves on mixed cube coordinates: integer and categorical genes in ``[0, 1]``.

An integer or categorical coordinate of the cube is a set of bins; the value a
search stands on is best kept at a bin centre, so that a move of "one value"
is exact and two points that decode alike are also equal in the cube.
``MixedCoords`` turns cube points into bin indices and back, and provides the
discrete moves the evolutionary strategies share (GA mutation, local search
neighbours). Every function works on arrays of shape ``(..., dim)`` and only
loops in Python over the few log-scaled integer dimensions, never over points.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..space import Int, Space

__all__ = ["MixedCoords", "reflect", "uniforms", "normal_from_uniform", "unit_from_bits", "index_from_bits", "bit"]


def uniforms(key: jax.Array, *shapes: tuple) -> list[jax.Array]:
    """Independent ``U[0, 1)`` float32 arrays of the given shapes from one draw.

    One ``jax.random.uniform`` call instead of one per array: every call site
    is a separate random-bit generator in the compiled program, and on the
    CPU each costs noticeable compile time inside a scanned search.
    """
    sizes = [math.prod(s) for s in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), jnp.float32)
    out, start = [], 0
    for shape, size in zip(shapes, sizes):
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def unit_from_bits(words: jax.Array, nbits: int = 23, shift: int | None = None) -> jax.Array:
    """A uniform draw in ``(0, 1)`` from an ``nbits``-bit field of uint32 ``words``.

    The field starts at bit ``shift`` (default: the top ``nbits`` bits) and
    the value is the centre of its bin, ``(field + 0.5) / 2**nbits``, exact in
    float32 for ``nbits <= 23``. Splitting one random word into several
    fields (a 16-bit probability, a 14-bit spread, two coin flips) cuts the
    random bits a generation needs, which on the CPU is most of its cost.
    """
    if shift is None:
        shift = 32 - nbits
    field = (words >> jnp.uint32(shift)) & jnp.uint32((1 << nbits) - 1)
    return (field.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-nbits)


def index_from_bits(words: jax.Array, n: int) -> jax.Array:
    """int32 ``floor(words * n / 2**32)`` in ``[0, n)``: a uniform index from
    whole uint32 ``words`` (up to ``n / 2**32`` off uniform), where a 23-bit
    fraction times ``n`` never reaches some indices once ``n > 2**23``. The
    product's high word, from 16-bit halves (no 64-bit integers needed)."""
    n = jnp.uint32(n)
    half, low = jnp.uint32(16), jnp.uint32(0xFFFF)
    a_lo, a_hi, b_lo, b_hi = words & low, words >> half, n & low, n >> half
    t = a_hi * b_lo + ((a_lo * b_lo) >> half)
    mid = a_lo * b_hi + (t & low)
    return (a_hi * b_hi + (t >> half) + (mid >> half)).astype(jnp.int32)


def bit(words: jax.Array, i: int) -> jax.Array:
    """Bit ``i`` of uint32 ``words`` as a boolean (a fair coin)."""
    return ((words >> jnp.uint32(i)) & jnp.uint32(1)) == 1


def normal_from_uniform(u: jax.Array) -> jax.Array:
    """Standard normal draws from ``U[0, 1)`` draws (inverse CDF, as ``jax.random.normal``)."""
    t = jnp.clip(2.0 * u - 1.0, -1.0 + 2.0**-23, 1.0 - 2.0**-23)
    return jnp.float32(math.sqrt(2.0)) * jax.lax.erf_inv(t)


def reflect(u: jax.Array) -> jax.Array:
    """Fold coordinates back into ``[0, 1]`` by reflection at the faces.

    Reflection (rather than clipping) keeps a Gaussian move from piling
    points up on the faces of the cube. Moves larger than the cube still end
    inside thanks to the final clip.
    """
    u = jnp.abs(u)
    u = 1.0 - jnp.abs(1.0 - u)
    return jnp.clip(u, 0.0, 1.0)


class MixedCoords:
    """Bin bookkeeping for the integer and categorical coordinates of a space.

    Attributes (numpy, shape ``(dim,)``):
      card: number of values of each coordinate as float32 (0 for floats).
      integer, categorical, discrete, continuous: boolean masks.
    """

    def __init__(self, space: Space):
        self.dim = space.dim
        self.card = space.cardinalities.astype(np.float32)
        self.integer = space.integer_mask
        self.categorical = space.categorical_mask
        self.discrete = self.integer | self.categorical
        self.continuous = ~self.discrete
        # Log-scaled integers have bins of unequal width in the cube; they go
        # through the dimension's own decode/encode, one column each.
        self._log_ints = [
            (j, d) for j, d in enumerate(space.dims.values()) if isinstance(d, Int) and d.log
        ]
        self.has_discrete = bool(self.discrete.any())

    def index(self, u: jax.Array) -> jax.Array:
        """Bin index of every discrete coordinate, float32 ``(..., dim)``.

        Continuous coordinates are returned unchanged.
        """
        card = jnp.asarray(np.maximum(self.card, 1.0))
        idx = jnp.clip(jnp.floor(u * card), 0.0, card - 1.0)
        for j, d in self._log_ints:
            idx = idx.at[..., j].set((d.decode(u[..., j]) - d.low).astype(jnp.float32))
        return jnp.where(jnp.asarray(self.discrete), idx, u)

    def centre(self, idx: jax.Array, u: jax.Array) -> jax.Array:
        """Cube point of bin ``idx`` on discrete coordinates; ``u`` elsewhere."""
        card = jnp.asarray(np.maximum(self.card, 1.0))
        c = (idx + 0.5) / card
        for j, d in self._log_ints:
            c = c.at[..., j].set(d.encode(idx[..., j].astype(jnp.int32) + d.low))
        return jnp.where(jnp.asarray(self.discrete), c, u)

    def snap(self, u: jax.Array) -> jax.Array:
        """Move discrete coordinates to the centre of their bin."""
        if not self.has_discrete:
            return u
        return self.centre(self.index(u), u)

    def step_index(self, idx: jax.Array, sign: jax.Array, size: jax.Array) -> jax.Array:
        """Move integer indices by ``sign * size`` values (``size >= 1``), staying in range.

        A move that would leave the range is clipped, and if the clip lands
        back on the start (the start sits on that face) the move goes the
        other way, so an integer with at least two values always changes.

        Args:
          idx, sign, size: float32 arrays of shape ``(..., dim)``; ``sign`` is
            ``+-1``. Only integer coordinates are meaningful.
        """
        top = jnp.asarray(np.maximum(self.card, 1.0)) - 1.0
        size = jnp.clip(jnp.maximum(size, 1.0), 1.0, jnp.maximum(top, 1.0))
        fwd = jnp.clip(idx + sign * size, 0.0, top)
        back = jnp.clip(idx - sign * size, 0.0, top)
        return jnp.where(fwd == idx, back, fwd)

    def other_category(self, u: jax.Array, idx: jax.Array) -> jax.Array:
        """A uniformly drawn category other than ``idx`` on every coordinate.

        ``idx + 1 + r`` modulo ``k`` with ``r = floor(u * (k - 1))`` uniform in
        ``{0, ..., k - 2}`` (``u`` is ``U[0, 1)`` of ``idx``'s shape) hits each
        of the ``k - 1`` other categories with equal chance; a single-choice
        coordinate stays put.
        """
        k = jnp.asarray(np.maximum(self.card, 1.0))
        r = jnp.floor(u * (k - 1.0))
        r = jnp.minimum(r, jnp.maximum(k - 2.0, 0.0))
        return jnp.where(k > 1.0, jnp.mod(idx + 1.0 + r, k), idx)
