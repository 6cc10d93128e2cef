"""The digits MLP demo (quick settings) and the shipped digits data."""

import numpy as np
import pytest

from jaxhpo.datasets_digits import digits_split, load_digits
from jaxhpo.demo_mlp import MLP_QUICK_SETTINGS, format_mlp_table, run_mlp_demo


def test_digits_data_matches_the_known_set():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int32
    assert X.min() == 0 and X.max() == 16 and np.bincount(y).tolist()[:3] == [178, 182, 177]
    s = digits_split(0)
    assert len(s["y_train"]) + len(s["y_val"]) + len(s["y_test"]) == 1797
    assert set(np.unique(s["y_test"])) == set(range(10)) and s["X_train"].max() <= 1.0
    with pytest.raises(ValueError, match="fractions"):
        digits_split(0, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="three positive shares"):
        digits_split(0, (0.6, 0.2, float("nan")))
    with pytest.raises(ValueError, match="leave the val part empty"):  # each class's 0.27 samples round to 0
        digits_split(0, (0.997, 0.0015, 0.0015))


def test_quick_mlp_demo_runs():
    # Hyperband and random search share one compiled block program (quick
    # settings: blocks of 3, random search's 3 configurations); PBT is
    # covered by tests/test_training_pbt.py.
    rows = run_mlp_demo(**MLP_QUICK_SETTINGS, methods=("hyperband", "random"))
    assert [r.method for r in rows] == ["hyperband", "random"]
    assert rows[0].num_configs == 5 and rows[0].total_budget == 11  # (3,1)(1,3) | (2,3)
    for r in rows:
        assert 0.0 <= r.test_accuracy <= 1.0
        assert 0.0 <= r.val_accuracy <= 1.0  # the search's own record (tests/test_training_aux.py checks it)
        # Better than guessing: below the uniform prediction's cross-entropy, log(10).
        assert r.val_loss < np.log(10.0) and r.total_budget > 0
        assert set(r.best) == {"learning_rate", "weight_decay", "width", "depth", "optimizer"}
    table = format_mlp_table(rows)
    assert "hyperband" in table and "test acc" in table and "val acc" in table
    with pytest.raises(ValueError, match="methods"):
        run_mlp_demo(methods=("bogus",))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        run_mlp_demo(seed=2**64)
