"""Behaviour of the NSGA2 strategy: selection, constraints, failures, archive, mixed spaces, quality.

``minimize``/``run`` expect one value per configuration, so searches here run
their own ``lax.scan`` of ask -> vmapped objective -> tell (``search``). The
quality claim runs SEEDS = 16 vmapped searches per method at an equal budget
and is decided by the medians and a one-sided Mann-Whitney U test at level
ALPHA = 0.01 on the final hypervolumes.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxhpo
from jaxhpo import pareto
from jaxhpo.strategies.nsga2 import NSGA2

SEEDS = 16
ALPHA = 0.01

# ---------------------------------------------------------------- problems
ZDT_DIM = 8
ZDT_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(ZDT_DIM)})
ZDT_REF = jnp.array([1.1, 1.1])


def zdt1(p):
    x = jnp.stack([p[f"x{i}"] for i in range(ZDT_DIM)])
    g = 1.0 + 9.0 * jnp.mean(x[1:])
    return jnp.stack([x[0], g * (1.0 - jnp.sqrt(x[0] / g))])


# Binh-Korn: two objectives on [0, 5] x [0, 3], two constraints (<= 0 is feasible).
BK_SPACE = jaxhpo.Space(x=jaxhpo.Float(0.0, 5.0), y=jaxhpo.Float(0.0, 3.0))


def binh_korn(p):
    x, y = p["x"], p["y"]
    f1 = 4.0 * x**2 + 4.0 * y**2
    f2 = (x - 5.0) ** 2 + (y - 5.0) ** 2
    g1 = (x - 5.0) ** 2 + y**2 - 25.0
    g2 = 7.7 - (x - 8.0) ** 2 - (y + 3.0) ** 2
    return jnp.stack([f1, f2, g1, g2])


MIXED_SPACE = jaxhpo.Space(
    a=jaxhpo.Float(0.0, 1.0),
    n=jaxhpo.Int(0, 9),
    m=jaxhpo.Int(1, 1000, log=True),
    c=jaxhpo.Categorical(list("abcd")),
)


def mixed(p):
    a = p["a"]
    n = p["n"].astype(jnp.float32) / 9.0
    return jnp.stack([a + n + (p["c"] != 1), (1.0 - a) ** 2 + (1.0 - n) ** 2 + (p["c"] != 2)])


def search(strategy, objective, key, generations):
    """``(state, (x, values))`` of a whole search; ``x``, ``values`` with leading axis G."""
    k_init, k_loop = jax.random.split(key)
    state = strategy.init(k_init)

    def generation(state, k):
        x, state = strategy.ask(k, state)
        values = jax.vmap(objective)(strategy.space.decode(x))
        return strategy.tell(state, x, values), (x, values)

    return jax.lax.scan(generation, state, jax.random.split(k_loop, generations))


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(popsize=1), ValueError, "popsize"),
    (dict(popsize=2.5), TypeError, "popsize"),
    (dict(num_objectives=0), ValueError, "num_objectives"),
    (dict(num_objectives="2"), TypeError, "num_objectives"),
    (dict(num_constraints=-1), ValueError, "num_constraints"),
    (dict(archive_size=-1), ValueError, "archive_size"),
    (dict(crossover="blend"), ValueError, "crossover"),
    (dict(crossover_rate=1.5), ValueError, "crossover_rate"),
    (dict(mutation_rate=-0.1), ValueError, "mutation_rate"),
    (dict(mutation_sigma=0.0), ValueError, "mutation_sigma"),
    (dict(sbx_eta=-1.0), ValueError, "sbx_eta"),
])
def test_bad_settings_are_named(kwargs, error, match):
    kwargs = {"popsize": 8, **kwargs}
    with pytest.raises(error, match=match):
        NSGA2(ZDT_SPACE, **kwargs)


def test_bad_shapes_in_tell_are_named():
    # Shapes are checked while tracing, so eval_shape shows them without compiling anything.
    s = NSGA2(ZDT_SPACE, 4, 2, 1)
    state = jax.eval_shape(s.init, jax.random.key(0))
    x = jnp.zeros((4, ZDT_DIM))
    with pytest.raises(ValueError, match=r"values must have shape .*\(4, 3\)"):
        jax.eval_shape(s.tell, state, x, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        jax.eval_shape(s.tell, state, x[:3], jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="params has unknown"):
        s.init(jax.random.key(0), {"nope": 1.0})
    assert jax.eval_shape(s.tell, state, x, jnp.zeros((4, 3))).front_values.shape == (4, 2)
    # One objective, no constraints: (popsize,) is accepted.
    s1 = NSGA2(ZDT_SPACE, 4, 1)
    jax.eval_shape(s1.tell, jax.eval_shape(s1.init, jax.random.key(0)), x, jnp.zeros(4))


def test_equal_settings_are_equal():
    assert NSGA2(ZDT_SPACE, 8, 2) == NSGA2(ZDT_SPACE, 8, 2)
    assert hash(NSGA2(ZDT_SPACE, 8, 2)) == hash(NSGA2(ZDT_SPACE, 8, 2))
    assert NSGA2(ZDT_SPACE, 8, 2) != NSGA2(ZDT_SPACE, 8, 2, 1)


# ---------------------------------------------------------------- selection
def test_selection_prefers_feasible_children_over_infeasible_parents():
    s = NSGA2(BK_SPACE, 6, 2, 1)
    ask, tell = jax.jit(s.ask), jax.jit(s.tell)
    state = s.init(jax.random.key(0))
    x0, state = ask(jax.random.key(1), state)
    # Parents: excellent objectives, all infeasible.
    state = tell(state, x0, jnp.stack([jnp.zeros(6), jnp.zeros(6), jnp.arange(1.0, 7.0)], axis=1))
    assert not bool(jnp.any(state.front_mask))
    assert float(state.best_value) == np.inf
    x1, state = ask(jax.random.key(2), state)
    # Children: poor objectives, all feasible except one failed (NaN) row.
    v1 = jnp.stack([jnp.arange(10.0, 16.0), -jnp.arange(10.0, 16.0), -jnp.ones(6)], axis=1).at[0, 0].set(jnp.nan)
    state = tell(state, x1, v1)
    # Every feasible child survives; the sixth slot goes to the least violating parent.
    np.testing.assert_array_equal(np.sort(np.asarray(state.violation)), [0, 0, 0, 0, 0, 1])
    assert not np.any(np.all(np.asarray(state.population) == np.asarray(x1[0]), axis=1))
    assert int(state.front_mask.sum()) == 5 and bool(jnp.all(state.rank[state.violation == 0] == 0))
    assert float(state.best_value) == 11.0  # first objective of the best feasible, failed row skipped
    np.testing.assert_array_equal(state.best_x, x1[1])


@functools.lru_cache(maxsize=None)
def bk_run():
    s = NSGA2(BK_SPACE, 16, 2, 2, archive_size=16 * 12)
    return s, jax.jit(lambda k: search(s, binh_korn, k, 12))(jax.random.key(3))


def test_archive_is_the_front_of_every_feasible_evaluation():
    s, (state, (xs, vs)) = bk_run()
    vs = np.asarray(vs).reshape(-1, 4)
    feasible = np.all(vs[:, 2:] <= 0, axis=1)
    assert 0 < feasible.sum() < len(vs)  # the problem does exclude points
    obj = vs[feasible, :2]
    on_front = np.asarray(pareto.pareto_front_mask(obj))
    want = {tuple(r) for r in obj[on_front]}
    fx, fv, fm = (np.asarray(a) for a in s.pareto_front(state))
    got = [tuple(r) for r in fv[fm]]
    assert len(got) == len(set(got))  # equal objective vectors kept once
    assert set(got) == want
    # The archive's points reproduce their values, so x and values stay paired.
    again = np.asarray(jax.vmap(binh_korn)(BK_SPACE.decode(fx[fm])))
    np.testing.assert_allclose(again[:, :2], fv[fm], rtol=1e-5)
    assert np.all(again[:, 2:] <= 1e-4)
    # best is the feasible evaluation with the lowest first objective.
    assert float(state.best_value) == obj[:, 0].min()


def test_failed_evaluations_never_enter_the_front():
    def half_fails(p):
        v = zdt1(p)
        return jnp.where(p["x0"] > 0.5, jnp.nan, v)

    s = NSGA2(ZDT_SPACE, 16, 2)
    state, (xs, vs) = jax.jit(lambda k: search(s, half_fails, k, 6))(jax.random.key(5))
    assert np.any(np.isnan(np.asarray(vs)))
    fx, fv, fm = (np.asarray(a) for a in s.pareto_front(state))
    assert fm.any() and np.all(np.isfinite(fv[fm])) and np.all(fx[fm, 0] <= 0.5)
    assert np.isfinite(float(state.best_value))
    # Failed rows rank after every evaluated one in the population.
    ok = np.all(np.isfinite(np.asarray(state.objectives)), axis=1)
    assert ok.all() or np.asarray(state.rank)[~ok].min() > np.asarray(state.rank)[ok].max()


def test_children_keep_discrete_genes_on_bin_centres():
    s = NSGA2(MIXED_SPACE, 16, 2, mutation_rate=0.5)
    _, (xs, _) = jax.jit(lambda k: search(s, mixed, k, 5))(jax.random.key(6))
    x = np.asarray(xs).reshape(-1, MIXED_SPACE.dim)
    snapped = np.asarray(MIXED_SPACE.encode(MIXED_SPACE.decode(x)))
    discrete = MIXED_SPACE.integer_mask | MIXED_SPACE.categorical_mask
    np.testing.assert_allclose(x[:, discrete], snapped[:, discrete], atol=1e-6)
    # Categories and integers actually move.
    assert len(np.unique(x[:, 3])) == 4 and len(np.unique(x[:, 1])) > 5


# ------------------------------------------------- jit, vmap and quality
ZDT_POP, ZDT_GENERATIONS = 16, 20  # 320 evaluations per search
ZDT_ARCHIVE = 8  # smaller than most fronts found, so archive truncation is exercised


@functools.lru_cache(maxsize=None)
def zdt_runs():
    """SEEDS vmapped NSGA2 searches and random searches of 320 evaluations on ZDT1.

    Returns ``(search_fn, keys, states, values (SEEDS, G, popsize, 2),
    nsga2_hv (SEEDS,), random_hv (SEEDS,))``; both hypervolumes are those of
    every point evaluated.
    """
    s = NSGA2(ZDT_SPACE, ZDT_POP, 2, archive_size=ZDT_ARCHIVE)

    def nsga2(k):
        state, (_, values) = search(s, zdt1, k, ZDT_GENERATIONS)
        return state, values, pareto.hypervolume(values.reshape(-1, 2), ZDT_REF)

    def random_hv(k):
        v = jax.vmap(zdt1)(ZDT_SPACE.decode(ZDT_SPACE.sample(k, ZDT_POP * ZDT_GENERATIONS)))
        return pareto.hypervolume(v, ZDT_REF)

    keys = jax.random.split(jax.random.key(2024), SEEDS)
    fn = jax.jit(jax.vmap(nsga2))
    states, values, hv = fn(keys)
    return fn, keys, states, np.asarray(values), np.asarray(hv), np.asarray(jax.jit(jax.vmap(random_hv))(keys))


def test_vmapped_searches_are_deterministic_and_match_single_runs():
    fn, keys, states, values, hv, _ = zdt_runs()
    np.testing.assert_array_equal(np.asarray(fn(keys)[2]), hv)  # the same keys give the same runs
    assert len(set(hv.tolist())) > 1  # and different keys different ones
    s = NSGA2(ZDT_SPACE, ZDT_POP, 2, archive_size=ZDT_ARCHIVE)
    _, (_, single) = jax.jit(lambda k: search(s, zdt1, k, ZDT_GENERATIONS))(keys[3])
    # A vmapped objective may round differently from a single one (1 ulp);
    # a selection flipped by that makes the runs part later on, so only the
    # first generations are compared.
    np.testing.assert_allclose(np.asarray(single)[:3], values[3, :3], rtol=1e-5)


def test_archive_truncation_keeps_a_non_dominated_spread():
    _, _, states, values, _, _ = zdt_runs()
    truncated = 0
    for seed in range(SEEDS):
        fv = np.asarray(states.front_values[seed])[np.asarray(states.front_mask[seed])]
        seen = values[seed].reshape(-1, 2)
        front = seen[np.asarray(pareto.pareto_front_mask(seen))]
        assert 2 <= len(fv) <= ZDT_ARCHIVE
        assert np.all(np.asarray(pareto.pareto_front_mask(fv)))  # mutually non-dominated
        assert {tuple(r) for r in fv} <= {tuple(r) for r in seen}  # only evaluated points
        # The extremes of the front survive truncation (their crowding distance is inf).
        assert fv[:, 0].min() == front[:, 0].min() and fv[:, 1].min() == front[:, 1].min()
        truncated += len(front) > ZDT_ARCHIVE
    assert truncated >= SEEDS // 2


def test_archive_truncation_keeps_the_loneliest_front_points():
    # One tell of 8 points of one front into an archive of 4, with a dominated
    # row and a failure: the two ends (inf) and the two interior points of
    # largest crowding distance stay (Deb et al.'s distance, by hand below).
    # (objectives of other ranges, one curved: the normalisation by each range counts)
    f1 = np.array([0.0, 0.05, 0.3, 0.35, 0.6, 0.9, 0.95, 1.0], np.float32)
    front = np.stack([f1, 10.0 * (1.0 - f1) ** 2], axis=1).astype(np.float32)
    values = np.concatenate([front, [[0.9, 9.0], [np.nan, 0.0]]]).astype(np.float32)
    s = NSGA2(ZDT_SPACE, 10, num_objectives=2, archive_size=4)
    state = s.tell(s.init(jax.random.key(0)), jnp.full((10, ZDT_DIM), 0.5), jnp.asarray(values))
    kept = np.asarray(state.front_values)[np.asarray(state.front_mask)]
    # interior distances: the neighbours' gap over the front's range, per objective
    f = front.astype(np.float64)
    span = f.max(axis=0) - f.min(axis=0)
    interior = (f[2:, 0] - f[:-2, 0]) / span[0] + (f[:-2, 1] - f[2:, 1]) / span[1]
    loneliest = 1 + np.argsort(-interior, kind="stable")[:2]
    want = {tuple(front[i]) for i in (0, 7, *loneliest)}
    assert {tuple(r) for r in kept} == want and len(kept) == 4
    # (the first objective alone, or gaps not divided by the ranges, would keep others)
    assert set(1 + np.argsort(-(f[2:, 0] - f[:-2, 0]), kind="stable")[:2]) != set(loneliest)
    raw = (f[2:, 0] - f[:-2, 0]) + (f[:-2, 1] - f[2:, 1])
    assert set(1 + np.argsort(-raw, kind="stable")[:2]) != set(loneliest)


def test_nsga2_beats_random_search_on_zdt1():
    *_, ours, rand = zdt_runs()
    assert np.median(ours) > np.median(rand)
    assert stats.mannwhitneyu(ours, rand, alternative="greater").pvalue < ALPHA
