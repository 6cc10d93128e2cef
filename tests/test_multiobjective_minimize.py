"""minimize with vector objectives: signs, constraints and the reported front."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import Float, NSGA2, Space

SPACE = Space(a=Float(0.0, 1.0), b=Float(0.0, 1.0))


def two_objectives(p):
    # f1 = a (minimised) and g = -f2 (maximised, i.e. f2 minimised, a ZDT1-like
    # trade-off with f1); feasible when a >= 0.1.
    f1 = p["a"]
    f2 = (1.0 + p["b"]) * (1.0 - jnp.sqrt(p["a"] / (1.0 + p["b"])))
    return jnp.stack([f1, -f2, 0.1 - p["a"]])


def test_front_signs_constraints_and_hypervolume():
    s = NSGA2(SPACE, popsize=16, num_objectives=2, num_constraints=1)
    res = jaxhpo.minimize(two_objectives, SPACE, s, num_generations=15, key=0, maximize=(False, True),
                          ref_point=(1.1, -2.1))
    front = res.pareto_values
    assert front.shape[1] == 2 and len(front) == len(res.pareto_params) > 3
    # feasibility: every reported configuration satisfies a >= 0.1
    assert all(p["a"] >= 0.1 - 1e-6 for p in res.pareto_params)
    # user's signs: values as the objective returned them (g = -f2 < 0)
    assert (front[:, 1] < 0).all()
    # non-dominated in the user's senses (min f1, max f2)
    mins = np.stack([front[:, 0], -front[:, 1]], axis=1)
    dominated = ((mins[:, None] <= mins[None]).all(-1) & (mins[:, None] < mins[None]).any(-1)).any(0)
    assert not dominated.any()
    # the hypervolume is the one pareto.hypervolume gives in minimisation signs
    expect = float(jaxhpo.hypervolume(mins, jnp.array([1.1, 2.1])))
    assert res.hypervolume == pytest.approx(expect, rel=1e-5) and res.hypervolume > 0
    np.testing.assert_allclose(res.ref_point, [1.1, -2.1])
    assert res.maximize == (False, True)
    # a reference point inside the front's range leaves the plot's directions as given
    pytest.importorskip("matplotlib")
    from jaxhpo import plot
    res.ref_point = np.array([float(np.median(front[:, 0])), -2.1])
    ax = plot.plot_pareto_front(res).axes[0]
    assert "minimised" in ax.get_xlabel() and "maximised" in ax.get_ylabel()


def test_ref_point_needs_a_strategy_that_keeps_a_front():
    gp = jaxhpo.GPBO(SPACE, 2, num_constraints=1)  # one objective: no front
    with pytest.raises(ValueError, match="this strategy keeps no Pareto front"):
        jaxhpo.minimize(lambda p: jnp.stack([p["a"], p["b"] - 0.5]), SPACE, gp, num_generations=2,
                        ref_point=(1.0,))


def test_vector_objective_shape_and_maximize_errors():
    s = NSGA2(SPACE, popsize=8, num_objectives=2, num_constraints=1)
    with pytest.raises(ValueError, match="vector of 3 values"):
        jaxhpo.minimize(lambda p: jnp.stack([p["a"], p["b"]]), SPACE, s, num_generations=1)
    with pytest.raises(ValueError, match="one per objective"):
        jaxhpo.minimize(two_objectives, SPACE, s, num_generations=1, maximize=(True,))
    with pytest.raises(TypeError, match="maximize"):
        jaxhpo.minimize(lambda p: p["a"], SPACE, jaxhpo.RandomSearch(SPACE, 4), num_generations=1,
                        maximize=(True, False))


def test_with_every_point_kept_the_front_is_exact_beyond_the_strategys_memory():
    """An archive of 4 holds less than the front: with history="all" the reported
    front is exactly the non-dominated feasible points of every evaluation
    (a brute-force numpy front), in the user's signs."""
    s = NSGA2(SPACE, popsize=8, num_objectives=2, num_constraints=1, archive_size=4)
    res = jaxhpo.minimize(two_objectives, SPACE, s, num_generations=6, key=1, maximize=(False, True),
                          history="all")
    vals = res.history.values.reshape(-1, 3)
    feasible = vals[:, 2] <= 0
    mins = np.stack([vals[:, 0], -vals[:, 1]], axis=1)[feasible]
    dominated = ((mins[:, None] <= mins[None]).all(-1) & (mins[:, None] < mins[None]).any(-1)).any(0)
    expect = np.unique(mins[~dominated], axis=0)
    got = np.stack([res.pareto_values[:, 0], -res.pareto_values[:, 1]], axis=1)
    np.testing.assert_array_equal(got, expect)  # both sorted by the first objective, then the second
    assert len(got) > 4
    for p, v in zip(res.pareto_params, res.pareto_values):
        np.testing.assert_allclose(np.asarray(two_objectives(SPACE.from_python(p)))[:2], v, rtol=1e-5, atol=1e-6)


def test_fronts_of_new_sizes_reuse_the_compiled_post_processing():
    from jaxhpo.loop import _decode_rows, _strategy_front
    from jaxhpo.pareto import _hypervolume_program

    def programs():  # (the state's front is read by one compiled program too)
        return _hypervolume_program._cache_size(), _decode_rows._cache_size(), _strategy_front._cache_size()

    s = NSGA2(SPACE, popsize=8, num_objectives=2, num_constraints=1)
    sizes = set()
    for key in range(4):
        res = jaxhpo.minimize(two_objectives, SPACE, s, num_generations=3, key=key, maximize=(False, True))
        sizes.add(len(res.pareto_values))
        if key == 0:
            before = programs()
    assert len(sizes) > 1  # fronts of several sizes, padded to one shape (<= 8 rows)
    assert programs() == before


def test_auxiliary_output_of_the_best_feasible_first_objective():
    # has_aux with constraints: the auxiliary output kept is that of the
    # point best_value is of (the lowest feasible first objective), not of an
    # infeasible point with a lower one.
    def with_aux(p):
        return two_objectives(p), {"a": p["a"], "b": p["b"]}

    s = NSGA2(SPACE, popsize=16, num_objectives=2, num_constraints=1)
    res = jaxhpo.minimize(with_aux, SPACE, s, num_generations=6, key=1, maximize=(False, True),
                          history="values", has_aux=True)
    assert res.best_aux["a"] == np.float32(res.best_value) >= np.float32(0.1)
    np.testing.assert_array_equal(res.history.best_aux["a"], res.history.best_value.astype(np.float32))
    assert res.history.aux["a"].min() < 0.1  # infeasible points with lower a were evaluated
    assert res.best_params["a"] == pytest.approx(float(res.best_aux["a"]), rel=1e-6)
    with pytest.raises(ValueError, match=r"got a tuple: stack the objectives and constraints into one vector"):
        jaxhpo.minimize(lambda p: (p["a"], p["b"]), SPACE, NSGA2(SPACE, popsize=8, num_objectives=2),
                        num_generations=1)


@pytest.mark.parametrize("make", [lambda: NSGA2(SPACE, 4, num_objectives=2, num_constraints=1),
                                  lambda: jaxhpo.MOTPE(SPACE, 4, num_objectives=2, num_constraints=1)])
def test_a_positive_subnormal_constraint_keeps_its_point_off_the_front(make):
    # g = 1e-40 > 0 for a < 0.5: infeasible, though a CPU flushes it to 0 inside the program
    def f(p):
        return jnp.stack([p["a"], 1.0 - p["a"], jnp.where(p["a"] < 0.5, jnp.float32(1e-40), -1.0)])

    res = jaxhpo.minimize(f, SPACE, make(), num_generations=3, key=0, history="all")
    a = np.asarray(res.history.x)[..., 0].ravel()
    assert (a < 0.5).any() and (a >= 0.5).any()
    assert res.pareto_params and all(p["a"] >= 0.5 for p in res.pareto_params)
    assert res.best_params["a"] >= 0.5


def test_the_pareto_plot_of_a_continued_search_draws_the_earlier_calls_front_points():
    pytest.importorskip("matplotlib")
    from jaxhpo import plot

    def f(c):
        return jnp.stack([c["a"], (1.0 - c["a"]) ** 2 + c["b"]])

    first = jaxhpo.minimize(f, SPACE, NSGA2(SPACE, 6), num_generations=4, history="all", key=0)
    more = jaxhpo.minimize(f, SPACE, first.strategy, state=first.state, num_generations=1, history="all", key=0)
    ax = plot.plot_pareto_front(more).axes[0]
    drawn = {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections}["Pareto front"]
    front = np.asarray(more.pareto_values)
    # every front point drawn once (it drew only those of the last call's history)
    assert sorted(map(tuple, drawn)) == sorted(map(tuple, front)) and len(front) > 1
    with pytest.raises(TypeError, match="maximize must be a sequence of bools, one per objective"):
        plot.plot_pareto_front(more, maximize=("no", "no"))
    with pytest.raises(TypeError, match="maximize must be"):
        plot.plot_pareto_front(more, maximize=True)
    assert "maximised" in plot.plot_pareto_front(more, maximize=np.array([False, True])).axes[0].get_ylabel()
