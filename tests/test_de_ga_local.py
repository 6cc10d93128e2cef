"""Behaviour of DifferentialEvolution, GeneticAlgorithm and LocalSearch.

Quality claims run SEEDS = 16 independent searches per strategy at once
(``jax.vmap`` over keys) and are decided by a one-sided Mann-Whitney U test
at level ALPHA = 0.01 on the final best values, at an equal evaluation
budget. Compiled functions are cached and shared between tests.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxhpo
from jaxhpo.strategies.de import DifferentialEvolution
from jaxhpo.strategies.ga import GeneticAlgorithm
from jaxhpo.strategies.local_search import LocalSearch

SEEDS = 16
ALPHA = 0.01

# ---------------------------------------------------------------- problems
RASTRIGIN_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(-5.12, 5.12) for i in range(10)})


def rastrigin(p):
    x = jnp.stack([p[f"x{i}"] for i in range(10)])
    return 10.0 * x.size + jnp.sum(x**2 - 10.0 * jnp.cos(2.0 * jnp.pi * x))


MIXED_SPACE = jaxhpo.Space(
    a=jaxhpo.Float(0.0, 1.0),
    b=jaxhpo.Float(-1.0, 1.0),
    n=jaxhpo.Int(0, 30),
    m=jaxhpo.Int(1, 1000, log=True),
    c1=jaxhpo.Categorical(list("abcde")),
    c2=jaxhpo.Categorical(list("wxyz")),
)


def mixed(p):
    """Optimum a=0.2, b=0.6, n=17, m=40, c1="d", c2="x" (value 0)."""
    log_m = jnp.log(p["m"].astype(jnp.float32))
    return ((p["a"] - 0.2) ** 2 + (p["b"] - 0.6) ** 2 + ((p["n"] - 17) / 30.0) ** 2
            + ((log_m - jnp.log(40.0)) / jnp.log(1000.0)) ** 2
            + 0.5 * (p["c1"] != 3) + 0.5 * (p["c2"] != 1))


PROBLEMS = {
    # name: (space, objective, popsize, generations)
    "rastrigin10": (RASTRIGIN_SPACE, rastrigin, 32, 100),
    "mixed": (MIXED_SPACE, mixed, 16, 20),
}
BUILDERS = {
    "random": jaxhpo.RandomSearch,
    "de": DifferentialEvolution,
    "ga": GeneticAlgorithm,
}


@functools.lru_cache(maxsize=None)
def final_best(name, problem):
    """``(SEEDS,)`` final best values of ``SEEDS`` vmapped searches."""
    space, objective, popsize, generations = PROBLEMS[problem]
    strategy = BUILDERS[name](space, popsize)
    keys = jax.random.split(jax.random.key(2024), SEEDS)
    search = jax.jit(jax.vmap(lambda k: jaxhpo.run(strategy, objective, k, generations)[1].best_value[-1]))
    return np.asarray(search(keys))


def trajectory(strategy, objective, generations, key, params=None):
    """Every state and batch of a search: ``(state0, (x, values, states))``, leading axis G."""

    def go(key, params):
        k_init, k_loop = jax.random.split(key)
        state0 = strategy.init(k_init, params)

        def step(state, k):
            x, state = strategy.ask(k, state)
            values = jax.vmap(objective)(strategy.space.decode(x))
            state = strategy.tell(state, x, values)
            return state, (x, values, state)

        _, out = jax.lax.scan(step, state0, jax.random.split(k_loop, generations))
        return state0, out

    return go(key, params)


# ------------------------------------------------------------- quality
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", ["de", "ga"])
def test_beats_random_search_at_equal_budget(name, problem):
    evo, rand = final_best(name, problem), final_best("random", problem)
    assert np.median(evo) < np.median(rand)
    p = stats.mannwhitneyu(evo, rand, alternative="less").pvalue
    assert p < ALPHA, f"{name} vs random on {problem}: p = {p:.3g}, medians {np.median(evo):.4g} / {np.median(rand):.4g}"


# ---------------------------------------------------- differential evolution
FAIL_SPACE = jaxhpo.Space(
    u=jaxhpo.Float(0.0, 1.0), v=jaxhpo.Float(0.0, 1.0), w=jaxhpo.Float(0.0, 1.0),
    n=jaxhpo.Int(0, 9), m=jaxhpo.Int(1, 50, log=True), c=jaxhpo.Categorical(["a", "b", "c"]),
)


def failing_mixed(p):
    """A sphere whose region u > 0.6 fails (NaN)."""
    f = ((p["u"] - 0.3) ** 2 + (p["v"] - 0.7) ** 2 + (p["w"] - 0.5) ** 2 + 0.01 * (p["n"] - 4) ** 2
         + 0.01 * jnp.abs(p["m"] - 20) + 0.1 * (p["c"] != 2))
    return jnp.where(p["u"] > 0.6, jnp.nan, f)


@functools.lru_cache(maxsize=None)
def failing_trajectory(name):
    strategy = {"de": DifferentialEvolution(FAIL_SPACE, 12),
                "ga": GeneticAlgorithm(FAIL_SPACE, 12, num_elites=2)}[name]
    state0, (x, values, states) = jax.jit(
        lambda k: trajectory(strategy, failing_mixed, 40, k))(jax.random.key(3))
    return strategy, state0, np.asarray(x), np.asarray(values), jax.tree_util.tree_map(np.asarray, states)


def test_de_first_ask_is_the_initial_population_and_selection_is_greedy():
    s, state0, x, values, states = failing_trajectory("de")
    np.testing.assert_array_equal(x[0], np.asarray(state0.population))
    fit = states.fitness  # (G, popsize) after each tell
    assert (~np.isfinite(values)).any(), "no trial hit the failing region"
    # One-to-one greedy selection: no member's value ever increases, so a
    # finite member is never replaced by a failed trial.
    assert (fit[1:] <= fit[:-1]).all()
    # The value stored for a member is the objective at that member.
    recomputed = np.asarray(jax.vmap(failing_mixed)(FAIL_SPACE.decode(states.population[-1])))
    recomputed = np.where(np.isfinite(recomputed), recomputed, np.inf)
    np.testing.assert_allclose(fit[-1], recomputed, rtol=1e-6)
    # Trials stay in the cube without being clipped onto its faces.
    assert ((x > 0.0) & (x < 1.0)).mean() > 0.99
    # Each member is replaced by its trial exactly when the trial is not worse.
    replaced = (states.population[1:] == x[1:]).all(-1)
    np.testing.assert_array_equal(replaced, values_le(values[1:], fit[:-1]))


def values_le(values, fitness):
    v = np.where(np.isfinite(values), values, np.inf)
    return v <= fitness


@pytest.mark.parametrize("variant,popsize,donors", [("rand/1/bin", 4, 3), ("current-to-best/1/bin", 3, 2),
                                                   ("rand/1/bin", 50, 3)])
def test_de_donors_are_distinct_and_never_the_target(variant, popsize, donors):
    s = DifferentialEvolution(RASTRIGIN_SPACE, popsize, variant=variant)
    u = jax.random.uniform(jax.random.key(0), (200, popsize, donors))
    r = np.asarray(jax.jit(jax.vmap(s._donors))(u))
    own = np.arange(popsize)[None, :, None]
    assert ((r >= 0) & (r < popsize)).all() and (r != own).all()
    srt = np.sort(r, axis=-1)
    assert (np.diff(srt, axis=-1) > 0).all(), "donor indices repeat within a row"
    # Uniform over the other members: every member serves as donor about equally.
    counts = np.bincount(r[..., 0].ravel(), minlength=popsize)
    assert counts.min() > 0.7 * counts.mean()


# ------------------------------------------------------------ genetic algorithm
def test_ga_elitism_keeps_the_best_and_failures_never_take_a_slot():
    s, state0, x, values, states = failing_trajectory("ga")
    fit = states.fitness
    assert (~np.isfinite(values)).any(), "no child hit the failing region"
    assert (np.diff(fit.min(-1)) <= 0).all(), "the best member was lost"
    finite = np.isfinite(fit).sum(-1)
    assert (np.diff(finite) >= 0).all(), "a failed child replaced a finite member"
    assert np.isfinite(fit[-1]).all()
    np.testing.assert_allclose(fit[-1].min(), states.best_value[-1])
    # Crossover and mutation keep integer and categorical genes on bin centres.
    assert on_bin_centres(FAIL_SPACE, x.reshape(-1, FAIL_SPACE.dim))


def test_ga_elites_are_the_best_of_old_and_landed_children():
    # Elitist truncation, checked against brute force over random generations
    # with failing children (an elite kept in place by its failed child was
    # also counted as a worst new member, and the next elite was dropped).
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0))
    rng = np.random.default_rng(0)
    for popsize, elites in ((3, 2), (5, 2), (6, 3), (8, 4)):
        ga = GeneticAlgorithm(space, popsize, num_elites=elites)
        tell, ask = jax.jit(ga.tell), jax.jit(ga.ask)
        for trial in range(12):
            state = ga.init(jax.random.key(trial))
            x, state = ask(jax.random.key(1), state)
            old = rng.permutation(popsize).astype(np.float32) + 1.0
            state = tell(state, x, jnp.asarray(old))
            x, state = ask(jax.random.key(2), state)
            child = rng.uniform(0.0, 2.0 * popsize, popsize).astype(np.float32)
            child[rng.uniform(size=popsize) < 0.3] = np.nan
            state = tell(state, x, jnp.asarray(child))
            landed = np.where(np.isfinite(child), child, old)  # a failed child leaves its parent
            best_old = np.sort(old)[:elites]
            out_of_place = [v for i, v in enumerate(old) if v in best_old and np.isfinite(child[i])]
            pool = np.sort(np.concatenate([landed, out_of_place]))[:popsize]
            np.testing.assert_array_equal(np.sort(np.asarray(state.fitness)), pool)


GENE_SPACE = jaxhpo.Space(
    f=jaxhpo.Float(0.0, 1.0),
    n=jaxhpo.Int(0, 9),
    m=jaxhpo.Int(1, 100, log=True),
    c3=jaxhpo.Categorical(["a", "b", "c"]),
    c2=jaxhpo.Categorical([True, False]),
)
GENE_POP = 4096


GENE_GA = GeneticAlgorithm(GENE_SPACE, GENE_POP)
GENE_ASK = jax.jit(GENE_GA.ask)  # one compile, shared by every mutation rate


@functools.lru_cache(maxsize=None)
def ga_children(mutation_rate):
    """Children of a population of identical parents (no crossover)."""
    parent = GENE_SPACE.encode({"f": jnp.float32(0.5), "n": jnp.int32(0), "m": jnp.int32(37),
                                "c3": jnp.int32(1), "c2": jnp.int32(0)})
    state = GENE_GA.init(jax.random.key(0), {"mutation_rate": mutation_rate, "crossover_rate": 0.0})
    state = state._replace(population=jnp.tile(parent, (GENE_POP, 1)),
                           fitness=jnp.zeros(GENE_POP), generation=jnp.int32(1))
    x, _ = GENE_ASK(jax.random.key(1), state)
    return np.asarray(parent), np.asarray(x)


def on_bin_centres(space, x):
    """Discrete coordinates equal the encoding of their decoded value."""
    again = np.asarray(space.encode(space.decode(x)))
    mask = space.integer_mask | space.categorical_mask
    return np.abs(again - x)[:, mask].max() < 1e-6


def test_ga_mutation_changes_every_mutated_discrete_gene_by_whole_values():
    parent, x = ga_children(1.0)  # every gene mutates
    dec = {k: np.asarray(v) for k, v in GENE_SPACE.decode(x).items()}
    assert on_bin_centres(GENE_SPACE, x)
    assert (dec["c3"] != 1).all() and (dec["c2"] != 0).all(), "a mutated categorical kept its category"
    assert (dec["n"] != 0).all() and (dec["m"] != 37).all(), "a mutated integer kept its value"
    # The other categories are equally likely (binomial, 4096 draws: sd 32).
    assert abs((dec["c3"] == 0).sum() - GENE_POP / 2) < 5 * 32
    # Integers move by whole steps, both ways where there is room.
    assert (dec["n"] >= 1).all() and ((dec["m"] < 37).any() and (dec["m"] > 37).any())
    assert (x[:, 0] != parent[0]).all() and np.abs(x[:, 0] - parent[0]).mean() < 0.2


def test_ga_mutation_rate_is_per_gene():
    parent, x = ga_children(0.25)
    changed = x != parent  # (GENE_POP, dim)
    # Each gene mutates with probability 0.25 (sd of the mean ~0.007) and a
    # mutated gene always changes.
    assert np.abs(changed.mean(0) - 0.25).max() < 0.04
    assert on_bin_centres(GENE_SPACE, x)


# ---------------------------------------------------------------- local search
LS_SPACE = jaxhpo.Space(
    x0=jaxhpo.Float(-2.0, 2.0), x1=jaxhpo.Float(-2.0, 2.0), x2=jaxhpo.Float(-2.0, 2.0),
    n=jaxhpo.Int(0, 20), c=jaxhpo.Categorical(["a", "b", "c", "d"]),
)


def ls_objective(p):
    return (p["x0"] - 0.7) ** 2 + (p["x1"] + 0.3) ** 2 + p["x2"] ** 2 + 0.01 * (p["n"] - 13) ** 2 + 0.5 * (p["c"] != 2)


def test_local_search_coordinate_neighbours_move_a_coordinate_that_can_move():
    """Pinned dimensions (Int(3, 3), one choice) are skipped: each coordinate neighbour
    changes exactly one coordinate, never repeating the incumbent."""
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), k=jaxhpo.Int(3, 3), b=jaxhpo.Float(0.0, 1.0),
                         c=jaxhpo.Categorical(["only"]), n=jaxhpo.Int(5, 5))
    s = LocalSearch(space, 8)
    ask = jax.jit(s.ask)
    state = s.init(jax.random.key(0))
    x, state = ask(jax.random.key(1), state)
    state = s.tell(state, x, jnp.arange(8.0))
    for seed in range(6):  # different offsets into the coordinates
        x, _ = ask(jax.random.key(10 + seed), state)
        changed = np.asarray(x[:4] != state.incumbent[None])
        assert (changed.sum(axis=1) == 1).all() and not changed[:, [1, 3, 4]].any()


def test_local_search_improves_monotonically_between_restarts():
    s = LocalSearch(LS_SPACE, 8)
    keys = jax.random.split(jax.random.key(11), SEEDS)
    state0, (x, values, st) = jax.jit(jax.vmap(lambda k: trajectory(s, ls_objective, 60, k)))(keys)
    inc, restarts = np.asarray(st.incumbent_value), np.asarray(st.restarts)
    same_climb = (restarts[:, 1:] == restarts[:, :-1]) & np.isfinite(inc[:, :-1])
    assert same_climb.mean() > 0.5
    assert (inc[:, 1:][same_climb] <= inc[:, :-1][same_climb]).all()
    # It climbs: far below the best of the first (random) batch, for every seed.
    first = np.asarray(values)[:, 0].min(-1)
    assert (np.asarray(st.best_value)[:, -1] < 0.05 * first).all()
    # The incumbent's value is the objective at the incumbent, on bin centres.
    climbing = np.isfinite(inc[:, -1])
    recomputed = np.asarray(jax.vmap(ls_objective)(LS_SPACE.decode(st.incumbent[:, -1])))
    np.testing.assert_allclose(inc[climbing, -1], recomputed[climbing], rtol=1e-5)
    assert on_bin_centres(LS_SPACE, np.asarray(x).reshape(-1, LS_SPACE.dim))


def test_local_search_neighbours_move_each_discrete_coordinate_by_at_least_one_value():
    s = LocalSearch(LS_SPACE, 64)
    state = s.init(jax.random.key(0))
    inc = LS_SPACE.encode({"x0": jnp.float32(0.0), "x1": jnp.float32(1.0), "x2": jnp.float32(-2.0),
                           "n": jnp.int32(20), "c": jnp.int32(3)})
    state = state._replace(incumbent=inc, incumbent_value=jnp.float32(1.0), step=jnp.float32(1e-3))
    x, _ = jax.jit(s.ask)(jax.random.key(1), state)
    x, inc = np.asarray(x), np.asarray(inc)
    coord_rows = x[:32]
    changed = coord_rows != inc
    assert (changed.sum(-1) == 1).all(), "a coordinate neighbour changed more than one coordinate"
    dec = {k: np.asarray(v) for k, v in LS_SPACE.decode(coord_rows).items()}
    hit_n, hit_c = changed[:, 3], changed[:, 4]
    assert hit_n.any() and hit_c.any()
    assert (dec["n"][hit_n] == 19).all(), "an integer at its top must step down by one value"
    assert (dec["c"][hit_c] != 3).all()
    # Continuous coordinates move by the step, turning back at the face.
    assert np.allclose(np.abs(coord_rows - inc)[:, :3][changed[:, :3]], 1e-3, atol=1e-6)
    assert (coord_rows[:, 2] >= 0).all()


def constant(p):
    return jnp.float32(1.0) + 0.0 * p["x0"]


@functools.lru_cache(maxsize=None)
def stagnating_runs():
    """Two searches of a flat objective, vmapped over params: restarts by patience / by step."""
    s = LocalSearch(LS_SPACE, 8)
    params = {
        # patience 5, a step floor never reached
        # step floor 0.05 from 0.1 with shrink 0.5: under it after two failures
        "patience": jnp.array([5.0, 1000.0]),
        "step_min": jnp.array([1e-6, 0.05]),
        "step_shrink": jnp.array([0.9, 0.5]),
    }
    run = jax.jit(jax.vmap(lambda p: trajectory(s, constant, 30, jax.random.key(4), p)))
    return jax.tree_util.tree_map(np.asarray, run(params))


def test_local_search_restarts_on_stagnation():
    state0, (x, values, st) = stagnating_runs()
    # Generation 0 picks a start; 5 failures (patience) or 2 failures (step)
    # then trigger a restart, whose batch picks the next start.
    assert st.restarts[0, -1] == 30 // 6
    assert st.restarts[1, -1] == 30 // 3
    for run, period in ((0, 6), (1, 3)):
        restarted = np.flatnonzero(np.diff(st.restarts[run], prepend=0))
        np.testing.assert_array_equal(restarted, np.arange(period - 1, 30, period))
        # After a restart the step is reset and the next batch is spread
        # uniformly, far from the old incumbent.
        assert np.allclose(st.step[run, restarted], 0.1)
        spread = x[run, restarted[:-1] + 1].reshape(-1, LS_SPACE.dim).std(0)
        assert (spread[:3] > 0.15).all()
        # Within a climb, continuous coordinates stay near the incumbent.
        near = np.abs(x[run, 1] - st.incumbent[run, 0])[:, :3].max()
        assert near < 0.5


# --------------------------------------------------------------------- errors
BAD_SETTINGS = [
    (lambda: DifferentialEvolution(MIXED_SPACE, 8, F=0.0), r"\bF\b"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8, F=-0.5), r"\bF\b"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8, CR=1.5), r"\bCR\b"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8, CR=-0.1), r"\bCR\b"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 3), "popsize"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 2, variant="current-to-best/1/bin"), "popsize"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8, variant="best/2/exp"), "variant"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8).init(jax.random.key(0), {"F": -1.0}), r"\bF\b"),
    (lambda: DifferentialEvolution(MIXED_SPACE, 8).init(jax.random.key(0), {"CR": 2.0}), r"\bCR\b"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 1), "popsize"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, num_elites=8), "num_elites"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, tournament_size=0), "tournament_size"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, crossover="blend"), "crossover"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, mutation_rate=1.5), "mutation_rate"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, crossover_rate=-0.1), "crossover_rate"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8, mutation_sigma=0.0), "mutation_sigma"),
    (lambda: GeneticAlgorithm(MIXED_SPACE, 8).init(jax.random.key(0), {"mutation_rate": 2.0}), "mutation_rate"),
    (lambda: LocalSearch(MIXED_SPACE, 8, step_shrink=1.0), "step_shrink"),
    (lambda: LocalSearch(MIXED_SPACE, 8, step_grow=0.5), "step_grow"),
    (lambda: LocalSearch(MIXED_SPACE, 8, step_min=0.2, step_init=0.1), "step_min"),
    (lambda: LocalSearch(MIXED_SPACE, 8, patience=0), "patience"),
]


@pytest.mark.parametrize("build,name", BAD_SETTINGS)
def test_bad_settings_raise_value_error_naming_the_parameter(build, name):
    with pytest.raises(ValueError, match=name):
        build()


def test_settings_are_static_and_hyperparameters_are_arrays():
    a = GeneticAlgorithm(MIXED_SPACE, 8, num_elites=2)
    assert a == GeneticAlgorithm(MIXED_SPACE, 8, num_elites=2)
    assert a != GeneticAlgorithm(MIXED_SPACE, 8, num_elites=1)
    assert DifferentialEvolution(MIXED_SPACE, 8) != DifferentialEvolution(MIXED_SPACE, 8, variant="current-to-best/1/bin")
    for s in (a, DifferentialEvolution(MIXED_SPACE, 8), LocalSearch(MIXED_SPACE, 8)):
        for v in s.default_params().values():
            assert isinstance(v, jax.Array) and v.dtype == jnp.float32


def test_tournament_indices_reach_every_member_of_a_huge_population():
    # A 23-bit fraction times n never reached the even members at n = 2**24,
    # and gave shares 1/4, 1/3, 5/12 by index mod 3 at n = 3 * 2**21. The
    # index is now the high word of a whole 32-bit word times n.
    from hypothesis import given
    from hypothesis import strategies as st

    from jaxhpo.strategies._mixed import index_from_bits

    @given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=16), st.integers(1, 2**31 - 1))
    def matches_the_64_bit_product(words, n):
        w = np.array(words, np.uint64)
        expected = (w * np.uint64(n)) >> np.uint64(32)
        np.testing.assert_array_equal(np.asarray(index_from_bits(jnp.asarray(w.astype(np.uint32)), n)), expected)

    matches_the_64_bit_product()
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0))
    n = 3 * 2**21
    words = jax.random.bits(jax.random.key(0), (2, 30_000, 3), jnp.uint32)
    picked = np.asarray(GeneticAlgorithm(space, n)._select(words, jnp.zeros(n)))
    shares = np.bincount(picked.ravel() % 3, minlength=3) / picked.size
    np.testing.assert_allclose(shares, 1 / 3, atol=0.01)
