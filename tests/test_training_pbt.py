"""Population-based training: exploit copies exactly, explore stays in the space, and it helps."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo import Categorical, Float, Int, Space
from jaxhpo.training import Trainer, exploit_parents, explore, pbt
from jaxhpo.training.pbt import _pbt_program, exploit_count

from helpers import assert_trees_equal
from jaxhpo.training.trainer import continue_rung, init_rung

# A noisy quadratic: SGD with gradient noise. A large learning rate makes fast
# progress but settles at a high noise floor; a small one is slow: a decreasing
# schedule beats every fixed learning rate, which is what PBT can find.
A = jnp.logspace(-1.5, 0, 8).astype(jnp.float32)


def _init(key, hp):
    return {"w": jnp.full((8,), 3.0, jnp.float32) + 0.1 * jax.random.normal(key, (8,)), "key": key}


def _step(state, hp):
    key, sub = jax.random.split(state["key"])
    g = A * state["w"] + jax.random.normal(sub, (8,))
    return {"w": state["w"] - hp["lr"] * g, "key": key}


def _evaluate(state, hp):
    return 0.5 * jnp.sum(A * state["w"] ** 2)


TRAINER = Trainer(_init, _step, _evaluate)
SPACE = Space(lr=Float(1e-3, 1.0, log=True))


NUM_SEEDS = 8


@jax.jit
def _best_losses_over_seeds(keys):
    """``(2, S)`` best final loss per seed: PBT (row 0) and the same initial
    population with exploit/explore off (row 1); the seeds run vmapped."""
    def one(key, num_exploit):
        losses = _pbt_program(TRAINER, SPACE, key, None, np.int32(10), np.float32(0.25), 16, 20, num_exploit,
                              np.asarray((0.8, 1.2), np.float32), None, None)[2]
        return jnp.min(losses[-1])

    return jnp.stack([jax.vmap(lambda k: one(k, 4))(keys), jax.vmap(lambda k: one(k, 0))(keys)])


def test_pbt_beats_fixed_hyperparameters_on_a_schedule_task():
    # 8 seeds, vmapped; population 16, 20 rounds of 10 steps; PBT replaces the
    # bottom quarter (4) each round. The baseline is the same initial
    # population with fixed hyperparameters (no exploit/explore).
    pbt_best, fixed_best = np.asarray(_best_losses_over_seeds(jax.random.split(jax.random.key(0), NUM_SEEDS)))
    assert np.median(pbt_best) < np.median(fixed_best)
    assert np.sum(pbt_best < fixed_best) >= 6
    # The vmapped program is pbt()'s own: one seed through the public entry point agrees.
    key = jax.random.split(jax.random.key(0), NUM_SEEDS)[0]
    a = pbt(TRAINER, SPACE, key, popsize=16, num_rounds=20, steps_per_round=10)
    b = pbt(TRAINER, SPACE, key, popsize=16, num_rounds=20, steps_per_round=10, fraction=0.0)
    assert np.all(b.parents == np.arange(16))  # fraction=0: nobody exploits
    np.testing.assert_allclose([a.best_loss, b.best_loss], [pbt_best[0], fixed_best[0]], rtol=1e-5)
    assert a.best_value == a.best_loss  # the name Result and Study use


def test_exploit_copies_states_and_hyperparameters_exactly():
    res = pbt(TRAINER, SPACE, jax.random.key(7), popsize=8, num_rounds=4, steps_per_round=3,
              fraction=0.25, resample_prob=0.0, factors=(1.0, 1.0))
    P = 8
    for r in range(3):
        par = res.parents[r]
        moved = np.flatnonzero(par != np.arange(P))
        order = np.argsort(res.losses[r], kind="stable")
        # Exactly the bottom quarter copies from the top quarter.
        assert set(moved) == set(order[-2:])
        assert set(par[moved]) <= set(order[:2])
        # factors (1, 1), no resampling: copied hyperparameters are exact copies.
        np.testing.assert_array_equal(res.hparams["lr"][r + 1], res.hparams["lr"][r][par])
    # Replaying the best member's lineage (its ancestors' init key and its
    # hyperparameter schedule) from scratch gives exactly its final state.
    anc = res.lineage()
    assert anc[-1] == res.best_index
    sched = res.schedule()
    state = init_rung(TRAINER, res.init_keys[anc[0]][None], {"lr": jnp.asarray(sched["lr"][:1])})
    for r in range(4):
        state, loss = continue_rung(TRAINER, state, {"lr": jnp.asarray(sched["lr"][r:r + 1])}, np.int32(3))
    np.testing.assert_allclose(np.asarray(state["w"][0]), np.asarray(res.best_state["w"]), rtol=1e-6, atol=1e-7)
    assert float(loss[0]) == pytest.approx(res.best_loss, rel=1e-6)


def test_exploit_parents_truncation_selection():
    losses = jnp.array([5.0, 1.0, jnp.nan, 3.0, 0.5, 4.0, 2.0, 6.0])
    par = np.asarray(exploit_parents(jax.random.key(0), losses, 2))
    # nan ranks last; bottom two are positions 2 (nan) and 7 (6.0); top two are 4 and 1.
    assert set(np.flatnonzero(par != np.arange(8))) == {2, 7}
    assert set(par[[2, 7]]) <= {1, 4}
    assert np.array_equal(np.asarray(exploit_parents(jax.random.key(0), losses, 0)), np.arange(8))


MIXED = Space(lr=Float(1e-4, 1e-1, log=True), wd=Float(0.0, 0.1), width=Int(1, 6),
              opt=Categorical(["sgd", "adam", "rmsprop"]))


@jax.jit
def _explore(key, hp, which, prob):
    return explore(key, MIXED, hp, which, prob)


def test_explore_checks_which_and_a_unit_factor_moves_nothing():
    hp = MIXED.decode(MIXED.sample(jax.random.key(1), 6))
    for bad in (jnp.ones(5, bool), jnp.ones((6, 2), bool), jnp.arange(6)):
        with pytest.raises(ValueError, match=r"which must be a \(6,\) bool array"):
            explore(jax.random.key(0), MIXED, hp, bad, 0.0)
    # a factor of 1 has no direction: integers stay where they are (a factor
    # of 1.5 moves every one of them, 1 or more values up)
    which = jnp.ones(6, bool)
    same = explore(jax.random.key(2), MIXED, hp, which, 0.0, factors=(1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(same["width"]), np.asarray(hp["width"]))
    np.testing.assert_array_equal(np.asarray(same["lr"]), np.asarray(hp["lr"]))
    up = explore(jax.random.key(2), MIXED, hp, which, 0.0, factors=(1.5, 1.5))
    w0, w1 = np.asarray(hp["width"]), np.asarray(up["width"])
    assert np.all((w1 > w0) | (w0 == 6))


@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_explore_moves_every_integer_the_way_its_product_moves(factor):
    # x0.8 takes -5 to -4 and 5 to 4 by the product; -1 and 1, which rounding
    # leaves in place, step one value the same way: towards 0 (away for x1.2).
    space = Space(a=Int(-10, 10))
    v = jnp.array([-5, -1, 0, 1, 5], jnp.int32)
    new = np.asarray(explore(jax.random.key(0), space, {"a": v}, jnp.ones(5, bool), 0.0, (factor, factor))["a"])
    old = np.asarray(v)
    expected = np.where(old == 0, np.sign(factor - 1), np.round(old * factor))
    expected = np.where(expected == old, old + np.sign(factor - 1) * np.sign(old), expected)
    np.testing.assert_array_equal(new, expected)
    np.testing.assert_array_equal(np.sign(np.abs(new[old != 0]) - np.abs(old[old != 0])), np.sign(factor - 1))


def test_explore_moves_integers_past_float32s_by_their_change():
    """Past 2**24 an integer is not a float32 number: a factor of 1 left values moved
    (16777217 to 16777216) and other factors off the rounded product."""
    space = Space(a=Int(2**24, 2**24 + 1000))
    v = jnp.array([2**24, 2**24 + 1, 2**24 + 3, 2**24 + 999], jnp.int32)
    same = explore(jax.random.key(0), space, {"a": v}, jnp.ones(4, bool), 0.0, (1.0, 1.0))["a"]
    np.testing.assert_array_equal(np.asarray(same), np.asarray(v))
    up = np.asarray(explore(jax.random.key(0), space, {"a": v}, jnp.ones(4, bool), 0.0, (1.00001, 1.00001))["a"])
    exact = np.round(np.asarray(v, np.float64) * np.float64(np.float32(1.00001)))
    np.testing.assert_array_equal(up, np.minimum(exact, 2**24 + 1000))


def test_explore_stays_in_the_space_and_moves():
    P = 512
    hp = MIXED.decode(MIXED.sample(jax.random.key(1), P))
    which = jnp.arange(P) % 2 == 0
    for prob in (0.0, 0.3):
        new = _explore(jax.random.key(2), hp, which, jnp.float32(prob))
        for name, d in MIXED.dims.items():
            v, old = np.asarray(new[name]), np.asarray(hp[name])
            assert v.dtype == old.dtype
            np.testing.assert_array_equal(v[~np.asarray(which)], old[~np.asarray(which)])
            if name == "opt":
                assert v.min() >= 0 and v.max() < 3
            else:
                assert v.min() >= d.low and v.max() <= d.high
        w = np.asarray(which)
        if prob == 0.0:
            # Perturbations: floats by 0.8 or 1.2 (clipped), ints by at least one
            # value, categoricals to another choice.
            ratio = np.asarray(new["lr"])[w] / np.asarray(hp["lr"])[w]
            inside = (np.asarray(new["lr"])[w] > 1e-4 + 1e-9) & (np.asarray(new["lr"])[w] < 1e-1 - 1e-9)
            assert np.all(np.isclose(ratio[inside], 0.8, rtol=1e-5) | np.isclose(ratio[inside], 1.2, rtol=1e-5))
            assert np.all(np.asarray(new["opt"])[w] != np.asarray(hp["opt"])[w])
            dw = np.abs(np.asarray(new["width"])[w] - np.asarray(hp["width"])[w])
            at_bound = np.isin(np.asarray(hp["width"])[w], [1, 6])
            assert np.all(dw[~at_bound] >= 1)
    # Determinism for a key.
    a = _explore(jax.random.key(3), hp, which, jnp.float32(0.3))
    b = _explore(jax.random.key(3), hp, which, jnp.float32(0.3))
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))


def test_pbt_is_deterministic_and_records_schedules():
    # The exploit test's program (same static settings): nothing compiles here.
    a = pbt(TRAINER, SPACE, 11, popsize=8, num_rounds=4, steps_per_round=3, resample_prob=0.5)
    b = pbt(TRAINER, SPACE, 11, popsize=8, num_rounds=4, steps_per_round=3, resample_prob=0.5)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.parents, b.parents)
    assert a.hparams["lr"].shape == a.losses.shape == (4, 8)
    assert np.all(a.parents[-1] == np.arange(8))
    assert a.total_budget == 4 * 8 * 3
    assert a.schedule()["lr"].shape == (4,)
    assert set(a.best_params) == {"lr"}


def test_a_resumed_run_equals_one_run_of_all_the_rounds():
    # The whole run is the exploit test's program; the segments compile one
    # fresh and one resumed program of 2 rounds. The first result goes
    # through pickle, as a checkpoint would.
    kw = dict(popsize=8, steps_per_round=3, resample_prob=0.5)
    whole = pbt(TRAINER, SPACE, 11, num_rounds=4, **kw)
    first = pickle.loads(pickle.dumps(pbt(TRAINER, SPACE, 11, num_rounds=2, **kw)))
    assert np.all(first.parents[-1] == np.arange(8))  # its last round made no exploit
    both = pbt(TRAINER, SPACE, 11, num_rounds=2, resume=first, **kw)
    for name in ("losses", "parents"):
        np.testing.assert_array_equal(getattr(both, name), getattr(whole, name))
    np.testing.assert_array_equal(both.hparams["lr"], whole.hparams["lr"])
    assert_trees_equal(both.states, whole.states)
    assert both.best_index == whole.best_index and both.total_budget == whole.total_budget
    np.testing.assert_array_equal(both.lineage(), whole.lineage())
    with pytest.raises(ValueError, match="popsize must be the same"):
        pbt(TRAINER, SPACE, 11, num_rounds=1, popsize=4, resume=first)
    with pytest.raises(ValueError, match="init_x or resume"):
        pbt(TRAINER, SPACE, 11, num_rounds=1, popsize=8, resume=first, init_x=np.full((8, 1), 0.5))
    with pytest.raises(ValueError, match="another space"):
        pbt(TRAINER, Space(lr=Float(1e-4, 1.0, log=True)), 11, num_rounds=1, popsize=8, resume=first)
    with pytest.raises(TypeError, match="PBTResult"):
        pbt(TRAINER, SPACE, 11, num_rounds=1, popsize=8, resume=first.states)
    other = Trainer(lambda k, hp: {"w": jnp.zeros(3)}, lambda s, hp: s, lambda s, hp: jnp.sum(s["w"]))
    with pytest.raises(ValueError, match="not this trainer's"):
        pbt(other, SPACE, 11, num_rounds=1, popsize=8, resume=first)
    with pytest.raises(ValueError, match="another key"):
        pbt(TRAINER, SPACE, 12, num_rounds=1, popsize=8, resume=first)


def test_resume_takes_raw_keys_and_refuses_another_aux_before_training():
    # a state holding its init key: a raw PRNGKey makes it uint32 (P, 2), as the check must expect
    keyed = Trainer(lambda k, hp: {"w": jnp.ones(2), "key": k},
                    lambda s, hp: {"w": s["w"] * (1 - hp["lr"]), "key": s["key"]},
                    lambda s, hp: (jnp.sum(s["w"] ** 2), {"a": s["w"][0]}), has_aux=True)
    key = jax.random.PRNGKey(0)
    first = pbt(keyed, SPACE, key, popsize=4, num_rounds=1)
    assert pbt(keyed, SPACE, key, popsize=4, num_rounds=1, resume=first).aux["a"].shape == (2, 4)
    wider = Trainer(keyed.init, keyed.step, lambda s, hp: (jnp.sum(s["w"] ** 2), {"a": s["w"][0], "b": s["w"][1]}),
                    has_aux=True)
    with pytest.raises(ValueError, match="aux .* is not what this trainer's evaluate returns"):
        pbt(wider, SPACE, key, popsize=4, num_rounds=1, resume=first)


def test_pbt_rejects_bad_arguments():
    for kwargs, word in ((dict(popsize=1), "popsize"), (dict(fraction=0.7), "fraction"),
                         (dict(resample_prob=2.0), "resample_prob"), (dict(num_rounds=0), "num_rounds"),
                         (dict(factors=(0.8,)), "factors"), (dict(init_x=np.zeros((3, 1))), "init_x")):
        args = dict(popsize=8, num_rounds=2) | kwargs
        with pytest.raises((ValueError, TypeError), match=word):
            pbt(TRAINER, SPACE, 0, **args)


def test_chunked_pbt_equals_vmapped():
    # chunk_size trains 3 members at a time (lax.map); train states hold typed keys.
    # The unchunked run reuses the exploit test's compiled program.
    a = pbt(TRAINER, SPACE, 5, popsize=8, num_rounds=4, steps_per_round=3)
    b = pbt(TRAINER, SPACE, 5, popsize=8, num_rounds=4, steps_per_round=3, chunk_size=3)
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    np.testing.assert_array_equal(a.parents, b.parents)
    # over a mesh of 4 devices, 2 members of each at a time, from a key committed to one of them
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("pop",))
    key = jax.device_put(jax.random.key(5), jax.devices()[0])
    c = pbt(TRAINER, SPACE, key, popsize=8, num_rounds=4, steps_per_round=3, chunk_size=8, mesh=mesh)
    np.testing.assert_allclose(a.losses, c.losses, rtol=1e-5)
    np.testing.assert_array_equal(a.parents, c.parents)


def test_exploit_count_is_the_floor_of_the_fraction_as_written():
    for popsize in (2, 7, 100, 1000):
        for percent in range(1, 50):
            assert exploit_count(percent / 100, popsize) == percent * popsize // 100, (percent, popsize)
