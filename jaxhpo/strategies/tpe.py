"""Tree-structured Parzen estimator (TPE), fixed-shape and fully jitted.

TPE (Bergstra et al., 2011; the components as analysed by Watanabe, 2023)
splits the observations into a good set (the ``n_good`` lowest values) and a
bad set (the rest), fits a Parzen estimator (a kernel mixture) to each,
``l(x)`` to the good set and ``g(x)`` to the bad set, draws candidates from
``l`` and proposes the candidate with the largest ``log l(x) - log g(x)``,
which ranks candidates like expected improvement does.

Everything follows the defaults of Optuna's ``TPESampler`` (version 5):

* split: ``n_good = min(ceil(gamma * n), max_good)`` with ``gamma = 0.1`` and
  ``max_good = 25``, ``n`` the number of finite observations;
* weights: every good observation weighs 1; a set of ``m >= 25`` bad
  observations weighs its ``m - 25`` oldest by the ramp
  ``linspace(1/m, 1, m - 25)`` and its newest 25 by 1 (Optuna's
  ``default_weights``, applied to each set by trial order);
* a prior component (weight ``prior_weight = 1``): centred in the cube with
  the whole range as bandwidth, uniform over categories;
* bandwidths ("magic clip"): per coordinate, the distance to the farther of
  the two neighbouring observations of the set (the cube faces count as
  neighbours), except that with ``consider_endpoints=False`` the extreme
  observations only look inwards; clipped to ``[1 / min(100, m + 2), 1]``.
  ``bandwidth="scott"`` instead gives every kernel
  ``0.2 * max(m, 1) ** (-1 / (dim + 4))`` (Optuna < 4's multivariate rule,
  after Falkner et al., 2018), clipped alike;
* ``n_ei_candidates = 24`` candidates drawn from ``l``; ``n_startup = 10``
  startup points before the model takes over.

Coordinates, in the cube (a log-float is already in log space there):

* float: Gaussians truncated to ``[0, 1]``;
* int: the same truncated Gaussians, discretised: the probability of a value
  is the mass of its bin (``[0, 1]`` is cut into the dimension's bins, as
  ``Space.decode`` cuts it); samples are moved to their bin's centre. On a
  linear scale these are Optuna's bins and centres. On a log scale they are
  not: a value ``v``'s bin is ``[log v, log(v + 1))`` with its kernel at the
  bin's middle, where Optuna's is ``[log(v - 1/2), log(v + 1/2)]`` centred
  at ``log v``, so the prior and the kernels put their mass about half a
  value higher (``Int(1, 5, log=True)``'s prior: 0.38 on 1 against Optuna's
  0.46);
* categorical: Optuna's Aitchison-Aitken-like kernel: an observation with
  category ``c`` puts ``(b + [k == c]) / (1 + K b)`` on category ``k`` with
  ``b = prior_weight / (m + 1)``.

Conditional parameters: each parameter's marginal (``multivariate=False``)
is Optuna's per-parameter estimator: the observations that make the
parameter inactive have no weight in it, the age weights (the ramp past 25
observations) count the ``m`` in which it is active, and so do its
bandwidth floor ``1 / min(100, m + 2)`` and the categorical ``b``; an
inactive value is no neighbour in that coordinate's bandwidths (it was
never evaluated). Product kernels (``multivariate=True``) keep every
observation: where its own values make a parameter inactive, its kernel is
the prior's in that coordinate (centre 1/2, width 1, uniform over
categories). Optuna's multivariate TPE instead models only the parameters
every trial has, and samples the others independently. The joint kernels
are kept on purpose: a conditional parameter is then chosen together with
the branch that makes it active. On a three-branch problem built to trap
searches in a near-optimal branch (``benchmarks/conditional_search.py``),
they end 100 evaluations in the wrong branch in 17% of 64 seeds, against
59% for the independent marginals and Optuna's 57%.

Ties: observations of equal value in a numeric coordinate (an ``Int``,
most often) are ordered by age, so that of a run of
equal values the oldest and newest take the wide bandwidths and the others
the floor. Optuna orders them by NumPy's default sort, which is not stable
(with NumPy 2 on x86, not even for a dozen values); in product kernels (``multivariate=True``) the two
then give the wide bandwidths to different observations, and the joint
densities differ (up to a factor of about 5 on an ``Int(1, 5)`` with 40
observations). A coordinate's own density is the same while the
observations weigh alike (fewer than 25); past that, Optuna's age ramp
weighs them apart, and which tied observation takes a wide bandwidth moves
it a little too (0.05 in log density on an ``Int(0, 4)`` with 30
observations). Optuna's order being NumPy's unstable one, neither is the
reference.

``multivariate=False`` (the classic, independent TPE) models and proposes
each coordinate on its own: 24 candidates per coordinate, the best per
coordinate. ``multivariate=True`` uses product kernels over all coordinates
(one mixture component per observation) and scores whole candidates
(Falkner et al., 2018; Optuna's ``multivariate=True``, its default for one
objective since version 5).

Fixed shapes: observations live in a buffer of ``capacity`` rows with a
count; rows at or beyond the count are padding, and every estimator masks
them out, so nothing changes shape or recompiles as the buffer fills. Each
``ask`` costs the same at any count: ``O(capacity * n_ei_candidates * dim)``
for the bad set's densities (the good set's estimator holds only its at most
``max_good`` rows) and no sort (``tell`` keeps the buffer's orders). When the buffer
is full, ``tell`` keeps ``capacity`` of the stored and the new rows: failed
ones in the share they make up there, the most recent, and the best of the
successful ones for the rest (``_buffer.kept_rows``: keeping only the best
forgot every failure, and proposals went back to failing regions); below
capacity this is exactly TPE on every observation.

Failed evaluations (``+inf``) never enter the good set and do not count in
``n``; they stay in the bad set, which steers proposals away from regions
that fail.

Batches (``popsize > 1``): every row draws its own candidates; with
``constant_liar=True`` (Optuna's default) the points already chosen for the
earlier rows of the batch join the bad set as pending observations (weight 1
each, bandwidth from their neighbours in the bad set), so later rows are
pushed away from them. A row still picks among its own candidates, all drawn
from the good density: in a space of a few configurations, where that density
sits on one, every candidate can be that one and a batch repeats it (a space
of 6: one batch of 6 held a single configuration), as Optuna's would.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr, ndtri

from ..space import Int, Space, log_int_centre, log_int_offset
from ._buffer import buffer_capacity, kept_rows
from ._checks import check_bool, check_choice, check_int, check_real
from .base import Strategy, check_cube_points, float32_values, initial_best

__all__ = [
    "TPE",
    "TPEState",
    "Parzen",
    "fit_parzen",
    "log_density",
    "sample_parzen",
    "split_good_bad",
    "num_good",
    "BANDWIDTHS",
    "STARTUPS",
]

BANDWIDTHS = ("optuna", "scott")
STARTUPS = ("sobol", "random")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Sort key of rows outside a set: above every cube coordinate.
_OUTSIDE = 2.0
# Optuna's default_weights: the newest 25 observations of a set weigh 1.
_FLAT_WEIGHTS = 25
# float32 products such as 0.1 * 30 may round just above an integer; shrink by
# a few ulps first so that ceil(gamma * n) is the exact-arithmetic value.
_CEIL_SHRINK = 1.0 - 2.0**-20
# Bins narrower than this many kernel widths: mass = density * width (a
# difference of two nearly equal CDF values would lose every digit).
_NARROW_BIN = 1e-3
# Elements of the (candidates, components, coordinates) table one map step holds.
_MAX_TABLE = 2**23


# ------------------------------------------------------------------ coordinates
class _Coords:
    """Static bookkeeping: which cube coordinates are float, int, categorical.

    Densities are computed per kind on gathered columns, in the order
    ``[floats, ints, categoricals]``; ``perm`` puts per-coordinate results
    back in space order.
    """

    def __init__(self, space: Space):
        kinds = space.kinds
        dims = list(space.dims.values())
        self.dim = space.dim
        self.fidx = np.array([j for j, k in enumerate(kinds) if k == "float"], np.int32)
        self.iidx = np.array([j for j, k in enumerate(kinds) if k == "int"], np.int32)
        self.cidx = np.array([j for j, k in enumerate(kinds) if k == "categorical"], np.int32)
        self.nidx = np.concatenate([self.fidx, self.iidx])  # numeric coordinates
        self.perm = np.argsort(np.concatenate([self.nidx, self.cidx])).astype(np.int32)
        ints = [dims[j] for j in self.iidx]
        self.int_card = np.array([d.cardinality for d in ints], np.float32)
        self.int_log = np.array([d.log for d in ints], bool)
        # log ints: Int.decode's parameters (neutral values for the others)
        self.int_low = np.array([d.low if d.log else 1 for d in ints], np.float32)
        self.int_top = np.array([d.high - d.low if d.log else 0 for d in ints], np.float32)
        self.int_span = np.array([math.log((d.high + 1) / d.low) if d.log else 1.0 for d in ints], np.float32)
        self.cat_card = np.array([dims[j].cardinality for j in self.cidx], np.float32)
        assert all(isinstance(dims[j], Int) for j in self.iidx)
        self.space = space
        self.conditional = any(d.when for d in dims)

    def active(self, x: jax.Array) -> jax.Array:
        """``(..., dim)`` bool: which coordinates of cube points ``x`` count (``Space.active``)."""
        act = self.space.active(self.space.decode(x))
        return jnp.stack([act[n] for n in self.space.names], axis=-1)

    @property
    def n_num(self) -> int:
        return len(self.nidx)

    def int_bins(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Centre and half-width in the cube of the bin holding each int coordinate.

        ``u`` has shape ``(..., n_int)``. Bins are those of ``Int.decode``
        (the same functions compute them, so a centre decodes to its
        integer): ``K`` equal bins, or for a log integer ``v`` the interval
        ``[log v, log(v + 1)]`` rescaled. The half-width is computed on its
        own (not as a difference of edges), so it stays exact in float32
        even for bins far narrower than the spacing of floats near 1.
        """
        k = jnp.asarray(self.int_card)
        idx = jnp.clip(jnp.floor(u * k), 0.0, k - 1.0)
        mid, half = (idx + 0.5) / k, 0.5 / k
        if self.int_log.any():
            low, span = self.int_low, self.int_span
            offset = log_int_offset(u, low, span, self.int_top)
            mid_log = log_int_centre(offset, low, span, self.int_top)
            half_log = 0.5 * jnp.log1p(1.0 / (low + offset)) / span
            mid = jnp.where(self.int_log, mid_log, mid)
            half = jnp.where(self.int_log, half_log, half)
        return mid, jnp.broadcast_to(half, mid.shape)

    def cat_index(self, u: jax.Array) -> jax.Array:
        """Category index (float32) of each categorical coordinate, ``(..., n_cat)``."""
        k = jnp.asarray(self.cat_card)
        return jnp.clip(jnp.floor(u * k), 0.0, k - 1.0)

    def snap(self, x: jax.Array) -> jax.Array:
        """Move int and categorical coordinates of ``x`` ``(..., dim)`` to their bin centres."""
        if len(self.iidx):
            mid, _ = self.int_bins(x[..., self.iidx])
            x = x.at[..., self.iidx].set(mid)
        if len(self.cidx):
            c = self.cat_index(x[..., self.cidx])
            x = x.at[..., self.cidx].set((c + 0.5) / jnp.asarray(self.cat_card))
        return x

    def to_space_order(self, per_kind: jax.Array) -> jax.Array:
        """``(..., dim)`` in ``[floats, ints, categoricals]`` order -> space order."""
        return per_kind[..., self.perm]

    def to_kind_order(self, per_space: jax.Array) -> jax.Array:
        """``(..., dim)`` in space order -> ``[floats, ints, categoricals]`` order."""
        return per_space[..., np.concatenate([self.nidx, self.cidx])]


# ------------------------------------------------------------ Parzen estimator
class Parzen(NamedTuple):
    """A Parzen estimator over the cube: ``R`` kernels (the last one the prior).

    Attributes:
      mus: ``(R, dim)`` kernel centres (observations, int/categorical
        coordinates at their bin centres; the prior row is 0.5).
      sigmas: ``(R, n_num)`` bandwidths of the numeric (float, int) coordinates.
      log_z: ``(R, n_num)`` log of each truncated Gaussian's mass on ``[0, 1]``.
      log_w: ``(R,)`` unnormalised log weights; ``-inf`` for rows outside the set.
      log_norm: ``()`` log of the total weight.
      cat_hit, cat_miss: ``(R, n_cat)`` log probability a kernel gives its own
        category and any other one.
      members_num: ``(n_num, R - 1)`` the numeric coordinates of the set's
        rows, ``2.0`` elsewhere (pending kernels find their neighbours here).
      n: ``(dim,)`` int32 observations in the set that count in each
        coordinate: those whose own values make its parameter active (all of
        the set's in an unconditional space). Bandwidth floors and the
        categorical smoothing follow these counts, as Optuna's per-parameter
        estimators do.
      prior_weight: ``()`` the prior's weight.
      log_w_dim, log_norm_dim: ``(R, dim)`` and ``(dim,)``: each coordinate's
        own weights and their total for its marginal mixture, in a conditional
        space (``None`` otherwise: ``log_w`` and ``log_norm`` serve every
        coordinate). A row whose own values make a parameter inactive has no
        weight in that parameter's marginal, and the age ramp counts the rows
        in which it is active: Optuna's per-parameter estimator.
    """

    mus: jax.Array
    sigmas: jax.Array
    log_z: jax.Array
    log_w: jax.Array
    log_norm: jax.Array
    cat_hit: jax.Array
    cat_miss: jax.Array
    members_num: jax.Array
    n: jax.Array
    prior_weight: jax.Array
    log_w_dim: jax.Array | None = None
    log_norm_dim: jax.Array | None = None


def marginal_weights(p: Parzen, dim: int) -> tuple[jax.Array, jax.Array]:
    """``(log_w (R, dim), log_norm (dim,))`` of each coordinate's marginal mixture."""
    if p.log_w_dim is None:
        return jnp.broadcast_to(p.log_w[:, None], (p.log_w.shape[0], dim)), jnp.broadcast_to(p.log_norm, (dim,))
    return p.log_w_dim, p.log_norm_dim


def _active_weights(use: jax.Array, w: jax.Array, pw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-coordinate ``(log_w_dim (C + 1, dim), log_norm_dim (dim,))`` from row weights
    ``w`` ``(C, dim)`` of the rows that count in each coordinate, ``use`` ``(C, dim)``."""
    w = jnp.where(use, w, 0.0)
    log_w = jnp.where(use, jnp.log(jnp.where(use, w, 1.0)), -jnp.inf)
    log_w = jnp.concatenate([log_w, jnp.broadcast_to(jnp.log(pw), (1, use.shape[1]))])
    return log_w, jnp.log(w.sum(0) + pw)


def num_good(n: jax.Array, gamma: jax.Array, max_good: int) -> jax.Array:
    """Size of the good set for ``n`` finite observations: ``min(ceil(gamma * n), max_good)`` (int32)."""
    n = jnp.asarray(n, jnp.int32)
    k = jnp.ceil(jnp.float32(gamma) * n.astype(jnp.float32) * _CEIL_SHRINK).astype(jnp.int32)
    return jnp.clip(k, 0, jnp.minimum(n, max_good))


def split_good_bad(values: jax.Array, valid: jax.Array, gamma: jax.Array,
                   max_good: int, value_order: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Good and bad rows of a buffer.

    Args:
      values: ``(C,)`` observed values (``+inf`` for failures).
      valid: ``(C,)`` which rows hold observations.
      value_order: optional ``(C,)`` rows by value, finite valid rows first
        (the strategy keeps one up to date); sorted here when ``None``.
    Returns:
      ``(good, bad)``, boolean ``(C,)``: the ``num_good(#finite)`` lowest
      finite values (ties: the lower row, or ``value_order``'s), and every
      other valid row.
    """
    finite = valid & jnp.isfinite(values)
    k = num_good(finite.sum(dtype=jnp.int32), gamma, max_good)
    order = value_order
    if order is None:
        order = jnp.argsort(jnp.where(finite, values, jnp.inf), stable=True).astype(jnp.int32)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(values.shape[0], dtype=order.dtype))
    good = finite & (rank < k)
    return good, valid & ~good


def _age_order(number: jax.Array, valid: jax.Array) -> jax.Array:
    """Rows oldest first, rows outside ``valid`` last: ``(C,)`` int32."""
    big = jnp.iinfo(jnp.int32).max
    return jnp.argsort(jnp.where(valid, number, big), stable=True).astype(jnp.int32)


def _coordinate_order(x_num: jax.Array, valid: jax.Array, number: jax.Array) -> jax.Array:
    """Per numeric coordinate, rows by (value, age), rows outside ``valid`` last: ``(n_num, C)`` int32.

    Ties (common for integers) are broken by age so that bandwidths do not
    depend on where rows sit in the buffer. Sorting runs along the last,
    contiguous axis.
    """
    keys = jnp.where(valid[None, :], x_num.T, _OUTSIDE)
    age = jnp.broadcast_to(jnp.where(valid, number, jnp.iinfo(jnp.int32).max)[None, :], keys.shape)
    iota = jax.lax.broadcasted_iota(jnp.int32, keys.shape, 1)
    return jax.lax.sort((keys, age, iota), dimension=1, num_keys=2)[2]


def _default_weights(member: jax.Array, age_order: jax.Array) -> jax.Array:
    """Optuna's ``default_weights`` for the rows of one set, by age; 0 outside. ``(C,)``.

    ``age_order`` lists rows oldest first (it may hold non-members anywhere).
    """
    m = member.sum(dtype=jnp.int32)
    in_order = member[age_order]
    age_sorted = jnp.cumsum(in_order, dtype=jnp.int32) - 1  # 0 = the set's oldest
    age = jnp.zeros_like(age_sorted).at[age_order].set(age_sorted)
    mf, af = m.astype(jnp.float32), age.astype(jnp.float32)
    n_ramp = m - _FLAT_WEIGHTS  # the oldest m - 25 get linspace(1/m, 1, m - 25)
    step = (1.0 - 1.0 / jnp.maximum(mf, 1.0)) / jnp.maximum(n_ramp - 1, 1).astype(jnp.float32)
    ramp = 1.0 / jnp.maximum(mf, 1.0) + af * step
    w = jnp.where((m >= _FLAT_WEIGHTS) & (age < n_ramp), ramp, 1.0)
    return jnp.where(member, w, 0.0)


def _min_sigma(n: jax.Array, magic_clip: bool) -> jax.Array:
    if not magic_clip:
        return jnp.float32(1e-12)
    return 1.0 / jnp.minimum(100.0, n.astype(jnp.float32) + 2.0)


def _scott_sigma(n: jax.Array, dim: int) -> jax.Array:
    return 0.2 * jnp.maximum(n, 1).astype(jnp.float32) ** (-1.0 / (dim + 4))


def _log_trunc_mass(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    # mu lies in [0, 1], so [0, 1] holds the kernel's centre and at least a
    # third of its mass: a plain CDF difference is accurate.
    return jnp.log(ndtr((1.0 - mu) / sigma) - ndtr(-mu / sigma))


def _neighbour_sigmas(x_num: jax.Array, member: jax.Array, order: jax.Array,
                      consider_endpoints: bool, member_num: jax.Array | None = None) -> jax.Array:
    """Optuna's per-kernel bandwidth for the set ``member``, ``(C, n_num)``.

    Each member's bandwidth is the larger gap to its neighbouring members
    (the faces 0 and 1 when it has none on a side); with
    ``consider_endpoints=False`` the smallest and largest members take their
    inner gap. ``order`` ``(n_num, C)`` sorts all rows per coordinate; the
    neighbours of a member come from running max/min of member positions
    along it, so no sort is needed per set. Non-member rows get garbage.
    ``member_num`` ``(C, n_num)``: the set per coordinate, where rows count
    in some coordinates only (inactive parameters).
    """
    c = order.shape[1]
    s = jnp.take_along_axis(x_num.T, order, axis=1)  # (n_num, C) sorted coordinates
    if member_num is None:
        ms = member[order]
    else:
        ms = jnp.take_along_axis(member_num.T, order, axis=1)
    n = ms.sum(1, dtype=jnp.int32, keepdims=True)  # members per coordinate
    pos = jax.lax.broadcasted_iota(jnp.int32, order.shape, 1)
    prev_incl = jax.lax.cummax(jnp.where(ms, pos, -1), axis=1)
    next_incl = jax.lax.cummin(jnp.where(ms, pos, c), axis=1, reverse=True)
    prev = jnp.concatenate([jnp.full((order.shape[0], 1), -1, jnp.int32), prev_incl[:, :-1]], axis=1)
    nxt = jnp.concatenate([next_incl[:, 1:], jnp.full((order.shape[0], 1), c, jnp.int32)], axis=1)
    left = jnp.where(prev >= 0, jnp.take_along_axis(s, jnp.maximum(prev, 0), axis=1), 0.0)
    right = jnp.where(nxt < c, jnp.take_along_axis(s, jnp.minimum(nxt, c - 1), axis=1), 1.0)
    sig = jnp.maximum(s - left, right - s)
    if not consider_endpoints:
        # The extreme members ignore the faces and take their inner gap.
        sig = jnp.where((prev < 0) & (n >= 2), right - s, sig)
        sig = jnp.where((nxt >= c) & (n >= 2), s - left, sig)
    rows = jax.lax.broadcasted_iota(jnp.int32, order.shape, 0)
    return jnp.zeros_like(s).at[rows, order].set(sig).T


def fit_parzen(coords: _Coords, x: jax.Array, member: jax.Array, number: jax.Array,
               prior_weight: jax.Array, *, consider_endpoints: bool = False,
               magic_clip: bool = True, bandwidth: str = "optuna",
               order: jax.Array | None = None, age_order: jax.Array | None = None,
               weights: jax.Array | None = None) -> Parzen:
    """Fit the Parzen estimator of one set of buffer rows.

    Args:
      coords: the space's ``_Coords``.
      x: ``(C, dim)`` buffer of cube points (int/categorical at bin centres).
      member: ``(C,)`` rows in the set; every other row is ignored whatever it holds.
      number: ``(C,)`` int32 trial numbers (age order, for the weights).
      prior_weight: ``()`` weight of the prior kernel, ``> 0``.
      order: optional ``(n_num, C)`` rows per numeric coordinate with the
        members in (value, number) order (non-members may sit anywhere), e.g.
        the strategy's running order of all valid rows; sorted here when ``None``.
      age_order: optional ``(C,)`` rows with the members in ``number`` order
        (non-members anywhere); sorted here when ``None``.
      weights: optional ``(C,)`` members' weights in place of Optuna's age
        ramp (MOTPE's hypervolume weights); a conditional parameter's
        marginal takes those of the members in which it is active.
    Returns:
      a ``Parzen`` with ``C + 1`` kernels.
    """
    c, dim = x.shape
    pw = jnp.asarray(prior_weight, jnp.float32)
    x = jnp.where(member[:, None], x, 0.5)  # padding may hold anything, even NaN
    if weights is not None:
        w = jnp.where(member, weights, 0.0)
    else:
        if age_order is None:
            age_order = _age_order(number, member)
        w = _default_weights(member, age_order)
    log_w = jnp.concatenate([jnp.where(member, jnp.log(jnp.where(member, w, 1.0)), -jnp.inf),
                             jnp.log(pw)[None]])
    log_norm = jnp.log(w.sum() + pw)
    mus = jnp.concatenate([x, jnp.full((1, dim), 0.5, jnp.float32)])

    xn = x[:, coords.nidx]
    # Which coordinates each kernel's own point makes count (None: all, unconditionally),
    # and per numeric coordinate the members that count in it.
    on = coords.active(mus) if coords.conditional else None
    member_dim = None if on is None else member[:, None] & on[:-1]  # (C, dim) the rows counting in each
    member_num = None if on is None else member_dim[:, coords.nidx]
    if on is None:
        n = jnp.full((dim,), member.sum(dtype=jnp.int32))
    else:
        n = member_dim.sum(0, dtype=jnp.int32)
    n_num = n[coords.nidx]
    if bandwidth == "scott" or not coords.n_num:
        sig = jnp.broadcast_to(_scott_sigma(n_num, dim), xn.shape)
    else:
        if order is None:
            order = _coordinate_order(xn, member, number)
        sig = _neighbour_sigmas(xn, member, order, consider_endpoints, member_num)
    sig = jnp.clip(sig, _min_sigma(n_num, magic_clip), 1.0)
    sig = jnp.where(member[:, None], sig, 1.0)
    sigmas = jnp.concatenate([sig, jnp.ones((1, xn.shape[1]), jnp.float32)])
    hit, miss = _cat_logp(coords, n[coords.cidx], pw)
    kc = len(coords.cidx)
    prior = -jnp.log(jnp.asarray(coords.cat_card))
    cat_hit = jnp.concatenate([jnp.broadcast_to(hit, (c, kc)), prior[None]])
    cat_miss = jnp.concatenate([jnp.broadcast_to(miss, (c, kc)), prior[None]])
    mus, sigmas, cat_hit, cat_miss = _prior_where_inactive(coords, on, mus, sigmas, cat_hit, cat_miss)
    log_z = _log_trunc_mass(mus[:, coords.nidx], sigmas)
    members_num = jnp.where((member[:, None] if member_num is None else member_num).T, xn.T, _OUTSIDE)
    log_w_dim = log_norm_dim = None
    if on is not None:
        # Each parameter's marginal: its active rows, with their own age ramp
        # (or the weights given).
        if weights is None:
            w_dim = jax.vmap(_default_weights, in_axes=(1, None), out_axes=1)(member_dim, age_order)
        else:
            w_dim = jnp.broadcast_to(w[:, None], member_dim.shape)
        log_w_dim, log_norm_dim = _active_weights(member_dim, w_dim, pw)
    return Parzen(mus, sigmas, log_z, log_w, log_norm, cat_hit, cat_miss, members_num, n, pw,
                  log_w_dim, log_norm_dim)


def _prior_where_inactive(coords: _Coords, on: jax.Array | None, mus: jax.Array, sigmas: jax.Array,
                          cat_hit: jax.Array, cat_miss: jax.Array) -> tuple[jax.Array, ...]:
    """Kernels' coordinates whose parameter their own point makes inactive (``on``
    ``(R, dim)`` False; ``None``: none) take the prior kernel's (centre 1/2, width 1;
    uniform over categories): an inactive value was never evaluated and says
    nothing (Optuna's TPE leaves such trials out of that parameter's
    estimator). Rows ``(R, ...)`` of each field; a prior row is replaced by itself."""
    if on is None:
        return mus, sigmas, cat_hit, cat_miss
    prior = -jnp.log(jnp.asarray(coords.cat_card))
    return (jnp.where(on, mus, 0.5), jnp.where(on[:, coords.nidx], sigmas, 1.0),
            jnp.where(on[:, coords.cidx], cat_hit, prior), jnp.where(on[:, coords.cidx], cat_miss, prior))


def _cat_logp(coords: _Coords, n: jax.Array, pw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Log probabilities ``(n_cat,)`` an observation kernel puts on its own and on another category."""
    k = jnp.asarray(coords.cat_card)
    base = pw / (n.astype(jnp.float32) + 1.0)
    denom = jnp.log1p(k * base)
    return jnp.log1p(base) - denom, jnp.log(base) - denom


def _log_bin_mass(zmid: jax.Array, zhalf: jax.Array) -> jax.Array:
    """``log(Phi(zmid + zhalf) - Phi(zmid - zhalf))``, stable in both tails and for narrow bins."""
    za, zb = zmid - zhalf, zmid + zhalf
    # Work on the side of 0 where the CDF is small: mirror bins right of 0.
    flip = za > 0.0
    lo = jnp.where(flip, -zb, za)
    hi = jnp.where(flip, -za, zb)
    log_hi = log_ndtr(hi)
    diff = log_ndtr(lo) - log_hi  # <= 0
    wide = log_hi + jnp.log(-jnp.expm1(jnp.minimum(diff, -1e-30)))
    narrow = -0.5 * zmid * zmid - _HALF_LOG_2PI + jnp.log(2.0 * zhalf)
    return jnp.where(2.0 * zhalf < _NARROW_BIN, narrow, wide)


def _log_kernels(coords: _Coords, p: Parzen, x: jax.Array) -> jax.Array:
    """Per-coordinate log kernel values, ``(m, dim, R)`` in ``[floats, ints, categoricals]`` order.

    Kernels run along the last axis so that the reductions over them are
    over contiguous memory.

    Args:
      x: ``(m, dim)`` cube points (int/categorical anywhere in their bin).
    """
    parts = []
    nf, ni = len(coords.fidx), len(coords.iidx)
    if nf:
        mu, inv = p.mus[:, coords.fidx].T, 1.0 / p.sigmas[:, :nf].T  # (nf, R)
        const = jnp.log(inv) - _HALF_LOG_2PI - p.log_z[:, :nf].T
        z = (x[:, coords.fidx, None] - mu[None]) * inv[None]
        parts.append(const[None] - 0.5 * z * z)
    if ni:
        mu, inv = p.mus[:, coords.iidx].T, 1.0 / p.sigmas[:, nf:].T
        mid, half = coords.int_bins(x[:, coords.iidx])
        zmid = (mid[:, :, None] - mu[None]) * inv[None]
        parts.append(_log_bin_mass(zmid, half[:, :, None] * inv[None]) - p.log_z[:, nf:].T[None])
    if len(coords.cidx):
        same = coords.cat_index(x[:, coords.cidx])[:, :, None] == coords.cat_index(p.mus[:, coords.cidx]).T[None]
        parts.append(jnp.where(same, p.cat_hit.T[None], p.cat_miss.T[None]))
    return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _log_mixture(coords: _Coords, p: Parzen, x: jax.Array, joint: bool) -> jax.Array:
    """Unnormalised log mixture density: ``(m,)`` if ``joint`` else ``(m, dim)`` (space order)."""
    logk = _log_kernels(coords, p, x)
    if joint:
        return jax.nn.logsumexp(logk.sum(1) + p.log_w[None], axis=-1)
    log_w, _ = marginal_weights(p, coords.dim)
    out = jax.nn.logsumexp(logk + coords.to_kind_order(log_w).T[None], axis=-1)
    return coords.to_space_order(out)


def log_density(coords: _Coords, p: Parzen, x: jax.Array, joint: bool = True) -> jax.Array:
    """Log density of the estimator at ``x`` ``(m, dim)``.

    Float coordinates are densities on ``[0, 1]``; int and categorical ones
    are probabilities of the bin ``x`` falls in. ``joint=True``: the product
    kernel mixture, ``(m,)``. ``joint=False``: each coordinate's marginal
    mixture, ``(m, dim)`` (their sum is the independent TPE's density).
    """
    out = _log_mixture(coords, p, x, joint)
    return out - (p.log_norm if joint else marginal_weights(p, coords.dim)[1])


def sample_parzen(coords: _Coords, p: Parzen, key: jax.Array, m: int, joint: bool = True) -> jax.Array:
    """``m`` draws ``(m, dim)`` from the estimator; int/categorical at bin centres.

    ``joint=True`` draws one kernel per point for all coordinates; ``False``
    one kernel per point and coordinate (the product of the marginals).
    """
    dim = coords.dim
    # One draw of uniforms serves every choice below: each jax.random call
    # is its own counter-based generator to compile, and a sample is small.
    u = jax.random.uniform(key, (4, m, dim), jnp.float32)
    # Kernels by inverse CDF of the mixture weights (O(R) work, not O(m R)).
    last = p.log_w.shape[0] - 1
    if joint:
        cdf = jnp.cumsum(jnp.exp(p.log_w - jnp.max(p.log_w)))
        comp = jnp.minimum(jnp.searchsorted(cdf, u[0, :, 0] * cdf[-1], side="right", method="compare_all"), last)
        rows = jnp.broadcast_to(comp[:, None], (m, dim))
    elif p.log_w_dim is None:
        cdf = jnp.cumsum(jnp.exp(p.log_w - jnp.max(p.log_w)))
        rows = jnp.minimum(jnp.searchsorted(cdf, u[0] * cdf[-1], side="right", method="compare_all"), last)
    else:  # each coordinate's own weights
        cdf = jnp.cumsum(jnp.exp(p.log_w_dim - jnp.max(p.log_w_dim, axis=0)), axis=0)  # (R, dim)
        find = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right", method="compare_all"), in_axes=1, out_axes=1)
        rows = jnp.minimum(find(cdf, u[0] * cdf[-1]), last)
    mu = p.mus[rows, jnp.arange(dim)]  # (m, dim)
    x = mu
    nn = coords.n_num
    if nn:
        num_rows = rows[:, coords.nidx]
        sig = p.sigmas[num_rows, jnp.arange(nn)]
        mun = mu[:, coords.nidx]
        # Truncated normal on [0, 1] by inverse CDF; the kernel's centre lies
        # inside, so lo <= 1/2 <= hi and neither end is a far tail.
        lo, hi = ndtr(-mun / sig), ndtr((1.0 - mun) / sig)
        z = ndtri(jnp.clip(lo + u[1][:, coords.nidx] * (hi - lo), 1e-7, 1.0 - 1e-7))
        x = x.at[:, coords.nidx].set(jnp.clip(mun + sig * z, 0.0, 1.0))
    kc = len(coords.cidx)
    if kc:
        cat_rows = rows[:, coords.cidx]
        cols = jnp.arange(kc)
        # p(k) = miss + [k == own] (hit - miss): keep the own category with
        # probability hit - miss, else draw uniformly.
        take_p = jnp.exp(p.cat_hit[cat_rows, cols]) - jnp.exp(p.cat_miss[cat_rows, cols])
        take = u[2][:, coords.cidx] < take_p
        card = jnp.asarray(coords.cat_card)
        uni = jnp.minimum(jnp.floor(u[3][:, coords.cidx] * card), card - 1.0)
        own = coords.cat_index(mu[:, coords.cidx])
        cat = jnp.where(take, own, uni)
        x = x.at[:, coords.cidx].set((cat + 0.5) / card)
    return coords.snap(x)


def _pending_parzen(coords: _Coords, bad: Parzen, z: jax.Array, consider_endpoints: bool,
                    magic_clip: bool, bandwidth: str, dim: int) -> Parzen:
    """Kernels for pending points ``z`` ``(p, dim)`` as extra members of the bad set.

    Their bandwidths follow the bad set's rule against its members, as if
    each were one more member (Optuna's constant liar): the larger gap to a
    neighbouring member, the inner one for a point beyond every member when
    ``consider_endpoints`` is False, at least the set's floor. The existing
    kernels keep theirs; weights are left to the caller.
    """
    n_num = bad.n[coords.nidx]
    zn = z[:, coords.nidx]
    if bandwidth == "scott" or not coords.n_num:
        sig = jnp.broadcast_to(_scott_sigma(n_num, dim), zn.shape)
    else:
        # Nearest members below and above each pending coordinate (O(p C)).
        mem = bad.members_num[None]  # (1, n_num, C); non-members hold 2.0
        q = zn[:, :, None]
        left = jnp.max(jnp.where(mem <= q, mem, 0.0), axis=-1)
        right = jnp.minimum(jnp.min(jnp.where(mem > q, mem, 2.0), axis=-1), 1.0)
        sig = jnp.maximum(zn - left, right - zn)
        if not consider_endpoints:
            has_left = jnp.any(mem <= q, axis=-1)
            has_right = jnp.any((mem > q) & (mem <= 1.0), axis=-1)
            sig = jnp.where(has_right & ~has_left, right - zn, sig)
            sig = jnp.where(has_left & ~has_right, zn - left, sig)
    sig = jnp.clip(sig, _min_sigma(n_num, magic_clip), 1.0)
    hit, miss = _cat_logp(coords, bad.n[coords.cidx], bad.prior_weight)
    pn = z.shape[0]
    kc = len(coords.cidx)
    on = coords.active(z) if coords.conditional else None
    mus, sig, cat_hit, cat_miss = _prior_where_inactive(
        coords, on, z, sig, jnp.broadcast_to(hit, (pn, kc)), jnp.broadcast_to(miss, (pn, kc)))
    return Parzen(
        mus=mus, sigmas=sig, log_z=_log_trunc_mass(mus[:, coords.nidx], sig),
        log_w=jnp.zeros((pn,), jnp.float32), log_norm=jnp.log(jnp.float32(pn)),
        cat_hit=cat_hit, cat_miss=cat_miss,
        members_num=bad.members_num, n=bad.n, prior_weight=bad.prior_weight,
        # In a conditional space a pending point counts in the marginals of
        # the parameters it makes active.
        log_w_dim=None if on is None else jnp.where(on, 0.0, -jnp.inf),
        log_norm_dim=None if on is None else jnp.log(on.sum(0).astype(jnp.float32)),
    )


# ---------------------------------------------------------------- strategy
class TPEState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    x: jax.Array  # (capacity, dim) observed cube points, int/categorical at bin centres
    y: jax.Array  # (capacity,) their values; +inf for failures (and padding)
    number: jax.Array  # (capacity,) int32 trial number of each row (its age)
    count: jax.Array  # () int32 rows in use; rows >= count are padding
    told: jax.Array  # () int32 observations told so far (may exceed capacity)
    # Running orders of the valid rows (padding rows after them, ascending),
    # kept up to date by `tell` so that `ask` needs no sort:
    order: jax.Array  # (n_num, capacity) int32, rows per numeric coordinate by (value, age)
    value_order: jax.Array  # (capacity,) int32, rows by (value, age)
    age_order: jax.Array  # (capacity,) int32, rows by age
    startup: Any  # QuasiRandomState of the Sobol startup design, or () for random


def _check_gamma(v):
    return check_real("gamma", v, 0.0, 1.0, low_open=True)


def _check_prior_weight(v):
    return check_real("prior_weight", v, 0.0, math.inf, low_open=True)


class TPE(Strategy):
    """Tree-structured Parzen estimator with Optuna's defaults (see the module docstring).

    ``ask`` returns ``(popsize, dim)`` cube points: startup points (Sobol or
    uniform) for the first ``n_startup`` observations, then TPE proposals.
    Int and categorical coordinates are returned at their bin centres.

    Args:
      space: the ``Space``.
      popsize: points per ``ask``.
      capacity: rows of the observation buffer, ``>= popsize``; every
        ``ask`` costs ``O(capacity)`` whatever the count. Default 1024
        (``popsize`` where that is larger).
      multivariate: joint product kernels (``True``, the default, as
        Optuna's for one objective since version 5) or independent
        per-coordinate TPE (``False``). At 200 evaluations the joint model's
        median regret is a third of the independent one's on Hartmann-6 and
        two thirds on Ackley-10 (``benchmarks/README.md``).
      n_startup: successful (finite) observations gathered by the startup
        design first; failed ones do not count, as in Optuna.
      n_ei_candidates: candidates drawn from ``l(x)`` per proposal.
      gamma: default fraction of finite observations in the good set, in
        ``(0, 1]`` (``params["gamma"]``).
      max_good: cap on the good set's size.
      prior_weight: default weight of the prior kernel, ``> 0``
        (``params["prior_weight"]``).
      consider_endpoints: let the faces of the cube widen the extreme kernels.
      consider_magic_clip: floor bandwidths at ``1 / min(100, m + 2)``
        (else at ``1e-12``).
      bandwidth: ``"optuna"`` (neighbour rule) or ``"scott"``.
      constant_liar: in a batch, count earlier rows' points as pending bad
        observations.
      startup: ``"sobol"`` (scrambled Sobol points) or ``"random"``.
    """

    independent_asks = True  # before a tell, each ask draws afresh from the same model

    def __init__(self, space: Space, popsize: int = 1, capacity: int | None = None, *,
                 multivariate: bool = True, n_startup: int = 10, n_ei_candidates: int = 24,
                 gamma: float = 0.1, max_good: int = 25, prior_weight: float = 1.0,
                 consider_endpoints: bool = False, consider_magic_clip: bool = True,
                 bandwidth: str = "optuna", constant_liar: bool = True, startup: str = "sobol"):
        super().__init__(space, popsize)
        self.capacity = buffer_capacity(capacity, self.popsize, 1024)
        self.multivariate = check_bool("multivariate", multivariate)
        self.n_startup = check_int("n_startup", n_startup, 0)
        self.n_ei_candidates = check_int("n_ei_candidates", n_ei_candidates, 1)
        self.gamma = _check_gamma(gamma)
        self.max_good = check_int("max_good", max_good, 1)
        self.prior_weight = _check_prior_weight(prior_weight)
        self.consider_endpoints = check_bool("consider_endpoints", consider_endpoints)
        self.consider_magic_clip = check_bool("consider_magic_clip", consider_magic_clip)
        self.bandwidth = check_choice("bandwidth", bandwidth, BANDWIDTHS)
        self.constant_liar = check_bool("constant_liar", constant_liar)
        self.startup = check_choice("startup", startup, STARTUPS)
        self._coords = _Coords(space)
        if self.startup == "sobol":
            from .quasirandom import SOBOL_MAX_DIM, QuasiRandom

            if space.dim > SOBOL_MAX_DIM:
                raise ValueError(f"TPE startup='sobol' supports dim <= {SOBOL_MAX_DIM}, got dim={space.dim}; "
                                 "use startup='random'")
            self._sobol = QuasiRandom(space, self.popsize, method="sobol")

    def default_params(self):
        return {"gamma": jnp.float32(self.gamma), "prior_weight": jnp.float32(self.prior_weight)}

    def param_checks(self):
        return {"gamma": _check_gamma, "prior_weight": _check_prior_weight}

    def _init(self, key, params):
        c, d = self.capacity, self.dim
        startup = self._sobol.init(key) if self.startup == "sobol" else ()
        return TPEState(
            params=params,
            x=jnp.full((c, d), 0.5, jnp.float32),
            y=jnp.full((c,), jnp.inf, jnp.float32),
            number=jnp.zeros((c,), jnp.int32),
            count=jnp.array(0, jnp.int32),
            told=jnp.array(0, jnp.int32),
            order=jnp.broadcast_to(jnp.arange(c, dtype=jnp.int32), (self._coords.n_num, c)),
            value_order=jnp.arange(c, dtype=jnp.int32),
            age_order=jnp.arange(c, dtype=jnp.int32),
            startup=startup,
            **initial_best(d),
        )

    def warm_start(self, state: TPEState, x: jax.Array, values: jax.Array) -> TPEState:
        """Replace the buffer by earlier observations (jit-able), e.g. trials run elsewhere.

        Args:
          x: ``(n, dim)`` cube points, ``n <= capacity``.
          values: ``(n,)`` their values (non-finite: failed).
        Returns:
          the state with those ``n`` observations (numbered ``0 .. n-1``,
          oldest first), its best point, and the startup design counted as
          done for ``n`` of its points.
        """
        check_cube_points(x, "warm_start")
        x = jnp.asarray(x, jnp.float32)
        values = float32_values(values)
        n, c = x.shape[0], self.capacity
        if x.shape != (n, self.dim) or values.shape != (n,) or n > c:
            raise ValueError(f"warm_start: x must be (n, {self.dim}) and values (n,) with n <= capacity "
                             f"({c}); got {x.shape} and {values.shape}")
        values = jnp.where(jnp.isfinite(values), values, jnp.inf)
        xs = state.x.at[:n].set(self._coords.snap(jnp.clip(x, 0.0, 1.0)))
        ys = jnp.full((c,), jnp.inf, jnp.float32).at[:n].set(values)
        number = jnp.arange(c, dtype=jnp.int32)
        valid = number < n
        i = jnp.argmin(ys)
        better = ys[i] < state.best_value
        return state._replace(
            x=xs, y=ys, number=number, count=jnp.int32(n), told=jnp.int32(n),
            order=_coordinate_order(xs[:, self._coords.nidx], valid, number),
            value_order=jnp.argsort(jnp.where(valid, ys, jnp.inf), stable=True).astype(jnp.int32),
            age_order=number,
            best_x=jnp.where(better, xs[i], state.best_x),
            best_value=jnp.where(better, ys[i], state.best_value),
        )

    # --------------------------------------------------------------- model
    def _fit(self, state: TPEState, member: jax.Array) -> Parzen:
        return fit_parzen(self._coords, state.x, member, state.number, state.params["prior_weight"],
                          consider_endpoints=self.consider_endpoints,
                          magic_clip=self.consider_magic_clip, bandwidth=self.bandwidth,
                          order=state.order, age_order=state.age_order)

    def estimators(self, state: TPEState) -> tuple[Parzen, Parzen]:
        """``(l, g)``: the Parzen estimators of the good and bad sets of ``state``'s buffer.

        ``l`` has ``min(max_good, capacity) + 1`` kernels (the good rows are
        the first entries of ``value_order``), ``g`` has ``capacity + 1``.
        """
        valid = jnp.arange(self.capacity) < state.count
        good, bad = split_good_bad(state.y, valid, state.params["gamma"], self.max_good, state.value_order)
        # The good set never exceeds max_good rows: fitting it on those rows
        # alone keeps the cost of l (fit, draws, densities) independent of
        # the capacity, instead of masking a capacity-sized buffer.
        rows = state.value_order[:min(self.max_good, self.capacity)]
        l_est = fit_parzen(self._coords, state.x[rows], good[rows], state.number[rows],
                           state.params["prior_weight"], consider_endpoints=self.consider_endpoints,
                           magic_clip=self.consider_magic_clip, bandwidth=self.bandwidth)
        return l_est, self._fit(state, bad)

    def _pick(self, cand: jax.Array, score: jax.Array) -> jax.Array:
        """Best candidate ``(dim,)`` of ``cand`` ``(m, dim)`` by ``score`` ``(m,)`` or per coordinate ``(m, dim)``."""
        if self.multivariate:
            return cand[jnp.argmax(score)]
        return jnp.take_along_axis(cand, jnp.argmax(score, axis=0)[None], axis=0)[0]

    def _propose(self, key: jax.Array, state: TPEState) -> jax.Array:
        """``(popsize, dim)`` TPE proposals."""
        return self.propose_from(key, *self.estimators(state))

    def propose_from(self, key: jax.Array, l_est: Parzen, g_est: Parzen) -> jax.Array:
        """``(popsize, dim)`` proposals from the estimators ``l_est`` (good) and ``g_est`` (bad).

        Each row draws ``n_ei_candidates`` from ``l_est`` and keeps the best
        by ``log l - log g`` (per coordinate unless multivariate); with
        ``constant_liar``, earlier rows join ``g_est`` as pending points.
        """
        coords, joint, m = self._coords, self.multivariate, self.n_ei_candidates

        def candidates(k):
            cand = sample_parzen(coords, l_est, k, m, joint)
            return cand, log_density(coords, l_est, cand, joint), _log_mixture(coords, g_est, cand, joint)

        keys = jax.random.split(key, self.popsize)
        table = m * g_est.log_w.shape[0] * self.dim
        batch = max(1, min(self.popsize, _MAX_TABLE // max(table, 1)))
        cand, log_l, log_g = jax.lax.map(candidates, keys, batch_size=batch)

        g_norm = g_est.log_norm if joint else marginal_weights(g_est, self.dim)[1]
        if self.popsize == 1 or not self.constant_liar:
            return jax.vmap(self._pick)(cand, log_l - (log_g - g_norm))

        p = self.popsize

        def row(carry, inp):
            pending, j = carry
            cand_j, log_l_j, log_g_j = inp
            pk = _pending_parzen(coords, g_est, pending, self.consider_endpoints,
                                 self.consider_magic_clip, self.bandwidth, self.dim)
            # Only the rows chosen before this one are pending.
            earlier = jnp.arange(p) < j
            pk = pk._replace(log_w=jnp.where(earlier, pk.log_w, -jnp.inf), log_norm=jnp.log(j.astype(jnp.float32)))
            if pk.log_w_dim is not None:
                on = earlier[:, None] & (pk.log_w_dim == 0.0)
                pk = pk._replace(log_w_dim=jnp.where(on, 0.0, -jnp.inf),
                                 log_norm_dim=jnp.log(on.sum(0).astype(jnp.float32)))
            pend_norm = pk.log_norm if joint else marginal_weights(pk, self.dim)[1]
            log_norm = jnp.logaddexp(g_norm, pend_norm)
            log_pend = _log_mixture(coords, pk, cand_j, joint)
            score = log_l_j - (jnp.logaddexp(log_g_j, log_pend) - log_norm)
            x = self._pick(cand_j, score)
            return (pending.at[j].set(x), j + 1), x

        init = (jnp.full((p, self.dim), 0.5, jnp.float32), jnp.array(0, jnp.int32))
        _, xs = jax.lax.scan(row, init, (cand, log_l, log_g))
        return xs

    # ------------------------------------------------------------ protocol
    def _ask(self, key, state):
        return self.ask_with(key, state, self._propose, jnp.isfinite(state.y))

    def ask_with(self, key, state, propose, succeeded):
        """``ask`` with the model's proposals from ``propose(key, state) -> (popsize, dim)``.

        ``state`` needs ``count`` and ``startup``; ``succeeded`` ``(capacity,)``
        says which buffer rows hold successful observations. The startup
        design runs until ``n_startup`` observations succeeded (failed ones
        do not count, as in Optuna), ``propose`` only after; a full buffer
        ends the startup whatever it holds.
        """
        k_start, k_model = jax.random.split(key)
        ok = succeeded & (jnp.arange(self.capacity) < state.count)
        done = jnp.where(state.count >= self.capacity, self.n_startup, jnp.sum(ok, dtype=jnp.int32))
        is_start = done + jnp.arange(self.popsize) < self.n_startup
        if self.startup == "sobol":
            x_start, sub = self._sobol.ask(k_start, state.startup)
            # Only advance the sequence when its points are used.
            startup = jax.tree_util.tree_map(lambda a, b: jnp.where(is_start[0], a, b), sub, state.startup)
        else:
            x_start, startup = self.space.sample(k_start, self.popsize), state.startup
        x_start = self._coords.snap(x_start)
        # Startup rows are a prefix of the batch; the model runs only when the last row needs it.
        x_model = jax.lax.cond(
            is_start[-1],
            lambda: jnp.zeros((self.popsize, self.dim), jnp.float32),
            lambda: propose(k_model, state),
        )
        x = jnp.where(is_start[:, None], x_start, x_model)
        return x, state._replace(startup=startup)

    def _tell(self, state, x, values):
        c, p = self.capacity, self.popsize
        x = self._coords.snap(jnp.clip(x, 0.0, 1.0))
        numbers = state.told + jnp.arange(p, dtype=jnp.int32)
        state = jax.lax.cond(state.count + p <= c, self._append, self._keep_best,
                             state, x, values, numbers)
        return state._replace(count=jnp.minimum(state.count + p, c), told=state.told + p)

    def _append(self, state, x, values, numbers):
        """Room left: new rows go to slots ``count ..``; the orders are merged in O(C p), no sort."""
        slots = state.count + jnp.arange(self.popsize, dtype=jnp.int32)
        xn = x[:, self._coords.nidx]

        def merge(order, keys_old, keys_new):
            return _merge_order(order, keys_old, keys_new, state.count)

        keys_old = jnp.take_along_axis(state.x[:, self._coords.nidx].T, state.order, axis=1)
        order = jax.vmap(merge)(state.order, keys_old, xn.T)
        value_order = merge(state.value_order, state.y[state.value_order], values)
        # New rows are the youngest: they follow every valid row in age.
        age_order = state.age_order.at[slots].set(slots)
        return state._replace(
            x=state.x.at[slots].set(x), y=state.y.at[slots].set(values),
            number=state.number.at[slots].set(numbers),
            order=order, value_order=value_order, age_order=age_order,
        )

    def _keep_best(self, state, x, values, numbers):
        """Full (or about to be): keep the best ``capacity`` rows and the most
        recent failures in their share (``_buffer.kept_rows``), then sort the
        orders afresh."""
        c, p = self.capacity, self.popsize
        all_x = jnp.concatenate([state.x, x])
        all_y = jnp.concatenate([state.y, values])
        all_n = jnp.concatenate([state.number, numbers])
        real = jnp.concatenate([jnp.arange(c) < state.count, jnp.ones((p,), bool)])
        ok = real & jnp.isfinite(all_y)
        kept = kept_rows(jnp.lexsort((all_n, all_y, ~ok)), ok, real & ~ok, all_n, c)
        # Kept rows first, best first (stable: older first among ties; failures last).
        keep = jnp.lexsort((all_n, all_y, ~kept))[:c]
        x_k, y_k, n_k = all_x[keep], all_y[keep], all_n[keep]
        valid = jnp.arange(c) < jnp.minimum(state.count + p, c)
        return state._replace(
            x=x_k, y=y_k, number=n_k,
            order=_coordinate_order(x_k[:, self._coords.nidx], valid, n_k),
            # `keep` already sorts the kept rows by (value, age).
            value_order=jnp.arange(c, dtype=jnp.int32),
            age_order=_age_order(n_k, valid),
        )


def _merge_order(order: jax.Array, keys_old: jax.Array, keys_new: jax.Array, count: jax.Array) -> jax.Array:
    """Insert new rows (slots ``count ..``) into a running order without sorting.

    Args:
      order: ``(C,)`` valid rows (the first ``count`` entries) by (key, age),
        then the padding rows ``count, count + 1, ...`` in ascending order.
      keys_old: ``(C,)`` the key of each entry of ``order``.
      keys_new: ``(p,)`` keys of the new rows, which are younger than every
        valid row and go to slots ``count .. count + p - 1``.
    Returns:
      the order ``(C,)`` of the ``count + p`` valid rows, padding after.
    """
    c, p = order.shape[0], keys_new.shape[0]
    valid = jnp.arange(c) < count
    # An old entry moves right by the number of new keys strictly below it
    # (on ties the older, old row stays first).
    shift = (keys_new[None, :] < keys_old[:, None]).sum(axis=1, dtype=jnp.int32)
    pos_old = jnp.where(valid, jnp.arange(c, dtype=jnp.int32) + shift, c)  # c: dropped
    # A new row lands after every old key <= it and every earlier new key <= it.
    before_old = (valid[None, :] & (keys_old[None, :] <= keys_new[:, None])).sum(axis=1, dtype=jnp.int32)
    i = jnp.arange(p)
    before_new = ((keys_new[None, :] < keys_new[:, None])
                  | ((keys_new[None, :] == keys_new[:, None]) & (i[None, :] < i[:, None]))).sum(axis=1, dtype=jnp.int32)
    pos_new = before_old + before_new
    # Padding entry j is row j; the new rows' slots are taken from it.
    out = jnp.arange(c, dtype=jnp.int32)
    out = out.at[pos_old].set(order, mode="drop")
    return out.at[pos_new].set(count + i.astype(jnp.int32))
