"""The matrix every strategy joins: jit, scan, vmap over keys and over its own
hyperparameters, determinism, failed evaluations, and no recompiles (see
strategy_registry.py).

One objective serves every test (it fails on a third of the space), so each
strategy compiles one vmapped search and one single search, shared by all
tests below.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo.loop import _search
from strategy_registry import STRATEGIES
from helpers import assert_trees_equal, compiles_during

SPACE = jaxhpo.Space(
    x=jaxhpo.Float(-2.0, 2.0),
    lr=jaxhpo.Float(1e-4, 1.0, log=True),
    n=jaxhpo.Int(1, 6),
    c=jaxhpo.Categorical(["a", "b", "c"]),
)
GENERATIONS = 6
NUM_KEYS = 3
# Batched and unbatched XLA programs may round differently in the last bit;
# selection- and model-based strategies amplify that over generations, so a
# vmapped search is compared with the single search exactly over its first
# generations only.
EXACT_GENERATIONS = 2
NAMES = sorted(STRATEGIES)


def smooth(p):
    return (p["x"] - 0.5) ** 2 + (jnp.log10(p["lr"]) + 2.0) ** 2 + 0.1 * (p["n"] - 3) ** 2 + (p["c"] != 1)


def objective(p):
    # Every configuration with c == "a" fails. The searches run with has_aux:
    # the auxiliary output (finite everywhere) is the smooth part and n.
    score = smooth(p)
    return jnp.where(p["c"] == 0, jnp.nan, score), {"score": score, "n": p["n"]}


def search(strategy, key, **kwargs):
    return jaxhpo.run(strategy, objective, key, GENERATIONS, history="all", has_aux=True, **kwargs)


def make(name):
    return STRATEGIES[name](SPACE)


def single_run(name, key):
    return search(make(name), key)


@functools.lru_cache(maxsize=None)
def vmapped_runs(name):
    strategy = make(name)
    keys = jax.random.split(jax.random.key(0), NUM_KEYS)
    run = jax.jit(jax.vmap(lambda k: search(strategy, k)))
    return keys, run(keys)


@pytest.mark.parametrize("name", NAMES)
def test_protocol_op_by_op_compiles_in_its_first_generation_only(name):
    # ask and tell called from a Python loop, unjitted: each is one compiled
    # program per equal strategy. Before, the lax.cond / while_loop branches
    # of CMA-ES, TPE, NSGA2, MOTPE and GP-BO compiled again every generation.
    # init too is one program: op by op it compiled a dozen small ones
    # (a Study's first trial spent ~0.5 s on them).
    s = make(name)
    key = jax.random.key(1)
    s.default_params()  # its host-to-device conversions compile once per process
    with compiles_during() as compiles:
        state = s.init(key)
    assert len(compiles) <= 1
    assert_trees_equal(state, jax.jit(s.init)(jax.random.key(1)))
    with compiles_during() as compiles:
        for g in range(3):
            if g == 1:
                compiles.clear()
            x, state = s.ask(jax.random.key(2 + g), state)
            assert x.shape == (s.popsize, SPACE.dim) and x.dtype == jnp.float32
            assert bool(jnp.all((x >= 0) & (x <= 1)))
            values = jax.vmap(smooth)(SPACE.decode(x))
            before = state.best_value
            state = s.tell(state, x, values)
            valid = np.asarray(s.valid(state))
            want = min(float(before), float(np.min(np.where(valid, values, np.inf))))
            assert float(s.best(state)[1]) == pytest.approx(want)
    assert compiles == []
    assert s.best(state)[0].shape == (SPACE.dim,) and int(state.generation) == 3


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_matches_single_runs(name):
    keys, (states, trace) = vmapped_runs(name)
    s = make(name)
    assert trace.x.shape == (NUM_KEYS, GENERATIONS, s.popsize, SPACE.dim)
    for i in (0, NUM_KEYS - 1):
        _, trace_i = single_run(name, keys[i])
        g = EXACT_GENERATIONS
        np.testing.assert_allclose(trace.x[i, :g], trace_i.x[:g], atol=1e-5)
        np.testing.assert_allclose(trace.values[i, :g], trace_i.values[:g], rtol=1e-5)
    # every search is its own: different keys, different proposals
    assert not np.allclose(trace.x[0], trace.x[-1]) or name == "grid"
    # best so far never increases, and equals the running minimum of the finite values told
    told = np.where(trace.valid & np.isfinite(trace.values), trace.values, np.inf).min(axis=-1)
    np.testing.assert_allclose(trace.best_value, np.minimum.accumulate(told, axis=1), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_search(name):
    a = single_run(name, jax.random.key(7))
    b = single_run(name, jax.random.key(7))
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


@pytest.mark.parametrize("name", NAMES)
def test_failed_evaluations_never_corrupt_state(name):
    _, (states, trace) = vmapped_runs(name)
    for leaf in jax.tree_util.tree_leaves(states):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            assert not np.isnan(leaf).any(), "NaN leaked into the strategy state"
    failed = trace.valid & ~np.isfinite(trace.values)
    assert failed.any(), "the failing region was never proposed"
    assert np.isfinite(states.best_value).all()
    best_c = np.asarray(SPACE.decode(states.best_x)["c"])
    assert (best_c != 0).all(), "a failed configuration became best"
    np.testing.assert_array_equal(trace.num_failed, failed.sum(-1))


@pytest.mark.parametrize("name", NAMES)
def test_auxiliary_output_follows_the_best_value(name):
    _, (states, trace) = vmapped_runs(name)
    found = np.isfinite(trace.best_value)
    assert found[:, -1].all()
    # After every generation, the auxiliary output kept is the one evaluated
    # with the best value so far; nan until an evaluation succeeds.
    np.testing.assert_allclose(trace.best_aux["score"][found], trace.best_value[found], rtol=1e-6)
    assert np.isnan(trace.best_aux["score"][~found]).all()
    best_n = np.asarray(SPACE.decode(states.best_x)["n"])
    np.testing.assert_array_equal(trace.best_aux["n"][:, -1], best_n)
    # Every evaluation's, failed ones included, row by row.
    assert trace.aux["score"].shape == trace.values.shape
    ok = trace.valid & np.isfinite(trace.values)
    np.testing.assert_allclose(trace.aux["score"][ok], trace.values[ok], rtol=1e-6)
    np.testing.assert_array_equal(trace.aux["n"], np.asarray(SPACE.decode(trace.x)["n"]))


@pytest.mark.parametrize("name", NAMES)
def test_no_recompile_on_second_call_or_second_instance(name):
    single_run(name, jax.random.key(0))  # compiled here or by an earlier test
    before = _search._cache_size()
    single_run(name, jax.random.key(1))
    s = make(name)
    search(s, jax.random.key(2))
    # The defaults given explicitly, as Python numbers, and a chunk of the whole population.
    plain = {k: np.asarray(v).tolist() for k, v in s.default_params().items()}
    search(s, jax.random.key(2), params=plain, chunk_size=s.popsize)
    assert _search._cache_size() == before, "a second run or an equal strategy recompiled the search"
    assert make(name) == s and hash(make(name)) == hash(s)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_the_strategys_own_hyperparameters(name):
    s = make(name)
    defaults = s.default_params()
    if not defaults:  # nothing to batch: these strategies take no hyperparameters
        assert name in ("random", "grid", "sobol", "halton", "lhs")
        return
    stacked = jax.tree_util.tree_map(lambda v: jnp.stack([jnp.asarray(v)] * 2), defaults)
    keys = jax.random.split(jax.random.key(3), 2)

    def generation(key, params):
        state = s.init(key, params)
        x, state = s.ask(key, state)
        state = s.tell(state, x, jax.vmap(smooth)(SPACE.decode(x)))
        return x, s.best(state)[1]

    batched = jax.jit(jax.vmap(generation))(keys, stacked)
    for i in range(2):
        single = jax.jit(generation)(keys[i], defaults)
        for b, one in zip(batched, single):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(one), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [5, 3000])  # one-pass and two-pass paths
def test_first_argmin_equals_numpy_argmin(n):
    from jaxhpo.strategies.base import first_argmin
    find = jax.jit(jax.vmap(first_argmin))
    rng = np.random.default_rng(n)
    # Ties (few distinct values), infinities and negative zeros in every row.
    rows = rng.choice(np.array([-2.0, -0.0, 0.0, 1.5, np.inf, -np.inf], np.float32), size=(64, n))
    rows[:8] = np.inf  # all-infinite rows: index 0
    rows[8:16] = rng.normal(size=(8, n))
    got = np.asarray(find(jnp.asarray(rows)))
    np.testing.assert_array_equal(got, np.argmin(rows, axis=1))


# Warm start: ten configurations over the first two generations: one that
# fails (c = "a"), partial ones (x and c given), and the optimum of `smooth` last.
OPTIMUM = {"x": 0.5, "lr": 0.01, "n": 3, "c": "b"}
INITIAL = SPACE.fixed_coordinates([{"x": 0.0, "c": "a"}] + [{"x": -1.0 + 0.25 * i, "c": "b"} for i in range(8)] + [OPTIMUM])


@functools.lru_cache(maxsize=None)
def warm_run(name, initial=INITIAL.tobytes()):
    initial = np.frombuffer(initial, np.float32).reshape(INITIAL.shape)
    return search(make(name), jax.random.key(3), initial=initial)


@pytest.mark.parametrize("name", NAMES)
def test_initial_points_are_evaluated_first_and_told(name):
    if not make(name).accepts_points:
        with pytest.raises(ValueError, match="initial: GridSearch evaluates a fixed set of points"):
            warm_run(name)
        return
    state, trace = warm_run(name)
    first = np.asarray(trace.x[:2]).reshape(-1, SPACE.dim)[:len(INITIAL)]
    given = ~np.isnan(INITIAL)
    np.testing.assert_array_equal(first[given], INITIAL[given])
    values = np.asarray(trace.values[:2]).reshape(-1)
    assert np.isnan(values[0]) and np.isfinite(values[1:len(INITIAL)]).all()
    best_start = float(smooth(SPACE.decode(jnp.asarray(INITIAL[-1]))))
    assert values[len(INITIAL) - 1] == pytest.approx(best_start, abs=1e-6)
    assert float(state.best_value) <= best_start + 1e-6
    for leaf in jax.tree_util.tree_leaves(state):
        leaf = np.asarray(leaf)
        if np.issubdtype(leaf.dtype, np.floating):
            assert not np.isnan(leaf).any(), "NaN leaked into the strategy state"
    # other initial points of the same shape reuse the compiled search
    before = _search._cache_size()
    warm_run(name, INITIAL[::-1].copy().tobytes())
    assert _search._cache_size() == before


@pytest.mark.parametrize("name", NAMES)
def test_a_search_continued_from_its_state_equals_the_search_run_at_once(name, tmp_path):
    # Two segments of GENERATIONS / 2 (one compiled continuation, called
    # twice) against the single search of GENERATIONS; the state saved to a
    # file and read back between them.
    s, key, half = make(name), jax.random.key(11), GENERATIONS // 2
    start = s.init(jax.random.split(key)[0])
    mid, first = jaxhpo.run(s, objective, key, half, history="all", has_aux=True, state=start)
    path = str(tmp_path / "state")
    jaxhpo.save_state(path, mid)
    end, second = jaxhpo.run(s, objective, key, half, history="all", has_aux=True,
                             state=jaxhpo.load_state(path, s))
    whole_state, whole = single_run(name, key)
    np.testing.assert_array_equal(np.concatenate([first.x, second.x]), whole.x)
    np.testing.assert_array_equal(np.concatenate([first.values, second.values]), whole.values)
    np.testing.assert_array_equal(np.concatenate([first.best_value, second.best_value]), whole.best_value)
    assert_trees_equal(end, whole_state)
    assert int(end.generation) == GENERATIONS
