"""Pictures of compiled searches' results draw the result's own numbers."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo.training import Trainer, hyperband, pbt

from helpers import TOY_SPACE, toy_error, toy_init, toy_step

pytest.importorskip("matplotlib")
from jaxhpo import plot  # noqa: E402

SPACE = jaxhpo.Space(x=jaxhpo.Float(-2.0, 2.0), n=jaxhpo.Int(1, 6))


def f(p):  # fails where n == 6
    return jnp.where(p["n"] == 6, jnp.nan, (p["x"] - 0.5) ** 2 + 0.1 * (p["n"] - 3) ** 2)


def _bold(ax):
    return [line for line in ax.lines if line.get_linewidth() >= 2]


def test_history_of_a_result_draws_its_best_so_far_and_every_value(tmp_path):
    res = jaxhpo.minimize(f, SPACE, jaxhpo.RandomSearch(SPACE, 8), num_generations=5, key=0, history="values")
    assert res.num_failed > 0 and res.maximize is False
    fig = plot.plot_history(res, tmp_path / "history.png")
    ax = fig.axes[0]
    (best,) = _bold(ax)
    steps = best.get_xydata()
    # the best so far at every evaluation, against a running minimum by hand;
    # at each generation's end it is the trace's best
    values = np.asarray(res.history.values).reshape(-1)
    running = np.minimum.accumulate(np.where(np.isfinite(values), values, np.inf))
    shown = np.isfinite(running)
    np.testing.assert_array_equal(steps[:, 0], np.arange(1, values.size + 1)[shown])
    np.testing.assert_allclose(steps[:, 1], running[shown])
    ends = np.cumsum(res.history.num_valid) - 1
    np.testing.assert_allclose(running[ends], res.history.best_value)
    new_best = np.flatnonzero(np.diff(running) < 0) + 1
    assert not np.all(np.isin(new_best, ends))  # it moves within generations, where the trace's best cannot
    points, failed = ax.collections
    values = np.asarray(res.history.values).reshape(-1)
    np.testing.assert_allclose(np.sort(points.get_offsets()[:, 1]), np.sort(values[np.isfinite(values)]))
    assert len(failed.get_offsets()) == res.num_failed
    assert (tmp_path / "history.png").stat().st_size > 5000
    # history "best": the best-so-far line alone
    plain = jaxhpo.minimize(f, SPACE, jaxhpo.RandomSearch(SPACE, 8), num_generations=5, key=0, maximize=True)
    ax = plot.plot_history(plain).axes[0]
    assert not ax.collections and "maximised" in ax.get_ylabel()


def test_rungs_join_each_configuration_and_mark_the_best():
    trainer = Trainer(toy_init, toy_step, lambda s, hp: toy_error(s))
    res = hyperband(trainer, TOY_SPACE, 3, max_budget=9, eta=3)
    ax = plot.plot_rungs(res).axes[0]
    (best,) = _bold(ax)
    mine = [(r["budget"], float(r["loss"][list(r["index"]).index(res.best_index)]))
            for r in res.rungs if res.best_index in r["index"]]
    np.testing.assert_allclose(best.get_xydata(), np.array(mine))
    assert best.get_xydata()[-1, 1] == pytest.approx(res.best_loss)
    assert len(ax.lines) == len(res.loss) + 1  # every configuration, then the best again


def test_pbt_draws_the_best_lineage_schedule():
    trainer = Trainer(toy_init, toy_step, lambda s, hp: toy_error(s))
    res = pbt(trainer, TOY_SPACE, 0, popsize=4, num_rounds=4, steps_per_round=1, fraction=0.25)
    fig = plot.plot_pbt(res, params="lr")
    loss_ax, lr_ax = fig.axes
    lineage = res.lineage()
    np.testing.assert_allclose(_bold(loss_ax)[0].get_ydata(), res.losses[np.arange(4), lineage])
    np.testing.assert_allclose(_bold(lr_ax)[0].get_ydata(), res.schedule()["lr"])
    assert lr_ax.get_yscale() == "log"  # lr is a log-scaled Float
    with pytest.raises(ValueError, match=r"params \['momentum'\] are not hyperparameters"):
        plot.plot_pbt(res, params=["momentum"])
    with pytest.raises(TypeError, match="params must be a hyperparameter name or a list of names"):
        plot.plot_pbt(res, params=5)


def test_history_of_one_constrained_objective_draws_infeasible_rows_apart():
    # NSGA2 with one objective and one constraint (x <= 0.5): values (G, P, 2)
    res = jaxhpo.minimize(lambda p: jnp.stack([p["x"] ** 2, p["x"] - 0.5]), SPACE,
                          jaxhpo.NSGA2(SPACE, 8, num_objectives=1, num_constraints=1), num_generations=3, key=0,
                          history="values", maximize=True)
    assert res.maximize is True
    ax = plot.plot_history(res).axes[0]
    points, infeasible = ax.collections[:2]
    rows = np.asarray(res.history.values).reshape(-1, 2)
    assert len(points.get_offsets()) == np.sum(rows[:, 1] <= 0)
    assert len(infeasible.get_offsets()) == np.sum(rows[:, 1] > 0)
    np.testing.assert_allclose(np.sort(infeasible.get_offsets()[:, 1]), np.sort(rows[rows[:, 1] > 0, 0]))
    assert "maximised" in ax.get_ylabel()


def test_result_plots_import_in_any_order():
    code = "import jaxhpo.plot_results, jaxhpo.plot; assert jaxhpo.plot.plot_rungs is jaxhpo.plot_results.plot_rungs"
    subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu", "PATH": ""})


def test_result_plots_refuse_other_things():
    with pytest.raises(TypeError, match="MultiFidelityResult"):
        plot.plot_rungs({"rungs": []})
    with pytest.raises(TypeError, match="PBTResult"):
        plot.plot_pbt(object())
    with pytest.raises(TypeError, match="Result of jaxhpo.minimize"):
        plot.plot_result_history(object())
    all_failed = pbt(Trainer(toy_init, toy_step, lambda s, hp: jnp.nan * toy_error(s)), TOY_SPACE, 0, popsize=2,
                     num_rounds=1)
    with pytest.raises(TypeError, match="use plot_pbt"):
        plot.plot_history(all_failed)
    with pytest.raises(plot.NothingToPlot):
        plot.plot_pbt(all_failed)
    front = jaxhpo.minimize(lambda p: jnp.stack([p["x"], -p["x"]]), SPACE, jaxhpo.NSGA2(SPACE, 8, 2),
                            num_generations=2, key=0)
    with pytest.raises(ValueError, match="plot_pareto_front"):
        plot.plot_history(front)
    failed = jaxhpo.minimize(lambda p: jnp.nan * p["x"], SPACE, jaxhpo.RandomSearch(SPACE, 4), num_generations=1)
    with pytest.raises(plot.NothingToPlot):
        plot.plot_history(failed)
