"""examples/hypergrad_digits.py at a tiny size: the figures it reports are the ones its runs give,
and its cost accounting adds up. (No timing is checked.)"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_example


@pytest.fixture(scope="module")
def ex():
    return load_example("hypergrad_digits")


def test_data_and_poor_starts(ex):
    (Xt, yt), (Xv, yv), (Xs, ys) = ex.data(0)
    assert Xt.shape == (1000, 64) and Xv.shape == (400, 64) and Xs.shape == (397, 64)
    assert Xt.min() >= 0.0 and Xt.max() <= 1.0 and set(np.unique(yt)) == set(range(10))
    poor = ex.SPACE.decode(jnp.asarray(ex.poor_starts(16)))
    assert np.all((poor["lr"] >= 1e-4 * 0.999) & (poor["lr"] <= 1e-3 * 1.001))
    assert np.all((poor["wd"] >= 1e-2 * 0.999) & (poor["wd"] <= 1e-1 * 1.001))
    assert len({(float(a), float(b)) for a, b in zip(poor["lr"], poor["wd"])}) == 16


def test_tiny_run_reports_what_its_runs_give_and_its_costs_add_up(ex, tmp_path, capsys, monkeypatch):
    """At a tiny size: the hypergradient winner (validation loss, test figures) is what a plain T-step
    run from the initial weights at its constant hyperparameters gives; stage 2 starts where stage
    1's best members ended; the step-equivalents are the charged ratios times the steps."""
    out = tmp_path / "hg.json"
    T, seed = 20, 1
    # The measured cost ratios are timings, not tested here: a window "measures" 3 (charged the
    # floor, 4), a full run 5 (charged 5).
    monkeypatch.setattr(ex, "hypergrad_step_cost", lambda *a, num_steps, **k: 3.0 if num_steps == 5 else 5.0)
    payload = ex.main(["--seeds", str(seed), "--steps", str(T), "--search", "4", "--popsize", "4",
                       "--window", "5", "--search-steps", "10", "--keep", "2", "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text())["criterion_met"] == payload["criterion_met"]
    assert "random search" in capsys.readouterr().out
    (row,) = payload["seeds"]
    rs, hg = row["random_search"], row["hypergradient"]

    # cost accounting
    assert rs["step_equivalents"] == 4 * T and rs["cost_ratio"] == 1.0
    assert hg["hypergrad_steps"] == {"window": 4 * 10, "full": 2 * 2 * T}
    assert row["measured_step_cost"] == {"window": 3.0, "full": 5.0}
    assert row["charged_step_cost"] == {"window": 4.0, "full": 5.0}
    assert hg["step_equivalents"] == pytest.approx(4.0 * 4 * 10 + 5.0 * 2 * 2 * T)
    assert hg["cost_ratio"] == pytest.approx(hg["step_equivalents"] / rs["step_equivalents"])

    # selection: the best run by validation loss, for both methods
    assert rs["val_loss"] == pytest.approx(min(rs["all_val_losses"]))
    refine_vals = np.asarray(hg["refine"]["val_losses"])  # (rounds, keep)
    assert refine_vals.shape == (2, 2) and hg["val_loss"] == pytest.approx(refine_vals.min(), rel=1e-6)
    assert hg["search"]["best_val_loss"] == pytest.approx(min(hg["search"]["val_losses"]))
    for a, b in zip(hg["refine"]["configs"][0], hg["search"]["chosen_end_configs"]):
        assert a == pytest.approx(b, rel=1e-5)

    # both winners are reproduced by a plain run at their configuration
    train, val, test = ex.data(seed)
    step, _ = ex.make(train, val)
    state0 = ex.initial_state(jax.random.key(seed))
    for r in (rs, hg):
        params = ex.rollout(step, {k: jnp.float32(v) for k, v in r["config"].items()}, state0, T)[0]
        assert float(ex.xent(params, *val)) == pytest.approx(r["val_loss"], rel=1e-4)
        assert float(ex.xent(params, *test)) == pytest.approx(r["test_loss"], rel=1e-4)
        assert float(ex.accuracy(params, *test)) == pytest.approx(r["test_acc"], abs=1e-6)
