"""examples/mo_digits.py at a tiny size: the reported front is non-dominated,
feasible, and its numbers are the ones the configurations give."""

import numpy as np
import pytest

import jaxhpo

from helpers import load_example


@pytest.fixture(scope="module")
def mo_digits():
    return load_example("mo_digits")


def test_tiny_front_is_nondominated_and_feasible(mo_digits):
    max_params = 300
    out = mo_digits.run_mo_digits(popsize=6, num_generations=2, steps=4, max_width=8, max_depth=2, seed=0,
                                  max_params=max_params, test_accuracy=False)
    res, front = out["result"], out["front"]
    assert res.num_evaluations == 12 and res.num_failed == 0
    assert 1 <= len(front) == len(res.pareto_params)
    space = out["space"]
    for r in front:
        c = r["config"]
        # feasible: inside the space and within the parameter budget, counted in closed form
        assert 2 <= c["width"] <= 8 and 1 <= c["depth"] <= 2 and 1e-3 <= c["learning_rate"] <= 1e-1 * (1 + 1e-6)
        assert r["params"] == 64 * c["width"] + c["width"] + (c["depth"] - 1) * (c["width"] ** 2 + c["width"]) \
            + 10 * c["width"] + 10
        assert r["params"] <= max_params
        # accuracy is a share of the 359 validation images
        assert 0.0 <= r["val_accuracy"] <= 1.0
        assert abs(r["val_accuracy"] * 359 - round(r["val_accuracy"] * 359)) < 1e-3
    assert len(space.names) == 3
    # non-dominated among themselves and against every feasible evaluation (max accuracy, min params)
    vals = res.history.values.reshape(-1, 3)
    feasible = vals[vals[:, 2] <= 0][:, :2]
    mins = feasible * np.array([-1.0, 1.0])
    for r in front:
        v = np.array([-r["val_accuracy"], r["params"]])
        assert not np.any(np.all(mins <= v, axis=1) & np.any(mins < v, axis=1))
    # and every feasible evaluation is dominated by, or equal to, some front point
    fr = np.array([[-r["val_accuracy"], r["params"]] for r in front])
    for v in mins:
        assert np.any(np.all(fr <= v + 1e-6, axis=1))
    # the hypervolume is the front's, in minimisation signs, w.r.t. (accuracy 0, biggest network)
    ref = np.array([0.0, mo_digits.param_count(8, 2)])
    expect = float(jaxhpo.hypervolume(fr, ref * np.array([-1.0, 1.0])))
    assert out["hypervolume"] == pytest.approx(expect, rel=1e-5) and out["hypervolume"] > 0
