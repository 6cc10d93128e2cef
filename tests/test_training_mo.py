"""Multi-objective successive halving and Hyperband: survivors by non-dominated rank and crowding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.training import Trainer, hyperband, pbt, successive_halving, survivor_order
from jaxhpo.training.trainer import continue_rung, init_rung

from helpers import TOY_SPACE, toy_error, toy_init, toy_step


# ------------------------------------------------------- brute-force reference (numpy, float64)
def _ref_ranks(v):
    """Non-dominated fronts by repeated peeling; non-finite rows get n."""
    n = len(v)
    valid = np.all(np.isfinite(v), axis=1)
    rank = np.full(n, n)
    left = set(np.flatnonzero(valid))
    r = 0
    while left:
        front = {i for i in left
                 if not any(np.all(v[j] <= v[i]) and np.any(v[j] < v[i]) for j in left if j != i)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    return rank


def _ref_crowding(v, rank):
    n, m = v.shape
    dist = np.zeros(n)
    for r in set(rank[rank < n]):
        idx = np.flatnonzero(rank == r)
        for k in range(m):
            o = idx[np.lexsort((idx, v[idx, k]))]  # by objective k, ties by position
            span = v[o[-1], k] - v[o[0], k]
            dist[o[0]] = dist[o[-1]] = np.inf
            for a in range(1, len(o) - 1):
                if span > 0:
                    dist[o[a]] += (v[o[a + 1], k] - v[o[a - 1], k]) / span
    return dist


def _ref_order(v):
    v = np.asarray(v, np.float64)
    rank = _ref_ranks(v)
    crowd = _ref_crowding(v, rank)
    return np.lexsort((np.arange(len(v)), -crowd, rank))


# --------------------------------------------------------------------- selection itself
HAND = np.array([[1, 5], [2, 3], [3, 2.5], [5, 1],     # front 0
                 [2, 6], [4, 4], [6, 2], [3, 3]],       # 4, 6, 7: front 1; 5 (dominated by 7): front 2
                np.float32)


def test_survivor_order_hand_made():
    # Front 0 crowding: ends 0 and 3 inf; 2: 3/4 + 2/4 = 1.25; 1: 2/4 + 2.5/4 = 1.125.
    # Front 1: ends 4 and 6 inf; 7: 4/4 + 4/4 = 2. Front 2: 5.
    expected = [0, 3, 2, 1, 4, 6, 7, 5]
    assert survivor_order(HAND).tolist() == expected
    assert _ref_order(HAND).tolist() == expected
    # Failed rows (any non-finite objective) go last, in position order.
    bad = np.concatenate([HAND[:2], [[np.nan, 0.0]], HAND[2:], [[0.0, np.inf]]])
    assert survivor_order(bad).tolist()[-2:] == [2, 9]


@pytest.mark.parametrize("m", [2, 3])
def test_survivor_order_equals_brute_force_on_random_values(m):
    rng = np.random.default_rng(m)
    for n in (9, 20):
        # Coarse values make ties and shared fronts common.
        v = rng.integers(0, 6, size=(n, m)).astype(np.float32) + rng.random((n, 1)).astype(np.float32) * 0.01
        np.testing.assert_array_equal(survivor_order(v), _ref_order(v))


def test_single_objective_order_is_a_stable_sort():
    loss = np.array([0.3, 0.1, np.inf, 0.1, np.nan, 0.2], np.float32)
    assert survivor_order(loss).tolist() == [1, 3, 5, 0, 2, 4]
    with pytest.raises(ValueError, match="losses"):
        survivor_order(np.zeros((2, 2, 2)))


# ----------------------------------------------------------------------- over a trainer
SPACE = TOY_SPACE
_init, _step, _error = toy_init, toy_step, toy_error


# Two objectives in conflict: the error falls faster with a larger step, the
# "cost" grows with it.
MO = Trainer(_init, _step, lambda s, hp: jnp.stack([_error(s), hp["lr"] + 0.01 * hp["shift"]]))
ONE = Trainer(_init, _step, lambda s, hp: _error(s)[None])  # m = 1 as a vector
SCALAR = Trainer(_init, _step, lambda s, hp: _error(s))


def test_mo_successive_halving_survivors_equal_brute_force():
    res = successive_halving(MO, SPACE, jax.random.key(1), num_configs=27, min_budget=1, max_budget=9)
    assert res.num_objectives == 2
    assert res.loss.shape == (27, 2) and res.budget.shape == (27,)
    assert [(len(r["index"]), r["budget"]) for r in res.rungs] == [(27, 1), (9, 3), (3, 9)]
    for a, b in zip(res.rungs, res.rungs[1:]):
        keep = a["index"][_ref_order(a["loss"])[: len(b["index"])]]
        assert set(b["index"]) == set(keep)
    # Every configuration's vector is its value at the budget it reached.
    for r in res.rungs:
        np.testing.assert_array_equal(res.loss[r["index"][res.budget[r["index"]] == r["budget"]]],
                                      r["loss"][res.budget[r["index"]] == r["budget"]])
    # The front of the last rung, sorted by the first objective.
    last = res.rungs[-1]
    on = _ref_ranks(last["loss"].astype(np.float64)) == 0
    assert set(res.pareto_index) == set(last["index"][on])
    np.testing.assert_array_equal(res.pareto_loss, res.loss[res.pareto_index])
    assert np.all(np.diff(res.pareto_loss[:, 0]) >= 0)
    assert res.best_index == res.pareto_index[0] and res.best_budget == 9
    assert [set(p) for p in res.pareto_params] == [{"lr", "shift"}] * len(res.pareto_index)
    # Front states are the survivors' continued states: equal to training straight through.
    idx = jnp.asarray(res.pareto_index)
    hp = {k: jnp.asarray(v)[idx] for k, v in res.hparams.items()}
    states, losses = continue_rung(MO, init_rung(MO, res.init_keys[idx], hp), hp, np.int32(9))
    np.testing.assert_allclose(np.asarray(losses), res.pareto_loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(res.pareto_state["w"]), np.asarray(states["w"]), rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(res.pareto_state["n"]) == 9)


def test_one_objective_vector_selects_as_scalar_loss():
    a = successive_halving(ONE, SPACE, jax.random.key(2), num_configs=27, min_budget=1, max_budget=9)
    b = successive_halving(SCALAR, SPACE, jax.random.key(2), num_configs=27, min_budget=1, max_budget=9)
    assert b.num_objectives == 0 and a.num_objectives == 1
    for ra, rb in zip(a.rungs, b.rungs):
        np.testing.assert_array_equal(ra["index"], rb["index"])
    np.testing.assert_array_equal(a.loss[:, 0], b.loss)
    assert a.best_index == b.best_index and b.pareto_index.tolist() == [b.best_index]


def test_mo_hyperband_front_over_final_rungs_and_determinism():
    a = hyperband(MO, SPACE, jax.random.key(3), max_budget=9, eta=3)
    b = hyperband(MO, SPACE, jax.random.key(3), max_budget=9, eta=3)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.pareto_index, b.pareto_index)
    full = np.flatnonzero(a.budget == 9)
    assert len(full) == 1 + 1 + 3  # the last rung of each bracket
    on = _ref_ranks(a.loss[full].astype(np.float64)) == 0
    assert set(a.pareto_index) == set(full[on])
    assert jax.tree_util.tree_leaves(a.pareto_state)[0].shape[0] == len(a.pareto_index)


def test_mo_hyperband_continued_keeps_the_earlier_front():
    # 4 brackets (R = 9: an iteration and one more) in one call or in two;
    # the front is over every bracket's final rung, the first call's included.
    kw = dict(max_budget=9, eta=3, block_size=2)
    whole = hyperband(MO, SPACE, jax.random.key(3), num_brackets=4, **kw)
    first = hyperband(MO, SPACE, jax.random.key(3), num_brackets=2, **kw)
    both = hyperband(MO, SPACE, jax.random.key(3), num_brackets=2, resume=first, **kw)
    full = np.flatnonzero(both.budget == 9)
    on = _ref_ranks(both.loss[full].astype(np.float64)) == 0
    assert set(both.pareto_index) == set(full[on]) and set(first.pareto_index) & set(full[on])
    for name in ("loss", "pareto_index", "pareto_loss"):
        np.testing.assert_array_equal(getattr(both, name), getattr(whole, name))
    np.testing.assert_array_equal(both.pareto_state["w"], whole.pareto_state["w"])
    assert both.best_index == whole.best_index and both.num_objectives == 2


def test_bad_objective_shapes_are_rejected():
    bad = Trainer(_init, _step, lambda s, hp: jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="evaluate"):
        successive_halving(bad, SPACE, 0, num_configs=3, min_budget=1, max_budget=1)
    with pytest.raises(ValueError, match="scalar loss"):
        pbt(MO, SPACE, 0, popsize=4, num_rounds=2, steps_per_round=1)


def test_a_configuration_failing_where_it_stopped_is_told_as_failed(monkeypatch):
    """A configuration's place in its bracket is what a multi-objective search tells
    its sampler; one whose vector was not finite at its last rung is told inf, as
    with one objective, not a place above those eliminated earlier with finite losses."""
    import sys
    hb = sys.modules["jaxhpo.training.hyperband"]  # the package's attribute is the function
    told = []
    tell = hb._tell_batches
    monkeypatch.setattr(hb, "_tell_batches", lambda s, st, xs, v: told.append(np.asarray(v).ravel()) or tell(s, st, xs, v))

    def failing(state, hp):  # every configuration diverges once trained 3 units
        e = jnp.where(state["n"] >= 3, jnp.nan, _error(state))
        return jnp.stack([e, hp["lr"]])

    res = successive_halving(Trainer(_init, _step, failing), SPACE, jax.random.key(4), num_configs=9,
                             min_budget=1, max_budget=9)
    failed = ~np.isfinite(res.loss).all(axis=1)
    assert failed.sum() == 3 and np.all(res.budget[failed] >= 3)
    assert np.all(told[0][:9][failed] == np.inf) and np.all(np.isfinite(told[0][:9][~failed]))


def test_a_search_whose_every_configuration_fails_has_no_front():
    # pareto_aux was a dict of empty arrays where the other front fields are None.
    failing = Trainer(_init, _step, lambda s, hp: (jnp.stack([_error(s), hp["lr"]]) * jnp.nan, {"e": _error(s)}),
                      has_aux=True)
    res = successive_halving(failing, SPACE, jax.random.key(2), num_configs=9, min_budget=1, max_budget=9)
    assert res.best_index == -1 and res.best_params is None and res.best_aux is None
    assert res.pareto_state is None and res.pareto_aux is None and len(res.pareto_loss) == 0
