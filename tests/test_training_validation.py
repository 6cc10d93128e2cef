"""Argument checks of jaxhpo.training that name the parameter, and failed members in PBT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo import Float, Space
from jaxhpo.training import (MaskedMLP, SwitchOptimizer, Trainer, exploit_parents, hyperband, magnitude_mask, pbt,
                             successive_halving, train_bucketed)

SPACE = Space(lr=Float(0.01, 1.0, log=True))


def _init(key, hp):
    return {"w": jnp.ones(2, jnp.float32)}


def _step(state, hp):
    # A learning rate above 0.3 diverges (NaN), as an unstable training run would.
    w = state["w"] - hp["lr"] * state["w"]
    return {"w": jnp.where(hp["lr"] > 0.3, jnp.nan, w)}


def _evaluate(state, hp):
    return jnp.sum(state["w"] ** 2)


TRAINER = Trainer(_init, _step, _evaluate)


@pytest.mark.parametrize("key", ["0", 1.5, None, True, jax.random.split(jax.random.key(0), 2), np.arange(3)])
def test_bad_keys_are_named_before_tracing(key):
    exc = (TypeError, ValueError)
    with pytest.raises(exc, match="^key must be"):
        successive_halving(TRAINER, SPACE, key, num_configs=3, min_budget=1, max_budget=3)
    with pytest.raises(exc, match="^key must be"):
        hyperband(TRAINER, SPACE, key, max_budget=3)
    with pytest.raises(exc, match="^key must be"):
        pbt(TRAINER, SPACE, key, popsize=4, num_rounds=2)


def test_init_population_wants_one_key_per_member():
    from jaxhpo.training import init_population

    hp = {"lr": jnp.full(3, 0.1)}
    assert init_population(TRAINER, jax.random.split(jax.random.key(0), 3), hp)["w"].shape == (3, 2)
    with pytest.raises(ValueError, match=r"keys must hold one key per member, shape \(3,\), got \(2,\)"):
        init_population(TRAINER, jax.random.split(jax.random.key(0), 2), hp)
    # raw key data, as jax.random.split(jax.random.PRNGKey(0), 3) makes it
    raw = jax.random.key_data(jax.random.split(jax.random.key(0), 3))
    np.testing.assert_array_equal(init_population(TRAINER, raw, hp)["w"],
                                  init_population(TRAINER, jax.random.wrap_key_data(raw), hp)["w"])
    with pytest.raises(ValueError, match=r"shape \(3, 2\) of raw key data, got \(3,\)"):
        init_population(TRAINER, raw[:, 0], hp)
    # numbers are not keys: refused by name before the trainer sees them
    for bad in (jnp.zeros(3), jnp.arange(3)):
        with pytest.raises(TypeError, match=r"keys must be jax.random keys, one per member \(jax.random.split\(key, 3\)\)"):
            init_population(TRAINER, bad, hp)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(factors=(float("nan"), 1.2)), ValueError),
    (dict(factors=(0.8, float("inf"))), ValueError),
])
def test_pbt_rejects_non_finite_factors(kwargs, exc):
    with pytest.raises(exc, match="factors"):
        pbt(TRAINER, SPACE, 0, popsize=4, num_rounds=2, **kwargs)


@pytest.mark.parametrize("init_x, exc", [
    (np.full((4, 1), 2.0), ValueError), (np.full((4, 1), np.nan), ValueError), ("a", TypeError),
])
def test_pbt_rejects_init_x_outside_the_cube(init_x, exc):
    with pytest.raises(exc, match="init_x"):
        pbt(TRAINER, SPACE, 0, popsize=4, num_rounds=2, init_x=init_x)


def test_exploit_parents_never_copies_a_failed_member():
    # 6 of 8 failed, 4 exploit: the top four hold two failures, which are no parents.
    losses = jnp.array([jnp.inf, 0.5, jnp.nan, jnp.inf, 0.2, jnp.inf, jnp.nan, jnp.inf])
    parents = np.asarray(jax.vmap(lambda k: exploit_parents(k, losses, 4))(jax.random.split(jax.random.key(0), 64)))
    moved = parents != np.arange(8)
    assert np.all(np.isin(parents[moved], [1, 4]))
    assert moved.any()
    # Every member failed: nobody copies.
    none = exploit_parents(jax.random.key(1), jnp.full(8, jnp.nan), 4)
    np.testing.assert_array_equal(np.asarray(none), np.arange(8))


def test_pbt_with_diverging_members_copies_only_finite_ones():
    # 14 of 16 members start above the divergence threshold; 8 exploit, so the
    # top 8 hold 6 failed members.
    x = np.concatenate([[0.0, 0.1], np.linspace(0.8, 1.0, 14)])[:, None]
    res = pbt(TRAINER, SPACE, 3, popsize=16, num_rounds=3, fraction=0.5, resample_prob=0.0, init_x=x)
    assert np.sum(~np.isfinite(res.losses[0])) == 14
    rounds, members = np.nonzero(res.parents != np.arange(16))
    assert len(rounds) > 0
    assert np.all(np.isfinite(res.losses[rounds, res.parents[rounds, members]]))
    assert np.isfinite(res.best_loss) and res.best_index >= 0


def test_pbt_all_failed_reports_no_best():
    trainer = Trainer(_init, _step, lambda s, hp: jnp.float32(jnp.nan))
    res = pbt(trainer, SPACE, 0, popsize=4, num_rounds=2)
    assert np.all(np.isposinf(res.losses))
    assert res.best_index == -1 and res.best_params is None and res.best_state is None
    assert np.isnan(res.best_loss)
    with pytest.raises(ValueError, match="member"):
        res.lineage()
    assert res.lineage(2)[-1] == 2


def _make_trainer(width):
    return TRAINER


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(num_steps=-1), ValueError, "num_steps"),
    (dict(num_steps=1.5), ValueError, "num_steps"),
    (dict(keys=jax.random.split(jax.random.key(0), 2)), ValueError, "keys"),
    (dict(hparams={"width": np.array([1, 2, 3, 4]), "lr": np.ones(3)}), ValueError, "hparams"),
    (dict(hparams={"width": np.zeros(0, np.int32)}), ValueError, "hparams"),
    (dict(hparams={"width": np.array([0, 2, 3, 4])}), ValueError, r"hparams\['width'\] must be widths >= 1"),
    (dict(hparams=None), TypeError, "hparams"),
    (dict(buckets=(2.5, 4)), ValueError, "buckets"),
    (dict(buckets=4), TypeError, "buckets"),
])
def test_train_bucketed_rejects_bad_arguments(kwargs, exc, word):
    args = dict(keys=jax.random.split(jax.random.key(0), 4), hparams={"width": np.array([1, 2, 3, 4])},
                num_steps=1, buckets=(2, 4), chunk=2) | kwargs
    with pytest.raises(exc, match=word):
        train_bucketed(_make_trainer, **args)


def test_magnitude_mask_rejects_bad_sparsity_and_active():
    w = jnp.arange(12.0).reshape(3, 4)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, 1.5)
    with pytest.raises(ValueError, match="sparsity"):
        magnitude_mask(w, jnp.array([0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="active"):
        magnitude_mask(w, 0.5, jnp.ones(3, bool))
    with pytest.raises(ValueError, match="active"):
        magnitude_mask(w, 0.5, jnp.ones((2, 3, 4), bool))
    # A traced share is clipped, as before.
    np.testing.assert_array_equal(np.asarray(jax.jit(magnitude_mask)(w, 1.5)), np.zeros((3, 4), bool))


def test_masked_mlp_apply_rejects_bad_inputs():
    model = MaskedMLP(2, 1, 4, 2)
    params = model.init(jax.random.key(0))
    x = jnp.ones((5, 2))
    for kwargs, word in ((dict(x=jnp.ones((5, 3))), "x"), (dict(width=0), "width"), (dict(width=9), "width"),
                         (dict(depth=3), "depth"), (dict(sparsity=2.0), "sparsity"),
                         (dict(width=jnp.array([2, 3])), r"width must be a scalar \(\)"),
                         (dict(params=MaskedMLP(2, 1, 8, 2).init(jax.random.key(0))), "params")):
        args = dict(params=params, x=x, width=3, depth=2) | kwargs
        with pytest.raises(ValueError, match=word):
            model.apply(**args)
    for width in (0, -1, 5):  # init scales by the width: none outside 1..max_width
        with pytest.raises(ValueError, match=r"width must be in \[1, 4\]"):
            model.init(jax.random.key(0), width)


def test_the_classifier_trainer_checks_the_space_and_its_data():
    """A space asking for what the network cannot be (a width past max_width, an optimiser
    index past the list, labels in another order than the trainer's) is refused before training."""
    from jaxhpo import Categorical, Int
    from jaxhpo.training import MLPClassifierTrainer

    X, y = np.random.default_rng(0).normal(size=(6, 3)), np.array([0, 1, 0, 1, 0, 1])
    trainer = MLPClassifierTrainer(X, y, X, y, max_width=4, optimizers=("sgd", "adam"))
    good = Space(width=Int(1, 4), optimizer=Categorical(["sgd"]), learning_rate=Float(1e-3, 1e-1, log=True))
    trainer.check_space(good)
    for space, match in ((Space(width=Int(1, 64)), r"width takes values in \[1, 64\].*max_width=4"),
                         (Space(lr=Float(1e-3, 1.0)), r"\['lr'\] are not hyperparameters"),
                         (Space(width=Categorical([2, 4])), "width must be an Int"),
                         (Space(width=Float(1.0, 4.0)), "width must be an Int"),
                         (Space(sparsity=Categorical([0.0, 0.5])), "reaches the trainer as the index"),
                         (Space(learning_rate=Categorical([0.1, 0.01])), "reaches the trainer as the index"),
                         (Space(optimizer=Categorical([0, 1])), "in their order"),
                         (Space(optimizer=Categorical(["sgd", "adam", "rmsprop"])), "in their order"),
                         (Space(optimizer=Categorical(["adam", "sgd"])), "in their order"),
                         (Space(optimizer=Int(0, 2)), r"values in \[0, 1\]"),
                         (Space(sparsity=Float(0.0, 2.0)), "sparsity must lie in")):
        with pytest.raises(ValueError, match=match):
            pbt(trainer, space, 0, popsize=2, num_rounds=1, steps_per_round=1)
        with pytest.raises(ValueError, match=match):
            hyperband(trainer, space, 0, max_budget=3)
    for name in ("X_train", "X_val"):
        data = dict(X_train=X, y_train=y, X_val=X, y_val=y) | {name: np.zeros((0, 3)), "y" + name[1:]: y[:0]}
        with pytest.raises(ValueError, match=f"{name} must have shape .n, d. with n >= 1"):
            MLPClassifierTrainer(**data, max_width=4)


def test_the_classifier_trains_in_chunks_and_without_an_optimizer_choice():
    """A network of depth 1 holds an empty stack of hidden layers, which lax.map's batched
    form could not split into chunks; a space without `optimizer` runs the first one."""
    from jaxhpo.training import MLPClassifierTrainer

    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    space = Space(learning_rate=Float(1e-3, 1e-1, log=True))
    trainer = MLPClassifierTrainer(X, y, X, y, max_width=4)
    whole = pbt(trainer, space, 0, popsize=5, num_rounds=2)
    for chunk in (2, 3):
        chunked = pbt(trainer, space, 0, popsize=5, num_rounds=2, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(chunked.losses), np.asarray(whole.losses), rtol=1e-5)
    sgd = pbt(MLPClassifierTrainer(X, y, X, y, max_width=4, optimizers=("sgd",)), space, 0, popsize=2, num_rounds=1)
    first = pbt(MLPClassifierTrainer(X, y, X, y, max_width=4, optimizers=("sgd", "adam")), space, 0, popsize=2,
                num_rounds=1)
    np.testing.assert_allclose(np.asarray(first.losses), np.asarray(sgd.losses), rtol=1e-5)


def test_switch_optimizer_update_rejects_bad_hparams():
    opt = SwitchOptimizer(("sgd", "adam"))
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    with pytest.raises(TypeError, match="hparams"):
        opt.update(params, state, params, None)
    for index in (2, -1):
        with pytest.raises(ValueError, match="optimizer"):
            opt.update(params, state, params, {"optimizer": index})
    single = SwitchOptimizer(("adam",))
    with pytest.raises(ValueError, match="optimizer"):
        single.update(params, single.init(params), params, {"optimizer": 7})


def test_exploit_explore_and_lineage_name_their_arguments():
    from jaxhpo.training import explore

    losses = jnp.array([0.3, 0.1, 0.4, 0.2])
    assert exploit_parents(0, losses, 2).tolist()[1] == 1  # an integer seed is a key
    for n in (-1, 3, 5, 1.0):
        with pytest.raises(ValueError, match="num_exploit must be an integer in \\[0, P // 2\\]"):
            exploit_parents(jax.random.key(0), losses, n)
    with pytest.raises(ValueError, match="losses must have shape \\(P,\\)"):
        exploit_parents(jax.random.key(0), jnp.zeros((4, 2)), 1)
    hp = {"lr": jnp.full(4, 0.1)}
    which = jnp.ones(4, bool)
    with pytest.raises(ValueError, match="resample_prob must be a probability"):
        explore(jax.random.key(0), SPACE, hp, which, 2.0)
    for factors in ((0.8, 1.2, 5.0), (-1.0, 1.2)):
        with pytest.raises(ValueError, match="factors must be two positive finite numbers"):
            explore(jax.random.key(0), SPACE, hp, which, 0.5, factors)
    with pytest.raises(ValueError, match="hparams is missing \\['lr'\\]"):
        explore(jax.random.key(0), SPACE, {}, which, 0.5)
    res = pbt(Trainer(_init, lambda s, hp: {"w": s["w"] * 0.5}, _evaluate), SPACE, 0, popsize=2, num_rounds=2)
    assert res.lineage(1)[-1] == 1
    for member in (-1, 2, True):
        with pytest.raises(ValueError, match="member must be an integer in \\[0, 2\\)"):
            res.lineage(member)


def test_train_population_refuses_a_negative_or_fractional_budget():
    from jaxhpo.training import train_population
    for bad in (-2, 1.5, True):
        with pytest.raises(ValueError, match="num_steps must be a non-negative integer"):
            train_population(None, None, {"lr": np.zeros(2)}, bad)


def test_compiled_rungs_refuse_bad_counts_before_tracing():
    # Inside the compiled rungs the counts are traced, where a negative one
    # would silently train nothing: they are checked on the host first.
    from jaxhpo.training.trainer import continue_rung, fresh_rung, train_blocks
    hp = {"lr": jnp.full(4, 0.1)}
    states = {"w": jnp.ones((4, 2), jnp.float32)}
    keys = jax.random.split(jax.random.key(0), 4)
    with pytest.raises(ValueError, match=r"num_steps must be a non-negative integer, got .*-1"):
        continue_rung(TRAINER, states, hp, np.int32(-1))
    with pytest.raises(ValueError, match="num_steps must be a non-negative integer"):
        fresh_rung(TRAINER, keys, hp, np.int32(-3))
    with pytest.raises(ValueError, match=r"num_members \(5\) must be at most the population size \(4\)"):
        continue_rung(TRAINER, states, hp, np.int32(1), np.int32(5), 2)
    with pytest.raises(ValueError, match="num_members must be a non-negative integer"):
        train_blocks(TRAINER, states, hp, 1, -1, 2)
    with pytest.raises(ValueError, match=r"block_size must be a positive integer \(a divisor of the population"):
        train_blocks(TRAINER, states, hp, 1, 2, 0)
    from jaxhpo.training import init_population, train_population
    for bad in (0, -2, 2.5):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
            train_population(TRAINER, states, hp, 1, chunk_size=bad)
        with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
            init_population(TRAINER, keys, hp, chunk_size=bad)
    # The states were not donated by the refused calls.
    assert float(states["w"].sum()) == 8.0


def test_a_step_that_changes_the_state_is_named():
    # A common slip: step returns (state, loss). The loops carry the state,
    # so the step must give back init's structure, shapes and dtypes.
    pair = Trainer(_init, lambda s, hp: (_step(s, hp), 0.0), _evaluate)
    grown = Trainer(_init, lambda s, hp: {"w": jnp.ones(3, jnp.float32)}, _evaluate)
    typed = Trainer(_init, lambda s, hp: {"w": s["w"].astype(jnp.int32)}, _evaluate)
    for trainer, word in [(pair, "the same pytree"), (grown, r"state\['w'\] went from shape \(2,\) float32 to \(3,\)"),
                          (typed, "to .2,. int32")]:
        with pytest.raises(TypeError, match=word):
            successive_halving(trainer, SPACE, 0, num_configs=3, min_budget=1, max_budget=3)
        with pytest.raises(TypeError, match="trainer.step must return a train state"):
            pbt(trainer, SPACE, 0, popsize=4, num_rounds=1)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_keys_that_vmap_changes_are_refused(impl):
    # Under vmap these draw a batch's bits from one of its keys: a member
    # would train differently beside other members than alone.
    key = jax.random.key(0, impl=impl)
    with pytest.raises(ValueError, match=f"key must be a key of a vmap-invariant implementation.*{impl!r}"):
        successive_halving(TRAINER, SPACE, key, num_configs=3, min_budget=1, max_budget=3)
    with pytest.raises(ValueError, match="vmap-invariant"):
        hyperband(TRAINER, SPACE, key, max_budget=3)
    with pytest.raises(ValueError, match="vmap-invariant"):
        pbt(TRAINER, SPACE, key, popsize=4, num_rounds=2)
    from jaxhpo.training import init_population
    with pytest.raises(ValueError, match="keys must be a key of a vmap-invariant"):
        init_population(TRAINER, jax.random.split(key, 3), {"lr": jnp.full(3, 0.1)})
    from jaxhpo.training.trainer import train_blocks
    with pytest.raises(ValueError, match="keys must be a key of a vmap-invariant"):
        train_blocks(TRAINER, {"w": jnp.ones((4, 2))}, {"lr": jnp.full(4, 0.1)}, 0, None, 2,
                     keys=jax.random.split(key, 4), fresh=True)
    with pytest.raises(ValueError, match="keys must be a key of a vmap-invariant"):
        train_bucketed(lambda w: TRAINER, jax.random.split(key, 2), {"lr": np.full(2, 0.1), "width": np.ones(2)},
                       1, buckets=(2,), chunk=2)


def test_counts_past_int32_and_unwhole_widths_are_named():
    with pytest.raises(ValueError, match=r"steps_per_round must be at most 2\*\*31 - 1"):
        pbt(TRAINER, SPACE, 0, popsize=4, num_rounds=1, steps_per_round=2**31)
    with pytest.raises(ValueError, match=r"max_budget must be at most 2\*\*31 - 1"):
        successive_halving(TRAINER, SPACE, 0, num_configs=1, min_budget=1, max_budget=2**31)
    from jaxhpo.training import hyperband_schedule, train_population
    with pytest.raises(ValueError, match=r"max_budget must be at most 2\*\*31 - 1"):
        hyperband_schedule(1e300)
    with pytest.raises(ValueError, match=r"num_steps must be at most 2\*\*31 - 1"):
        train_population(TRAINER, {"w": jnp.ones((2, 2))}, {"lr": jnp.full(2, 0.1)}, 2**40)
    keys = jax.random.split(jax.random.key(0), 3)
    for bad in (np.nan, 1.5):
        with pytest.raises(ValueError, match=r"hparams\['width'\] must be whole widths"):
            train_bucketed(lambda w: TRAINER, keys, {"lr": np.full(3, 0.1), "width": np.array([1.0, bad, 2.0])},
                           1, buckets=(4,), chunk=2)
