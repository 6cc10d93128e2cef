"""Auxiliary outputs of trainers (``has_aux``): recorded beside each loss, never ranked.

The toy trainer (``helpers.toy_*``) counts its steps in its state, so its aux can be checked
against what the search says it did: a configuration's step count is its
budget, and its ``twice`` is twice its loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxhpo.training import (MLPClassifierTrainer, Trainer, evaluate_population, hyperband, init_population,
                             pbt, successive_halving, train_bucketed, train_population)

from helpers import TOY_SPACE, toy_error, toy_init, toy_step

SPACE = TOY_SPACE
_init, _step, _error = toy_init, toy_step, toy_error


def _with_aux(state, hp):
    return _error(state), {"steps": state["n"], "twice": (2.0 * _error(state), hp["shift"])}


PLAIN = Trainer(_init, _step, lambda s, hp: _error(s))
AUX = Trainer(_init, _step, _with_aux, has_aux=True)
MO_AUX = Trainer(_init, _step, lambda s, hp: (jnp.stack([_error(s), hp["lr"]]), {"steps": s["n"]}), has_aux=True)


def _check_aux(res):
    """Every configuration's aux is its own, at the budget it reached."""
    steps, (twice, shift) = res.aux["steps"], res.aux["twice"]
    assert steps.shape == res.budget.shape and steps.dtype == np.int32
    np.testing.assert_array_equal(steps, res.budget)
    np.testing.assert_allclose(twice, 2.0 * res.loss, rtol=1e-6)
    np.testing.assert_array_equal(shift, res.hparams["shift"])
    for r in res.rungs:
        np.testing.assert_array_equal(r["aux"]["steps"], r["budget"])
        np.testing.assert_allclose(r["aux"]["twice"][0], 2.0 * r["loss"], rtol=1e-6)
    assert int(res.best_aux["steps"]) == res.best_budget
    assert float(res.best_aux["twice"][0]) == pytest.approx(2.0 * res.best_loss, rel=1e-6)
    assert int(res.best_aux["twice"][1]) == res.best_params["shift"]
    # the records are the result's own: editing one leaves the others
    res.best_aux["twice"][0][...] = -1.0
    assert np.all(res.aux["twice"][0] >= 0) and all(np.all(r["aux"]["twice"][0] >= 0) for r in res.rungs)


@pytest.mark.parametrize("block_size", ["auto", None])
def test_successive_halving_records_each_configuration_aux_and_ranks_as_without(block_size):
    kw = dict(num_configs=9, min_budget=1, max_budget=9, eta=3, block_size=block_size)
    res = successive_halving(AUX, SPACE, jax.random.key(2), **kw)
    plain = successive_halving(PLAIN, SPACE, jax.random.key(2), **kw)
    _check_aux(res)
    # aux changes nothing else
    np.testing.assert_array_equal(res.loss, plain.loss)
    assert res.best_index == plain.best_index and plain.aux is None and plain.best_aux is None


def test_hyperband_aux_over_every_bracket_and_sharded():
    res = hyperband(AUX, SPACE, jax.random.key(5), max_budget=9, eta=3)
    _check_aux(res)
    assert len(res.aux["steps"]) == len(res.loss) == sum(b[0][0] for b in [[(9, 1)], [(5, 3)], [(3, 9)]])
    np.testing.assert_array_equal(res.pareto_aux["steps"], [res.best_budget])
    # over 4 devices: the same search, the same records
    sharded = hyperband(AUX, SPACE, jax.random.key(5), max_budget=9, eta=3,
                        mesh=Mesh(np.array(jax.devices()[:4]), ("pop",)))
    np.testing.assert_array_equal(sharded.aux["steps"], res.aux["steps"])
    np.testing.assert_allclose(sharded.aux["twice"][0], res.aux["twice"][0], rtol=1e-6)


def test_a_continued_hyperband_keeps_every_configuration_aux():
    first = hyperband(AUX, SPACE, jax.random.key(5), max_budget=9, eta=3, num_brackets=2)
    both = hyperband(AUX, SPACE, jax.random.key(5), max_budget=9, eta=3, resume=first)
    assert np.bincount(both.bracket).tolist() == [9, 5, 3]
    np.testing.assert_array_equal(both.aux["steps"][:14], first.aux["steps"])
    _check_aux(both)  # edits both's best_aux: the first call's records stay as they were
    np.testing.assert_allclose(first.aux["twice"][0], 2.0 * first.loss, rtol=1e-6)
    assert float(first.best_aux["twice"][0]) == pytest.approx(2.0 * first.best_loss, rel=1e-6)


def test_multi_objective_front_carries_its_aux():
    res = successive_halving(MO_AUX, SPACE, jax.random.key(1), num_configs=9, min_budget=1, max_budget=9)
    np.testing.assert_array_equal(res.aux["steps"], res.budget)
    np.testing.assert_array_equal(res.pareto_aux["steps"], res.aux["steps"][res.pareto_index])
    assert int(res.best_aux["steps"]) == res.best_budget == 9


def test_pbt_records_aux_each_round():
    res = pbt(AUX, SPACE, jax.random.key(0), popsize=4, num_rounds=3, steps_per_round=2, fraction=0.25)
    steps, (twice, shift) = res.aux["steps"], res.aux["twice"]
    assert steps.shape == res.losses.shape == (3, 4)
    # a member's state holds every step of its lineage: 2 per round so far
    np.testing.assert_array_equal(steps, np.broadcast_to(2 * np.arange(1, 4)[:, None], (3, 4)))
    np.testing.assert_allclose(twice, 2.0 * res.losses, rtol=1e-6)
    np.testing.assert_array_equal(shift, res.hparams["shift"])
    assert float(res.best_aux["twice"][0]) == pytest.approx(2.0 * res.best_loss, rel=1e-6)
    assert pbt(PLAIN, SPACE, jax.random.key(0), popsize=4, num_rounds=3).aux is None


def test_train_and_evaluate_population_return_losses_and_aux():
    hp = SPACE.decode(SPACE.sample(jax.random.key(0), 4))
    states = init_population(AUX, jax.random.split(jax.random.key(1), 4), hp)
    states, (losses, aux) = jax.jit(lambda s: train_population(AUX, s, hp, 3, chunk_size=2))(states)
    np.testing.assert_array_equal(aux["steps"], [3, 3, 3, 3])
    np.testing.assert_allclose(aux["twice"][0], 2.0 * losses, rtol=1e-6)
    again, again_aux = evaluate_population(AUX, states, hp)
    np.testing.assert_allclose(again, losses, rtol=1e-6)
    np.testing.assert_array_equal(again_aux["steps"], aux["steps"])
    assert evaluate_population(PLAIN, states, hp).shape == (4,)


_BUCKET_TRAINERS = {}


def _bucket_trainer(width):
    """Equal widths give the same trainer (shared compiled programs)."""
    def init(key, hp):
        return {"w": jnp.zeros(width), "n": jnp.int32(0)}

    def evaluate(s, hp):
        return jnp.sum(s["w"]) + hp["lr"], {"width": hp["width"], "bucket": jnp.int32(s["w"].shape[0])}

    return _BUCKET_TRAINERS.setdefault(width, Trainer(init, lambda s, hp: s, evaluate, has_aux=True))


def test_train_bucketed_aux_in_the_members_order():
    widths = np.array([7, 2, 16, 9, 1], np.int32)
    hp = {"width": widths, "lr": np.linspace(0.1, 0.5, 5).astype(np.float32)}
    res = train_bucketed(_bucket_trainer, jax.random.split(jax.random.key(0), 5), hp, 1, buckets=(4, 8, 16), chunk=2)
    np.testing.assert_array_equal(res.aux["width"], widths)
    assert np.all(res.aux["bucket"] >= widths)
    np.testing.assert_allclose(res.losses, hp["lr"], rtol=1e-6)


def test_classifier_trainer_reports_validation_accuracy():
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=(12, 4)).astype(np.float32)
    W = rng.normal(size=(4, 3))
    y, yv = np.argmax(X @ W, axis=1), np.argmax(Xv @ W, axis=1)
    trainer = MLPClassifierTrainer(X, y, Xv, yv, max_width=4, has_aux=True)
    assert trainer != MLPClassifierTrainer(X, y, Xv, yv, max_width=4)
    assert trainer.with_max_width(8).has_aux
    hp = {"width": np.array([2, 4], np.int32), "learning_rate": np.array([0.05, 0.1], np.float32)}
    states = init_population(trainer, jax.random.split(jax.random.key(0), 2), hp)
    states, (losses, aux) = train_population(trainer, states, hp, 2)
    for i in range(2):
        one_state = jax.tree_util.tree_map(lambda a: a[i], states)
        one_hp = {k: v[i] for k, v in hp.items()}
        assert float(aux["accuracy"][i]) == pytest.approx(float(trainer.accuracy(one_state, one_hp, Xv, yv)))
        assert float(losses[i]) == pytest.approx(float(MLPClassifierTrainer(X, y, Xv, yv, max_width=4)
                                                       .evaluate(one_state, one_hp)), rel=1e-6)


def test_aux_errors_are_named():
    with pytest.raises(TypeError, match="Trainer.has_aux must be True or False"):
        Trainer(_init, _step, _with_aux, has_aux=1)
    kw = dict(num_configs=3, min_budget=1, max_budget=1)
    with pytest.raises(TypeError, match=r"must return a pair \(loss, aux\) for a trainer with has_aux=True, "
                                        r"got one array of shape \(\)"):
        successive_halving(Trainer(_init, _step, lambda s, hp: _error(s), has_aux=True), SPACE, 0, **kw)
    with pytest.raises(TypeError, match=r"aux\['key'\] is a PRNG key"):
        successive_halving(Trainer(_init, _step, lambda s, hp: (_error(s), {"key": jax.random.key(0)}), has_aux=True),
                           SPACE, 0, **kw)
    assert Trainer(_init, _step, _with_aux, has_aux=np.True_).has_aux is True
    with pytest.raises(TypeError, match="has_aux=True"):  # a dict without has_aux points to it
        successive_halving(Trainer(_init, _step, lambda s, hp: {"loss": _error(s)}), SPACE, 0, **kw)

    class Odd:
        init, step, evaluate, has_aux = staticmethod(_init), staticmethod(_step), staticmethod(_with_aux), "yes"

    with pytest.raises(TypeError, match="trainer.has_aux must be True or False"):
        successive_halving(Odd(), SPACE, 0, **kw)
    mixed = {4: _bucket_trainer(4), 8: Trainer(_init, _step, lambda s, hp: _error(s))}
    hp = {"width": np.array([3, 7], np.int32), "lr": np.array([0.1, 0.2], np.float32)}
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="has_aux"):
        train_bucketed(mixed.__getitem__, keys, hp, 1, buckets=(4, 8), chunk=1)
    # aux of another dtype in another bucket: refused, not promoted
    other = Trainer(lambda k, hp: {"w": jnp.zeros(8)}, lambda s, hp: s,
                    lambda s, hp: (hp["lr"], {"width": hp["width"].astype(jnp.float32), "bucket": jnp.int32(8)}),
                    has_aux=True)
    with pytest.raises(ValueError, match="one structure, shape and dtype"):
        train_bucketed({4: _bucket_trainer(4), 8: other}.__getitem__, keys, hp, 1, buckets=(4, 8), chunk=1)
