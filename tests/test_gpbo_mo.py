"""GPBO with constraints (constrained EI) and several objectives (ParEGO).

The feasibility term against a numpy/scipy GP, a constrained problem whose
unconstrained optimum is infeasible (6 seeds, vmapped), failed constraint
values, the multi-objective front through ``jaxhpo.minimize`` (constrained
Thompson sampling, batches), hypervolume on ZDT1 against random search (6 seeds,
vmapped), and the jit/vmap/determinism/no-recompile contract. The suite is
compile-bound: every search and compiled function is built once and shared.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_ndtr as np_log_ndtr

import jaxhpo
from jaxhpo import pareto
from jaxhpo.strategies import acquisition as acqf
from jaxhpo.strategies.gpbo import GPBO, augmented_chebyshev

from helpers import counted_protocol

# test_gpbo.py's small settings, with half the fit steps: under vmap over seeds
# the late L-BFGS iterations (line searches near convergence) dominated these
# searches' run time, for no visible change in the results checked here.
SMALL = dict(fit_steps=10, num_candidates=64, num_local=32, restarts=4, acq_steps=10)


# ------------------------------------------------------------ settings
def test_bad_settings_name_the_parameter():
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0))
    with pytest.raises(ValueError, match="num_objectives"):
        GPBO(space, num_objectives=0)
    with pytest.raises(ValueError, match="num_constraints"):
        GPBO(space, num_constraints=-1)
    with pytest.raises(TypeError, match="num_objectives"):
        GPBO(space, num_objectives=2.0)
    with pytest.raises(ValueError, match="acquisition"):
        GPBO(space, acquisition="ucb", num_constraints=1)
    s = GPBO(space, 2, 8, num_objectives=2, num_constraints=1)
    st = s.init(jax.random.key(0))
    with pytest.raises(ValueError, match="values"):
        s.tell(st, jnp.full((2, 2), 0.5), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="values"):
        s.tell(st, jnp.full((2, 2), 0.5), jnp.zeros((2,)))
    with pytest.raises(ValueError, match="x must"):
        s.tell(st, jnp.full((3, 2), 0.5), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="num_constraints"):
        GPBO(space, num_objectives=2).constraint_model(jax.random.key(0), None)
    # The vector interface exists exactly when there are several values; a
    # plain GPBO stays the scalar strategy that minimize and Study know.
    assert s.num_values == 3 and s.num_objectives == 2 and s.num_constraints == 1
    assert GPBO(space, num_constraints=1).num_values == 2
    assert not hasattr(GPBO(space, num_constraints=1), "pareto_front")
    plain = GPBO(space)
    assert not any(hasattr(plain, a) for a in ("num_values", "num_objectives", "pareto_front"))
    assert "num_objectives" not in repr(plain)
    assert GPBO(space, num_objectives=2) != GPBO(space, num_objectives=3)
    assert GPBO(space, num_objectives=2) == GPBO(space, num_objectives=2)
    assert hash(GPBO(space, num_constraints=1)) == hash(GPBO(space, num_constraints=1))


# ------------------------------------------------------------ pure pieces
def test_log_feasibility_matches_scipy():
    rng = np.random.default_rng(0)
    mean = rng.normal(scale=10.0, size=(50, 3)).astype(np.float32)  # down to ~-30 sd: Phi underflows
    var = rng.uniform(0.01, 2.0, size=(50, 3)).astype(np.float32)
    thr = np.array([0.0, -1.0, 2.0], np.float32)
    ours = np.asarray(acqf.log_feasibility(jnp.asarray(mean), jnp.asarray(var), jnp.asarray(thr)))
    each = np_log_ndtr((thr - mean.astype(np.float64)) / np.sqrt(var.astype(np.float64)))  # (50, 3)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, each.sum(-1), rtol=1e-4, atol=1e-5)
    grad = jax.grad(lambda m: acqf.log_feasibility(m, jnp.asarray(var), jnp.asarray(thr)).sum())(jnp.asarray(mean))
    assert np.all(np.isfinite(np.asarray(grad))) and np.all(np.asarray(grad) <= 0)
    assert np.all(np.asarray(grad)[each < -1.0] < 0)  # a slope towards feasibility where it is unlikely


def test_constrained_thompson_choice():
    obj = jnp.array([0.0, 1.0, 2.0, 3.0])
    # Constraint draws (c = 2), bound 0: candidates 1 and 3 are feasible.
    con = jnp.array([[1.0, -1.0, 0.5, -2.0], [0.0, -0.5, -1.0, -0.1]])
    thr, scale = jnp.zeros(2), jnp.ones(2)
    assert int(acqf.constrained_thompson_choice(obj, con, thr, scale)) == 1
    # None feasible: the least total violation, in raw units (scale).
    con = jnp.array([[1.0, 0.5, 0.3, 2.0], [0.0, 0.1, 0.4, 0.0]])
    assert int(acqf.constrained_thompson_choice(obj, con, thr, scale)) == 1
    assert int(acqf.constrained_thompson_choice(obj, con, thr, jnp.array([1.0, 10.0]))) == 0


def test_augmented_chebyshev_matches_numpy():
    rng = np.random.default_rng(1)
    f = rng.uniform(-3, 5, size=(10, 3)).astype(np.float32)
    w = rng.dirichlet(np.ones(3), size=4).astype(np.float32)
    mask = np.arange(10) < 8
    ours = np.asarray(augmented_chebyshev(jnp.asarray(w), jnp.asarray(f), jnp.asarray(mask)))
    lo, hi = f[mask].min(0), f[mask].max(0)
    fn = (f - lo) / (hi - lo)
    ref = (w[:, None] * fn[None]).max(-1) + 0.05 * (w[:, None] * fn[None]).sum(-1)
    np.testing.assert_allclose(ours[:, mask], ref[:, mask], rtol=1e-5, atol=1e-6)
    assert np.all(ours[:, ~mask] == 0)
    # Finite values spanning more than float32's range (+-max, the worst results
    # there are): the same normalisation, in float64 (it was inf / inf = nan).
    big = np.float32(3.0e38)
    f2 = np.array([[big, 1.0], [-big, 2.0], [0.0, 3.0]], np.float32)
    ours = np.asarray(augmented_chebyshev(jnp.asarray(w[:, :2] / w[:, :2].sum(1, keepdims=True)), jnp.asarray(f2),
                                          jnp.ones(3, bool)))
    f64 = f2.astype(np.float64)
    fn = (f64 - f64.min(0)) / (f64.max(0) - f64.min(0))
    w2 = (w[:, :2] / w[:, :2].sum(1, keepdims=True)).astype(np.float64)
    ref = (w2[:, None] * fn[None]).max(-1) + 0.05 * (w2[:, None] * fn[None]).sum(-1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ constrained
# Minimise x1 + x2 on [-2, 2]^2 inside the unit disc: the box's corner
# (-2, -2) is infeasible, the optimum is (-1, -1) / sqrt(2) with value -sqrt(2).
DISC = jaxhpo.Space(x1=jaxhpo.Float(-2.0, 2.0), x2=jaxhpo.Float(-2.0, 2.0))
DISC_MIN = -math.sqrt(2.0)
C_SEEDS = 6
C_GENERATIONS = 14  # popsize 2: 28 evaluations into 24 rows, so the buffer fills and keeps the best
C_STRATEGY = GPBO(DISC, 2, 24, num_constraints=1, n_init=6, **SMALL)
constraint_model = jax.jit(C_STRATEGY.constraint_model)
log_feasibility = jax.jit(C_STRATEGY.log_feasibility)


def disc(p):
    """``[objective, constraint]``; the constraint fails (NaN) on the slab ``x1 > 1``."""
    x1, x2 = p["x1"], p["x2"]
    g = x1**2 + x2**2 - 1.0
    return jnp.stack([x1 + x2, jnp.where(x1 > 1.0, jnp.nan, g)])


def _disc_np(x):
    """``(objective, constraint)`` at cube points ``x (k, 2)``, in numpy."""
    v = np.asarray(jax.vmap(disc)(DISC.decode(jnp.asarray(x))))
    return v[:, 0], v[:, 1]


@functools.lru_cache(maxsize=None)
def constrained_runs():
    """6 seeds of ``C_STRATEGY`` on ``disc`` by the vmapped protocol: the final states,
    every generation's best ``(seeds, generations, ...)``, and the states after 8
    generations (16 rows: not yet full, failed rows still there)."""
    s = C_STRATEGY
    ask, tell, _ = counted_protocol(s, vmapped=True)
    evaluate = jax.jit(jax.vmap(lambda x: jax.vmap(disc)(DISC.decode(x))))  # (seeds, popsize, 2)
    keys = jax.random.split(jax.random.key(7), C_SEEDS)
    state = jax.vmap(s.init)(keys)
    best_x, best_value = [], []
    for g in range(C_GENERATIONS):
        x, state = ask(jax.vmap(lambda k: jax.random.fold_in(k, g))(keys), state)
        state = tell(state, x, evaluate(x))
        best_x.append(np.asarray(state.best_x))
        best_value.append(np.asarray(state.best_value))
        if g == 7:
            mid = state
    return state, np.stack(best_x, 1), np.stack(best_value, 1), mid


def _with_most_failures(states):
    i = int(np.argmax((np.asarray(states.status) == 2).sum(1)))
    return jax.tree_util.tree_map(lambda a: a[i], states)


def _matern52(a, b, log_ls, log_s):
    r2 = (((a[:, None, :] - b[None, :, :]) / np.exp(log_ls)) ** 2).sum(-1)
    r = np.sqrt(5.0 * r2)
    return np.exp(log_s) * (1.0 + r + 5.0 / 3.0 * r2) * np.exp(-r)


def test_feasibility_term_matches_a_numpy_gp():
    # The acquisition's feasibility term on a searched state (with failed
    # rows) against the GP posterior written out in numpy (float64) from the
    # same fitted hyperparameters: log Phi((0 - mean) / sd) in raw units.
    st = _with_most_failures(constrained_runs()[3])
    model = constraint_model(jax.random.key(3), st)
    xs = np.asarray(DISC.sample(jax.random.key(4), 64), np.float64)
    ours = np.asarray(log_feasibility(model, jnp.asarray(xs, jnp.float32)))

    x, status = np.asarray(st.x, np.float64), np.asarray(st.status)
    g = np.asarray(st.y, np.float64)[:, 1]
    obs, failed = status == 1, status == 2
    mu, sd = g[obs].mean(), g[obs].std()
    z = (g - mu) / sd
    z = np.where(failed, z[obs].max(), z)  # failed rows join the posterior as the worst value
    rows = obs | failed
    k = jax.tree_util.tree_map(lambda a: np.asarray(a[0], np.float64), model.post.kernel)
    noise = C_STRATEGY.min_noise + np.exp(k.log_noise) + float(model.post.jitter[0])
    K = _matern52(x[rows], x[rows], k.log_lengthscale, k.log_signal) + noise * np.eye(rows.sum())
    ks = _matern52(xs, x[rows], k.log_lengthscale, k.log_signal)
    mean_z = ks @ np.linalg.solve(K, z[rows])
    var_z = np.exp(k.log_signal) - np.einsum("ij,ji->i", ks, np.linalg.solve(K, ks.T))
    ref = np_log_ndtr((0.0 - (mu + sd * mean_z)) / (sd * np.sqrt(np.maximum(var_z, 1e-10))))
    assert failed.any() and np.all(np.isfinite(ours))
    np.testing.assert_allclose(np.asarray(model.threshold)[0], -mu / sd, rtol=1e-4)
    np.testing.assert_allclose(ours, ref, rtol=2e-2, atol=2e-2)


def test_constrained_optimum_found_and_every_best_is_feasible():
    # 6 seeds vmapped, 28 evaluations each (batches of 2). The unconstrained
    # optimum (-4) is infeasible; the best feasible value comes within 0.05
    # of -sqrt(2) in every seed and within 0.01 in the median, and every
    # generation's recorded best is a feasible point with that value.
    state, best_x, best_value, _ = constrained_runs()
    gap = best_value[:, -1] - DISC_MIN
    assert np.all(gap < 0.05) and np.median(gap) < 0.01 and np.all(gap > -1e-4), gap
    seen = np.isfinite(best_value)
    f, g = _disc_np(best_x[seen])
    assert np.all(g <= 0.0), g
    np.testing.assert_allclose(f, best_value[seen], rtol=1e-6)
    later = np.isfinite(best_value[:, :-1])
    assert np.all(best_value[:, 1:][later] <= best_value[:, :-1][later])  # never gets worse
    # Seeds whose initial design held no feasible point still found one (the
    # feasibility term alone drives the search until then); key 7 has such a seed.
    design_gens = C_STRATEGY.num_design // C_STRATEGY.popsize
    none_feasible = ~np.isfinite(best_value[:, design_gens - 1])
    assert none_feasible.any() and np.all(np.isfinite(best_value[none_feasible, -1]))


def test_failed_constraints_stay_out_of_the_fit_and_never_become_best():
    state, best_x, best_value, mid = constrained_runs()
    assert (np.asarray(mid.status) == 2).sum() > 0  # the slab x1 > 1 was hit
    # (Once the buffer is full failed rows keep their share: tests/test_buffer.py.)
    for st in (state, mid):
        assert np.all(np.asarray(st.y)[np.asarray(st.status) == 2] == 0.0)
        for leaf in jax.tree_util.tree_leaves(st):
            assert np.all(np.isfinite(np.asarray(leaf)))
        assert int(np.asarray(st.gp_failures).sum()) == 0
    # The best is never in the failing slab.
    assert np.all(np.asarray(DISC.decode(jnp.asarray(best_x[np.isfinite(best_value)]))["x1"]) <= 1.0)
    # The fit is the same whether the failed rows are there or absent.
    st = _with_most_failures(mid)
    failed = st.status == 2
    gone = st._replace(status=jnp.where(failed, 0, st.status), y=jnp.where(failed[:, None], 1e6, st.y))
    a, b = constraint_model(jax.random.key(5), st), constraint_model(jax.random.key(5), gone)
    for u, v in zip(jax.tree_util.tree_leaves(a.post.kernel), jax.tree_util.tree_leaves(b.post.kernel)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a.threshold), np.asarray(b.threshold), rtol=1e-6)


def test_no_recompile_vmap_and_determinism():
    s = C_STRATEGY
    state = constrained_runs()[0]
    ask, tell, traces = counted_protocol(s, vmapped=True)
    # One trace each for the whole search: design, model, buffer filling, buffer full.
    assert traces == {"ask": 1, "tell": 1}, traces
    assert np.all(np.asarray(state.count) == s.capacity)
    keys = jax.random.split(jax.random.key(9), C_SEEDS)
    x1, _ = ask(keys, state)
    x2, _ = ask(keys, state)
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))  # same key, same points
    x1 = np.asarray(x1)
    assert np.all(np.isfinite(x1)) and np.all((x1 >= 0) & (x1 <= 1))
    assert not np.allclose(x1[0], x1[1])  # seeds differ
    assert np.all(np.abs(x1[:, 0] - x1[:, 1]).sum(-1) > 1e-5)  # a batch's rows differ
    assert traces == {"ask": 1, "tell": 1}, traces


def test_feasibility_term_before_any_feasible_point():
    # Six infeasible observations around the disc (and none inside): the
    # feasibility term, all the acquisition has until a feasible point is
    # found, ranks unseen points inside the disc above the region seen.
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    pts = np.stack([1.8 * np.cos(angles), 1.8 * np.sin(angles)], 1)
    x = jnp.asarray((pts + 2.0) / 4.0, jnp.float32)
    vals = np.stack([pts.sum(1), (pts**2).sum(1) - 1.0], 1).astype(np.float32)
    st = C_STRATEGY.init(jax.random.key(0))
    n = len(pts)
    st = st._replace(x=st.x.at[:n].set(x), y=st.y.at[:n].set(jnp.asarray(vals)), status=st.status.at[:n].set(1),
                     count=jnp.int32(n))
    model = constraint_model(jax.random.key(1), st)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 21), np.linspace(0, 1, 21)), -1).reshape(-1, 2)
    lf = np.asarray(log_feasibility(model, jnp.asarray(grid, jnp.float32)))
    r = np.linalg.norm(grid * 4.0 - 2.0, axis=1)
    assert np.all(np.isfinite(lf))
    assert np.mean(lf[r < 0.5]) > np.mean(lf[np.abs(r - 1.8) < 0.15])


# ---------------------------------------------------------- multi-objective
D = 3
ZDT_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(D)})
REF = jnp.array([1.1, 1.1])
EVALS = 40
MO_SEEDS = 6
MO_STRATEGY = GPBO(ZDT_SPACE, 1, 32, num_objectives=2, n_init=8, **SMALL)


def zdt1(p):
    x = jnp.stack([p[f"x{i}"] for i in range(D)])
    g = 1.0 + 9.0 * jnp.mean(x[1:])
    return jnp.stack([x[0], g * (1.0 - jnp.sqrt(x[0] / g))])


def zdt1_max_constrained(p):
    """Negated ZDT1 (to be maximised) subject to ``x0 >= 0.2``."""
    return jnp.concatenate([-zdt1(p), jnp.stack([0.2 - p["x0"]])])


def test_beats_random_search_hypervolume_on_zdt1():
    # 6 seeds vmapped, 40 evaluations of 3-D ZDT1 (the buffer of 32 fills):
    # ParEGO's median hypervolume beats random search's with the same budget.
    keys = jax.random.split(jax.random.key(11), MO_SEEDS)
    state, _ = jax.jit(jax.vmap(lambda k: jaxhpo.run(MO_STRATEGY, zdt1, k, EVALS)))(keys)
    ours = np.asarray(jax.jit(jax.vmap(lambda st: pareto.hypervolume(st.y, REF, st.status == 1)))(state))
    rand = np.asarray(jax.jit(jax.vmap(lambda k: pareto.hypervolume(
        jax.vmap(zdt1)(ZDT_SPACE.decode(ZDT_SPACE.sample(k, EVALS))), REF)))(keys))
    assert np.median(ours) > np.median(rand) + 0.05, (ours, rand)
    assert not np.allclose(np.asarray(state.y[0]), np.asarray(state.y[1]))  # seeds differ
    # The front: non-dominated among the buffer's rows, at the points it names
    # (every seed's buffer evaluated again in one program).
    xs, vs, masks = (np.asarray(a) for a in jax.vmap(MO_STRATEGY.pareto_front)(state))
    again = np.asarray(jax.jit(lambda x: jax.vmap(zdt1)(ZDT_SPACE.decode(x)))(xs.reshape(-1, D))).reshape(vs.shape)
    status = np.asarray(state.status)
    for i in range(MO_SEEDS):
        front, rows = vs[i][masks[i]], vs[i][status[i] == 1]
        assert len(front) > 0
        assert not np.any([np.all(a <= b) and np.any(a < b) for a in rows for b in front])
        np.testing.assert_allclose(again[i][masks[i]], front, rtol=1e-5)


def test_minimize_returns_the_front_with_constraints_and_batches():
    # Maximise the negated objectives subject to x0 >= 0.2, in batches of 2
    # (a weight vector per point), by constrained Thompson sampling: a
    # finite, feasible, mutually non-dominated front and its hypervolume,
    # mostly feasible proposals once the model runs; same key, same search.
    s = GPBO(ZDT_SPACE, 2, 32, "ts", num_objectives=2, num_constraints=1, n_init=8, **SMALL)
    kw = dict(key=3, num_generations=10, maximize=(True, True), ref_point=(-1.1, -1.1), history="all")
    res = jaxhpo.minimize(zdt1_max_constrained, ZDT_SPACE, s, **kw)
    vals = -np.asarray(res.pareto_values)
    assert len(res.pareto_params) == len(vals) > 0 and np.all(np.isfinite(vals))
    assert all(p["x0"] >= 0.2 for p in res.pareto_params)
    assert not np.any([np.all(a <= b) and np.any(a < b) for a in vals for b in vals])
    np.testing.assert_allclose(res.hypervolume, float(pareto.hypervolume(jnp.asarray(vals), REF)), rtol=1e-5)
    assert res.best_params["x0"] >= 0.2 and res.best_value == pytest.approx(-vals[:, 0].min())
    assert res.history.values.shape == (10, 2, 3)
    model_rows = np.asarray(res.history.values)[4:].reshape(-1, 3)  # after the 8-point design
    assert np.mean(model_rows[:, 2] <= 0) >= 0.75, model_rows
    xs = np.asarray(res.history.x)  # (generations, 2, dim): the two points of a batch differ
    assert np.all(np.abs(xs[:, 0] - xs[:, 1]).sum(-1) > 1e-5)
    again = jaxhpo.minimize(zdt1_max_constrained, ZDT_SPACE, s, **kw)
    np.testing.assert_array_equal(np.asarray(again.history.x), xs)
    np.testing.assert_array_equal(np.asarray(again.pareto_values), np.asarray(res.pareto_values))


def test_a_full_buffer_keeps_the_best_ranks_older_first_within_a_rank():
    # Each point's x records when it was told; 40 random runs of 6 tells into 4 slots,
    # against the rule worked out in numpy (non-dominated rank, then age).
    s = GPBO(jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0)), popsize=2, capacity=4, num_objectives=2, n_init=2)
    tell = jax.jit(s.tell)
    rng = np.random.default_rng(0)
    for _ in range(40):
        state, told = s.init(jax.random.key(0)), []
        for step in range(6):
            vals = rng.integers(0, 4, (2, 2)).astype(np.float32)
            told += [(2 * step + i, vals[i]) for i in range(2)]
            state = tell(state, jnp.asarray([[(2 * step + 0.5) / 16], [(2 * step + 1.5) / 16]]), jnp.asarray(vals))
            kept = sorted(int(v * 16) for v, st in zip(np.asarray(state.x[:, 0]), np.asarray(state.status)) if st == 1)
            rank = np.asarray(pareto.nondominated_rank(jnp.asarray(np.array([v for _, v in told]))))
            want = sorted(sorted(range(len(told)), key=lambda i: (rank[i], told[i][0]))[:4])
            assert kept == [told[i][0] for i in want], (told, kept)
            told = [told[i] for i in want]


def test_a_state_of_another_capacity_is_refused_by_tell_too():
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0))
    small = jaxhpo.GPBO(space, 2, capacity=4, num_objectives=2)
    big_state = jaxhpo.GPBO(space, 2, capacity=8, num_objectives=2).init(jax.random.key(0))
    with pytest.raises(ValueError, match="GPBO state has a buffer of 8 rows, this GPBO a capacity of 4"):
        small.tell(big_state, jnp.full((2, 2), 0.5), jnp.ones((2, 2)))
