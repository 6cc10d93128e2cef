"""Warm starts: configurations given by the user, evaluated in place of proposals.

``Space.fixed_coordinates`` / ``canonical_python``, ``minimize(initial=...)``
and ``Study.enqueue_trial`` (queued in the storage, taken by the next
generation, told to the strategy, surviving a reopen). Every strategy's
compiled search with ``initial`` is in test_strategy_matrix.py; CMA-ES's
re-expression of injected points in test_cmaes.py.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxhpo
from jaxhpo.study import Study

SPACE = jaxhpo.Space(
    x=jaxhpo.Float(-2.0, 2.0),
    lr=jaxhpo.Float(1e-4, 1.0, log=True),
    n=jaxhpo.Int(1, 6),
    opt=jaxhpo.Categorical(["sgd", "adam"]),
    beta2=jaxhpo.Float(0.9, 0.999, when={"opt": "adam"}),
)


def objective(p):
    return (p["x"] - 0.5) ** 2 + (jnp.log10(p["lr"]) + 2.0) ** 2 + 0.1 * p["n"]


def host_objective(p):
    return (p["x"] - 0.5) ** 2 + (math.log10(p["lr"]) + 2.0) ** 2 + 0.1 * p["n"]


# ------------------------------------------------------------------ the space
def test_fixed_coordinates_encode_the_given_parameters_and_leave_the_rest_nan():
    c = SPACE.fixed_coordinates({"lr": 0.01, "opt": "adam"})
    names = list(SPACE.names)
    assert np.isnan(c[[names.index("x"), names.index("n"), names.index("beta2")]]).all()
    assert c[names.index("lr")] == pytest.approx(0.5)  # log scale: 1e-2 is halfway
    assert c[names.index("opt")] == pytest.approx(0.75)  # the centre of the second choice's bin
    assert SPACE.fixed_coordinates([{"x": 1.0}, {"n": 6}]).shape == (2, SPACE.dim)


def test_a_parameter_its_given_parent_makes_inactive_is_left_to_the_strategy():
    # minimize(initial=) fixed beta2 = 0.95 with opt = "sgd" and the objective
    # got 0.95; enqueue_trial left it out. Both now leave its coordinate free.
    names = list(SPACE.names)
    config = {"x": 1.0, "opt": "sgd", "beta2": 0.95}
    c = SPACE.fixed_coordinates(config)
    assert np.isnan(c[names.index("beta2")]) and not np.isnan(c[names.index("opt")])
    with pytest.raises(ValueError, match="beta2"):  # still checked
        SPACE.fixed_coordinates({"opt": "sgd", "beta2": 2.0})
    seen = jaxhpo.minimize(lambda p: p["beta2"], SPACE, STRATEGY, key=3, num_generations=1, history="all",
                           initial=config).history.x[0, 0]
    plain = jaxhpo.minimize(lambda p: p["beta2"], SPACE, STRATEGY, key=3, num_generations=1,
                            history="all").history.x[0, 0]
    assert seen[names.index("beta2")] == plain[names.index("beta2")]


@settings(max_examples=60, deadline=None)
@given(x=st.floats(-2.0, 2.0), lr=st.floats(1e-4, 1.0), n=st.integers(1, 6), adam=st.booleans())
def test_fixed_coordinates_decode_back_to_the_canonical_values(x, lr, n, adam):
    config = {"x": x, "lr": lr, "n": n, "opt": "adam" if adam else "sgd"}
    canon = SPACE.canonical_python(config)
    assert SPACE.canonical_python(canon) == canon  # a fixed point
    # the coordinates config leaves free (nan) filled, as a strategy fills them
    back = SPACE.to_python(SPACE.decode(jnp.asarray(np.nan_to_num(SPACE.fixed_coordinates(config), nan=0.5))))
    assert back["n"] == n and back["opt"] == config["opt"]
    assert back["x"] == pytest.approx(x, abs=1e-6)
    assert back["lr"] == pytest.approx(lr, rel=1e-5)  # float32 log decoding
    assert np.float32(canon["x"]) == np.float32(x)  # the shortest decimal of the same float32


@pytest.mark.parametrize("config, error, match", [
    ({"lr": 2.0}, ValueError, r"parameter 'lr' = 2.0 is outside \[0.0001, 1.0\]"),
    ({"depth": 3}, ValueError, r"unknown parameter\(s\) \['depth'\]"),
    ({"n": 2.5}, ValueError, "parameter 'n' must be an integer"),
    ({"opt": "rmsprop"}, ValueError, "parameter 'opt': 'rmsprop' is not one of the choices"),
    ({"x": "1"}, TypeError, "parameter 'x' must be a number"),
])
def test_fixed_coordinates_name_the_bad_parameter(config, error, match):
    with pytest.raises(error, match=match):
        SPACE.fixed_coordinates(config)


# ------------------------------------------------------------------ minimize
STRATEGY = jaxhpo.RandomSearch(SPACE, 4)


def test_minimize_evaluates_initial_configurations_first_over_several_generations():
    configs = [{"x": 0.5, "lr": 0.01, "n": 1, "opt": "sgd"}] + [{"x": -1.5 + 0.1 * i} for i in range(5)]
    r = jaxhpo.minimize(objective, SPACE, STRATEGY, key=1, num_generations=5, history="all", initial=configs)
    x = r.history.x.reshape(-1, SPACE.dim)
    fixed = SPACE.fixed_coordinates(configs)
    given_ = ~np.isnan(fixed)
    np.testing.assert_array_equal(x[:6][given_], fixed[given_])  # rows 4 and 5 in generation 1
    assert r.history.values[0, 0] == pytest.approx(0.1, abs=1e-6)
    assert r.best_value == pytest.approx(0.1, abs=1e-6)
    assert r.best_params == {"x": 0.5, "lr": 0.01, "n": 1, "opt": "sgd"}
    # free coordinates are the strategy's own proposals: the same as without a warm start
    plain = jaxhpo.minimize(objective, SPACE, STRATEGY, key=1, num_generations=5, history="all")
    px = plain.history.x.reshape(-1, SPACE.dim)
    np.testing.assert_array_equal(x[:6][~given_], px[:6][~given_])
    np.testing.assert_array_equal(x[6:], px[6:])


def test_a_maximised_search_takes_an_initial_dict():
    r = jaxhpo.minimize(lambda p: -objective(p), SPACE, STRATEGY, key=2, num_generations=2, maximize=True,
                        initial={"x": 0.5, "lr": 0.01, "n": 1, "opt": "sgd"})
    assert r.best_value == pytest.approx(-0.1, abs=1e-6)


@pytest.mark.parametrize("initial, error, match", [
    ([{"x": 9.0}], ValueError, r"parameter 'x' = 9.0 is outside"),
    ([], TypeError, "initial must be a dict of parameter values or a non-empty list"),
    ("x=1", TypeError, "initial must be a dict of parameter values or a non-empty list"),
    ([{"x": 0.0}] * 9, ValueError, r"initial has 9 rows, more than the search evaluates \(2 generations of 4\)"),
])
def test_minimize_rejects_bad_initial_configurations_before_compiling(initial, error, match):
    with pytest.raises(error, match=match):
        jaxhpo.minimize(objective, SPACE, STRATEGY, num_generations=2, initial=initial)


def test_initial_points_stay_in_their_generations_past_2_31_evaluations():
    """Generation g holds initial rows g * popsize ...; past 2**31 evaluations that
    product overflows int32, and no generation after the first few may take them."""
    from jaxhpo.loop import _with_initial

    initial, x = jnp.full((3, 2), 0.25, jnp.float32), jnp.full((2**20, 2), 0.75, jnp.float32)
    replace = jax.jit(_with_initial)
    counts = [int(replace(initial, x, jnp.int32(g))[1].sum()) for g in (0, 1, 2047, 2048, 3000, 2**31 - 1)]
    assert counts == [3, 0, 0, 0, 0, 0]


def test_run_checks_initial_cube_points():
    with pytest.raises(ValueError, match=r"initial must have shape \(k, dim\) = \(k, 5\)"):
        jaxhpo.run(STRATEGY, objective, jax.random.key(0), 2, initial=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside the cube"):
        jaxhpo.run(STRATEGY, objective, jax.random.key(0), 2, initial=np.full((1, 5), 1.5))
    grid = jaxhpo.GridSearch(SPACE, 4, num=2)
    with pytest.raises(ValueError, match="GridSearch evaluates a fixed set of points"):
        jaxhpo.minimize(objective, SPACE, grid, initial={"x": 0.0})


def test_multi_objective_search_takes_initial_configurations():
    nsga = jaxhpo.NSGA2(SPACE, 4, num_objectives=2)
    r = jaxhpo.minimize(lambda p: jnp.stack([objective(p), p["x"] ** 2]), SPACE, nsga, key=0,
                        num_generations=3, history="all", initial={"x": 0.0, "lr": 0.01, "n": 1, "opt": "sgd"})
    np.testing.assert_allclose(r.history.values[0, 0], [0.35, 0.0], atol=1e-6)
    assert any(p == {"x": 0.0, "lr": 0.01, "n": 1, "opt": "sgd"} for p in r.pareto_params)


# ------------------------------------------------------------------ Study
def test_enqueued_configurations_come_first_whole_or_completed_by_the_strategy():
    with Study(SPACE, jaxhpo.TPE(SPACE, 2), seed=3) as s:
        assert s.enqueue_trial({"x": 0.5, "lr": 0.01, "n": 1, "opt": "sgd"})
        assert s.enqueue_trial({"lr": 0.001, "opt": "adam", "beta2": 0.95})
        assert s.enqueue_trial({"x": 1.0, "opt": "sgd", "beta2": 0.95})  # beta2 inactive: left out
        s.optimize(host_objective, num_trials=6, progress=False)
        t = s.trials
        assert t[0].params == {"x": 0.5, "lr": 0.01, "n": 1, "opt": "sgd"} and t[0].generation == 0
        assert t[1].params["lr"] == 0.001 and t[1].params["opt"] == "adam" and t[1].params["beta2"] == 0.95
        assert set(t[1].params) == set(SPACE.names)
        assert t[2].generation == 1 and t[2].params["x"] == 1.0 and "beta2" not in t[2].params
        assert s.best_value == pytest.approx(0.1, abs=1e-6) and s.best_trial.number == 0
        # queues of 2 and of 1 decoded by one program (the whole generation's rows)
        assert s._decode._cache_size() == 1
        # the strategy was told the enqueued points: TPE's archive holds the first one
        x0 = SPACE.fixed_coordinates(t[0].params)
        archive = np.asarray(s.state.x)[:int(s.state.count)]
        known = ~np.isnan(x0)  # beta2 is inactive
        assert np.any(np.all(np.abs(archive[:, known] - x0[known]) < 1e-6, axis=1))


def test_skip_if_exists_compares_trials_and_the_queue():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0) as s:
        assert s.enqueue_trial({"x": 0.25, "opt": "sgd"})
        assert not s.enqueue_trial({"x": 0.25, "opt": "sgd"}, skip_if_exists=True)  # queued
        s.optimize(host_objective, num_trials=2, progress=False)
        assert not s.enqueue_trial({"x": 0.25}, skip_if_exists=True)  # a trial has it
        assert s.enqueue_trial({"x": 0.25, "opt": "adam"}, skip_if_exists=True)
        assert s.enqueue_trial({"x": 0.25}, skip_if_exists=False)


def test_enqueue_trial_checks_its_input():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 2)) as s:
        with pytest.raises(ValueError, match=r"enqueue_trial: parameter 'lr' = 5 is outside"):
            s.enqueue_trial({"lr": 5})
        with pytest.raises(ValueError, match="at least one parameter"):
            s.enqueue_trial({})
        with pytest.raises(TypeError, match="must be a dict"):
            s.enqueue_trial([("x", 1.0)])
    with Study(SPACE, jaxhpo.GridSearch(SPACE, 4, num=2)) as s:
        with pytest.raises(ValueError, match="GridSearch evaluates a fixed set of points"):
            s.enqueue_trial({"x": 0.0})


def test_the_queue_survives_a_reopen_and_an_interrupted_generation(tmp_path):
    path = str(tmp_path / "q.db")
    cma = jaxhpo.CMAES(SPACE, 4)
    with Study(SPACE, cma, seed=5, storage=path) as s:
        for i in range(5):
            s.enqueue_trial({"x": -1.0 + 0.5 * i, "opt": "sgd"})
    with Study.load(path) as s:  # generation 0 takes four; the fifth stays queued
        asked = s.ask_trials()
        assert [t.params["x"] for t in asked] == [-1.0, -0.5, 0.0, 0.5]
    # a fresh process tells them: the ask is replayed, the stored points told
    with Study.load(path) as s:
        for t in asked:
            s.tell(t.number, host_objective(t.params))
        resumed = s.state
        second = s.ask_trials()
        assert second[0].params["x"] == 1.0 and second[0].generation == 1
    # the same study without interruption tells the same state
    with Study(SPACE, cma, seed=5) as s:
        for i in range(5):
            s.enqueue_trial({"x": -1.0 + 0.5 * i, "opt": "sgd"})
        s.optimize(host_objective, num_trials=4, progress=False)
        for a, b in zip(jax.tree_util.tree_leaves(s.state), jax.tree_util.tree_leaves(resumed)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cmaes_study_learns_from_enqueued_points():
    # Four copies of one interior point: the mean moves there (CMA-ES's weights sum to 1).
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0))
    with Study(space, jaxhpo.CMAES(space, 4, restarts=None), seed=0) as s:
        for _ in range(4):
            s.enqueue_trial({"a": 0.6, "b": 0.45})
        s.optimize(lambda p: (p["a"] - 0.6) ** 2 + (p["b"] - 0.45) ** 2, num_trials=4, progress=False)
        np.testing.assert_allclose(np.asarray(s.state.mean), [0.6, 0.45], atol=1e-6)


# ------------------------------------------------------------ add_trial
def test_added_trials_are_recorded_and_told_at_once_with_popsize_one():
    history = [({"x": 0.1 * i, "lr": 0.01, "n": 1, "opt": "sgd"}, float(i)) for i in range(3)]
    with Study(SPACE, jaxhpo.TPE(SPACE, 1), seed=0) as s:
        for params, value in history:
            s.add_trial(params, value)
        s.add_trial({"x": 1.0, "lr": 0.5, "n": 2, "opt": "adam", "beta2": 0.95}, None)
        s.add_trial({"x": 1.0, "lr": 0.5, "n": 2, "opt": "sgd"}, float("nan"))
        t = s.trials
        assert [tr.state for tr in t] == ["complete"] * 3 + ["failed"] * 2 and s.generation == 5
        assert [tr.params for tr in t[:3]] == [p for p, _ in history] and [tr.value for tr in t[:3]] == [0, 1, 2]
        assert t[3].error == "added without a value" and "nan" in t[4].error
        assert s.best_trial.number == 0
        # TPE's model holds all five, the failed ones as +inf (its bad set steers away from them)
        y = np.asarray(s.state.y)[:int(s.state.count)]
        assert y.size == 5 and np.isfinite(y).sum() == 3
        calls = []
        s.optimize(lambda p: calls.append(p) or host_objective(p), num_trials=2, progress=False)
        assert len(calls) == 2 and len(s.trials) == 7


def test_added_trials_fill_a_generation_beside_proposals_and_whole_ones_are_told(tmp_path):
    path = str(tmp_path / "a.db")
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0))
    cma = jaxhpo.CMAES(space, 4, restarts=None)
    def f(p):
        return (p["a"] - 0.6) ** 2 + (p["b"] - 0.45) ** 2

    with Study(space, cma, seed=0, storage=path) as s:
        for _ in range(4):  # a whole generation of one point: told now, the mean moves there
            s.add_trial({"a": 0.6, "b": 0.45}, 0.0)
        assert s.generation == 1 and len(s.trials) == 4
        np.testing.assert_allclose(np.asarray(s.state.mean), [0.6, 0.45], atol=1e-6)
        # one, with what else was measured: waits for the next generation
        s.add_trial({"a": 0.1, "b": 0.1}, 0.5, user_attrs={"accuracy": np.float32(0.75), "curve": jnp.arange(2)})
        assert len(s.trials) == 4
    with Study(space, cma, seed=0) as fresh:  # the error says where added trials are
        fresh.add_trial({"a": 0.1, "b": 0.1}, 0.5)
        with pytest.raises(ValueError, match=r"no complete trial yet; its 1 added trial\(s\) are recorded when "
                                             r"the next generation is proposed"):
            fresh.best_trial
    with Study.load(path) as s:  # it survives a reopen
        calls = []
        s.optimize(lambda p: calls.append(p) or f(p), num_trials=3, progress=False)
        g1 = [t for t in s.trials if t.generation == 1]
        assert g1[0].params == {"a": 0.1, "b": 0.1} and g1[0].value == 0.5 and len(calls) == 3
        assert g1[0].user_attrs == {"accuracy": 0.75, "curve": [0, 1]}
        assert s.to_records()[g1[0].number]["user_attrs_accuracy"] == 0.75
        assert all(t.user_attrs == {} for t in s.trials if t.number != g1[0].number)
        assert {"a": 0.1, "b": 0.1} not in calls and s.generation == 2


def test_add_trial_checks_its_input():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 1)) as s:
        with pytest.raises(ValueError, match="add_trial: .*missing parameter 'beta2', which is active"):
            s.add_trial({"x": 0.0, "lr": 0.1, "n": 1, "opt": "adam"}, 1.0)
        with pytest.raises(TypeError, match="add_trial"):
            s.add_trial({"x": 0.0, "lr": 0.1, "n": 1, "opt": "sgd"}, "1.0")
        ok = {"x": 0.0, "lr": 0.1, "n": 1, "opt": "sgd"}
        with pytest.raises(TypeError, match="add_trial: user_attrs must be None or a dict of str keys, got list"):
            s.add_trial(ok, 1.0, user_attrs=[("a", 1)])
        with pytest.raises(TypeError, match="add_trial: a user attribute's key must be a non-empty str, got 3"):
            s.add_trial(ok, 1.0, user_attrs={3: 1})
        with pytest.raises(TypeError, match="add_trial: 'model': a value must be None, a bool, number or str"):
            s.add_trial(ok, 1.0, user_attrs={"model": object()})
        with pytest.raises(TypeError, match="add_trial: 'm': a dict value needs str keys"):
            s.add_trial(ok, 1.0, user_attrs={"m": {1: 2}})
        assert s.trials == []  # nothing refused was queued
    nsga = jaxhpo.NSGA2(SPACE, 2, num_objectives=2)
    with Study(SPACE, nsga) as s:
        with pytest.raises(ValueError, match=r"value must be 2 numbers \(2 objective values, then 0 constraint"):
            s.add_trial({"x": 0.0, "lr": 0.1, "n": 1, "opt": "sgd"}, [1.0])
        s.add_trial({"x": 0.0, "lr": 0.1, "n": 1, "opt": "sgd"}, [1.0, 2.0])
        s.add_trial({"x": 0.5, "lr": 0.1, "n": 1, "opt": "sgd"}, [2.0, 1.0])
        assert [t.values for t in s.best_trials] == [(1.0, 2.0), (2.0, 1.0)]
    with Study(SPACE, jaxhpo.GridSearch(SPACE, 4, num=2)) as s:
        with pytest.raises(ValueError, match="GridSearch evaluates a fixed set of points"):
            s.add_trial({"x": 0.0, "lr": 0.1, "n": 1, "opt": "sgd"}, 1.0)


def test_skip_if_exists_ignores_parameters_the_others_make_inactive_and_tells_labels_apart():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0) as s:
        config = {"opt": "sgd", "lr": 0.001, "beta2": 0.95}  # beta2 only counts with adam
        assert s.enqueue_trial(config)
        s.optimize(host_objective, num_trials=2, progress=False)
        assert "beta2" not in s.trials[0].params
        assert not s.enqueue_trial(config, skip_if_exists=True)  # the rerun of a config file
    # The same where the strategy chose the optimiser: a run that made beta2 inactive counts too.
    dropped = 0
    for seed in range(4):
        with Study(SPACE, jaxhpo.RandomSearch(SPACE, 1), seed=seed) as s:
            assert s.enqueue_trial({"beta2": 0.95, "x": 0.25}, skip_if_exists=True)
            s.optimize(host_objective, num_trials=1, progress=False)
            dropped += "beta2" not in s.trials[0].params
            assert not s.enqueue_trial({"beta2": 0.95, "x": 0.25}, skip_if_exists=True)
    assert dropped
    # A trial whose own proposal left beta2 out (never queued) has no beta2 value:
    # any beta2 is still new (the missing parameter matched every value).
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 1), seed=0) as s:
        s.add_trial({"x": 0.0, "lr": 0.01, "n": 1, "opt": "sgd"}, 1.0)
        s.optimize(host_objective, num_trials=1, progress=False)
        assert all("beta2" not in t.params for t in s.trials)
        assert s.enqueue_trial({"beta2": 0.95}, skip_if_exists=True)
    flags = jaxhpo.Space(flag=jaxhpo.Categorical([1, True, "off"]), x=jaxhpo.Float(0.0, 1.0))
    with Study(flags, jaxhpo.RandomSearch(flags, 2), seed=0) as s:
        assert s.enqueue_trial({"flag": 1})
        assert s.enqueue_trial({"flag": True}, skip_if_exists=True)  # another label
        assert not s.enqueue_trial({"flag": True}, skip_if_exists=True)


def test_max_trials_counts_added_trials_told_while_claiming():
    with Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0) as s:
        asked = s.ask()
        for x in (0.1, 0.2):  # a generation's worth, queued while generation 0 runs
            s.add_trial({"x": x, "lr": 0.01, "n": 1, "opt": "sgd"}, x)
        s.tell([host_objective(p) for p in asked])
        s.optimize(host_objective, max_trials=4, progress=False)
        finished = [t for t in s.trials if t.state == "complete"]
        assert len(finished) == 4 and len(s.trials) == 4


def test_an_empty_initial_configuration_is_refused():
    with pytest.raises(ValueError, match="every configuration must name at least one parameter"):
        jaxhpo.minimize(objective, SPACE, STRATEGY, num_generations=2, initial={})
