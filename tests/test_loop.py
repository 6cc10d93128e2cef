"""The compiled loop: run, minimize, evaluate, failures, maximisation, grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import Categorical, Float, GridSearch, Int, RandomSearch, Space

BRANIN_MIN = 0.397887
BRANIN = Space(x1=Float(-5.0, 10.0), x2=Float(0.0, 15.0))


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c = 5.1 / (4 * jnp.pi**2), 5.0 / jnp.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * jnp.pi)) * jnp.cos(x1) + 10


def neg_branin(p):
    return -branin(p)


def test_random_search_reaches_branin_minimum():
    res = jaxhpo.minimize(branin, BRANIN, RandomSearch(BRANIN, 10_000), num_generations=10, key=0)
    assert res.num_evaluations == 100_000 and res.num_failed == 0
    assert abs(res.best_value - BRANIN_MIN) < 0.01
    # the reported configuration really has the reported value
    assert float(branin({k: jnp.float32(v) for k, v in res.best_params.items()})) == pytest.approx(res.best_value, rel=1e-5)
    # best so far is monotone and ends at best_value
    assert (np.diff(res.history.best_value) <= 0).all()
    assert res.history.best_value[-1] == pytest.approx(res.best_value)


def test_maximize_negates_consistently():
    s = RandomSearch(BRANIN, 500)
    lo = jaxhpo.minimize(branin, BRANIN, s, num_generations=4, key=3, history="values")
    hi = jaxhpo.minimize(neg_branin, BRANIN, s, num_generations=4, key=3, maximize=True, history="values")
    assert hi.best_value == pytest.approx(-lo.best_value)
    assert hi.best_params == lo.best_params
    np.testing.assert_allclose(hi.history.values, -lo.history.values)
    assert (np.diff(hi.history.best_value) >= 0).all()
    assert hi.best_value == pytest.approx(hi.history.values.max())


def test_same_key_same_result_and_int_seed():
    s = RandomSearch(BRANIN, 64)
    a = jaxhpo.minimize(branin, BRANIN, s, num_generations=3, key=jax.random.key(5), history="all")
    b = jaxhpo.minimize(branin, BRANIN, s, num_generations=3, key=jax.random.key(5), history="all")
    c = jaxhpo.minimize(branin, BRANIN, s, num_generations=3, key=6, history="all")
    np.testing.assert_array_equal(a.history.x, b.history.x)
    assert a.best_value == b.best_value
    assert not np.array_equal(a.history.x, c.history.x)


def test_history_modes():
    s = RandomSearch(BRANIN, 16)
    shapes = {}
    for mode in ("best", "values", "all"):
        h = jaxhpo.minimize(branin, BRANIN, s, num_generations=5, key=0, history=mode).history
        shapes[mode] = (None if h.values is None else h.values.shape, None if h.x is None else h.x.shape)
        assert h.best_value.shape == (5,)
    assert shapes == {"best": (None, None), "values": ((5, 16), None), "all": ((5, 16), (5, 16, 2))}


def test_chunked_evaluation_equals_unchunked():
    space = Space(a=Float(-1, 1), n=Int(0, 4), c=Categorical(["p", "q", "r"]))
    x = space.sample(jax.random.key(0), 103)
    params = space.decode(x)

    def f(p):
        return jnp.sin(3 * p["a"]) * (p["n"] + 1) + p["c"]

    full = jaxhpo.evaluate(f, params)
    for chunk in (1, 10, 64, 103, 500):
        # equal up to the last bit of vectorised vs scalar transcendental kernels
        np.testing.assert_allclose(jaxhpo.evaluate(f, params, chunk_size=chunk), full, rtol=1e-6, atol=1e-6)
    s = RandomSearch(space, 50)
    a = jaxhpo.minimize(f, space, s, num_generations=3, key=1, history="values")
    b = jaxhpo.minimize(f, space, s, num_generations=3, key=1, history="values", chunk_size=7)
    np.testing.assert_allclose(a.history.values, b.history.values, rtol=1e-6, atol=1e-6)


def test_large_populations_evaluate_each_configuration_once():
    # The loop stores the values once (see loop._search); they are still f of each point.
    pop = 4098
    res = jaxhpo.minimize(branin, BRANIN, RandomSearch(BRANIN, pop), num_generations=2, key=0, history="all")
    x = res.history.x.reshape(-1, 2)
    # to float32 rounding of differently fused cos kernels
    np.testing.assert_allclose(res.history.values.reshape(-1), jax.vmap(branin)(BRANIN.decode(x)), rtol=1e-5)
    assert res.best_value == pytest.approx(res.history.values.min())


def test_failed_evaluations_are_never_best():
    def mostly_failing(p):
        v = branin(p)
        return jnp.where(p["x1"] < 0, jnp.nan, jnp.where(p["x2"] > 10, jnp.inf, v))

    res = jaxhpo.minimize(mostly_failing, BRANIN, RandomSearch(BRANIN, 1000), num_generations=3, key=0,
                          history="values")
    assert res.num_failed == int((~np.isfinite(res.history.values)).sum()) > 0
    assert np.isfinite(res.best_value)
    assert res.best_params["x1"] >= 0 and res.best_params["x2"] <= 10
    finite = res.history.values[np.isfinite(res.history.values)]
    assert res.best_value == pytest.approx(finite.min())
    # maximising must not pick a failure either (-nan and -inf are still failures)
    res_max = jaxhpo.minimize(mostly_failing, BRANIN, RandomSearch(BRANIN, 1000), num_generations=3, key=0,
                              maximize=True)
    assert res_max.best_value == pytest.approx(finite.max())


def test_best_params_are_the_configuration_the_objective_was_given():
    # Log-scale values decoded op by op differed from the search's in their last bits
    # (33 of 40 seeds here): best_value was not the objective at best_params.
    space = jaxhpo.Space(b=jaxhpo.Float(1e-3, 10.0, log=True), c=jaxhpo.Float(0.5, 2.0, log=True))
    strategy = jaxhpo.RandomSearch(space, 64)
    for seed in range(8):
        r = jaxhpo.minimize(lambda p: -p["b"] * p["c"], space, strategy, num_generations=1, key=seed)
        assert np.float32(r.best_value) == -np.float32(r.best_params["b"]) * np.float32(r.best_params["c"])


def test_all_failed_gives_no_best():
    res = jaxhpo.minimize(lambda p: jnp.nan * p["x1"], BRANIN, RandomSearch(BRANIN, 8), num_generations=2, key=0)
    assert res.best_params is None and np.isnan(res.best_value)
    assert res.num_failed == res.num_evaluations == 16


def test_grid_search_evaluates_every_point_exactly_once():
    space = Space(lr=Float(1e-3, 1.0, log=True), n=Int(1, 3), c=Categorical(["a", "b"]))
    grid = space.grid(num=5)  # 5 * 3 * 2 = 30 points
    s = GridSearch(space, popsize=8, num=5)  # 4 batches, the last padded with 2 repeats
    assert s.num_points == 30 and s.num_generations == 4

    def f(p):
        return (jnp.log10(p["lr"]) + 1.5) ** 2 + p["n"] + p["c"]

    res = jaxhpo.minimize(f, space, s, history="all")
    x = res.history.x.reshape(-1, space.dim)[res.history.valid.reshape(-1)]
    assert res.num_evaluations == 30 == len(x)
    assert len(np.unique(x, axis=0)) == 30
    np.testing.assert_array_equal(np.sort(x, axis=0), np.sort(grid, axis=0))
    best = int(np.argmin(jax.vmap(f)(space.decode(grid))))
    np.testing.assert_allclose(res.best_x, grid[best])
    # asking past the end of the grid only pads
    more = jaxhpo.minimize(f, space, s, num_generations=6, history="values")
    assert more.num_evaluations == 30 and more.best_value == res.best_value


def test_popsize_none_asks_the_whole_grid():
    s = GridSearch(BRANIN, num=7)
    assert s.popsize == 49 and s.num_generations == 1
    # NumPy integers are the same settings (a stored study recognises its strategy by them).
    same = GridSearch(BRANIN, num=np.int64(7), sizes={"x1": np.int32(7)})
    assert repr(same) == repr(GridSearch(BRANIN, num=7, sizes={"x1": 7})) and same.popsize == 49
    res = jaxhpo.minimize(branin, BRANIN, s)
    assert res.num_evaluations == 49


def test_run_vmaps_over_keys_as_single_runs():
    # (vmapping over a strategy's params: test_cmaes.py::test_params_are_vmappable)
    s = RandomSearch(BRANIN, 32)
    keys = jax.random.split(jax.random.key(0), 4)
    states, trace = jax.vmap(lambda k: jaxhpo.run(s, branin, k, 5))(keys)
    assert trace.best_value.shape == (4, 5) and states.best_x.shape == (4, 2)
    assert len(np.unique(np.asarray(trace.best_value[:, -1]))) == 4
    for i in (0, 3):
        single_state, single = jaxhpo.run(s, branin, keys[i], 5)
        np.testing.assert_allclose(np.asarray(trace.best_value[i]), np.asarray(single.best_value), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(states.best_x[i]), np.asarray(single_state.best_x), rtol=1e-6)


def test_input_validation():
    s = RandomSearch(BRANIN, 4)
    other = Space(x1=Float(-5.0, 10.0))
    with pytest.raises(ValueError, match="num_generations"):
        jaxhpo.minimize(branin, BRANIN, s, num_generations=0)
    with pytest.raises(ValueError, match="num_generations is required"):
        jaxhpo.minimize(branin, BRANIN, s)
    with pytest.raises(ValueError, match="history"):
        jaxhpo.minimize(branin, BRANIN, s, num_generations=1, history="everything")
    with pytest.raises(ValueError, match="chunk_size"):
        jaxhpo.minimize(branin, BRANIN, s, num_generations=1, chunk_size=0)
    with pytest.raises(ValueError, match="different space"):
        jaxhpo.minimize(branin, other, s, num_generations=1)
    with pytest.raises(ValueError, match="one scalar per configuration"):
        jaxhpo.minimize(lambda p: jnp.stack([p["x1"], p["x2"]]), BRANIN, s, num_generations=1)
    with pytest.raises(TypeError, match="space"):
        RandomSearch({"x": Float(0, 1)}, 4)
    with pytest.raises(ValueError, match="popsize"):
        RandomSearch(BRANIN, 0)
    with pytest.raises(TypeError, match="popsize"):
        RandomSearch(BRANIN, 2.5)
    with pytest.raises(ValueError, match=r"popsize must be <= 2\*\*31 - 1"):
        RandomSearch(BRANIN, 10**11)
    state = s.init(jax.random.key(0))
    with pytest.raises(ValueError, match="x must have shape"):
        s.tell(state, jnp.zeros((3, 2)), jnp.zeros(4))
    with pytest.raises(ValueError, match="values must have shape"):
        s.tell(state, jnp.zeros((4, 2)), jnp.zeros(5))
    with pytest.raises(ValueError, match="unknown key"):
        s.init(jax.random.key(0), params={"sigma": 1.0})


def test_progress_reports_from_inside_the_compiled_loop(capsys):
    s = RandomSearch(BRANIN, 16)
    res = jaxhpo.minimize(neg_branin, BRANIN, s, num_generations=7, key=0, maximize=True, progress_every=3)
    jax.effects_barrier()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("jaxhpo: generation")]
    assert [ln.split()[2] for ln in lines] == ["3/7", "6/7", "7/7"]
    assert float(lines[-1].split()[-1]) == pytest.approx(res.best_value, rel=1e-5)
    with pytest.raises(ValueError, match="progress_every"):
        jaxhpo.minimize(branin, BRANIN, s, num_generations=2, progress_every=0)


def test_stored_values_are_the_objectives_and_survive_vmap():
    from jaxhpo._materialize import stored
    from jaxhpo.loop import _count

    x = jnp.asarray([np.nan, -0.0, np.inf, -np.inf, 1.5, -2.0], jnp.float32)
    out = jax.jit(stored)(x, jnp.int32(3))
    np.testing.assert_array_equal(np.asarray(out).view(np.uint32), np.asarray(x).view(np.uint32))
    # The token is unbatched, so vmap over the values keeps the conditional (a
    # batched predicate would turn it into a select, which fuses away).
    fn = jax.jit(jax.vmap(lambda v, g: stored(jnp.cos(v), g), in_axes=(0, None)))
    assert "conditional" in fn.lower(jnp.ones((4, 1000)), jnp.int32(0)).compile().as_text()
    flags = np.random.default_rng(0).random(5000) < 0.3
    assert int(_count(jnp.asarray(flags))) == flags.sum()


def test_a_finite_float64_value_beyond_float32_is_the_worst_result_not_a_failure():
    """Strategies rank float32 values (also under x64): 1e40 becomes float32's largest value."""
    with jax.enable_x64(True):
        space = Space(x=Float(0.0, 1.0))
        objective = lambda p: jnp.where(p["x"] < 0.5, 1e40, 1.0) * (1.0 + p["x"].astype(jnp.float64))  # noqa: E731
        result = jaxhpo.minimize(objective, space, RandomSearch(space, 8), num_generations=2, key=0, history="all")
        values = np.asarray(result.history.values)
        assert result.num_failed == 0 and np.isfinite(values).all()
        assert values.max() == np.finfo(np.float32).max and result.best_params["x"] >= 0.5


def test_auxiliary_outputs_with_minimize():
    def with_aux(p):
        v = branin(p)
        # failures carry their own auxiliary output, which never becomes the best's
        return jnp.where(p["x1"] < 0, jnp.nan, v), {"v": v, "x2": p["x2"], "big": p["x2"] > 7.5}

    s = RandomSearch(BRANIN, 64)
    res = jaxhpo.minimize(with_aux, BRANIN, s, num_generations=3, key=2, maximize=True, history="values",
                          has_aux=True)
    assert res.best_value == res.best_aux["v"] == res.history.values[np.isfinite(res.history.values)].max()
    assert res.best_aux["x2"] == pytest.approx(res.best_params["x2"], rel=1e-6)
    assert res.best_aux["big"].dtype == np.bool_ and res.best_aux["big"] == (res.best_aux["x2"] > 7.5)
    assert res.history.aux["v"].shape == (3, 64) and np.isfinite(res.history.aux["v"]).all()
    # history "best" keeps the best's only; with every evaluation failed there is none
    best = jaxhpo.minimize(with_aux, BRANIN, s, num_generations=3, key=2, maximize=True, has_aux=True)
    assert best.history.aux is None and best.best_aux["v"] == res.best_aux["v"]
    none = jaxhpo.minimize(lambda p: (jnp.nan * p["x1"], {"n": jnp.int32(3)}), BRANIN, s, num_generations=2,
                           has_aux=True)
    assert none.best_aux is None and (none.history.best_aux["n"] == 0).all()
    assert np.isnan(jaxhpo.run(s, lambda p: (jnp.nan * p["x1"], p["x1"]), 0, 2, has_aux=True)[1].best_aux).all()
    # scalars come back as 0-d arrays; typed PRNG keys (NumPy holds none) as JAX's
    keyed = jaxhpo.minimize(lambda p: (branin(p), {"key": jax.random.fold_in(jax.random.key(0), p["x1"].astype(int)),
                                                   "x1": p["x1"]}),
                            BRANIN, s, num_generations=2, key=4, has_aux=True, history="values")
    assert isinstance(keyed.best_aux["x1"], np.ndarray) and keyed.best_aux["x1"].shape == ()
    expect = jax.random.key_data(jax.random.fold_in(jax.random.key(0), keyed.best_aux["x1"].astype(np.int32)))
    np.testing.assert_array_equal(jax.random.key_data(keyed.best_aux["key"]), expect)
    assert keyed.history.aux["key"].shape == (2, 64)


def test_auxiliary_output_errors():
    s = RandomSearch(BRANIN, 8)
    with pytest.raises(ValueError, match="got a tuple: to return other outputs alongside the value, return "
                                         r"\(value, aux\) and pass has_aux=True"):
        jaxhpo.minimize(lambda p: (branin(p), p["x1"]), BRANIN, s, num_generations=1)
    with pytest.raises(ValueError, match="got a dict: to return other"):
        jaxhpo.run(s, lambda p: {"loss": branin(p)}, 0, 1)
    with pytest.raises(ValueError, match=r"must return a pair \(value, aux\) per configuration with "
                                         r"has_aux=True, got one array \(shape \(\) per configuration\)"):
        jaxhpo.run(s, branin, 0, 1, has_aux=True)
    with pytest.raises(ValueError, match="has_aux=True, got a tuple of 3"):
        jaxhpo.minimize(lambda p: (branin(p), p["x1"], p["x2"]), BRANIN, s, num_generations=1, has_aux=True)
    with pytest.raises(TypeError, match="has_aux must be a bool, got 'yes'"):
        jaxhpo.minimize(branin, BRANIN, s, num_generations=1, has_aux="yes")
