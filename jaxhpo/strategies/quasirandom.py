"""Quasi-random search: Sobol and Halton low-discrepancy sequences, Latin hypercubes.

Quasi-random points cover the cube more evenly than uniform random points,
so a search of ``n`` points leaves smaller gaps. All three methods are pure
array programs over a ``uint32`` point index: no Python loop over the
population, only fixed loops over the 32 bits (Sobol) or digits (Halton) of
the index, so ``ask`` jits, scans and vmaps like every other strategy.

``jaxhpo/data/sobol_directions.npz`` holds the Joe & Kuo (2008) primitive
polynomials and initial direction numbers (``new-joe-kuo-6.21201``) of the
first 1024 dimensions, as ``poly`` (1024,) and ``vinit`` (1024, 13), both
``uint16``. ``poly`` encodes a polynomial of degree ``s`` as an integer whose
bit ``s`` is the leading term and bit 0 the constant term; ``vinit[k, :s]``
are the odd integers ``m_1 .. m_s`` of dimension ``k`` (row 0 is the first
dimension, whose direction numbers are all ``1``). The rows are the first 1024
of the same Joe & Kuo table that scipy ships
(``scipy/stats/_sobol_direction_numbers.npz``); 13 is the largest degree among
them.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..space import Space
from .base import Strategy, initial_best

__all__ = ["QuasiRandom", "QuasiRandomState", "METHODS", "SOBOL_MAX_DIM", "HALTON_MAX_DIM"]

METHODS = ("sobol", "halton", "lhs")

_BITS = 32  # Sobol direction numbers are 32-bit, so indices run up to 2**32 - 1
SOBOL_MAX_DIM = 1024  # dimensions in the shipped direction-number table
# Scrambled Halton digits are mapped by (h * digit + g) mod base in uint32;
# bases below 2**16 keep h * digit from overflowing. 6542 primes lie below 2**16.
HALTON_MAX_DIM = 6542
# Largest float32 below 1: points stay in [0, 1) even where float32 rounds up.
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
# LHS strata must hold points in float32 two ulps in from each rounded edge
# (see _latin_hypercube): 1/n at least 8 ulps of values below 1.
_LHS_MAX_POPSIZE = 2**21


class QuasiRandomState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    index: jax.Array  # () uint32, sequence index of the next point asked
    # Per-search scrambling, drawn in ``init`` (empty for LHS, whose
    # randomness comes from the ``ask`` key):
    #   sobol:  "directions" (dim, 32) uint32 generator columns after linear
    #           matrix scrambling; "shift" (dim,) uint32 digital shift.
    #   halton: "mult" (dim, 32) and "add" (dim, 32) uint32, the affine digit
    #           permutation of each digit position (identity when unscrambled).
    scrambling: dict


# ---------------------------------------------------------------- Sobol data
@functools.lru_cache(maxsize=1)
def _sobol_table() -> np.ndarray:
    """Unscrambled Sobol generator columns, shape ``(SOBOL_MAX_DIM, 32)`` uint32.

    Column ``j`` of dimension ``k`` is ``m_{j+1} * 2**(31 - j)``: the
    direction number ``m_{j+1} / 2**(j+1)`` as a 32-bit binary fraction.
    """
    path = importlib.resources.files("jaxhpo") / "data" / "sobol_directions.npz"
    with importlib.resources.as_file(path) as p, np.load(p) as f:
        poly = f["poly"].astype(np.uint64)
        vinit = f["vinit"].astype(np.uint64)
    num = len(poly)
    degree = np.zeros(num, np.int64)
    degree[1:] = np.floor(np.log2(poly[1:].astype(np.float64))).astype(np.int64)
    m = np.zeros((num, _BITS), np.uint64)
    rows = np.arange(num)
    for j in range(_BITS):
        # m_j = m_{j-s} ^ (m_{j-s} << s) ^ XOR_k a_k m_{j-k} << k  (Bratley & Fox),
        # vectorised over dimensions; the first s values come from the table.
        given = j < degree
        rec = m[rows, np.maximum(j - degree, 0)].copy()
        for k in range(1, vinit.shape[1] + 1):
            use = (~given) & (k <= degree)
            # Coefficient a_k of the polynomial; a_s (the constant term) is 1.
            a = (poly >> np.maximum(degree - k, 0).astype(np.uint64)) & np.uint64(1)
            term = (m[rows, np.maximum(j - k, 0)] << np.uint64(k)) * a
            rec = np.where(use, rec ^ term, rec)
        m[:, j] = np.where(given, vinit[:, min(j, vinit.shape[1] - 1)], rec)
    m[0, :] = 1  # the first dimension is the van der Corput sequence in base 2
    shifts = np.uint64(_BITS - 1) - np.arange(_BITS, dtype=np.uint64)
    return (m << shifts[None, :]).astype(np.uint32)


def _sobol_points(index: jax.Array, directions: jax.Array, shift: jax.Array) -> jax.Array:
    """Sobol points by the Gray-code formula.

    Point ``i`` is ``XOR_j [bit j of gray(i)] * directions[:, j]``, with
    ``gray(i) = i ^ (i >> 1)``: the Antonov-Saleev order, the order scipy
    and most libraries produce.

    Args:
      index: ``(n,)`` uint32 point indices.
      directions: ``(dim, 32)`` uint32 generator columns.
      shift: ``(dim,)`` uint32 digital shift.
    Returns:
      ``(n, dim)`` float32 in ``[0, 1)``.
    """
    gray = index ^ (index >> 1)
    bits = jnp.arange(_BITS, dtype=jnp.uint32)
    # 0 - bit is all ones when the bit is set: a branch-free select. One
    # XOR-reduction over the 32 digits (XLA fuses the selects into it) keeps
    # the program a few operations long; an unrolled loop made 32 copies.
    mask = jnp.uint32(0) - ((gray[:, None] >> bits[None, :]) & jnp.uint32(1))  # (n, 32)
    terms = mask[:, None, :] & directions[None, :, :]  # (n, dim, 32)
    acc = jax.lax.reduce(terms, jnp.uint32(0), jax.lax.bitwise_xor, (2,)) ^ shift[None, :]
    # The top 24 bits are exact in float32 and never round up to 1.
    return (acc >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


# Row p of a lower-triangular binary matrix over the 32 digits (digit 0 is the
# most significant bit): the digits 0..p-1 may be set, digit p always is.
_BELOW_DIAGONAL = np.array([sum(1 << (31 - k) for k in range(p)) for p in range(_BITS)], np.uint32)
_DIAGONAL = np.array([1 << (31 - p) for p in range(_BITS)], np.uint32)
_DIGIT_SHIFT = np.arange(_BITS - 1, -1, -1, dtype=np.uint32)  # digit p is bit 31 - p


def _linear_matrix_scramble(words: jax.Array, directions: jax.Array) -> jax.Array:
    """Multiply every generator column by a random lower-triangular binary matrix.

    One matrix per dimension, with a unit diagonal so it is invertible over
    GF(2). Output digit ``p`` mixes only input digits ``0..p`` (the more
    significant ones), so every net property of the sequence is kept.

    Args:
      words: ``(dim, 32)`` uint32 random bits; row ``p`` of dimension ``d``'s
        matrix is ``words[d, p]`` restricted to digits ``0..p-1``, plus digit ``p``.
      directions: ``(dim, 32)`` uint32 generator columns.
    Returns:
      ``(dim, 32)`` uint32 scrambled columns.
    """
    rows = (words & _BELOW_DIAGONAL) | _DIAGONAL  # (dim, 32 rows)
    # Digit p of column c is the parity of <row p, column c> over GF(2).
    dots = jax.lax.population_count(directions[:, :, None] & rows[:, None, :]) & jnp.uint32(1)
    return jnp.sum(dots << _DIGIT_SHIFT, axis=-1, dtype=jnp.uint32)  # distinct bits: sum == OR


# --------------------------------------------------------------- Halton data
def _first_primes(n: int) -> np.ndarray:
    """The first ``n`` primes, shape ``(n,)`` int64."""
    limit = max(16, int(n * (np.log(n + 2) + np.log(np.log(n + 2)))) + 8)  # above p_n
    sieve = np.ones(limit, bool)
    sieve[:2] = False
    for p in range(2, int(limit**0.5) + 1):
        if sieve[p]:
            sieve[p * p :: p] = False
    return np.flatnonzero(sieve)[:n]


def _inverse_mod(a: jax.Array, bases: jax.Array) -> jax.Array:
    """``a**-1 mod b`` for ``a`` in ``1 .. b - 1`` and 0 for 0 (a bijection of
    ``0 .. b - 1``), by Fermat: ``a**(b - 2)``, square and multiply over the
    16 bits of the exponent; products of two residues below ``2**16`` fit in
    uint32.

    Args:
      a: ``(n, dim)`` uint32 residues.
      bases: ``(dim,)`` uint32 primes below ``2**16``.
    """
    e = bases - jnp.uint32(2)
    r = jnp.ones_like(a)
    base = a
    for k in range(16):
        r = jnp.where((e >> k) & jnp.uint32(1), (r * base) % bases, r)
        base = (base * base) % bases
    return jnp.where(a == 0, jnp.uint32(0), r)


def _halton_points(index: jax.Array, bases: jax.Array, scale: jax.Array,
                   mult: jax.Array, add: jax.Array, shift: jax.Array | None = None) -> jax.Array:
    """Radical inverses of ``index`` with digit ``a_j`` mapped to ``(mult*a_j + add) mod b``;
    with ``shift``, the leading digit to ``(mult * inv(a_0 + shift) + add) mod b``.

    Every one of the ``D`` digit positions is mapped, leading zeros of the
    index included: a scrambled point is then uniform in ``[0, 1)`` up to
    ``b**-D``. An affine map of the leading digits of two dimensions keeps
    them on a lattice, which some random multipliers align badly: whole
    regions of a two-dimensional projection stay empty. Modular inversion,
    which no lattice survives, breaks that for the leading digit, the one
    that places a point at any resolution coarser than ``1 / b``.

    Args:
      index: ``(n,)`` uint32.
      bases: ``(dim,)`` uint32 primes.
      scale: ``(dim, D)`` float32, ``b**-(j+1)``.
      mult, add: ``(dim, D)`` uint32.
      shift: ``(dim,)`` uint32 in ``0 .. b - 1``, or ``None`` (unscrambled).
    Returns:
      ``(n, dim)`` float32 in ``[0, 1)``.
    """
    q = jnp.broadcast_to(index[:, None], (index.shape[0], bases.shape[0]))
    x = jnp.zeros(q.shape, jnp.float32)
    for j in range(scale.shape[1]):
        # Integer division by a per-column base is the costly operation here:
        # one for the quotient (the remainder from it), one for the scramble.
        nxt = q // bases
        digit = q - nxt * bases
        if j == 0 and shift is not None:
            digit = _inverse_mod((digit + shift) % bases, bases)
        digit = (mult[:, j] * digit + add[:, j]) % bases
        x = x + digit.astype(jnp.float32) * scale[:, j]
        q = nxt
    return jnp.minimum(x, _BELOW_ONE)


# ------------------------------------------------------------------ strategy
def _random_permutations(key: jax.Array, n: int, dim: int, jitter: bool) -> tuple[jax.Array, jax.Array | None]:
    """``dim`` independent uniformly random permutations of ``0..n-1``, ``(dim, n)`` int32,
    and ``(dim, n)`` uint32 random words (``None`` without ``jitter``).

    Each round sorts one uint32 per element: ``32 - b`` random bits above the
    element's current position (``b`` bits), a single-operand sort, which
    XLA:CPU runs several times faster than a sort of (key, key, index)
    tuples through a comparator. After ``R`` rounds the elements are ordered
    by ``R (32 - b)`` random bits, then by index; ``R`` is chosen for at least
    64 random bits, so that a tie (an order that is not uniform) has
    probability below ``n**2 / 2**65``.
    """
    b = max(1, (n - 1).bit_length())
    rounds = -(-64 // (32 - b))
    words = jax.random.bits(key, (rounds + (1 if jitter else 0), dim, n), jnp.uint32)
    position = jnp.broadcast_to(jnp.arange(n, dtype=jnp.uint32), (dim, n))
    random_high = jnp.uint32((0xFFFFFFFF << b) & 0xFFFFFFFF)
    perm = position.astype(jnp.int32)
    for r in range(rounds):
        order = jnp.sort((words[r] & random_high) | position, axis=-1) & jnp.uint32((1 << b) - 1)
        perm = jnp.take_along_axis(perm, order.astype(jnp.int32), axis=-1)
    return perm, (words[rounds] if jitter else None)


class QuasiRandom(Strategy):
    """Quasi-random search: a low-discrepancy sequence or Latin hypercubes.

    ``ask`` returns ``popsize`` points of shape ``(popsize, dim)`` in
    ``[0, 1)``; consecutive asks continue the same sequence (points
    ``i .. i + popsize - 1``), so ``G`` generations of ``popsize`` points are
    the first ``G * popsize`` points of one sequence. ``tell`` only tracks
    the best point. The index is a ``uint32`` and wraps after ``2**32``
    points.

    Methods:
      ``"sobol"``: the Sobol sequence with Joe & Kuo direction numbers, in
        Gray-code order; at most ``SOBOL_MAX_DIM`` (1024) dimensions. Any
        ``2**m`` consecutive points starting at a multiple of ``2**m`` are
        one point per interval of width ``2**-m`` in every dimension, so
        powers of two make the best ``popsize``. Scrambled by linear matrix
        scrambling (a random lower-triangular binary matrix per dimension)
        plus a random digital shift, both drawn in ``init``.
      ``"halton"``: radical inverses of the index in the first ``dim``
        primes; at most ``HALTON_MAX_DIM`` dimensions. Scrambled by random
        digit permutations: digit ``a`` at position ``j`` of dimension ``k``
        becomes ``(h * a + g) mod b_k``, with ``h`` uniform in ``1 .. b_k - 1``
        and ``g`` uniform in ``0 .. b_k - 1``, drawn in ``init`` for every
        dimension and digit position (base 2 reduces to a random digital
        shift); the leading digit becomes ``(h * inv(a + s) + g) mod b_k``,
        ``inv`` the inverse modulo ``b_k`` (0 for 0), ``s`` uniform too. The
        permutations break the correlations between dimensions with large
        bases that plain Halton suffers; the inversion keeps the leading
        digits of two dimensions off a lattice, on which an affine map
        alone leaves whole regions of some two-dimensional projections
        empty.
      ``"lhs"``: each ``ask`` is an independent Latin hypercube of
        ``popsize`` points: every dimension is cut into ``popsize`` equal
        strata holding one point each, with strata matched at random across
        dimensions (by the ``ask`` key). Scrambled, a point is uniform
        within its stratum; unscrambled it is the stratum's centre. At most
        ``2**21`` points per ask.

    Unscrambled Sobol points equal ``scipy.stats.qmc.Sobol(d,
    scramble=False)``'s bit for bit; unscrambled Halton points equal
    ``Halton(d, scramble=False)``'s to about 2 float32 ulps (their digits
    are summed in float32). Both start at the origin. Unscrambled Sobol and Halton ignore every key, so every search
    asks the same points.

    Args:
      space: the ``Space``.
      popsize: points per ``ask``.
      method: ``"sobol"``, ``"halton"`` or ``"lhs"``.
      scramble: randomise the points (recommended: it makes every point
        uniform in the cube and the estimate unbiased, and it removes the
        point at the origin).
    """

    adaptive = False  # tell never changes the points asked for
    independent_asks = True

    def __init__(self, space: Space, popsize: int, method: str = "sobol", scramble: bool = True):
        super().__init__(space, popsize)
        if not isinstance(method, str) or method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not isinstance(scramble, (bool, np.bool_)):
            raise TypeError(f"scramble must be a bool, got {scramble!r}")
        if method == "sobol" and self.dim > SOBOL_MAX_DIM:
            raise ValueError(
                f"QuasiRandom(method='sobol') supports dim <= {SOBOL_MAX_DIM} (the shipped "
                f"Joe-Kuo direction numbers), got dim={self.dim}"
            )
        if method == "halton" and self.dim > HALTON_MAX_DIM:
            raise ValueError(
                f"QuasiRandom(method='halton') supports dim <= {HALTON_MAX_DIM} "
                f"(prime bases below 2**16), got dim={self.dim}"
            )
        if method == "lhs" and self.popsize > _LHS_MAX_POPSIZE:
            raise ValueError(
                f"QuasiRandom(method='lhs') needs popsize <= 2**21 (strata resolvable in "
                f"float32), got popsize={self.popsize}"
            )
        self.method = method
        self.scramble = bool(scramble)
        # Static tables: numpy constants on the object, not settings.
        if method == "sobol":
            self._directions = _sobol_table()[: self.dim]
        elif method == "halton":
            bases = _first_primes(self.dim)
            # Digits a uint32 index has in the smallest base (2): 32.
            num_digits = _BITS
            powers = np.arange(1, num_digits + 1, dtype=np.float64)
            with np.errstate(under="ignore"):
                self._halton_scale = (bases[:, None].astype(np.float64) ** -powers).astype(np.float32)
            self._halton_bases = bases.astype(np.uint32)

    def _scrambling(self, key: jax.Array) -> dict:
        dim = self.dim
        if self.method == "sobol":
            directions = jnp.asarray(self._directions)
            if not self.scramble:
                return {"directions": directions, "shift": jnp.zeros((dim,), jnp.uint32)}
            # One draw (one random-bits kernel to compile): 32 matrix rows and
            # the shift per dimension.
            words = jax.random.bits(key, (dim, _BITS + 1), jnp.uint32)
            return {
                "directions": _linear_matrix_scramble(words[:, :_BITS], directions),
                "shift": words[:, _BITS],
            }
        if self.method == "halton":
            shape = self._halton_scale.shape
            if not self.scramble:
                return {"mult": jnp.ones(shape, jnp.uint32), "add": jnp.zeros(shape, jnp.uint32)}
            # h uniform in 1..b-1, g uniform in 0..b-1, by reducing 32 random
            # bits modulo the range: the bias is below b / 2**32 < 2**-16.
            words = jax.random.bits(key, (3,) + shape, jnp.uint32)
            bases = jnp.asarray(self._halton_bases)[:, None]
            mult = jnp.uint32(1) + words[0] % (bases - jnp.uint32(1))
            return {"mult": mult, "add": words[1] % bases, "shift": words[2, :, 0] % bases[:, 0]}
        return {}

    def _init(self, key, params):
        return QuasiRandomState(
            params=params,
            index=jnp.array(0, jnp.uint32),
            scrambling=self._scrambling(key),
            **initial_best(self.dim),
        )

    def _ask(self, key, state):
        n = self.popsize
        index = state.index + jnp.arange(n, dtype=jnp.uint32)
        if self.method == "sobol":
            s = state.scrambling
            x = _sobol_points(index, s["directions"], s["shift"])
        elif self.method == "halton":
            s = state.scrambling
            x = _halton_points(index, jnp.asarray(self._halton_bases),
                               jnp.asarray(self._halton_scale), s["mult"], s["add"], s.get("shift"))
        else:
            x = self._latin_hypercube(key)
        return x, state._replace(index=state.index + jnp.uint32(n))

    def _latin_hypercube(self, key: jax.Array) -> jax.Array:
        """``(popsize, dim)`` float32: column ``k`` has one point in each ``[p/n, (p+1)/n)``."""
        n, dim = self.popsize, self.dim
        strata_t, jitter = _random_permutations(key, n, dim, self.scramble)
        strata = strata_t.T
        if self.scramble:
            # The top 24 bits as a float32 in [0, 1), exactly.
            offset = (jitter.T >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)
        else:
            offset = jnp.full((n, dim), 0.5, jnp.float32)
        p = strata.astype(jnp.float32)
        nf = jnp.float32(n)
        x = (p + offset) / nf
        # float32 rounding of (p + offset) / n can land on or past a stratum
        # edge. XLA's division is not correctly rounded (up to 1.2 ulps off
        # the true quotient on a CPU, where 0.5 is IEEE's), so the computed
        # edges p/n and (p+1)/n are two floats from being strictly inside the
        # stratum: clamp to those (0 is exact and kept).
        up, down = jnp.float32(jnp.inf), jnp.float32(0.0)
        lo = jnp.where(strata == 0, 0.0, jnp.nextafter(jnp.nextafter(p / nf, up), up))
        hi = jnp.nextafter(jnp.nextafter((p + 1.0) / nf, down), down)
        return jnp.clip(x, lo, hi)
