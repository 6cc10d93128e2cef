"""Hyperband schedule, successive halving and Hyperband over a toy trainer."""

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo import Float, QuasiRandom, Space
from jaxhpo.training import Trainer, hyperband, hyperband_schedule, successive_halving
from jaxhpo.training.hyperband import level_sizes, successive_halving_schedule
from jaxhpo.training.trainer import continue_rung, init_rung

from helpers import TOY_SPACE, assert_trees_equal, compiles_during, toy_error, toy_init, toy_step

# Li et al. (2018), Table 1: R = 81, eta = 3; (n_i, r_i) per rung, bracket s = 4 .. 0.
PAPER_R81_ETA3 = [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
]

SPACE = TOY_SPACE
_init, _step = toy_init, toy_step


def _evaluate(state, hp):
    return toy_error(state)


TRAINER = Trainer(_init, _step, _evaluate)


def test_schedule_equals_paper_table():
    assert hyperband_schedule(81, 3) == PAPER_R81_ETA3
    assert all(isinstance(r, int) for b in hyperband_schedule(81, 3) for _, r in b)


def test_schedule_formula_other_settings():
    # R = 27, eta = 3: s_max = 3; n = ceil(4 / (s + 1) * 3^s).
    assert hyperband_schedule(27, 3) == [
        [(27, 1), (9, 3), (3, 9), (1, 27)], [(12, 3), (4, 9), (1, 27)], [(6, 9), (2, 27)], [(4, 27)]]
    # A max_budget that is no power of eta: s_max = floor(log_2 10) = 3, r = 10 / 8.
    sched = hyperband_schedule(10, 2)
    assert [b[0][0] for b in sched] == [8, 6, 4, 4]  # ceil(4/(s+1) * 2^s)
    assert sched[0][0][1] == pytest.approx(1.25) and sched[0][-1][1] == 10
    assert successive_halving_schedule(20, 1, 9, 3) == [(20, 1), (6, 3), (2, 9)]


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(max_budget=0.5, eta=3), ValueError, "max_budget"),
    (dict(max_budget=81, eta=1), ValueError, "eta"),
    (dict(max_budget=81, eta=2.5), ValueError, "eta"),
    (dict(max_budget="81", eta=3), TypeError, "max_budget"),
])
def test_schedule_rejects_bad_input(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        hyperband_schedule(**kwargs)


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="trainer"):
        successive_halving(object(), SPACE, 0, num_configs=9, min_budget=1, max_budget=9)
    with pytest.raises(TypeError, match="space"):
        successive_halving(TRAINER, {"lr": 1}, 0, num_configs=9, min_budget=1, max_budget=9)
    with pytest.raises(ValueError, match="num_configs"):
        successive_halving(TRAINER, SPACE, 0, num_configs=0, min_budget=1, max_budget=9)
    with pytest.raises(ValueError, match="max_budget"):
        successive_halving(TRAINER, SPACE, 0, num_configs=9, min_budget=3, max_budget=2)
    with pytest.raises(TypeError, match="Trainer.step"):
        Trainer(_init, 3, _evaluate)
    with pytest.raises(ValueError, match="chunk_size"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, chunk_size=0)
    with pytest.raises(TypeError, match="trainer.evaluate must return real values, got bool"):  # a flag, not a loss
        successive_halving(Trainer(_init, _step, lambda s, hp: toy_error(s) > 1.0), SPACE, 0, num_configs=3,
                           min_budget=1, max_budget=3)
    with pytest.raises(ValueError, match="num_brackets must be a positive integer"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, num_brackets=0)


def test_a_fractional_budget_never_trains_past_max_budget():
    # R = 12.6, eta = 3: rungs at 1.4, 4.2 and 12.6 units train 1, 4 and 12 steps
    res = hyperband(TRAINER, SPACE, 0, max_budget=12.6, num_brackets=1)
    assert res.best_budget == 12 and int(res.best_state["n"]) == 12
    assert res.best_value == res.best_loss  # the name Result and Study use
    assert sorted({r["budget"] for r in res.rungs}) == [1, 4, 12]


@pytest.mark.parametrize("block_size", [None, 2, 8])
def test_rows_past_num_members_come_back_untouched_whatever_the_block_size(block_size):
    keys = jax.random.split(jax.random.key(0), 4)
    hp = {"lr": jnp.full(4, 0.1), "shift": jnp.zeros(4, jnp.int32)}
    states = init_rung(TRAINER, keys, hp)
    before = np.asarray(states["w"])
    new, loss = continue_rung(TRAINER, jax.tree_util.tree_map(jnp.copy, states), hp, np.int32(2), np.int32(3),
                              block_size)
    np.testing.assert_array_equal(np.asarray(new["w"])[3], before[3])
    assert np.all(np.asarray(new["n"]) == [2, 2, 2, 0]) and np.isinf(np.asarray(loss)[3])
    # initialising the rows it trains (fresh) leaves the others as they came too
    trained = {"w": new["w"] + 1.0, "n": jnp.full(4, 7, jnp.int32)}  # (continue_rung donates its states)
    moved = np.asarray(trained["w"])
    again, _ = continue_rung(TRAINER, trained, hp, np.int32(1), np.int32(3), block_size, None, None, keys,
                             np.bool_(True))
    assert np.asarray(again["n"]).tolist() == [1, 1, 1, 7]
    np.testing.assert_array_equal(np.asarray(again["w"])[3], moved[3])


def _straight_through(keys, hp, steps):
    """Train fresh members ``steps`` units in one go (the search's own compiled programs)."""
    return continue_rung(TRAINER, init_rung(TRAINER, keys, hp), hp, np.int32(steps))


def test_successive_halving_keeps_top_and_continues_states():
    res = successive_halving(TRAINER, SPACE, jax.random.key(1), num_configs=27, min_budget=1,
                             max_budget=9, eta=3)
    assert [(len(r["index"]), r["budget"]) for r in res.rungs] == [(27, 1), (9, 3), (3, 9)]
    for a, b in zip(res.rungs, res.rungs[1:]):
        # Exactly the floor(n_i / eta) lowest losses go on.
        top = a["index"][np.argsort(a["loss"], kind="stable")[: len(a["index"]) // 3]]
        assert set(b["index"]) == set(top)
    last = res.rungs[-1]
    # Continued states equal training the survivors straight through for the total budget.
    idx = jnp.asarray(last["index"])
    hp = {k: jnp.asarray(v)[idx] for k, v in res.hparams.items()}
    states, losses = _straight_through(res.init_keys[idx], hp, 9)
    np.testing.assert_allclose(np.asarray(losses), last["loss"], rtol=1e-6, atol=1e-7)
    assert np.all(np.asarray(states["n"]) == 9)
    j = int(np.argmin(last["loss"]))
    assert res.best_index == last["index"][j]
    np.testing.assert_allclose(np.asarray(res.best_state["w"]), np.asarray(states["w"][j]), rtol=1e-6, atol=1e-7)
    assert int(res.best_state["n"]) == 9
    assert res.best_loss == pytest.approx(float(last["loss"][j]))
    # Every configuration's budget and loss is recorded.
    assert res.budget.shape == res.loss.shape == (27,)
    assert sorted(np.bincount(res.budget)[[1, 3, 9]]) == [3, 6, 18]
    assert res.total_budget == 27 * 1 + 9 * 2 + 3 * 6
    assert set(res.best_params) == {"lr", "shift"}


def test_hyperband_is_deterministic_and_records_every_bracket():
    a = hyperband(TRAINER, SPACE, jax.random.key(3), max_budget=9, eta=3)
    b = hyperband(TRAINER, SPACE, jax.random.key(3), max_budget=9, eta=3)
    c = hyperband(TRAINER, SPACE, jax.random.key(4), max_budget=9, eta=3)
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    sched = hyperband_schedule(9, 3)
    assert len(a.loss) == sum(br[0][0] for br in sched) == 9 + 5 + 3
    assert np.bincount(a.bracket).tolist() == [9, 5, 3]
    # The best is the lowest loss among configurations trained to R = 9.
    full = a.budget == 9
    assert a.best_loss == pytest.approx(float(a.loss[full].min()))
    assert a.budget[a.best_index] == 9


def test_no_recompiles_across_rungs_of_equal_size():
    traces = []

    def evaluate(state, hp):  # a fresh function: this trainer's programs compile here only
        traces.append(1)
        return _evaluate(state, hp)

    trainer = Trainer(_init, _step, evaluate)
    kwargs = dict(max_budget=9, eta=3, block_size=None, concurrent_brackets=False)
    hyperband(trainer, SPACE, jax.random.key(0), **kwargs)
    # Brackets (9,1)(3,3)(1,9) | (5,3)(1,9) | (3,9) one after another: training
    # programs for the first rungs' sizes 9, 5, 3 (which initialise their
    # members too) and the later rungs' 3, 1 only, whatever the budgets.
    assert len(traces) == 5
    hyperband(trainer, SPACE, jax.random.key(1), **kwargs)
    assert len(traces) == 5
    # Side by side: levels 1, 3, 9 hold 9+5+3, 3+5+3 and 1+1+3 members.
    assert level_sizes(hyperband_schedule(9, 3)) == [17, 11, 5]
    hyperband(trainer, SPACE, jax.random.key(0), max_budget=9, eta=3, block_size=None)
    assert len(traces) == 5 + 3


def test_brackets_side_by_side_equal_brackets_in_turn():
    assert level_sizes(hyperband_schedule(27, 3)) == [49, 31, 17, 8]
    assert level_sizes(hyperband_schedule(81, 3)) == [81 + 34 + 15 + 8 + 5, 27 + 34 + 15 + 8 + 5,
                                                      9 + 11 + 15 + 8 + 5, 3 + 3 + 5 + 8 + 5, 1 + 1 + 1 + 2 + 5]
    for block_size in (None, "auto"):
        a = hyperband(TRAINER, SPACE, jax.random.key(7), max_budget=9, eta=3, block_size=block_size)
        b = hyperband(TRAINER, SPACE, jax.random.key(7), max_budget=9, eta=3, block_size=block_size,
                      concurrent_brackets=False)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.budget, b.budget)
        np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
        assert [(r["bracket"], r["rung"], r["budget"], r["index"].tolist()) for r in a.rungs] == \
            [(r["bracket"], r["rung"], r["budget"], r["index"].tolist()) for r in b.rungs]
        assert a.best_index == b.best_index and a.total_budget == b.total_budget
        np.testing.assert_allclose(a.best_state["w"], b.best_state["w"], rtol=1e-6)
    # A quasi-random sampler is not adaptive either: the same points either way,
    # asked in batches of 4 (3, 2 and 1 asks for brackets of 9, 5 and 3).
    sobol = QuasiRandom(SPACE, 4, method="sobol")
    assert not sobol.adaptive
    a = hyperband(TRAINER, SPACE, 2, max_budget=9, strategy=sobol)
    b = hyperband(TRAINER, SPACE, 2, max_budget=9, strategy=sobol, concurrent_brackets=False)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    with pytest.raises(TypeError, match="concurrent_brackets"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, concurrent_brackets="yes")


def test_block_size_shares_one_program_and_agrees():
    traces = []

    def step(state, hp):  # a fresh function: this trainer's programs compile here only
        traces.append(1)
        return _step(state, hp)

    trainer = Trainer(_init, step, _evaluate)
    a = hyperband(trainer, SPACE, jax.random.key(0), max_budget=9, eta=3, block_size=3)
    assert len(traces) == 1  # every rung of every bracket: blocks of 3 in one buffer
    b = hyperband(TRAINER, SPACE, jax.random.key(0), max_budget=9, eta=3, block_size=None)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.best_index == b.best_index and a.total_budget == b.total_budget
    assert [r["index"].tolist() for r in a.rungs] == [r["index"].tolist() for r in b.rungs]
    np.testing.assert_allclose(a.best_state["w"], b.best_state["w"], rtol=1e-6)
    np.testing.assert_array_equal(jax.random.key_data(a.init_keys), jax.random.key_data(b.init_keys))
    with pytest.raises(ValueError, match="block_size"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, block_size="fast")


def test_blocks_take_the_queue_of_member_units_and_train_each_member_as_alone():
    # Blocks of 3 slots over a buffer of 9 rows: every (members, units) pair
    # below, including fewer members than slots and units = 0, runs in one
    # compiled program, trains rows < members exactly `units` steps (the
    # step counter "n" and the weights equal an unblocked run's), leaves the
    # other rows untouched and gives them +inf losses.
    traces = []

    def step(state, hp):
        traces.append(1)
        return _step(state, hp)

    trainer = Trainer(_init, step, _evaluate)
    keys = jax.random.split(jax.random.key(3), 9)
    hp = {"lr": jnp.linspace(0.05, 0.4, 9), "shift": jnp.arange(9, dtype=jnp.int32) % 4}
    start = init_rung(TRAINER, keys, hp)
    for members, units in [(7, 4), (9, 1), (2, 5), (4, 0), (5, 3)]:
        states = jax.tree_util.tree_map(jnp.copy, start)
        states, loss = continue_rung(trainer, states, hp, np.int32(units), np.int32(members), 3)
        sub = lambda t: jax.tree_util.tree_map(lambda a: a[:members], t)
        ref, ref_loss = continue_rung(TRAINER, jax.tree_util.tree_map(jnp.copy, sub(start)), sub(hp),
                                      np.int32(units))
        np.testing.assert_array_equal(states["n"], [units] * members + [0] * (9 - members))
        np.testing.assert_allclose(states["w"][:members], ref["w"], rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(states["w"][members:], start["w"][members:])
        np.testing.assert_allclose(loss[:members], ref_loss, rtol=1e-6, atol=1e-7)
        assert np.all(np.isinf(loss[members:]))
    assert len(traces) == 1
    # Initialising in place (fresh) then training: as init_rung then training.
    fresh, loss = continue_rung(trainer, jax.tree_util.tree_map(jnp.zeros_like, start), hp, np.int32(2),
                                np.int32(8), 3, keys=keys, fresh=np.bool_(True))
    ref, ref_loss = continue_rung(TRAINER, jax.tree_util.tree_map(jnp.copy, start), hp, np.int32(2))
    np.testing.assert_allclose(fresh["w"][:8], ref["w"][:8], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loss[:8], ref_loss[:8], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(fresh["w"][8], 0.0)


def test_default_on_cpu_compiles_one_training_program():
    import sys

    check_block_size = sys.modules["jaxhpo.training.hyperband"]._check_block_size
    padded_work = sys.modules["jaxhpo.training.hyperband"].padded_work
    traces = []

    def step(state, hp):
        traces.append(1)
        return _step(state, hp)

    trainer = Trainer(_init, step, _evaluate)
    res = hyperband(trainer, SPACE, jax.random.key(5), max_budget=9, eta=3)
    schedule = hyperband_schedule(9, 3)
    if jax.default_backend() == "cpu":
        assert len(traces) == 1
        # The block size from 8 (or the smallest level, if smaller) up to the
        # smallest level's population that pads the least training. A level
        # is a queue of member-units taken a block at a time: side by side
        # R = 9 (levels 17, 11, 5 over 1, 2, 6 units) blocks of 5 train
        # ceil(17 / 5) + ceil(22 / 5) + ceil(30 / 5) = 15 passes of 5 = 75
        # member-units, blocks of 4 take 5 + 6 + 8 passes of 4 = 76; one
        # bracket after another the smallest level is 1.
        assert padded_work([schedule], 5) == 75 and padded_work([schedule], 4) == 76
        assert check_block_size("auto", [schedule], None) == 5
        assert check_block_size("auto", [[b] for b in schedule], None) == 1
        assert check_block_size("auto", [[[(12, 1), (4, 3)]]], None) == 4
        # A block wider than a level's population runs that level's members
        # in blocks of their own number, each pass still paying for the block.
        assert padded_work([[[(3, 2)]]], 4) == 2 * 4
        # R = 243 (levels 415, 253, 133, 65, 31, 14 over 1, 2, 6, 18, 54,
        # 162 units, 6831 member-units): blocks of 8 train 6856 member-units,
        # of 9 6849, of 14 (the smallest level) 6860; 9 is the least of 8 .. 14.
        big = hyperband_schedule(243, 3)
        assert level_sizes(big) == [415, 253, 133, 65, 31, 14]
        work = {b: padded_work([big], b) for b in range(8, 15)}
        assert work[8] == 8 * (52 + 64 + 100 + 147 + 210 + 284) == 6856
        assert work[9] == 9 * (47 + 57 + 89 + 130 + 186 + 252) == 6849
        assert work[14] == 14 * (30 + 37 + 57 + 84 + 120 + 162) == 6860
        assert min(work, key=work.get) == 9 == check_block_size("auto", [big], None)
    else:
        assert check_block_size("auto", [schedule], None) is None
    assert res.total_budget == 9 * 1 + 3 * 2 + 1 * 6 + 5 * 3 + 1 * 6 + 3 * 9
    ref = hyperband(TRAINER, SPACE, jax.random.key(5), max_budget=9, eta=3, block_size=None)
    np.testing.assert_allclose(res.loss, ref.loss, rtol=1e-6, atol=1e-7)


def test_strategy_plugs_in_and_chunking_agrees():
    strategy = QuasiRandom(SPACE, 4, method="sobol")  # asked 3 times to fill 9 configurations
    a = successive_halving(TRAINER, SPACE, 5, num_configs=9, min_budget=1, max_budget=3, strategy=strategy)
    b = successive_halving(TRAINER, SPACE, 5, num_configs=9, min_budget=1, max_budget=3, strategy=strategy,
                           chunk_size=4)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    # Sobol points: 9 distinct and well spread over each coordinate.
    assert len({tuple(r) for r in a.x}) == 9
    with pytest.raises(ValueError, match="different space"):
        successive_halving(TRAINER, SPACE, 5, num_configs=9, min_budget=1, max_budget=3,
                           strategy=QuasiRandom(Space(lr=Float(0.1, 1.0)), 4))


def test_sharded_rungs_equal_unsharded():
    devices = np.array(jax.devices())
    if devices.size < 2:
        pytest.skip("needs several devices")
    mesh = jax.sharding.Mesh(devices[:4], ("pop",))
    a = successive_halving(TRAINER, SPACE, 7, num_configs=9, min_budget=1, max_budget=3)
    b = successive_halving(TRAINER, SPACE, 7, num_configs=9, min_budget=1, max_budget=3, mesh=mesh)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-6)
    assert a.best_index == b.best_index
    # Hyperband's brackets side by side, in blocks (rounded up to the mesh's 4
    # devices) and in one program per level, over the mesh.
    from jaxhpo.training.trainer import continue_rung

    ref = hyperband(TRAINER, SPACE, 3, max_budget=9, eta=3, block_size=None)
    for block_size in ("auto", None):
        before = continue_rung._cache_size()
        c = hyperband(TRAINER, SPACE, 3, max_budget=9, eta=3, block_size=block_size, mesh=mesh)
        np.testing.assert_allclose(c.loss, ref.loss, rtol=1e-6, atol=1e-7)
        assert c.best_index == ref.best_index and c.total_budget == ref.total_budget
        if block_size == "auto":  # blocks: one training program for every level, its first included
            assert continue_rung._cache_size() - before <= 1


def _evaluate_failing(state, hp):
    # Configurations with shift 3 fail (NaN), as a diverged training run would.
    return jnp.where(hp["shift"] == 3, jnp.nan, _evaluate(state, hp))


@pytest.mark.parametrize("block_size", ["auto", None])
def test_failed_trainings_are_recorded_and_never_chosen(block_size):
    trainer = Trainer(_init, _step, _evaluate_failing)
    res = hyperband(trainer, SPACE, jax.random.key(8), max_budget=9, eta=3, block_size=block_size)
    failed = res.hparams["shift"] == 3
    assert failed.any() and not failed.all()
    assert np.all(np.isposinf(res.loss[failed])) and np.all(np.isfinite(res.loss[~failed]))
    for a, b in zip(res.rungs, res.rungs[1:]):
        if a["bracket"] != b["bracket"]:
            continue
        # A failed configuration goes on only where too few finite ones are left.
        went_on = np.isin(a["index"], b["index"])
        finite = np.isfinite(a["loss"])
        assert not np.any(went_on & ~finite) or went_on[finite].all()
    assert res.hparams["shift"][res.best_index] != 3 and np.isfinite(res.best_loss)
    # Every configuration failing: no best, and nothing raised.
    none = hyperband(Trainer(_init, _step, lambda s, hp: jnp.float32(jnp.nan)), SPACE, 1, max_budget=9, eta=3,
                     block_size=block_size)
    assert none.best_params is None and none.best_index == -1 and np.all(np.isposinf(none.loss))


def test_training_programs_compile_with_cpu_options_read_at_each_call():
    # On a CPU the training programs compile at LLVM level 1
    # (CPU_COMPILER_OPTIONS); cleared, they compile with XLA's defaults. The
    # results agree, each setting has its own compiled program, and inside
    # another trace (vmap) the outer program's options rule.
    import sys

    compile_mod = sys.modules["jaxhpo.training._compile"]
    from jaxhpo.training import CPU_COMPILER_OPTIONS

    assert CPU_COMPILER_OPTIONS is compile_mod.CPU_COMPILER_OPTIONS
    keys = jax.random.split(jax.random.key(3), 4)
    hp = SPACE.decode(SPACE.sample(jax.random.key(4), 4))
    with_options = _straight_through(keys, hp, 3)
    saved = dict(CPU_COMPILER_OPTIONS)
    try:
        CPU_COMPILER_OPTIONS.clear()
        default = _straight_through(keys, hp, 3)
    finally:
        CPU_COMPILER_OPTIONS.update(saved)
    np.testing.assert_allclose(with_options[1], default[1], rtol=1e-6)
    variants = set(continue_rung._variants)
    if jax.default_backend() == "cpu":
        assert {(), tuple(sorted(saved.items()))} <= variants
    nested = jax.vmap(lambda k: _straight_through(jax.random.split(k, 4), hp, 3)[1])(
        jnp.stack([jax.random.key(3)]))
    np.testing.assert_allclose(nested[0], with_options[1], rtol=1e-6)


def test_bookkeeping_programs_compile_with_small_program_options():
    # A bracket's sampling program compiles with SMALL_PROGRAM_OPTIONS on a
    # CPU (LLVM level 0) and gives what the same function under jax.jit gives.
    import sys

    hb = sys.modules["jaxhpo.training.hyperband"]
    compile_mod = sys.modules["jaxhpo.training._compile"]
    strategy = hb._check_sampler(None, SPACE, 5, [[[(5, 1.0)]]])
    state, k_run = hb._start(strategy, jax.random.key(2))
    args = (strategy, k_run, np.int32(1), state, 2, 12, np.int32(9), False)
    got = hb._propose(*args)
    plain = jax.jit(hb._propose.__wrapped__, static_argnames=("strategy", "num_batches", "size", "single"))(*args)
    np.testing.assert_array_equal(got[0], plain[0])  # the unit-cube points, bit for bit
    np.testing.assert_array_equal(got[1], plain[1])
    for a, b in zip(jax.tree_util.tree_leaves(got[2]), jax.tree_util.tree_leaves(plain[2])):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # decoded (exp/log may round apart)
    np.testing.assert_array_equal(jax.random.key_data(got[3]), jax.random.key_data(plain[3]))
    assert got[1].shape == (12, SPACE.dim)
    np.testing.assert_array_equal(got[1][9:], np.repeat(got[1][8:9], 3, axis=0))  # rows past 9 repeat the last
    if jax.default_backend() == "cpu":
        assert tuple(sorted(compile_mod.SMALL_PROGRAM_OPTIONS.items())) in hb._propose._variants
        assert compile_mod.SMALL_PROGRAM_OPTIONS != compile_mod.CPU_COMPILER_OPTIONS


def _init_keyed(key, hp):
    return {**_init(key, hp), "key": key}


def _step_keyed(state, hp):
    # A key in the state (minibatch or dropout draws), split every unit.
    key, sub = jax.random.split(state["key"])
    noise = 0.01 * jax.random.normal(sub, (3,), jnp.float32)
    return {**_step({"w": state["w"] + noise, "n": state["n"]}, hp), "key": key}


@pytest.mark.parametrize("block_size", ["auto", None])
def test_train_state_may_hold_a_typed_key(block_size):
    trainer = Trainer(_init_keyed, _step_keyed, _evaluate)
    res = successive_halving(trainer, SPACE, 3, num_configs=4, min_budget=1, max_budget=4, eta=2,
                             block_size=block_size)
    assert np.all(np.isfinite(res.loss))
    # The best member's state, replayed alone from its key: the carried key
    # advanced once per unit trained, as it would in a plain training loop.
    hp = {k: v[res.best_index] for k, v in res.hparams.items()}
    state = _init_keyed(res.init_keys[res.best_index], hp)
    for _ in range(res.best_budget):
        state = _step_keyed(state, hp)
    np.testing.assert_allclose(res.best_state["w"], state["w"], rtol=1e-5)
    assert np.array_equal(jax.random.key_data(res.best_state["key"]), jax.random.key_data(state["key"]))


def test_survivor_order_puts_every_non_finite_loss_last():
    from jaxhpo.training import survivor_order

    assert survivor_order([1.0, -np.inf, 0.5, np.nan, np.inf]).tolist() == [2, 0, 1, 3, 4]
    order = survivor_order([[1.0, 2.0], [-np.inf, 0.0], [0.5, 3.0], [np.nan, 0.0]])
    assert sorted(order[:2].tolist()) == [0, 2] and sorted(order[2:].tolist()) == [1, 3]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_numpy_scalars_are_budgets(dtype):
    assert hyperband_schedule(dtype(9), 3) == hyperband_schedule(9, 3)
    assert successive_halving_schedule(5, dtype(1), dtype(4), 2) == [(5, 1), (2, 2), (1, 4)]


def test_a_model_based_sampler_is_told_every_configuration_it_proposed():
    # BOHB: TPE asked once per configuration (popsize 1, brackets of 9, 5 and 3), told after each bracket.
    from jaxhpo import TPE
    tpe = TPE(SPACE, 1, capacity=32, n_startup=4)
    res = hyperband(TRAINER, SPACE, 3, max_budget=9, strategy=tpe)
    assert len(res.x) == 9 + 5 + 3 and len({tuple(r) for r in res.x}) == len(res.x)
    assert np.isfinite(res.loss).all()


def test_samplers_that_cannot_fill_a_bracket_are_refused():
    from jaxhpo import CMAES, GPBO, GridSearch, TPE
    small_gp = GPBO(SPACE, 3, capacity=16)
    with pytest.raises(ValueError, match=r"GPBO must be told between asks, and a bracket of 12 configurations asks "
                                         r"it 4 times first; give it popsize >= 12"):
        successive_halving(TRAINER, SPACE, 0, num_configs=12, min_budget=1, max_budget=3, strategy=small_gp)
    with pytest.raises(ValueError, match=r"CMAES learns from every point it proposes, so each bracket's first "
                                         r"rung \(here \[9, 5, 3\]\) must be a multiple of its popsize \(4\)"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, strategy=CMAES(SPACE, 4))
    with pytest.raises(ValueError, match=r"multiple of its popsize \(2\)"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, strategy=TPE(SPACE, 2))
    with pytest.raises(ValueError, match="GridSearch's points must all be evaluated"):
        hyperband(TRAINER, SPACE, 0, max_budget=9, strategy=GridSearch(SPACE, 4, num=3))
    # brackets side by side all ask before any tell: 2 + 2 configurations of a popsize-2 GP-BO
    with pytest.raises(ValueError, match=r"brackets side by side ask it for 4 configurations before any is "
                                         r"told; run them one after another \(concurrent_brackets=False\)"):
        hyperband(TRAINER, SPACE, 0, max_budget=2, eta=2, strategy=GPBO(SPACE, 2, capacity=16),
                  concurrent_brackets=True)
    # a sampler of several values is told one loss per configuration: refused before training
    from jaxhpo import MOTPE
    with pytest.raises(ValueError, match="MOTPE learns from 2 values per configuration"):
        successive_halving(TRAINER, SPACE, 0, num_configs=3, min_budget=1, max_budget=3,
                           strategy=MOTPE(SPACE, 1, num_objectives=2))


def _same_search(a, b):
    for name in ("x", "bracket", "budget", "loss"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert [(r["bracket"], r["rung"], r["budget"], r["index"].tolist(), r["loss"].tolist()) for r in a.rungs] == \
        [(r["bracket"], r["rung"], r["budget"], r["index"].tolist(), r["loss"].tolist()) for r in b.rungs]
    assert (a.best_index, a.best_loss, a.best_budget, a.total_budget) == \
        (b.best_index, b.best_loss, b.best_budget, b.total_budget)
    assert_trees_equal((a.init_keys, a.best_state, a.sampler_state), (b.init_keys, b.best_state, b.sampler_state))


def test_hyperband_continued_bracket_by_bracket_equals_one_search():
    # R = 9: 3 brackets an iteration; two iterations (6 brackets) in one call
    # against calls of 2, 3 (the iteration's last bracket and two of the next,
    # apart) and the default (the rest of the iteration), each result pickled
    # as a checkpoint would be. Blocks of 2 train every member alike in both.
    kw = dict(max_budget=9, eta=3, block_size=2)
    whole = hyperband(TRAINER, SPACE, 5, num_brackets=6, **kw)
    assert np.bincount(whole.bracket).tolist() == [9, 5, 3] * 2 and whole.schedule == hyperband_schedule(9, 3)
    assert hyperband(TRAINER, SPACE, 5, num_brackets=6, **kw).x.tolist() == whole.x.tolist()
    part = None
    for num in (2, 3, None):
        part = pickle.loads(pickle.dumps(hyperband(TRAINER, SPACE, 5, num_brackets=num, resume=part, **kw)))
    _same_search(part, whole)
    # a fresh call runs one iteration: the first three brackets of the search
    one = hyperband(TRAINER, SPACE, 5, **kw)
    np.testing.assert_array_equal(one.x, whole.x[:17])
    # A third iteration runs the programs of `one`'s brackets and compiles
    # nothing: the keys carried across calls are sliced and wrapped on the
    # host (a device key array of each new length compiled 3 small programs).
    with compiles_during() as compiles:
        third = hyperband(TRAINER, SPACE, 5, resume=part, **kw)
    assert np.bincount(third.bracket).tolist() == [9, 5, 3] * 3 and compiles == []


def test_a_learning_sampler_carries_its_model_across_calls():
    # BOHB: TPE told after each bracket, one after another; 4 brackets (one
    # iteration and the first of the next) in one call or in two.
    from jaxhpo import TPE
    tpe = TPE(SPACE, 1, capacity=32, n_startup=4)
    whole = hyperband(TRAINER, SPACE, 3, max_budget=9, strategy=tpe, num_brackets=4)
    first = hyperband(TRAINER, SPACE, 3, max_budget=9, strategy=tpe, num_brackets=2)
    _same_search(hyperband(TRAINER, SPACE, 3, max_budget=9, strategy=tpe, num_brackets=2, resume=first), whole)
    # the sampler's state was carried, not restarted: a fresh TPE proposes other points for bracket 2
    fresh = hyperband(TRAINER, SPACE, 3, max_budget=9, strategy=tpe, num_brackets=1, resume=dataclasses.replace(
        first, sampler_state=tpe.init(jax.random.key(0))))
    assert not np.array_equal(fresh.x[14:], whole.x[14:17])


def test_resume_refuses_another_search():
    first = hyperband(TRAINER, SPACE, 5, max_budget=9, num_brackets=1, block_size=2)
    kw = dict(max_budget=9, block_size=2, resume=first)
    with pytest.raises(ValueError, match="another key"):
        hyperband(TRAINER, SPACE, 6, **kw)
    with pytest.raises(ValueError, match="give the same max_budget and eta"):
        hyperband(TRAINER, SPACE, 5, max_budget=27, resume=first)
    with pytest.raises(ValueError, match="another space"):
        hyperband(TRAINER, Space(lr=Float(0.01, 0.5, log=True), shift=Float(0.0, 3.0)), 5, **kw)
    other = Trainer(lambda k, hp: {"w": jnp.zeros(3)}, lambda s, hp: s, lambda s, hp: jnp.sum(s["w"]))
    with pytest.raises(ValueError, match="not this trainer's"):
        hyperband(other, SPACE, 5, **kw)
    with pytest.raises(ValueError, match="differ in has_aux"):
        hyperband(Trainer(_init, _step, lambda s, hp: (_evaluate(s, hp), {}), has_aux=True), SPACE, 5, **kw)
    with pytest.raises(ValueError, match="sampler state is not this strategy's"):
        hyperband(TRAINER, SPACE, 5, strategy=QuasiRandom(SPACE, 9), **kw)
    with pytest.raises(TypeError, match="MultiFidelityResult"):
        hyperband(TRAINER, SPACE, 5, max_budget=9, resume=first.best_state)
    halving = successive_halving(TRAINER, SPACE, 5, num_configs=9, min_budget=1, max_budget=9)
    with pytest.raises(ValueError, match="no Hyperband schedule: successive halving's"):
        hyperband(TRAINER, SPACE, 5, max_budget=9, resume=halving)
