"""Memory-bounded evaluation: a 10^7-configuration search in a few MiB, and chunk_size="auto"."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import Float, RandomSearch, Space
from jaxhpo.evaluate import auto_chunk_size, per_config_bytes
from jaxhpo.loop import _resolve_chunk_size, search_memory

evaluate_module = importlib.import_module("jaxhpo.evaluate")

BRANIN_MIN = 0.397887
BRANIN = Space(x1=Float(-5.0, 10.0), x2=Float(0.0, 15.0))
WIDTH = 64


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c = 5.1 / (4 * jnp.pi**2), 5.0 / jnp.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * jnp.pi)) * jnp.cos(x1) + 10


def wide(p):
    # A sort cannot be fused into its consumers: every configuration in
    # flight holds its (WIDTH,) vector.
    h = jnp.tanh(p["x1"] * jnp.linspace(-1.0, 1.0, WIDTH) + p["x2"])
    return jnp.sum(jnp.sort(h) * jnp.linspace(0.0, 1.0, WIDTH))


def test_ten_million_configurations_in_bounded_memory():
    # 10^7 evaluations as 100 generations of 10^5, 10^4 at a time: the
    # compiled program never holds more than one generation.
    pop, gens, chunk = 10**5, 100, 10**4
    strategy = RandomSearch(BRANIN, pop)
    mem = search_memory(strategy, branin, gens, chunk_size=chunk)
    all_configs = pop * gens * BRANIN.dim * 4  # every decoded configuration as float32: 80 MB
    assert mem["peak_bytes"] < all_configs / 10
    assert mem["argument_bytes"] < 64  # the key only: nothing large is passed in (or worth donating)
    res = jaxhpo.minimize(branin, BRANIN, strategy, num_generations=gens, key=0, chunk_size=chunk)
    assert res.num_evaluations == 10**7 and res.num_failed == 0
    # 10^7 uniform draws land within ~1e-3 of a minimiser, where Branin is within ~1e-5 of its minimum
    assert res.best_value == pytest.approx(BRANIN_MIN, abs=2e-4)
    assert float(branin({k: jnp.float32(v) for k, v in res.best_params.items()})) == pytest.approx(
        res.best_value, rel=1e-6)


def test_chunk_size_bounds_the_objectives_intermediates():
    pop, chunk = 2048, 128
    per = per_config_bytes(wide, jax.ShapeDtypeStruct((BRANIN.dim,), jnp.float32), BRANIN.decode)
    assert per >= WIDTH * 4  # the hidden vector, measured from the compiled program
    full = search_memory(RandomSearch(BRANIN, pop), wide, 1)
    chunked = search_memory(RandomSearch(BRANIN, pop), wide, 1, chunk_size=chunk)
    # unchunked, the whole population's hidden vectors are live at once
    assert full["temp_bytes"] >= pop * WIDTH * 4
    assert chunked["temp_bytes"] < full["temp_bytes"] / 4


def test_a_fused_objectives_intermediates_are_counted_and_the_cache_is_bounded():
    # XLA:CPU runs this as one fused kernel and its memory analysis counts
    # no temporaries: per configuration it measured the 8 bytes of input and
    # output, not the two (64, 64) matrices each configuration holds.
    W = jnp.linspace(-1.0, 1.0, 64 * 64).reshape(64, 64)

    def matrices(p):
        h = jnp.tanh(W * p["x1"] + p["x2"])
        return jnp.sum(jnp.tanh(h @ h))

    one = jax.ShapeDtypeStruct((BRANIN.dim,), jnp.float32)
    assert per_config_bytes(matrices, one, BRANIN.decode) >= 2 * 64 * 64 * 4
    # The unfused peak of a straight-line program: the (3,) float32 input a
    # (the caller's, never freed), b = 2a, and c = b + 1 made while b is
    # alive: three arrays of 12 bytes; then b is freed before sum(c).
    jaxpr = jax.make_jaxpr(lambda a: jnp.sum(2.0 * a + 1.0))(jnp.zeros(3)).jaxpr
    assert evaluate_module._peak_bytes(jaxpr) == 3 * 12
    # Each entry keeps its objective (and what it closes over) alive: bounded.
    for i in range(evaluate_module._PER_CONFIG_CACHE_SIZE + 3):
        per_config_bytes(lambda p, i=i: p["x1"] * i, {"x1": jax.ShapeDtypeStruct((), jnp.float32)})
    assert len(evaluate_module._PER_CONFIG_CACHE) <= evaluate_module._PER_CONFIG_CACHE_SIZE


def test_auto_chunk_size_fits_the_budget():
    one = jax.ShapeDtypeStruct((BRANIN.dim,), jnp.float32)
    per = per_config_bytes(wide, one, BRANIN.decode)
    n = 6000
    assert auto_chunk_size(wide, one, n, decode=BRANIN.decode, free_bytes=10**12) == n
    previous = 0
    for free in (0, 100 * per, 2000 * per, 5000 * per):
        c = auto_chunk_size(wide, one, n, decode=BRANIN.decode, free_bytes=free)
        assert isinstance(c, int) and 1 <= c <= n
        assert c * per <= max(per, 0.5 * free)  # fits in the default half of the free memory
        assert c >= previous  # more memory never gives a smaller chunk
        previous = c
    # 1000 would fit; 6000 has the divisor 1000, so no remainder chunk is left
    assert auto_chunk_size(wide, one, n, decode=BRANIN.decode, free_bytes=2000 * per) == 1000
    # 7919 is prime: equal chunks (at most the fitting size) instead of chunks of 1
    c = auto_chunk_size(wide, one, 7919, decode=BRANIN.decode, free_bytes=2000 * per)
    assert 500 <= c <= 1000
    with pytest.raises(ValueError, match="memory_fraction"):
        auto_chunk_size(wide, one, n, memory_fraction=0.0)


def test_auto_chunk_size_in_run_and_minimize(monkeypatch):
    pop = 48
    strategy = RandomSearch(BRANIN, pop)
    per = per_config_bytes(wide, jax.ShapeDtypeStruct((BRANIN.dim,), jnp.float32), BRANIN.decode)
    # plenty of memory: no chunking at all
    assert _resolve_chunk_size("auto", strategy, wide, None) is None
    monkeypatch.setattr(evaluate_module, "free_memory_bytes", lambda devices=None: 2 * 10 * per)
    assert _resolve_chunk_size("auto", strategy, wide, None) == 8  # 10 fit; 8 divides 48
    key = jax.random.key(3)
    _, a = jaxhpo.run(strategy, wide, key, 2, history="values")
    _, b = jaxhpo.run(strategy, wide, key, 2, history="values", chunk_size="auto")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)
    res = jaxhpo.minimize(wide, BRANIN, strategy, num_generations=2, key=key, chunk_size="auto", history="values")
    assert res.best_value == pytest.approx(float(np.min(a.values)), rel=1e-6)
    # "auto" inside a user's jit: decided from shapes while tracing
    both = jax.jit(lambda u: (jaxhpo.evaluate(wide, BRANIN.decode(u), chunk_size="auto"),
                              jax.vmap(wide)(BRANIN.decode(u))))
    auto, full = both(BRANIN.sample(jax.random.key(0), 30))
    np.testing.assert_allclose(auto, full, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, 'auto' or None"):
        jaxhpo.minimize(wide, BRANIN, strategy, num_generations=1, chunk_size="big")


def test_free_memory_is_measured(monkeypatch):
    free = evaluate_module.free_memory_bytes()
    assert isinstance(free, int) and free > 0
    devices = jax.devices()
    # host devices share the host's memory: the operating system's figure, divided among them
    pages = {"SC_AVPHYS_PAGES": 3 * 2**20, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(evaluate_module.os, "sysconf", lambda name: pages[name])
    assert evaluate_module.free_memory_bytes(devices[:1]) == 3 * 2**32
    assert evaluate_module.free_memory_bytes(devices[:8]) == 3 * 2**32 // min(8, len(devices))
    pages["SC_AVPHYS_PAGES"] = -1  # unknown: the documented fallback
    assert evaluate_module.free_memory_bytes(devices[:1]) == evaluate_module.HOST_FALLBACK_BYTES

    class Accelerator:  # reports its memory, or (some allocators) nothing
        process_index = jax.process_index()
        platform = "gpu"

        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    pages["SC_AVPHYS_PAGES"] = 3 * 2**20
    monkeypatch.setattr(evaluate_module, "_device_list", list)  # (jax.Device cannot be made here)
    gib = 2**30
    assert evaluate_module.free_memory_bytes([Accelerator({"bytes_limit": 80 * gib, "bytes_in_use": 5 * gib})]) \
        == 75 * gib
    # Not the host's memory (12 GiB here): the fallback.
    for stats in (None, {}):
        assert evaluate_module.free_memory_bytes([Accelerator(stats)]) == evaluate_module.HOST_FALLBACK_BYTES


# ------------------------------------------------------------ donated training states
# A trainer whose state is worth donating: a (64, 64) weight matrix and its
# momentum per member (32 KiB), trained by heavy-ball steps.
DONATE_SPACE = Space(lr=Float(0.01, 0.3, log=True), beta=Float(0.0, 0.9))


def _don_init(key, hp):
    return {"w": jax.random.normal(key, (WIDTH, WIDTH), jnp.float32), "m": jnp.zeros((WIDTH, WIDTH), jnp.float32)}


def _don_step(s, hp):
    g = s["w"] - 0.5 * jnp.tanh(s["w"])
    m = hp["beta"] * s["m"] + g
    return {"w": s["w"] - hp["lr"] * m, "m": m}


def _don_evaluate(s, hp):
    return jnp.mean(s["w"] ** 2)


def _donation_trainer():
    from jaxhpo.training import Trainer

    return Trainer(_don_init, _don_step, _don_evaluate)


def _state_bytes(states, per_device=False):
    leaves = jax.tree_util.tree_leaves(states)
    return sum(a.addressable_shards[0].data.nbytes if per_device else a.nbytes for a in leaves)


def test_continue_rung_donates_the_states():
    from jaxhpo.training import trainer as trainer_module
    from jaxhpo.training.trainer import continue_rung, init_rung

    trainer = _donation_trainer()
    n = 16
    hp = DONATE_SPACE.decode(DONATE_SPACE.sample(jax.random.key(0), n))
    states = init_rung(trainer, jax.random.split(jax.random.key(1), n), hp)
    state_bytes = _state_bytes(states)
    assert state_bytes == n * 2 * WIDTH * WIDTH * 4  # 512 KiB
    donated = continue_rung.lower(trainer, states, hp, np.int32(3)).compile().memory_analysis()
    # The trained states are written into the input states' buffers: every byte aliased.
    assert donated.alias_size_in_bytes == state_bytes
    # The same program without donation holds the old and the new states at once.
    plain = jax.jit(trainer_module.train_population, static_argnums=0).lower(
        trainer, states, hp, np.int32(3)).compile().memory_analysis()
    assert plain.alias_size_in_bytes == 0

    def live(m):  # bytes the call holds: arguments, outputs and scratch, less outputs living in arguments
        return m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes

    assert live(donated) <= live(plain) - state_bytes
    # Donation happens at run time too: the old states are consumed.
    expected = jax.tree_util.tree_map(np.array, states)
    new, loss = continue_rung(trainer, states, hp, np.int32(3))
    assert all(a.is_deleted() for a in jax.tree_util.tree_leaves(states))
    again, loss_plain = trainer_module.train_population(
        trainer, jax.tree_util.tree_map(jnp.asarray, expected), hp, np.int32(3))
    np.testing.assert_array_equal(loss, loss_plain)
    np.testing.assert_array_equal(new["w"], again["w"])


def test_sharded_rung_donates_each_devices_rows():
    from jaxhpo.training.trainer import continue_rung, init_rung, take

    devices = jax.devices()
    if len(devices) < 4:
        pytest.skip("needs 4 devices")
    mesh = jax.sharding.Mesh(np.array(devices[:4]), ("pop",))
    trainer = _donation_trainer()
    n = 8
    hp = DONATE_SPACE.decode(DONATE_SPACE.sample(jax.random.key(0), n))
    states = init_rung(trainer, jax.random.split(jax.random.key(1), n), hp, mesh=mesh)
    # Rows gathered as successive halving gathers survivors: sharded like the rung.
    states = take(states, jnp.asarray([0, 2, 3, 5, 6, 7, 7, 7]), mesh)
    per_device = _state_bytes(states, per_device=True)
    assert per_device == _state_bytes(states) // 4
    compiled = continue_rung.lower(trainer, states, hp, np.int32(2), mesh=mesh).compile()
    assert compiled.memory_analysis().alias_size_in_bytes == per_device


def _plain_continue_rung():
    """``continue_rung`` without donation (a reference)."""
    from functools import partial

    from jaxhpo.training.trainer import train_blocks

    @partial(jax.jit, static_argnames=("trainer", "block_size", "chunk_size", "mesh"))
    def plain(trainer, states, hparams, num_steps, num_members=None, block_size=None, chunk_size=None, mesh=None,
              keys=None, fresh=False):
        return train_blocks(trainer, states, hparams, num_steps, num_members, block_size, chunk_size=chunk_size,
                            mesh=mesh, keys=keys, fresh=fresh)

    return plain


@pytest.mark.parametrize("layout", ["one device", "mesh", "mesh and blocks"])
def test_successive_halving_with_donation_equals_without(monkeypatch, layout):
    import sys

    from jaxhpo.training import successive_halving
    from jaxhpo.training.trainer import continue_rung

    hyperband_module = sys.modules["jaxhpo.training.hyperband"]
    mesh = block_size = None
    if layout != "one device":
        if len(jax.devices()) < 4:
            pytest.skip("needs 4 devices")
        mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("pop",))
    if layout == "mesh and blocks":
        block_size = 4
    trainer = _donation_trainer()
    calls, alias_of = [], {}

    def spy(trainer, states, *args, **kwargs):
        leaves = jax.tree_util.tree_leaves(states)
        layout = tuple((a.shape, a.sharding) for a in leaves)  # one compiled program per layout
        if layout not in alias_of:
            alias_of[layout] = continue_rung.lower(
                trainer, states, *args, **kwargs).compile().memory_analysis().alias_size_in_bytes
        out = continue_rung(trainer, states, *args, **kwargs)
        calls.append((alias_of[layout], _state_bytes(out[0], per_device=True),
                      all(a.is_deleted() for a in leaves)))
        return out

    # 10 configurations -> rungs of 10, 3 and 1 (padded to the mesh or the blocks): every padding path.
    kwargs = dict(num_configs=10, min_budget=1, max_budget=9, eta=3, mesh=mesh, block_size=block_size)
    monkeypatch.setattr(hyperband_module, "continue_rung", spy)
    donated = successive_halving(trainer, DONATE_SPACE, 4, **kwargs)
    monkeypatch.setattr(hyperband_module, "continue_rung", _plain_continue_rung())
    plain = successive_halving(trainer, DONATE_SPACE, 4, **kwargs)
    assert len(calls) >= 3
    # Every rung wrote its output into its input states (on each device), and consumed them.
    for alias, per_device, deleted in calls:
        assert alias == per_device and deleted
    np.testing.assert_array_equal(donated.loss, plain.loss)
    np.testing.assert_array_equal(donated.budget, plain.budget)
    assert donated.best_index == plain.best_index and donated.best_loss == plain.best_loss
    np.testing.assert_array_equal(donated.best_state["w"], plain.best_state["w"])
    assert [r["index"].tolist() for r in donated.rungs] == [r["index"].tolist() for r in plain.rungs]


def test_a_chunk_rounds_to_a_divisor_no_further_than_half_else_to_equal_chunks():
    from jaxhpo.evaluate import _friendly
    for n in range(1, 200):
        for chunk in range(1, n + 1):
            c = _friendly(chunk, n)
            assert 1 <= c <= chunk
            batches = -(-n // c)
            if n % c == 0:  # a divisor: within a factor 2 of the largest that fits
                assert 2 * c >= chunk or batches == -(-n // chunk), (chunk, n, c)
            else:  # equal chunks: no more batches than the largest chunk needs
                assert batches == -(-n // chunk), (chunk, n, c)
    assert _friendly(3, 7) == 3 and _friendly(5, 14) == 5 and _friendly(4, 12) == 4 and _friendly(5, 12) == 4
