"""Variation operators shared by the genetic algorithm and NSGA-II, and fast random draws.

The operators work on cube points of mixed spaces (``MixedCoords``): SBX or
uniform crossover on continuous genes, uniform crossover on integer and
categorical genes, and typed mutation that keeps discrete genes on bin
centres. They take their randomness as uint32 words (see ``unit_from_bits``),
so one ``random_bits`` call per generation feeds selection and variation.

``random_bits`` and ``uniform`` return exactly what ``jax.random.bits`` and
``jax.random.uniform`` return for the same key; ``normal`` transforms the
same uniforms as ``jax.random.normal`` (see ``erfinv``). For threefry keys (JAX's default) they evaluate the
Threefry-2x32 hash as straight-line array code: XLA fuses it into a single
kernel, whereas JAX lowers it on the CPU as a rolled loop whose
per-iteration copies cost several times the hash itself (for a small
generation, more than the rest of the step). Other key types use ``jax.random``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._materialize import materialize
from ._checks import check_real
from ._mixed import MixedCoords, bit, reflect, unit_from_bits

__all__ = [
    "CROSSOVERS", "VARIATION_CHECKS", "variation_params", "words_per_gene", "crossover", "mutate",
    "vary", "random_bits", "uniform", "normal", "erfinv", "normal_from_unit",
]

CROSSOVERS = ("sbx", "uniform")


# ------------------------------------------------------------ settings
def _check_rate(name):
    return lambda v: check_real(name, v, 0.0, 1.0)


def _check_sigma(v):
    return check_real("mutation_sigma", v, 0.0, 1.0, low_open=True)


def _check_eta(v):
    return check_real("sbx_eta", v, 0.0, 1e3)


# The operators' numeric settings (``state.params``) and their checks.
VARIATION_CHECKS = {
    "crossover_rate": _check_rate("crossover_rate"),
    "mutation_rate": _check_rate("mutation_rate"),
    "mutation_sigma": _check_sigma,
    "sbx_eta": _check_eta,
}


def variation_params(strategy) -> dict:
    """``default_params`` of a strategy holding the four variation settings as attributes."""
    return {name: jnp.float32(getattr(strategy, name)) for name in VARIATION_CHECKS}


# ------------------------------------------------------------ operators
def words_per_gene(mixed: MixedCoords) -> int:
    """Random words ``vary`` needs per gene: 2, or 3 when the space has categoricals."""
    return 3 if mixed.categorical.any() else 2


def crossover(mixed: MixedCoords, kind: str, w_child, w_gene, a, b, params):
    """Children of parents ``a``, ``b`` (both ``(n, dim)``), shape ``(n, dim)``.

    With probability ``params["crossover_rate"]`` per child: continuous genes
    by simulated binary crossover (``kind="sbx"``, distribution index
    ``params["sbx_eta"]``, each gene crossing with probability 1/2) or
    uniformly (``kind="uniform"``); integer and categorical genes always
    uniformly (each gene from either parent), so they stay on bin centres.
    Otherwise the child is ``a``.

    Random words: ``w_child`` ``(n, 1)`` (cross or not); ``w_gene``
    ``(n, dim)``: bit 0 picks the parent of a gene (and whether an SBX gene
    crosses), bit 1 the SBX side, bits 2-15 the SBX spread.
    """
    do = unit_from_bits(w_child) < params["crossover_rate"]  # one decision per child
    take_b = bit(w_gene, 0)
    uniform_child = jnp.where(take_b, b, a)
    if kind == "sbx":
        # SBX (Deb & Agrawal, 1995): the spread factor beta has the
        # polynomial density of index eta; the child is one of the pair
        # 0.5 * ((1 +- beta) a + (1 -+ beta) b), chosen at random per gene.
        eta = params["sbx_eta"]
        v = unit_from_bits(w_gene, 14, shift=2)
        # One exp/log pair per gene: XLA's CPU pow is far slower.
        base = jnp.where(v <= 0.5, 2.0 * v, 0.5 / (1.0 - v))
        beta = jnp.exp(jnp.log(base) / (eta + 1.0))
        side = jnp.where(bit(w_gene, 1), 1.0, -1.0)
        sbx = 0.5 * ((1.0 + side * beta) * a + (1.0 - side * beta) * b)
        # Genes cross with probability 1/2, as in the standard operator.
        sbx = jnp.clip(jnp.where(take_b, sbx, a), 0.0, 1.0)
        crossed = jnp.where(jnp.asarray(mixed.continuous), sbx, uniform_child)
    else:
        crossed = uniform_child
    return jnp.where(do, crossed, a)


def mutate(mixed: MixedCoords, w_gene, w_step, w_cat, x, params):
    """Typed per-gene mutation of ``x`` ``(n, dim)``, shape ``(n, dim)``.

    Each gene mutates with probability ``params["mutation_rate"]``: a
    continuous gene moves by ``N(0, mutation_sigma^2)`` (reflected into
    ``[0, 1]``); an integer gene moves by ``max(1, round(|N(0, 1)| *
    mutation_sigma * cardinality))`` values up or down (always to a
    different value when there are two or more); a categorical gene switches
    to one of the *other* categories, uniformly, at its bin centre.

    Random words ``(n, dim)``: the top 16 bits of ``w_gene`` decide whether a
    gene mutates (``crossover`` uses its low 16 bits); the top 23 bits of
    ``w_step`` give the Gaussian draw and its bit 0 an integer's direction;
    ``w_cat`` (``None`` without categoricals) picks the new category.
    """
    do = unit_from_bits(w_gene, 16) < params["mutation_rate"]
    z = normal_from_unit(unit_from_bits(w_step))
    sigma = params["mutation_sigma"]
    moved = reflect(x + sigma * z)
    if mixed.has_discrete:
        idx = mixed.index(x)
        sign = jnp.where(bit(w_step, 0), 1.0, -1.0)
        size = jnp.round(jnp.abs(z) * sigma * jnp.asarray(mixed.card))
        new_idx = jnp.where(jnp.asarray(mixed.integer), mixed.step_index(idx, sign, size), idx)
        if w_cat is not None:
            new_idx = jnp.where(jnp.asarray(mixed.categorical),
                                mixed.other_category(unit_from_bits(w_cat), idx), new_idx)
        moved = jnp.where(jnp.asarray(mixed.discrete), mixed.centre(new_idx, x), moved)
    return jnp.where(do, moved, x)


def vary(mixed: MixedCoords, kind: str, w_child, w_genes, a, b, params):
    """``mutate(crossover(a, b))``: ``(n, dim)`` children of parents ``a``, ``b``.

    Random words: ``w_child`` ``(n, 1)`` and ``w_genes``
    ``(n, words_per_gene(mixed), dim)`` (gene words, step words, then
    category words when there are categoricals).
    """
    w_cat = w_genes[:, 2] if w_genes.shape[1] == 3 else None
    crossed = crossover(mixed, kind, w_child, w_genes[:, 0], a, b, params)
    return mutate(mixed, w_genes[:, 0], w_genes[:, 1], w_cat, crossed, params)


# ------------------------------------------------------------ random draws
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _threefry_key(key):
    """The ``(2,)`` uint32 data of a single threefry key whose bits the fast path reproduces, else None."""
    if not jax.config.jax_threefry_partitionable:
        return None
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != () or jax.random.key_impl(key) != "threefry2x32":
            return None
        return jax.random.key_data(key)
    if key.dtype == jnp.uint32 and key.shape == (2,) and jax.config.jax_default_prng_impl == "threefry2x32":
        return key  # a raw key of the default implementation
    return None


def _threefry(data, shape):
    """Threefry-2x32 of the counters ``0 .. prod(shape) - 1``: the two output words, each ``shape``."""
    k1, k2 = data[0], data[1]
    ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
    # jax.random's counters (partitionable layout): high word 0, low word the flat index.
    x0 = jnp.broadcast_to(k1, shape)
    x1 = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape) + k2
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))) ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def random_bits(key, shape) -> jax.Array:
    """uint32 words of ``shape``, equal to ``jax.random.bits(key, shape, jnp.uint32)``."""
    shape = tuple(shape)
    data = _threefry_key(key)
    if data is None or math.prod(shape) >= 2**32:
        return jax.random.bits(key, shape, jnp.uint32)
    x0, x1 = _threefry(data, shape)
    return materialize(x0 ^ x1)


def uniform(key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """Draws in ``[minval, maxval)``, equal to ``jax.random.uniform(key, shape, dtype, minval, maxval)``."""
    shape, dtype = tuple(shape), jnp.dtype(dtype)
    data = _threefry_key(key)
    if data is None or math.prod(shape) >= 2**32 or dtype not in (jnp.float32, jnp.float64):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    return materialize(_uniform(data, shape, dtype, minval, maxval))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _uniform(data, shape, dtype, minval, maxval):
    # Compiled as a unit, as jax.random.uniform is, so that eager calls round alike.
    x0, x1 = _threefry(data, shape)
    finfo = jnp.finfo(dtype)
    if dtype == jnp.float64:
        bits = (x0.astype(jnp.uint64) << jnp.uint64(32)) | x1.astype(jnp.uint64)
        one = np.array(1.0, np.float64).view(np.uint64)
    else:
        bits = x0 ^ x1
        one = np.array(1.0, np.float32).view(np.uint32)
    # jax.random.uniform's map: random mantissa bits with the exponent of 1.0.
    mant = (bits >> np.asarray(finfo.bits - finfo.nmant, bits.dtype)) | np.asarray(one, bits.dtype)
    floats = jax.lax.bitcast_convert_type(mant, dtype) - jnp.asarray(1.0, dtype)
    lo, hi = jnp.asarray(minval, dtype), jnp.asarray(maxval, dtype)
    return jnp.maximum(lo, floats * (hi - lo) + lo)


def normal(key, shape, dtype=jnp.float32) -> jax.Array:
    """Standard normal draws from the uniforms of ``jax.random.normal(key, shape, dtype)``.

    float64 draws equal ``jax.random.normal``'s. float32 draws go through
    ``erfinv`` instead of ``jax.lax.erf_inv``; they differ from
    ``jax.random.normal``'s by less than 1e-5 relative.
    """
    shape, dtype = tuple(shape), jnp.dtype(dtype)
    data = _threefry_key(key)
    if data is None or math.prod(shape) >= 2**32 or dtype not in (jnp.float32, jnp.float64):
        return jax.random.normal(key, shape, dtype)
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype), dtype=dtype)
    # Only the normals are stored (below); the uniforms feed them alone.
    u = _uniform(data, shape, dtype, lo, 1.0)
    inv = erfinv(u) if dtype == jnp.float32 else jax.lax.erf_inv(u)
    return materialize(jnp.asarray(np.sqrt(2), dtype) * inv)


# Giles (2010), "Approximating the erfinv function": single-precision
# polynomials in w = -log(1 - x^2), for w < 5 and beyond.
_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                   -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def erfinv(x: jax.Array) -> jax.Array:
    """Inverse error function of float32 ``x`` in ``(-1, 1)``, elementwise.

    The same approximation as ``jax.lax.erf_inv`` for float32, with
    ``log((1 - x) (1 + x))`` in place of ``log1p(-x^2)``: XLA's CPU ``log1p``
    costs several times its ``log``, and the product is exact enough here
    (``1 - x`` is exact for ``|x| >= 1/2``, where the tail needs it): on a
    dense grid it stays within 3e-7 relative of the exact inverse.
    """
    w = -jnp.log((1.0 - x) * (1.0 + x))
    central = w - 2.5
    tail = jnp.sqrt(jnp.maximum(w, 5.0)) - 3.0
    p_c = jnp.full_like(x, _ERFINV_CENTRAL[0])
    p_t = jnp.full_like(x, _ERFINV_TAIL[0])
    for a, b in zip(_ERFINV_CENTRAL[1:], _ERFINV_TAIL[1:]):
        p_c = a + p_c * central
        p_t = b + p_t * tail
    return jnp.where(w < 5.0, p_c, p_t) * x


def normal_from_unit(u: jax.Array) -> jax.Array:
    """Standard normal draws from float32 ``U(0, 1)`` draws ``u`` (inverse CDF), elementwise."""
    t = jnp.clip(2.0 * u - 1.0, -1.0 + 2.0**-23, 1.0 - 2.0**-23)
    return jnp.float32(math.sqrt(2.0)) * erfinv(t)
