"""Non-dominated sorting, constraint domination, crowding and hypervolume against brute force.

Random cases come from hypothesis; rows are padded to a fixed ``N_MAX`` with
masked rows so that a handful of compiled functions serve every example (and
the padding path is tested on the way). References are plain Python/numpy in
float64: peeling fronts by the definition of dominance, and the hypervolume
by inclusion-exclusion (exact for any number of objectives) or by counting
unit cells for points on an integer lattice.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxhpo import pareto

from helpers import compiles_during

N_MAX = 10


# --------------------------------------------------------------- references
def ref_dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def ref_peel(n, better, valid):
    """Fronts of the relation ``better(i, j)`` over valid rows; ``n`` for the others."""
    rank = [n] * n
    left = [i for i in range(n) if valid[i]]
    r = 0
    while left:
        front = [j for j in left if not any(better(i, j) for i in left if i != j)]
        for j in front:
            rank[j] = r
        left = [j for j in left if j not in front]
        r += 1
    return rank


def ref_ranks(values, valid):
    return ref_peel(len(values), lambda i, j: ref_dominates(values[i], values[j]), valid)


def ref_constrained_ranks(values, cons, valid):
    viol = [sum(max(g, 0.0) for g in row) for row in cons]
    feas = [v == 0.0 for v in viol]

    def better(i, j):  # Deb's constraint domination, straight from the definition
        if feas[i] and not feas[j]:
            return True
        if not feas[i] and not feas[j]:
            return viol[i] < viol[j]
        if feas[i] and feas[j]:
            return ref_dominates(values[i], values[j])
        return False

    return ref_peel(len(values), better, valid)


def ref_crowding(values, ranks, n):
    values = np.asarray(values, np.float64)
    dist = np.zeros(len(values))
    for r in set(ranks) - {n}:
        idx = [i for i in range(len(values)) if ranks[i] == r]
        for k in range(values.shape[1]):
            order = sorted(idx, key=lambda i: (values[i, k], i))
            span = values[order[-1], k] - values[order[0], k]
            for pos, i in enumerate(order):
                if pos == 0 or pos == len(order) - 1:
                    dist[i] = math.inf
                elif span > 0:
                    dist[i] += (values[order[pos + 1], k] - values[order[pos - 1], k]) / span
    return dist


def ref_hypervolume(points, ref):
    """Inclusion-exclusion over every subset of the points that dominate ``ref``."""
    pts = [np.asarray(p, np.float64) for p in points if np.all(np.asarray(p) < ref)]
    total = 0.0
    for size in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, size):
            corner = np.max(np.stack(subset), axis=0)
            total += (-1) ** (size + 1) * np.prod(np.maximum(ref - corner, 0.0))
    return total


def lattice_hypervolume(points, side):
    """Unit cells of ``[0, side)^m`` whose centre some point dominates (exact on the integer lattice)."""
    m = len(points[0])
    centres = np.stack(np.meshgrid(*[np.arange(side) + 0.5] * m, indexing="ij"), -1).reshape(-1, m)
    pts = np.asarray(points, np.float64)
    return float(np.sum(np.any(np.all(pts[None] <= centres[:, None], axis=-1), axis=1)))


# ---------------------------------------------------------- compiled pieces
@functools.lru_cache(maxsize=None)
def jitted(name):
    return jax.jit(getattr(pareto, name))


def padded(rows, m):
    """``rows`` padded to ``(N_MAX, m)`` with NaN rows, and the mask of real rows."""
    v = np.full((N_MAX, m), np.nan, np.float32)
    v[: len(rows)] = np.asarray(rows, np.float32).reshape(len(rows), m)
    mask = np.arange(N_MAX) < len(rows)
    return v, mask


def call(name, rows, *args, **kwargs):
    """``pareto.<name>`` jitted on ``rows`` padded to ``N_MAX`` rows (the padding is masked out)."""
    rows = np.asarray(rows, np.float32)
    v, mask = padded(rows, rows.shape[1])
    out = np.asarray(jitted(name)(v, *args, mask, **kwargs))
    return out[: len(rows)] if out.ndim else out


def hv(rows, ref, **kwargs):
    return float(call("hypervolume", rows, np.asarray(ref, np.float32), **kwargs))


# Values from a small set so ties and duplicate rows are common.
LEVELS = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 3.0])


@st.composite
def populations(draw, max_m=4):
    m = draw(st.integers(1, max_m))
    n = draw(st.integers(1, N_MAX))
    rows = draw(st.lists(st.lists(LEVELS, min_size=m, max_size=m), min_size=n, max_size=n))
    drop = draw(st.lists(st.booleans(), min_size=n, max_size=n))  # rows masked out by the caller
    return m, rows, drop


# ------------------------------------------------------------------ sorting
@given(populations())
def test_nondominated_rank_equals_brute_force(case):
    m, rows, drop = case
    v, mask = padded(rows, m)
    mask[: len(rows)] &= ~np.asarray(drop)
    got = np.asarray(jitted("nondominated_rank")(v, mask))
    want = ref_ranks(v.tolist(), mask.tolist())
    assert got.tolist() == want
    assert got.dtype == np.int32
    # Masked rows and NaN padding get rank n.
    assert np.all(got[~mask] == N_MAX)
    front = np.asarray(jitted("pareto_front_mask")(v, mask))
    np.testing.assert_array_equal(front, got == 0)


def test_non_finite_rows_are_failures():
    v = np.array([[1.0, 1.0], [np.nan, 0.0], [0.0, -np.inf], [2.0, 2.0]], np.float32)
    np.testing.assert_array_equal(call("nondominated_rank", v), [0, N_MAX, N_MAX, 1])
    np.testing.assert_array_equal(call("pareto_front_mask", v), [True, False, False, False])
    assert hv(v, [3.0, 3.0]) == pytest.approx(4.0)


@given(populations(max_m=3), st.lists(st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0]), min_size=2 * N_MAX,
                                      max_size=2 * N_MAX))
def test_constrained_rank_equals_brute_force(case, g):
    m, rows, drop = case
    v, mask = padded(rows, m)
    mask[: len(rows)] &= ~np.asarray(drop)
    cons = np.asarray(g, np.float32).reshape(N_MAX, 2)
    got = np.asarray(jitted("constrained_nondominated_rank")(v, cons, mask))
    want = ref_constrained_ranks(v.tolist(), cons.tolist(), mask.tolist())
    assert got.tolist() == want


def test_any_feasible_point_beats_any_infeasible_point():
    rng = np.random.default_rng(0)
    n = 200
    values = rng.normal(size=(n, 2)).astype(np.float32)
    cons = rng.normal(size=(n, 3)).astype(np.float32)
    # Make the infeasible rows dominate everything in objective space.
    feasible = np.all(cons <= 0, axis=1)
    values[~feasible] -= 100.0
    rank = np.asarray(jitted("constrained_nondominated_rank")(values, cons))
    assert feasible.any() and (~feasible).any()
    assert rank[feasible].max() < rank[~feasible].min()
    # Infeasible rows are ordered by total violation alone.
    viol = np.asarray(jitted("total_violation")(cons))[~feasible]
    r = rank[~feasible]
    assert np.all((viol[:, None] < viol[None, :]) <= (r[:, None] < r[None, :]))
    # No constraint columns: plain non-dominated sorting.
    np.testing.assert_array_equal(jitted("constrained_nondominated_rank")(values, np.zeros((n, 0))),
                                  jitted("nondominated_rank")(values))


def test_constraint_failures_rank_last():
    v = np.zeros((N_MAX, 2), np.float32)
    g = np.full((N_MAX, 1), -1.0, np.float32)
    g[:2, 0] = [5.0, np.nan]
    v[3] = np.inf  # a failed objective, even with a feasible constraint value
    want = [1, N_MAX, 0, N_MAX] + [0] * (N_MAX - 4)
    np.testing.assert_array_equal(jitted("constrained_nondominated_rank")(v, g), want)
    # Finite constraints whose violations sum past float32's range are the
    # worst violation there is, not a failure (the sum was inf).
    big = np.finfo(np.float32).max
    g2 = np.full((N_MAX, 2), -1.0, np.float32)
    g2[0], g2[1] = [big, big], [1.0, -1.0]
    np.testing.assert_array_equal(jitted("total_violation")(g2)[:2], [big, 1.0])
    want = [2, 1] + [0] * (N_MAX - 2)
    np.testing.assert_array_equal(jitted("constrained_nondominated_rank")(np.zeros((N_MAX, 2), np.float32), g2), want)


# ----------------------------------------------------------------- crowding
@given(populations(max_m=3))
def test_crowding_distance_equals_brute_force(case):
    m, rows, drop = case
    v, mask = padded(rows, m)
    ranks = jitted("nondominated_rank")(v, mask)
    got = np.asarray(jitted("crowding_distance")(v, ranks))
    want = ref_crowding(v, np.asarray(ranks).tolist(), N_MAX)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_crowding_distance_on_a_line():
    v = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [5.0, 5.0]], np.float32)
    d = np.asarray(jitted("crowding_distance")(v, jitted("nondominated_rank")(v)))
    # Ends are inf; interior: (3 - 0) / 4 per objective, twice.
    np.testing.assert_allclose(d, [np.inf, 1.5, 1.5, np.inf, np.inf])


# -------------------------------------------------------------- hypervolume
def test_hypervolume_hand_made():
    assert (hv([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]], [4.0, 4.0])) == pytest.approx(6.0)
    # A dominated point and a point outside the reference box add nothing.
    assert (hv([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0], [0.0, 5.0]], [4.0, 4.0])) == pytest.approx(6.0)
    # A point on the reference face spans no volume.
    assert (hv([[4.0, 0.0]], [4.0, 4.0])) == 0.0
    assert (hv([[0.0, 0.0, 0.0]], [1.0, 2.0, 3.0])) == pytest.approx(6.0)
    # Two boxes in 3-D: [0,2]x[0,2]x[1,2] (4) and [1,2]x[1,2]x[0,2] (2), overlapping in a unit cube.
    pts = [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert (hv(pts, [2.0, 2.0, 2.0])) == pytest.approx(4.0 + 2.0 - 1.0)
    assert (hv([[0.5], [0.2], [3.0]], [1.0])) == pytest.approx(0.8)
    # The 3-D "staircase" front of ZDT-like points equals inclusion-exclusion.
    pts = [[1.0, 2.0, 3.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0]]
    assert (hv(pts, [4.0, 4.0, 4.0])) == pytest.approx(ref_hypervolume(pts, np.full(3, 4.0)))


@given(st.integers(2, 3), st.lists(st.lists(st.floats(0.0, 1.25, width=32), min_size=3, max_size=3),
                                   min_size=1, max_size=8))
def test_hypervolume_equals_inclusion_exclusion(m, rows):
    rows = [r[:m] for r in rows]
    v, mask = padded(rows, m)
    ref = np.full(m, 1.1, np.float32)
    got = float(jitted("hypervolume")(v, ref, mask))
    assert got == pytest.approx(ref_hypervolume(rows, ref.astype(np.float64)), rel=1e-4, abs=1e-6)


@given(st.integers(2, 3), st.lists(st.lists(st.integers(0, 6), min_size=3, max_size=3), min_size=1, max_size=N_MAX))
def test_hypervolume_equals_grid_count(m, rows):
    rows = [r[:m] for r in rows]
    v, mask = padded(rows, m)
    got = float(jitted("hypervolume")(v, np.full(m, 6.0, np.float32), mask))
    assert got == lattice_hypervolume(rows, 6)


def test_hypervolume_monte_carlo_4d():
    rng = np.random.default_rng(1)
    pts = rng.uniform(size=(8, 4)).astype(np.float32)
    ref = np.full(4, 1.1, np.float32)
    want = ref_hypervolume(pts, ref.astype(np.float64))
    mc = jax.jit(lambda v, k: pareto.hypervolume(v, ref, key=k, num_samples=200_000))
    keys = jax.random.split(jax.random.key(0), 4)
    estimates = np.asarray(jax.vmap(mc, in_axes=(None, 0))(pts, keys))
    assert np.all(np.abs(estimates - want) < 0.02 * want)
    # Deterministic, and vmap over keys agrees with a single call.
    assert float(mc(pts, keys[0])) == pytest.approx(float(estimates[0]), rel=1e-6)
    assert len(set(estimates.tolist())) > 1  # keys matter
    with pytest.raises(ValueError, match="key"):
        pareto.hypervolume(pts, ref)
    # an integer seed is a key, as elsewhere; a NumPy integer a sample count; a nan reference is refused
    by_seed = pareto.hypervolume(pts, ref, key=7, num_samples=np.int64(8192))
    assert float(by_seed) == float(pareto.hypervolume(pts, ref, key=jax.random.key(7), num_samples=8192))
    with pytest.raises(ValueError, match="ref_point must be 4 finite numbers"):
        pareto.hypervolume(pts, np.array([1.1, np.nan, 1.1, 1.1]), key=0)
    # Checked in the values' dtype, before use: beyond float32 is not finite there.
    two = np.zeros((2, 2), np.float32)
    for compute in (pareto.hypervolume, pareto.hypervolume_contributions):
        with pytest.raises(ValueError, match="finite in float32"):
            compute(two, [1e39, 1.0])
        with pytest.raises(TypeError, match="ref_point must be 2 numbers"):
            compute(two, "ab")
        with pytest.raises(ValueError, match="ref_point must be 2 finite numbers"):
            compute(two, [None, 1.0])
    # Nothing inside the box: exactly zero, not 0/0.
    assert float(mc(pts + 5.0, keys[0])) == 0.0


def test_hypervolume_contributions():
    v = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]], np.float32)
    np.testing.assert_allclose(call("hypervolume_contributions", v, np.float32([4.0, 4.0])),
                               [1.0, 1.0, 1.0, 0.0])
    rng = np.random.default_rng(2)
    pts = rng.uniform(size=(6, 3)).astype(np.float32)
    ref = np.full(3, 1.0)
    total = ref_hypervolume(pts, ref)
    want = [total - ref_hypervolume(np.delete(pts, i, 0), ref) for i in range(6)]
    np.testing.assert_allclose(call("hypervolume_contributions", pts, np.float32(ref)), want, atol=1e-5)
    with pytest.raises(ValueError, match="1 to 3 objectives"):
        pareto.hypervolume_contributions(np.zeros((3, 4)), np.ones(4))


# ------------------------------------------------------ jit, vmap, errors
def test_vmap_over_populations_matches_single_calls():
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 4, size=(5, 12, 2)).astype(np.float32)
    ref = jnp.array([4.0, 4.0])

    def everything(v):
        r = pareto.nondominated_rank(v)
        return r, pareto.crowding_distance(v, r), pareto.hypervolume(v, ref)

    run_batched = jax.jit(jax.vmap(everything))
    batched = run_batched(batch)
    single = jax.jit(everything)
    for b in range(5):
        for got, want in zip(batched, single(batch[b])):
            np.testing.assert_allclose(got[b], want, rtol=1e-6)
    # Deterministic: a second run is bitwise equal.
    for a, b in zip(batched, run_batched(batch)):
        np.testing.assert_array_equal(a, b)


def test_clear_errors():
    with pytest.raises(ValueError, match="values must have shape"):
        pareto.nondominated_rank(np.zeros(4))
    with pytest.raises(ValueError, match="mask must have shape"):
        pareto.nondominated_rank(np.zeros((4, 2)), np.ones(3, bool))
    with pytest.raises(ValueError, match="ref_point must have shape"):
        pareto.hypervolume(np.zeros((4, 2)), [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="constraints must have shape"):
        pareto.constrained_nondominated_rank(np.zeros((4, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="ranks must have shape"):
        pareto.crowding_distance(np.zeros((4, 2)), np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="num_samples"):
        pareto.hypervolume(np.zeros((4, 4)), np.ones(4), key=jax.random.key(0), num_samples=0)
    with pytest.raises(TypeError, match=r"mask must be boolean \(or 0 / 1 integers\), got dtype float32"):
        pareto.nondominated_rank(np.zeros((2, 2)), np.array([np.nan, 0.7], np.float32))
    # 0 / 1 integer flags have one reading
    v = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(pareto.nondominated_rank(v, [1, 0, 1])),
                                  np.asarray(pareto.nondominated_rank(v, np.array([True, False, True]))))
    for bad in ([1, 2, 1], np.array([2**32, 1, 1], np.int64)):  # (2**32 would wrap to 0 in int32)
        with pytest.raises(ValueError, match="values other than 0 and 1"):
            pareto.nondominated_rank(v, bad)
    with pytest.raises(ValueError, match="ranks must be front indices >= 0"):
        pareto.crowding_distance(np.zeros((2, 2)), np.array([-1, 0]))
    with pytest.raises(TypeError, match="ranks must be integer"):
        pareto.crowding_distance(np.zeros((2, 2)), np.array([0.0, 0.5]))
    with pytest.raises(TypeError, match="values must be real numbers"):
        pareto.hypervolume(np.array([[1 + 5j, 2.0]]), [3.0, 3.0])
    with pytest.raises(ValueError, match=r"constraints must have shape \(n, num_constraints\)"):
        pareto.total_violation(np.zeros(3))
    with pytest.raises(ValueError, match=r"a and b must broadcast against each other with one m, got shapes"):
        pareto.dominates(np.zeros(2), np.zeros(3))
    for a, b in ((np.zeros(1), np.zeros(3)), (np.zeros((1, 2)), np.zeros((2, 1)))):  # m = 1 would broadcast
        with pytest.raises(ValueError, match="with one m"):
            pareto.dominates(a, b)
    assert np.asarray(pareto.dominates(np.zeros((1, 2)), np.ones((3, 2)))).tolist() == [True] * 3
    with pytest.raises(TypeError, match="ref_point must be 2 numbers, got text"):  # NumPy reads "2" as 2.0
        pareto.hypervolume(np.array([[0.0, 0.0]]), ["2", "3"])
    # booleans are no objective values or reference point (they were read as 0 and 1)
    with pytest.raises(TypeError, match="ref_point must be 2 numbers, got booleans"):
        pareto.hypervolume(np.array([[0.5, 0.5]]), [True, True])
    with pytest.raises(TypeError, match="values must be real numbers, got dtype bool"):
        pareto.hypervolume(np.array([[True, False]]), [2.0, 2.0])


def test_a_positive_subnormal_constraint_value_is_a_violation():
    # A CPU flushes subnormals to 0 in comparisons and arithmetic: 1e-40 > 0 is
    # false in a compiled program, and the row read as feasible.
    g = np.array([[1e-40], [-1.0], [-1e-40], [0.0]], np.float32)
    viol = np.asarray(pareto.total_violation(g))
    assert viol[0] == np.finfo(np.float32).tiny and np.all(viol[1:] == 0.0)
    assert np.asarray(jax.jit(pareto.total_violation)(g))[0] > 0
    with jax.enable_x64(True):  # float64: a value float32 cannot hold is a violation still
        assert np.asarray(pareto.total_violation(np.array([[1e-50], [-1.0]])))[0] > 0
    # told from the host in float64 (float32 would hold 0): infeasible, so never best
    from jaxhpo import NSGA2, Float, Space
    nsga = NSGA2(Space(a=Float(0.0, 1.0)), 2, num_objectives=2, num_constraints=1)
    state = nsga.init(0)
    x, state = nsga.ask(0, state)
    state = nsga.tell(state, x, np.array([[0.0, 0.0, 1e-50], [1.0, 1.0, -1.0]]))
    assert float(state.best_value) == 1.0
    for dtype in (jnp.float16, jnp.bfloat16, jnp.float8_e4m3fn):  # every float width
        low = jnp.asarray([[0.5], [-0.5]], dtype)
        assert np.asarray(pareto.total_violation(low), np.float32).tolist() == [0.5, 0.0]
    ranks = pareto.constrained_nondominated_rank(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]), g)
    assert np.asarray(ranks).tolist() == [3, 0, 1, 2]  # the violating row after every feasible front


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_crowding_distance_of_a_front_spanning_float32():
    # Finite float32 values whose range is not: the distances are still Deb's.
    big = 3e38
    v = np.array([[-big, big], [0.0, 0.0], [big, -big]], np.float32)
    d = np.asarray(pareto.crowding_distance(v, pareto.nondominated_rank(v)))
    np.testing.assert_allclose(d, [np.inf, 2.0, np.inf])
    top = float(np.finfo(np.float32).max)
    ref = pareto.default_ref_point(np.array([[top, 0.0], [-top, 1.0]], np.float32))
    assert ref.dtype == np.float32 and ref.tolist() == [top, float(np.float32(1.1))]
    # a step of 1 at 1e8 rounds away in float32: the next float32 is still outside
    ref = pareto.default_ref_point(np.array([[1e8, 0.5]], np.float32))
    assert ref[0] == np.nextafter(np.float32(1e8), np.float32(np.inf)) and ref[1] == 1.5
    for front in (np.array([[1e8, 0.5]], np.float32), np.array([[1e8, 0.5]]), [[1e8, 0.5]]):
        # (a float64 front is computed in float32 too, without x64)
        assert float(pareto.hypervolume(front, pareto.default_ref_point(front))) > 0


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_the_hypervolume_of_no_rows_is_zero(m):
    hv = pareto.hypervolume(jnp.zeros((0, m)), jnp.ones(m), key=jax.random.key(0))
    assert float(hv) == 0.0


def test_called_op_by_op_a_second_call_compiles_nothing():
    # The fronts' peeling loop and the 3-D and Monte Carlo hypervolumes are
    # compiled functions: their loop bodies, closures, compiled in every call.
    rng = np.random.default_rng(0)
    calls = [
        lambda v: pareto.nondominated_rank(v[:, :2]),
        lambda v: pareto.constrained_nondominated_rank(v[:, :2], v[:, 2:3] - 0.5),
        lambda v: pareto.hypervolume(v[:, :3], [2.0, 2.0, 2.0]),
        lambda v: pareto.hypervolume(v, [2.0] * 4, key=jax.random.key(0), num_samples=4096),
    ]
    for i, call in enumerate(calls):
        call(rng.random((6, 4)).astype(np.float32))
        with compiles_during() as compiles:
            call(rng.random((6, 4)).astype(np.float32))
        assert compiles == [], i


def test_a_host_front_whose_volume_passes_float32_is_measured_in_float64():
    # Extents of 1e20 fit a float32; their product does not. Before, inf.
    front = np.array([[0.0, 3e19], [2e19, 0.0]])
    ref = [1e20, 1e20]
    exact = 1e20 * 7e19 + (1e20 - 2e19) * 3e19
    assert pareto.padded_hypervolume(front, ref) == pytest.approx(exact, rel=1e-6)
    # ... in 3-D and, by Monte Carlo, in 4-D
    assert pareto.padded_hypervolume(np.zeros((1, 3)), [1e15] * 3) == pytest.approx(1e45, rel=1e-6)
    mc = pareto.padded_hypervolume(np.zeros((1, 4)), [1e12] * 4, key=jax.random.key(0), num_samples=1000)
    assert mc == pytest.approx(1e48, rel=1e-6)
    # A front near large values: the differences to ref are taken in float64.
    big = np.array([[1e8, 1e8], [1e8 + 1, 1e8 - 1]])
    assert pareto.padded_hypervolume(big, [1e8 + 2, 1e8 + 2]) == pytest.approx(5.0, rel=1e-6)
    # Small fronts agree with the float32 program to rounding.
    rng = np.random.default_rng(0)
    pts = rng.uniform(size=(13, 3)).astype(np.float32)
    want = float(pareto.hypervolume(jnp.asarray(pts), jnp.ones(3)))
    assert pareto.padded_hypervolume(pts, [1.0, 1.0, 1.0]) == pytest.approx(want, rel=1e-5)
