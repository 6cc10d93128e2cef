"""MOTPE: the good/bad split against a numpy reference (brute-force fronts and
Optuna's hypervolume subset selection), the jit/vmap/determinism/failure
contract, and search quality on ZDT1 against random search (seeds vmapped;
counts stated per test)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import pareto
from jaxhpo.strategies.motpe import MOTPE, hssp_greedy, split_multiobjective


# ------------------------------------------------------------------ split
def _np_ranks(obj, rows):
    """Brute-force non-dominated ranks of ``rows`` (others: -1)."""
    rank = np.full(len(obj), -1)
    left = set(np.flatnonzero(rows))
    r = 0
    while left:
        front = [i for i in left if not any(np.all(obj[j] <= obj[i]) and np.any(obj[j] < obj[i])
                                             for j in left)]
        rank[front] = r
        left -= set(front)
        r += 1
    return rank


def _np_split(obj, viol, valid, number, gamma):
    """Optuna's MOTPE split written out in numpy; the tie-break is Optuna's own ``_solve_hssp``."""
    from optuna._hypervolume import hssp
    from optuna.samplers._tpe.sampler import _get_reference_point

    ok = valid & np.all(np.isfinite(obj), axis=1) & np.isfinite(viol)
    feasible, infeasible = ok & (viol <= 0), ok & (viol > 0)
    k = math.ceil(gamma * ok.sum() - 1e-9)
    k_feas = min(k, feasible.sum())
    good = np.zeros(len(obj), bool)
    rank = _np_ranks(obj, feasible)
    r = 0
    while k_feas - good.sum() > 0:
        front = feasible & (rank == r)
        if good.sum() + front.sum() <= k_feas:
            good |= front
        else:
            idx = np.flatnonzero(front)
            sel = hssp._solve_hssp(obj[idx].astype(np.float64), idx, int(k_feas - good.sum()),
                                   _get_reference_point(obj[idx].astype(np.float64)))
            good[sel] = True
        r += 1
    inf_rows = sorted(np.flatnonzero(infeasible), key=lambda i: (viol[i], number[i]))
    good[inf_rows[: k - k_feas]] = True
    return good


_split_jit = jax.jit(split_multiobjective)


@pytest.mark.parametrize("m, seed", [(2, 0), (2, 1), (3, 2), (2, 3)])
def test_split_matches_numpy_reference(m, seed):
    rng = np.random.default_rng(seed)
    c = 48
    obj = rng.uniform(size=(c, m)).astype(np.float32)
    viol = np.where(rng.uniform(size=c) < 0.25, rng.uniform(0.1, 2.0, size=c), 0.0).astype(np.float32)
    if seed == 3:  # all feasible rows fit: the infeasible ones fill the good set
        viol = np.where(np.arange(c) < 6, 0.0, rng.uniform(0.1, 2.0, size=c)).astype(np.float32)
    obj[rng.integers(0, c, 3)] = np.nan  # failures
    valid = np.arange(c) < 44
    number = rng.permutation(c).astype(np.int32)
    for gamma in (0.1, 0.35):
        good, bad = _split_jit(jnp.asarray(obj), jnp.asarray(viol), jnp.asarray(valid), jnp.asarray(number),
                               jnp.float32(gamma))
        ref = _np_split(np.where(np.isfinite(obj), obj, np.inf), viol, valid, number, gamma)
        np.testing.assert_array_equal(np.asarray(good), ref)
        np.testing.assert_array_equal(np.asarray(bad), valid & ~ref)


def test_hssp_greedy_is_optimal_on_a_small_front():
    # On 2-D fronts of this size greedy selection of 2 points can be checked
    # against every pair.
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(size=7))
    obj = np.stack([t, 1 - np.sqrt(t)], 1).astype(np.float32)
    cand = np.ones(7, bool)
    sel = np.asarray(hssp_greedy(jnp.asarray(obj), jnp.asarray(cand), jnp.int32(2)))
    ref = np.maximum(1.1 * obj.max(0), 0.9 * obj.max(0))
    first = np.argmax([np.prod(ref - o) for o in obj])
    best_second = max((i for i in range(7) if i != first),
                      key=lambda i: float(pareto.hypervolume(jnp.asarray(obj[[first, i]]), ref)))
    assert sel.sum() == 2 and sel[first] and sel[best_second]


# ------------------------------------------------------------- behaviour
D = 3
ZDT_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(D)})
REF = jnp.array([1.1, 1.1])
EVALS = 40
SEEDS = 8


def zdt1(p):
    x = jnp.stack([p[f"x{i}"] for i in range(D)])
    g = 1.0 + 9.0 * jnp.mean(x[1:])
    return jnp.stack([x[0], g * (1.0 - jnp.sqrt(x[0] / g))])


def zdt1_failing(p):
    # Fails (NaN) on a slab of the space; the search must carry on.
    v = zdt1(p)
    return jnp.where(p["x1"] > 0.8, jnp.nan, v)


STRATEGY = MOTPE(ZDT_SPACE, 1, capacity=32, n_startup=8)  # full buffer from evaluation 33 on


@functools.lru_cache(maxsize=None)
def _runs(objective):
    @jax.jit
    def run(keys):
        return jax.vmap(lambda k: jaxhpo.run(STRATEGY, objective, k, EVALS))(keys)

    return run


def _keys():
    return jax.random.split(jax.random.key(11), SEEDS)


def test_beats_random_search_hypervolume_on_zdt1():
    # 8 seeds vmapped, 40 evaluations on 3-D ZDT1: MOTPE's median hypervolume
    # of all evaluated points beats random search's with the same budget.
    state, trace = _runs(zdt1)(_keys())

    def hv_motpe(st):
        return pareto.hypervolume(st.obj, REF, jnp.arange(STRATEGY.capacity) < st.count)

    ours = np.asarray(jax.vmap(hv_motpe)(state))
    rand = np.asarray(jax.vmap(lambda k: pareto.hypervolume(
        jax.vmap(zdt1)(ZDT_SPACE.decode(ZDT_SPACE.sample(k, EVALS))), REF))(_keys()))
    assert np.median(ours) > np.median(rand) + 0.05, (ours, rand)


def test_deterministic_and_seeds_differ():
    state, _ = _runs(zdt1)(_keys())
    again, _ = _runs(zdt1)(_keys())
    np.testing.assert_array_equal(np.asarray(state.obj), np.asarray(again.obj))
    np.testing.assert_array_equal(np.asarray(state.x), np.asarray(again.x))
    assert not np.allclose(np.asarray(state.obj[0]), np.asarray(state.obj[1]))
    # Proposals from a full buffer stay in the cube.
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    x, _ = jax.jit(STRATEGY.ask)(jax.random.key(0), one)
    assert np.all(np.isfinite(np.asarray(x))) and np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))


def test_failures_stay_out_of_the_good_set_and_the_front():
    # A buffer with failures (NaN objective, inf constraint) among 16 rows.
    s = MOTPE(ZDT_SPACE, 16, capacity=32, num_constraints=1)
    st = s.init(jax.random.key(1))
    vals = np.random.default_rng(0).uniform(size=(16, 3)).astype(np.float32) - np.array([0, 0, 0.5], np.float32)
    vals[[1, 4]] = np.nan
    vals[7, 2] = np.inf
    st = jax.jit(s.tell)(st, ZDT_SPACE.sample(jax.random.key(2), 16), jnp.asarray(vals))
    good, bad = s.split(st)
    failed = np.zeros(32, bool)
    failed[[1, 4, 7]] = True
    assert not np.any(np.asarray(good) & failed) and np.all(np.asarray(bad)[failed])
    _, _, mask = s.pareto_front(st)
    assert not np.any(np.asarray(mask) & failed) and np.asarray(mask).any()


def test_minimize_returns_the_front_in_user_signs_despite_failures():
    # Maximising the negated objectives (failing on a slab) must give a
    # front of finite, mutually non-dominated points.
    res = jaxhpo.minimize(lambda p: -zdt1_failing(p), ZDT_SPACE, STRATEGY, key=3, num_generations=EVALS,
                          maximize=(True, True), ref_point=(-1.1, -1.1))
    assert res.num_failed > 0
    vals = -np.asarray(res.pareto_values)
    assert len(res.pareto_params) == len(vals) > 0 and np.all(np.isfinite(vals))
    assert not np.any([np.all(a <= b) and np.any(a < b) for a in vals for b in vals])
    np.testing.assert_allclose(res.hypervolume, float(pareto.hypervolume(jnp.asarray(vals), REF)), rtol=1e-5)


def test_constraints_put_feasible_rows_first():
    # Constraint x0 >= 0.5: every good row is feasible as soon as enough are.
    rng = np.random.default_rng(0)
    c = 30
    obj = rng.uniform(size=(c, 2)).astype(np.float32)
    x0 = rng.uniform(size=c).astype(np.float32)
    viol = np.maximum(0.5 - x0, 0.0)
    good, _ = _split_jit(jnp.asarray(obj), jnp.asarray(viol), jnp.ones(c, bool), jnp.arange(c), jnp.float32(0.3))
    good = np.asarray(good)
    assert good.sum() == math.ceil(0.3 * c) and np.all(viol[good] == 0)


def test_hypervolume_weights_follow_contributions():
    s = MOTPE(ZDT_SPACE, 1, capacity=32, below_weights="hypervolume")
    state, _ = _runs(zdt1)(_keys())
    one = jax.tree_util.tree_map(lambda a: a[2], state)
    good, _ = s.split(one)
    w = np.asarray(s.below_weight_values(one, good))
    g = np.asarray(good)
    obj = np.asarray(one.obj)[g]
    ref = np.maximum(1.1 * obj.max(0), 0.9 * obj.max(0))
    hv = float(pareto.hypervolume(jnp.asarray(obj), ref))
    contrib = np.array([hv - float(pareto.hypervolume(jnp.asarray(np.delete(obj, i, 0)), ref))
                        for i in range(len(obj))])
    np.testing.assert_allclose(w[g], np.maximum(contrib, 0) / contrib.max(), atol=1e-4)
    assert np.all(w[~g] == 0)


def test_subset_choices_and_weights_do_not_depend_on_the_objectives_scale():
    # Greedy subset selection and hypervolume weights are unchanged when every
    # objective is multiplied by one positive factor. In raw float32 the
    # hypervolumes overflowed (1e20: all inf, the lowest row chosen; the
    # weights inf - inf = nan) or flushed to 0 (1e-20).
    rng = np.random.default_rng(3)
    for m in (2, 3):
        u = rng.dirichlet(np.ones(m), size=12)
        obj = (np.sqrt(u) + 0.05 * rng.uniform(size=(12, m))).astype(np.float32)  # near one front
        cand = np.asarray(pareto.nondominated_rank(jnp.asarray(obj))) == 0
        need = jnp.int32(max(1, cand.sum() // 2))
        want = np.asarray(hssp_greedy(jnp.asarray(obj), jnp.asarray(cand), need))
        for scale in (1e-20, 1e-12, 1e12, 1e20):
            got = np.asarray(hssp_greedy(jnp.asarray(obj * np.float32(scale)), jnp.asarray(cand), need))
            np.testing.assert_array_equal(got, want, err_msg=f"m={m} scale={scale}")
    s = MOTPE(ZDT_SPACE, 1, capacity=32, below_weights="hypervolume")
    state, _ = _runs(zdt1)(_keys())
    one = jax.tree_util.tree_map(lambda a: a[2], state)
    good, _ = s.split(one)
    w = np.asarray(s.below_weight_values(one, good))
    for scale in (1e-20, 1e20):
        scaled = one._replace(obj=one.obj * scale)
        np.testing.assert_array_equal(np.asarray(s.split(scaled)[0]), np.asarray(good))
    # The weights keep Optuna's floor of 1e-12 on the raw contributions: far
    # below it at 1e20, where they are the unscaled weights; at 1e-20 every
    # contribution is below it and the good rows weigh alike, as in Optuna.
    big = np.asarray(s.below_weight_values(one._replace(obj=one.obj * 1e20), good))
    np.testing.assert_allclose(big, w, rtol=1e-4, atol=1e-6)
    tiny = np.asarray(s.below_weight_values(one._replace(obj=one.obj * 1e-20), good))
    feasible = np.asarray(good & (one.violation <= 0))
    np.testing.assert_allclose(tiny[feasible], 1.0, rtol=1e-5)
    assert np.all(tiny[~np.asarray(good)] == 0)


@pytest.mark.parametrize("kwargs, word", [
    (dict(num_objectives=0), "num_objectives"),
    (dict(num_constraints=-1), "num_constraints"),
    (dict(below_weights="crowding"), "below_weights"),
    (dict(num_objectives=4, below_weights="hypervolume"), "below_weights"),
    (dict(gamma=0.0), "gamma"),
    (dict(capacity=0), "capacity"),
])
def test_bad_settings_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MOTPE(ZDT_SPACE, **kwargs)


def test_tell_checks_the_value_columns():
    s = MOTPE(ZDT_SPACE, 2, capacity=8, num_objectives=2, num_constraints=1)
    state = s.init(jax.random.key(0))
    x, state = jax.jit(s.ask)(jax.random.key(1), state)
    with pytest.raises(ValueError, match="num_objectives \\+ num_constraints"):
        s.tell(state, x, jnp.zeros((2, 2)))
    state = jax.jit(s.tell)(state, x, jnp.array([[0.1, 0.2, 1.0], [0.3, 0.1, -1.0]]))
    # Only the feasible row (constraint <= 0) can be best.
    assert float(state.best_value) == pytest.approx(0.3)


def test_a_conditional_parameters_marginal_weighs_only_the_good_rows_where_it_is_active():
    # As TPE's: each parameter's marginal is Optuna's estimator of the observations in which
    # it is active, with the good rows' hypervolume weights.
    space = jaxhpo.Space(c=jaxhpo.Categorical(["a", "b"]), m=jaxhpo.Float(0.0, 1.0, when={"c": "a"}))
    s = MOTPE(space, 2, 16, num_objectives=2, n_startup=4)

    def f(p):
        m = jnp.where(p["c"] == 0, p["m"], 0.5)
        return jnp.stack([m + 0.3 * p["c"], 1 - m])

    state, trace = jaxhpo.run(s, f, jax.random.key(0), 8, history="all")
    assert np.isfinite(np.asarray(trace.values)).all()
    l_est, _ = jax.jit(s.estimators)(state)
    good, _ = jax.jit(s.split)(state)
    w = np.asarray(jax.jit(s.below_weight_values)(state, good))
    act = np.asarray(space.active(space.decode(state.x))["m"])
    good = np.asarray(good)
    lw = np.asarray(l_est.log_w_dim)[:-1, space.names.index("m")]
    assert (good & act).any()
    assert np.all(np.isneginf(lw[~(good & act)]))
    np.testing.assert_allclose(np.exp(lw[good & act]), w[good & act], rtol=1e-6)
    pw = float(state.params["prior_weight"])
    np.testing.assert_allclose(np.exp(np.asarray(l_est.log_norm_dim)[space.names.index("m")]),
                               w[good & act].sum() + pw, rtol=1e-6)
