"""The matrix every strategy joins: jit, scan, vmap over keys, determinism,
failed evaluations, and no recompiles (see strategy_registry.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from strategy_registry import STRATEGIES

SPACE = jaxhpo.Space(
    x=jaxhpo.Float(-2.0, 2.0),
    lr=jaxhpo.Float(1e-4, 1.0, log=True),
    n=jaxhpo.Int(1, 6),
    c=jaxhpo.Categorical(["a", "b", "c"]),
)
GENERATIONS = 6
NAMES = sorted(STRATEGIES)


def objective(p):
    return (p["x"] - 0.5) ** 2 + (jnp.log10(p["lr"]) + 2.0) ** 2 + 0.1 * (p["n"] - 3) ** 2 + (p["c"] != 1)


def failing_objective(p):
    # Every configuration with c == "a" fails.
    return jnp.where(p["c"] == 0, jnp.nan, objective(p))


def make(name):
    return STRATEGIES[name](SPACE)


@functools.lru_cache(maxsize=None)
def vmapped_runs(name, fail=False):
    strategy = make(name)
    keys = jax.random.split(jax.random.key(0), 3)
    f = failing_objective if fail else objective
    run = jax.jit(jax.vmap(lambda k: jaxhpo.run(strategy, f, k, GENERATIONS, history="all")))
    return keys, run(keys)


@pytest.mark.parametrize("name", NAMES)
def test_jitted_protocol_shapes_and_bounds(name):
    s = make(name)
    state = jax.jit(s.init)(jax.random.key(1))
    x, state = jax.jit(s.ask)(jax.random.key(2), state)
    assert x.shape == (s.popsize, SPACE.dim) and x.dtype == jnp.float32
    assert bool(jnp.all((x >= 0) & (x <= 1)))
    values = jax.vmap(objective)(SPACE.decode(x))
    state = jax.jit(s.tell)(state, x, values)
    bx, bv = s.best(state)
    assert bx.shape == (SPACE.dim,)
    valid = np.asarray(s.valid(state))
    assert float(bv) == pytest.approx(float(np.min(np.where(valid, values, np.inf))))
    assert int(state.generation) == 1


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_matches_single_runs(name):
    keys, (states, trace) = vmapped_runs(name)
    s = make(name)
    assert trace.x.shape == (3, GENERATIONS, s.popsize, SPACE.dim)
    for i in (0, 2):
        state_i, trace_i = jaxhpo.run(s, objective, keys[i], GENERATIONS, history="all")
        np.testing.assert_allclose(trace.best_value[i], trace_i.best_value, rtol=1e-5)
        np.testing.assert_allclose(trace.x[i], trace_i.x, atol=1e-5)
    # best so far never increases, and equals the running minimum of the values told
    vals = np.where(trace.valid, trace.values, np.inf).min(axis=-1)
    np.testing.assert_allclose(trace.best_value, np.minimum.accumulate(vals, axis=1), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_same_key_same_search(name):
    s = make(name)
    a = jaxhpo.run(s, objective, jax.random.key(7), GENERATIONS, history="all")
    b = jaxhpo.run(make(name), objective, jax.random.key(7), GENERATIONS, history="all")
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


@pytest.mark.parametrize("name", NAMES)
def test_failed_evaluations_never_corrupt_state(name):
    _, (states, trace) = vmapped_runs(name, fail=True)
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
def test_no_recompile_on_second_call_or_second_instance(name):
    traces = []

    def counted(p):
        traces.append(1)
        return objective(p)

    jaxhpo.run(make(name), counted, jax.random.key(0), 3)
    first = len(traces)
    assert first >= 1
    jaxhpo.run(make(name), counted, jax.random.key(1), 3)
    s = make(name)
    jaxhpo.run(s, counted, jax.random.key(2), 3)
    assert len(traces) == first, "a second run or an equal strategy retraced the search"
    assert make(name) == s and hash(make(name)) == hash(s)
