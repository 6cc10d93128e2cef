"""The README's self-contained examples run as printed and give what their comments say."""

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    if len(blocks) != 1:
        pytest.fail(f"README should hold one python block with {marker!r}, found {len(blocks)}")
    return textwrap.dedent(blocks[0])  # (a block inside a list item is indented)


def test_tour_finds_the_documented_best_configuration():
    ns = {}
    exec(compile(_block("jaxhpo.minimize(objective, space"), "README tour", "exec"), ns)
    best = ns["result"].best_params
    # The objective's minimum: log10(lr) = -2.5, one layer, adam (momentum then inactive).
    assert best["optimizer"] == "adam" and best["layers"] == 1 and "momentum" not in best
    assert abs(np.log10(best["lr"]) + 2.5) < 0.05
    assert abs(ns["result"].best_value - 0.1) < 0.01


def test_own_strategy_example_finds_the_optimum():
    ns = {}
    exec(compile(_block("class AroundBest(jaxhpo.Strategy)"), "README own strategy", "exec"), ns)
    best = ns["result"].best_params
    assert abs(best["x"] - 1) < 0.1 and abs(best["y"] + 2) < 0.1


def test_hypergradient_example_agrees_with_the_implicit_one():
    ns = {}
    exec(compile(_block("hypergrad.unrolled("), "README hypergradients", "exec"), ns)
    value, grads, dval = ns["value"], ns["grads"], ns["dval"]
    assert np.isfinite(float(value)) and set(grads) == {"lr", "l2"}
    # 100 steps of gradient descent reach the ridge solution closely, so the
    # unrolled d val / d l2 is near the implicit function theorem's.
    assert abs(float(grads["l2"]) - float(dval["l2"])) < 0.01 * abs(float(dval["l2"]))


def test_checkpointed_search_equals_the_search_at_once():
    ns = {}
    exec(compile(_block("jaxhpo.save_state(path, state)"), "README checkpoints", "exec"), ns)
    strategy, state, whole = ns["strategy"], ns["state"], ns["whole"]
    assert int(state.generation) == 100
    for a, b in zip(strategy.best(state), strategy.best(whole)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(strategy.best(state)[1]) < 1e-6  # the optimum (1, -2)
