"""Pareto dominance, non-dominated sorting, crowding distance and hypervolume.

Every objective is minimised. All functions take a batch of objective
vectors ``values`` of shape ``(n, m)`` and are fixed-shape, jit-able and
vmap-able: dominance is an ``(n, n)`` boolean matrix (fine for populations up
to a few thousand), and the only loops are a ``lax.while_loop`` over fronts
and Python loops over the ``m`` objectives, never over points.

A row is *valid* when its ``mask`` entry is true (default: all) and every
value in it is finite. Invalid rows are failed evaluations: they get rank
``n`` (larger than any real rank, which is at most ``n - 1``), never belong to
a front and add no hypervolume.

Constraints follow the convention of Deb (2000): constraint values ``g`` of
shape ``(n, c)``, a row is feasible when every ``g <= 0``, and its total
violation is ``sum(max(g, 0))``. Under constraint domination every feasible
row beats every infeasible one, infeasible rows are ordered by total
violation, and feasible rows by Pareto dominance.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._keys import check_key
from ._scalars import host_ints_as_floats
from ._traced import is_traced

__all__ = [
    "dominates",
    "dominance_matrix",
    "nondominated_rank",
    "constrained_nondominated_rank",
    "total_violation",
    "crowding_distance",
    "pareto_front_mask",
    "hypervolume",
    "hypervolume_contributions",
]


# ------------------------------------------------------------------ checks
def _asarray(x: Any, name: str, what: str) -> jax.Array:
    """``jnp.asarray(x)``, or a ``TypeError`` naming ``name`` where ``x`` holds no numbers."""
    try:
        a = jnp.asarray(x)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {type(x).__name__}") from None
    if not (jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_):  # (bfloat16's NumPy kind is "V")
        raise TypeError(f"{name} must be {what}, got dtype {a.dtype}")
    return a


def _as_values(values: Any, name: str = "values", columns: str = "objective") -> jax.Array:
    values = _asarray(host_ints_as_floats(values), name, f"an array of numbers of shape (n, num_{columns}s)")
    if values.ndim != 2:
        raise ValueError(f"{name} must have shape (n, num_{columns}s), got shape {tuple(values.shape)}")
    if values.shape[1] < 1:
        raise ValueError(f"{name} needs at least one {columns} column, got shape {tuple(values.shape)}")
    if jnp.issubdtype(values.dtype, jnp.complexfloating) or values.dtype == jnp.bool_:
        raise TypeError(f"{name} must be real numbers, got dtype {values.dtype}")
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.float32)
    return values


def _as_mask(mask: Any, n: int, name: str = "mask") -> jax.Array:
    if mask is None:
        return jnp.ones((n,), bool)
    if not isinstance(mask, jax.core.Tracer):
        given = np.asarray(mask)  # (checked before a conversion to int32 could wrap 2**32 to 0)
        if given.dtype.kind in "iu" and not np.isin(given, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0 / 1 integers), got values other than 0 and 1")
    mask = _asarray(mask, name, f"a boolean array of shape ({n},)")
    if mask.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(mask.shape)}")
    if jnp.issubdtype(mask.dtype, jnp.integer):  # 0 / 1 flags (traced ones cannot be checked)
        return mask.astype(bool)
    if mask.dtype != jnp.bool_:  # a float mask (NaN, 0.5) has no one reading
        raise TypeError(f"{name} must be boolean (or 0 / 1 integers), got dtype {mask.dtype}")
    return mask


def _valid_rows(values: jax.Array, mask: Any) -> jax.Array:
    """``(n,)`` rows that count: in ``mask`` and finite in every objective."""
    return _as_mask(mask, values.shape[0]) & jnp.all(jnp.isfinite(values), axis=1)


# --------------------------------------------------------------- dominance
def dominates(a: jax.Array, b: jax.Array) -> jax.Array:
    """Whether ``a`` Pareto-dominates ``b`` (no worse everywhere, better somewhere).

    Args:
      a, b: arrays of shape ``(..., m)`` (broadcast against each other).
    Returns:
      boolean array of the broadcast shape without the last axis.
    """
    a = _asarray(host_ints_as_floats(a), "a", "objective values")
    b = _asarray(host_ints_as_floats(b), "b", "objective values")
    for name, x in (("a", a), ("b", b)):
        if x.ndim < 1 or jnp.issubdtype(x.dtype, jnp.complexfloating):
            raise TypeError(f"{name} must be real objective values of shape (..., m), got {x.dtype}{x.shape}")
    try:
        if a.shape[-1] != b.shape[-1]:
            raise ValueError
        jnp.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"a and b must broadcast against each other with one m, got shapes {a.shape} and "
                         f"{b.shape}") from None
    return jnp.all(a <= b, axis=-1) & jnp.any(a < b, axis=-1)


def dominance_matrix(values: jax.Array, mask: Any = None) -> jax.Array:
    """``D[i, j]``: valid row ``i`` Pareto-dominates valid row ``j``.

    Args:
      values: ``(n, m)`` objective values (minimised).
      mask: optional ``(n,)`` boolean (or 0 / 1 integers); rows outside it (and non-finite rows)
        neither dominate nor are dominated.
    Returns:
      ``(n, n)`` boolean.
    """
    values = _as_values(values)
    valid = _valid_rows(values, mask)
    # One objective at a time keeps the working set at (n, n) booleans
    # rather than an (n, n, m) broadcast.
    le = jnp.ones((values.shape[0],) * 2, bool)
    lt = jnp.zeros_like(le)
    for k in range(values.shape[1]):
        v = values[:, k]
        le = le & (v[:, None] <= v[None, :])
        lt = lt | (v[:, None] < v[None, :])
    return le & lt & valid[:, None] & valid[None, :]


# The loops below are compiled functions of their own: called op by op, their
# bodies (closures made in each call) would otherwise compile in every call.
@jax.jit
def _peel(dom: jax.Array, valid: jax.Array) -> jax.Array:
    """Front index of every valid row under the dominance relation ``dom``; ``n`` elsewhere.

    Repeatedly takes the rows that no remaining row dominates. Each front
    costs one ``(n,) @ (n, n)`` product that removes its dominance counts, and
    there are at most ``n`` fronts.
    """
    n = dom.shape[0]
    domf = dom.astype(jnp.float32)  # counts below 2**24 are exact in float32
    count = jnp.sum(domf, axis=0)
    rank0 = jnp.full((n,), n, jnp.int32)

    def cond(carry):
        _, _, left, _ = carry
        return jnp.any(left)

    def body(carry):
        rank, count, left, k = carry
        front = left & (count == 0)
        rank = jnp.where(front, k, rank)
        count = count - front.astype(jnp.float32) @ domf
        return rank, count, left & ~front, k + 1

    rank, _, _, _ = jax.lax.while_loop(cond, body, (rank0, count, valid, jnp.int32(0)))
    return rank


def nondominated_rank(values: jax.Array, mask: Any = None) -> jax.Array:
    """Non-dominated sorting: the Pareto front index of every row.

    Rank 0 is the set of valid rows no valid row dominates; rank ``r`` is the
    front left after removing ranks ``0..r-1`` (Deb et al., 2002). Equal rows
    share a rank.

    Args:
      values: ``(n, m)`` objective values, minimised.
      mask: optional ``(n,)`` boolean (or 0 / 1 integers) of rows that count.
    Returns:
      ``(n,)`` int32 ranks; rows outside ``mask`` or with a non-finite value
      get ``n``.
    """
    values = _as_values(values)
    return _peel(dominance_matrix(values, mask), _valid_rows(values, mask))


def violations_kept(g: jax.Array) -> jax.Array:
    """``g`` with every positive entry below the smallest normal number of
    its dtype (float32's, for a wider dtype: values are ranked in float32)
    raised to it: CPUs flush subnormals to zero in arithmetic and
    comparisons, and float32 holds no 1e-50, either of which would read a
    violation as satisfied (``<= 0``). Positive is decided on the bits,
    which no flushing changes (a flushed ``g`` reads as 0, below the bound)."""
    g = jnp.asarray(g)
    if not jnp.issubdtype(g.dtype, jnp.floating):
        return g
    ints = {1: jnp.int8, 2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[jnp.dtype(g.dtype).itemsize]
    tiny = jnp.asarray(jnp.finfo(g.dtype if jnp.finfo(g.dtype).bits <= 32 else jnp.float32).tiny, g.dtype)
    return jnp.where((jax.lax.bitcast_convert_type(g, ints) > 0) & (g < tiny), tiny, g)


def constraint_columns_kept(values: jax.Array, num_objectives: int) -> jax.Array:
    """``values`` ``(n, m + c)`` with ``violations_kept`` applied to its
    constraint columns (those past the ``m = num_objectives`` objectives)."""
    if values.ndim != 2 or values.shape[1] <= num_objectives:
        return values
    return jnp.concatenate([values[:, :num_objectives], violations_kept(values[:, num_objectives:])], axis=1)


def total_violation(constraints: jax.Array) -> jax.Array:
    """``sum(max(g, 0))`` per row of ``constraints`` ``(n, c)``; shape ``(n,)``.

    Zero exactly for feasible rows (every ``g <= 0``; a positive subnormal
    ``g`` is a violation, see ``violations_kept``). A row with a
    non-finite constraint value gets ``inf`` (failed); a finite row's sum
    stops at the dtype's largest value (the worst violation there is), so
    finite constraints never make a row read as failed.
    """
    g = violations_kept(_as_values(constraints, "constraints", "constraint"))
    viol = jnp.minimum(jnp.sum(jnp.maximum(g, 0.0), axis=1), jnp.finfo(g.dtype).max)
    return jnp.where(jnp.all(jnp.isfinite(g), axis=1), viol, jnp.inf)


def _dense_rank(x: jax.Array, valid: jax.Array) -> jax.Array:
    """0-based rank of ``x`` among the distinct values of valid entries (ties share)."""
    n = x.shape[0]
    key = jnp.where(valid, x, jnp.inf)
    order = jnp.argsort(key, stable=True)
    xs, vs = key[order], valid[order]
    new = jnp.concatenate([jnp.array([True]), xs[1:] != xs[:-1]])
    dense_sorted = jnp.cumsum(new & vs) - 1
    return jnp.zeros((n,), jnp.int32).at[order].set(dense_sorted.astype(jnp.int32))


def constrained_nondominated_rank(values: jax.Array, constraints: jax.Array, mask: Any = None) -> jax.Array:
    """Non-dominated sorting under constraint domination (Deb, 2000).

    Row ``i`` constraint-dominates row ``j`` when ``i`` is feasible and ``j``
    is not; or both are infeasible and ``i`` has the smaller total violation;
    or both are feasible and ``i`` Pareto-dominates ``j``. Hence every
    feasible row ranks before every infeasible one: feasible rows take their
    Pareto ranks ``0..F-1`` among feasible rows, and infeasible rows take
    ``F + (position of their total violation among the distinct violations
    of infeasible rows)``. This equals peeling fronts of the
    constraint-domination relation, at the cost of one sort for the
    infeasible part instead of one front per violation level.

    Args:
      values: ``(n, m)`` objective values, minimised.
      constraints: ``(n, c)`` constraint values, feasible when all ``<= 0``.
        ``c = 0`` means every row is feasible.
      mask: optional ``(n,)`` boolean (or 0 / 1 integers) of rows that count.
    Returns:
      ``(n,)`` int32 ranks; rows outside ``mask``, or with a non-finite
      objective or constraint value (failed evaluations), get ``n``.
    """
    values = _as_values(values)
    n = values.shape[0]
    constraints = _asarray(host_ints_as_floats(constraints), "constraints", f"an array of numbers of shape ({n}, num_constraints)")
    if constraints.ndim != 2 or constraints.shape[0] != n:
        raise ValueError(f"constraints must have shape ({n}, num_constraints), got {tuple(constraints.shape)}")
    valid = _valid_rows(values, mask)
    if constraints.shape[1] == 0:
        return nondominated_rank(values, valid)
    viol = total_violation(constraints)
    valid = valid & jnp.isfinite(viol)
    feasible = valid & (viol == 0.0)
    infeasible = valid & ~feasible
    rank_f = nondominated_rank(values, feasible)
    num_fronts = jnp.max(jnp.where(feasible, rank_f + 1, 0))
    rank_i = num_fronts + _dense_rank(viol, infeasible)
    return jnp.where(feasible, rank_f, jnp.where(infeasible, rank_i, n)).astype(jnp.int32)


# ---------------------------------------------------------------- crowding
def crowding_distance(values: jax.Array, ranks: jax.Array) -> jax.Array:
    """Crowding distance of every row within its front (Deb et al., 2002).

    For each objective, the rows of one front are sorted by that objective
    (ties by row index); the two ends get ``inf`` and every other row adds
    the gap between its two neighbours divided by the front's range in that
    objective (nothing when the range is zero). Fronts of one or two rows
    are all ends. Larger is lonelier, i.e. preferred.

    Args:
      values: ``(n, m)`` objective values.
      ranks: ``(n,)`` integer front index per row, e.g. from
        ``nondominated_rank``; rows with rank ``>= n`` (failed) get 0.
    Returns:
      ``(n,)`` float distances, the dtype of ``values``.
    """
    values = _as_values(values)
    n, m = values.shape
    if not isinstance(ranks, jax.core.Tracer):
        # On the host, before a conversion to int32 could wrap 2**32 to 0:
        # every rank >= n means failed, so it reads as n.
        given = np.asarray(ranks)
        if given.shape != (n,):
            raise ValueError(f"ranks must have shape ({n},), got {tuple(given.shape)}")
        if given.dtype.kind not in "iu":
            raise TypeError(f"ranks must be integer front indices, got dtype {given.dtype}")
        if n and given.min() < 0:
            raise ValueError(f"ranks must be front indices >= 0, got {given.min()}")
        ranks = np.minimum(given, n).astype(np.int32)
    ranks = jnp.asarray(ranks)
    if ranks.shape != (n,):
        raise ValueError(f"ranks must have shape ({n},), got {tuple(ranks.shape)}")
    if not jnp.issubdtype(ranks.dtype, jnp.integer):
        raise TypeError(f"ranks must be integer front indices, got dtype {ranks.dtype}")
    seg = jnp.clip(ranks.astype(jnp.int32), 0, n)
    counted = seg < n
    v = jnp.where(counted[:, None] & jnp.isfinite(values), values, 0.0)
    lo = jax.ops.segment_min(v, seg, num_segments=n + 1)
    hi = jax.ops.segment_max(v, seg, num_segments=n + 1)
    # Halves: a front from -3e38 to 3e38 (finite float32) has no float32
    # range, and inf / inf would be nan; the ratio of halves is the same.
    span = (hi / 2 - lo / 2)[seg]  # (n, m): half each row's front range per objective
    dist = jnp.zeros((n,), v.dtype)
    for k in range(m):  # a loop over objectives, not points
        order = jnp.lexsort((v[:, k], seg))  # by front, then by objective k
        s_seg, s_v, s_span = seg[order], v[order, k], span[order, k]
        prev_same = jnp.concatenate([jnp.array([False]), s_seg[1:] == s_seg[:-1]])
        next_same = jnp.concatenate([s_seg[:-1] == s_seg[1:], jnp.array([False])])
        gap = jnp.roll(s_v, -1) / 2 - jnp.roll(s_v, 1) / 2
        interior = jnp.where(s_span > 0, gap / jnp.where(s_span > 0, s_span, 1.0), 0.0)
        d_sorted = jnp.where(prev_same & next_same, interior, jnp.inf)
        dist = dist.at[order].add(d_sorted)
    return jnp.where(counted, dist, 0.0)


def pareto_front_mask(values: jax.Array, mask: Any = None) -> jax.Array:
    """Rows on the Pareto front: valid and dominated by no valid row.

    Args:
      values: ``(n, m)`` objective values, minimised.
      mask: optional ``(n,)`` boolean (or 0 / 1 integers) of rows that count.
    Returns:
      ``(n,)`` boolean. Equal rows are all on the front if any is.
    """
    values = _as_values(values)
    valid = _valid_rows(values, mask)
    return valid & ~jnp.any(dominance_matrix(values, valid), axis=0)


def front_rows_once(values: jax.Array, valid: jax.Array) -> jax.Array:
    """``pareto_front_mask`` with each objective vector once: of equal valid
    rows only the first counts. ``values`` ``(n, m)``, ``valid`` ``(n,)``
    boolean; returns ``(n,)`` boolean (a strategy's buffer front)."""
    same = jnp.all(values[:, None, :] == values[None, :, :], axis=-1)
    earlier = jnp.tril(jnp.ones(same.shape, bool), k=-1)
    repeat = jnp.any(same & earlier & valid[None, :], axis=1)
    return pareto_front_mask(values, valid & ~repeat)


# ------------------------------------------------------------- hypervolume
def _clip_to_box(values: jax.Array, ref: jax.Array, valid: jax.Array) -> jax.Array:
    """Rows that do not strictly dominate ``ref`` are moved onto ``ref`` (zero volume)."""
    inside = valid & jnp.all(values < ref, axis=1)
    return jnp.where(inside[:, None], values, ref)


def _hv1(p, ref):
    return jnp.max(ref[0] - p[:, 0])


def _hv2(p, ref):
    """Exact 2-D sweep: sort by the first objective, staircase of running minima."""
    order = jnp.lexsort((p[:, 1], p[:, 0]))
    x, y = p[order, 0], p[order, 1]
    width = jnp.concatenate([x[1:], ref[:1]]) - x
    height = ref[1] - jax.lax.cummin(y)
    return jnp.sum(width * height)


@jax.jit
def _hv3(p, ref):
    """Exact 3-D slicing: the volume is a sum over slabs between sorted third coordinates.

    Between the ``i``-th and ``i+1``-th smallest third coordinate the
    dominated cross-section is the 2-D hypervolume of the ``i + 1`` points
    with the smallest third coordinate. The points are sorted once by the
    first coordinate; a point not yet in a slab keeps its place in that order
    with its second coordinate lifted to the reference (it then only splits
    a step of the staircase in two, adding nothing). Cost ``O(n^2)`` time and
    ``O(n)`` memory per slab, in a ``lax.map``.
    """
    n = p.shape[0]
    order = jnp.lexsort((p[:, 1], p[:, 0]))
    p = p[order]
    width = jnp.concatenate([p[1:, 0], ref[:1]]) - p[:, 0]
    z_order = jnp.argsort(p[:, 2], stable=True)
    z_pos = jnp.zeros((n,), jnp.int32).at[z_order].set(jnp.arange(n, dtype=jnp.int32))
    z_sorted = p[z_order, 2]
    thickness = jnp.concatenate([z_sorted[1:], ref[2:3]]) - z_sorted

    def area(i):
        y = jnp.where(z_pos <= i, p[:, 1], ref[1])
        return jnp.sum(width * (ref[1] - jax.lax.cummin(y)))

    areas = jax.lax.map(area, jnp.arange(n, dtype=jnp.int32), batch_size=min(n, 128))
    return jnp.sum(thickness * areas)


@partial(jax.jit, static_argnums=4)
def _hv_mc(p, ref, valid, key, num_samples):
    """Monte Carlo: the fraction of uniform points in the bounding box that some row dominates."""
    n, m = p.shape
    lower = jnp.min(jnp.where(valid[:, None], p, ref), axis=0)
    box = jnp.prod(ref - lower)
    chunk = 4096
    num_chunks = -(-num_samples // chunk)
    keys = jax.random.split(key, num_chunks)

    def hits(k):
        u = jax.random.uniform(k, (chunk, m), p.dtype)
        s = lower + u * (ref - lower)
        dom = jnp.ones((chunk, n), bool)
        for j in range(m):
            dom = dom & (p[None, :, j] <= s[:, None, j])
        return jnp.sum(jnp.any(dom, axis=1))

    total = jnp.sum(jax.lax.map(hits, keys))
    return box * total.astype(p.dtype) / (num_chunks * chunk)


def hypervolume(values: jax.Array, ref_point: Any, mask: Any = None, *, key: jax.Array | None = None,
                num_samples: int = 100_000) -> jax.Array:
    """Volume of the objective space dominated by ``values`` and bounded by ``ref_point``.

    Exact for 1, 2 and 3 objectives (a sort-and-sweep in 2-D, ``O(n log
    n)``; slabs along the third objective in 3-D, ``O(n^2)``). With 4 or more
    objectives, a Monte Carlo estimate from ``num_samples`` uniform points
    in the box between the valid rows' minima and ``ref_point`` (standard
    error about ``box * sqrt(p (1 - p) / num_samples)``), which needs
    ``key``. Rows that do not strictly dominate ``ref_point`` in every
    objective, rows outside ``mask`` and non-finite rows add nothing; the
    rows need not be mutually non-dominated.

    Args:
      values: ``(n, m)`` objective values, minimised.
      ref_point: ``(m,)`` reference point (worse than any point of interest).
      mask: optional ``(n,)`` boolean (or 0 / 1 integers) of rows that count.
      key: a ``jax.random`` key, required when ``m >= 4``; ignored otherwise.
      num_samples: Monte Carlo sample count (static; rounded up to a multiple
        of 4096).
    Returns:
      ``()`` hypervolume, in the floating dtype of ``values`` (float32 for
      integer values).
    """
    values = _as_values(values)
    n, m = values.shape
    if not is_traced(ref_point):
        # A concrete one: numbers, finite in the values' dtype (a traced one cannot be checked).
        check_ref_point(ref_point, m, values.dtype)
    ref = jnp.asarray(ref_point, values.dtype)
    if ref.shape != (m,):
        raise ValueError(f"ref_point must have shape ({m},) (one entry per objective), got {tuple(ref.shape)}")
    valid = _valid_rows(values, mask)
    p = _clip_to_box(values, ref, valid)
    if n == 0:  # no rows: nothing dominated (checked as for any set)
        if m >= 4 and key is None:
            raise ValueError(f"hypervolume with {m} objectives is a Monte Carlo estimate and needs key=")
        return jnp.zeros((), values.dtype)
    if m == 1:
        return _hv1(p, ref)
    if m == 2:
        return _hv2(p, ref)
    if m == 3:
        return _hv3(p, ref)
    if key is None:
        raise ValueError(f"hypervolume with {m} objectives is a Monte Carlo estimate and needs key=")
    key = check_key(key, allow_seed=True)
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    num_samples = int(num_samples)
    inside = valid & jnp.all(values < ref, axis=1)
    return jnp.where(jnp.any(inside), _hv_mc(p, ref, inside, key, num_samples), 0.0).astype(values.dtype)


def check_ref_point(ref_point: Any, m: int, dtype: Any = np.float64) -> np.ndarray:
    """A user's ``ref_point`` as ``(m,)`` finite numbers of ``dtype`` (host side);
    errors name it and the rule."""
    try:
        kind = np.asarray(ref_point).dtype.kind
    except (TypeError, ValueError):
        kind = "O"  # ragged: refused below
    if kind == "b":
        raise TypeError(f"ref_point must be {m} numbers, got booleans {ref_point!r}")
    if kind in "USaV":  # NumPy would read numeric text ("2") as a number
        raise TypeError(f"ref_point must be {m} numbers, got text {ref_point!r}")
    try:
        with np.errstate(over="ignore"):
            ref = np.asarray(ref_point, dtype)
    except (TypeError, ValueError):
        raise TypeError(f"ref_point must be {m} numbers, got {ref_point!r}") from None
    if ref.shape != (m,):
        raise ValueError(f"ref_point must have shape ({m},) (one number per objective), got {ref_point!r}")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"ref_point must be {m} finite numbers (finite in {np.dtype(dtype).name}), "
                         f"got {ref_point!r}")
    return ref


def default_ref_point(values: np.ndarray) -> np.ndarray:
    """``(m,)`` for a front ``(k >= 1, m)`` (minimised, finite in float32), in
    its dtype: its worst value in each objective moved out by 10% of the
    front's range there (by 1 where it is 0), at least to the next number the
    dtype holds (where that step rounds away) and at most float32's largest
    (hypervolumes are computed in float32: a front reaching it would
    otherwise get an infinite reference point)."""
    # the dtype hypervolume computes in (float64 values are float32 without x64)
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(np.result_type(np.asarray(values).dtype, np.float32)))
    wide = np.asarray(values, np.float64)  # the range of a float32 front can overflow float32
    hi, lo = wide.max(axis=0), wide.min(axis=0)
    top = float(np.finfo(np.float32).max)
    ref = np.minimum(hi + np.where(hi > lo, 0.1 * (hi - lo), 1.0), top).astype(dtype)
    # A step below the dtype's spacing there (1 at 1e8 in float32) rounds away:
    # the next representable number is then the nearest point still outside.
    hi = hi.astype(dtype)
    with np.errstate(over="ignore"):  # past float32's largest: capped just below
        step = np.minimum(np.nextafter(hi, dtype.type(np.inf)), dtype.type(top))
    return np.where(ref > hi, ref, step)


@partial(jax.jit, static_argnames=("num_samples",))
def _hypervolume_program(values, ref, mask, key, num_samples):
    return hypervolume(values, ref, mask, key=key, num_samples=num_samples)


def padded_hypervolume(values: Any, ref_point: Any, *, key: jax.Array | None = None,
                       num_samples: int = 100_000) -> float:
    """``hypervolume`` of a host front ``(n, m)`` (minimised) whose size
    changes from call to call: padded to a power of two (at least 8) of
    masked rows, so each size class compiles one program, where ``hypervolume``
    called op by op compiles a few dozen small ones for every new ``n``.
    Finite wherever the volume fits a float64: the extents multiply on the
    host (in float32 a front of extents 1e20 x 1e20 measured inf)."""
    values = np.asarray(values, np.float64)
    ref = np.asarray(ref_point, np.float64)
    n, m = values.shape
    # The volume is a product of m extents, which overflows float32 (inf)
    # long before each extent does. The program measures the front moved to
    # ref = 0 and scaled to [-1, 0] per objective; the scales multiply back
    # on the host in float64 (the differences to ref are taken there too).
    inside = np.all(np.isfinite(values) & (values < ref), axis=1)
    scale = ref - values[inside].min(axis=0) if inside.any() else np.ones(m)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    size = max(8, 1 << max(n - 1, 0).bit_length())
    padded = np.full((size, m), np.inf, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        padded[:n] = (values - ref) / scale
    unit = _hypervolume_program(padded, np.zeros(m, np.float32), np.arange(size) < n, key, num_samples)
    return float(unit) * float(np.prod(scale))


def hypervolume_contributions(values: jax.Array, ref_point: Any, mask: Any = None) -> jax.Array:
    """Exclusive hypervolume of every row: the volume lost when it alone is removed.

    Computed as ``hypervolume(all) - hypervolume(all but i)`` for every ``i``
    at once (a ``vmap``), so 2 or 3 objectives only: ``O(n^2 log n)`` in 2-D
    and ``O(n^3)`` in 3-D. Dominated rows, duplicated rows and rows that add
    nothing get 0.

    Args:
      values: ``(n, m)`` objective values, minimised, ``m`` in ``{1, 2, 3}``.
      ref_point: ``(m,)`` reference point.
      mask: optional ``(n,)`` boolean (or 0 / 1 integers) of rows that count.
    Returns:
      ``(n,)`` contributions, ``>= 0`` up to rounding.
    """
    values = _as_values(values)
    n, m = values.shape
    if m > 3:
        raise ValueError(f"hypervolume_contributions is exact only for 1 to 3 objectives, got {m}")
    valid = _as_mask(mask, n)
    total = hypervolume(values, ref_point, valid)
    eye = jnp.eye(n, dtype=bool)
    without = jax.vmap(lambda drop: hypervolume(values, ref_point, valid & ~drop))(eye)
    return jnp.maximum(total - without, 0.0)
