"""Sharded searches equal unsharded ones (8 forced host devices, see conftest.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import jaxhpo
from jaxhpo import CMAES, Float, Int, RandomSearch, Space

SPACE = Space(a=Float(-3.0, 3.0), b=Float(1e-3, 1.0, log=True), n=Int(0, 9))


def f(p):
    return jnp.sin(p["a"]) * p["n"] + jnp.log(p["b"]) ** 2


def sine_rows(hlo: str) -> set[int]:
    """Element counts of the ``sine`` operations (the objective's) in compiled HLO text."""
    import re
    return {math.prod(map(int, filter(None, dims.split(","))))
            for dims in re.findall(r"= f32\[([0-9,]*)\][^ ]* sine\(", hlo)}


def mesh_of(n):
    devices = jax.devices()
    if len(devices) < n:
        pytest.skip(f"needs {n} devices, have {len(devices)}")
    return Mesh(np.array(devices[:n]).reshape(2, n // 2), ("x", "y"))


def test_sharded_run_equals_unsharded():
    s = RandomSearch(SPACE, 64)
    mesh = mesh_of(8)
    key = jax.random.key(4)
    a_state, a = jaxhpo.run(s, f, key, 4, history="all")
    b_state, b = jaxhpo.run(s, f, key, 4, history="all", mesh=mesh)
    np.testing.assert_array_equal(a.x, b.x)
    # The same points; the objective's sin and log fuse differently in the
    # two programs, so values near zero differ in their last bits.
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a_state.best_value, b_state.best_value, rtol=1e-6)
    res = jaxhpo.minimize(f, SPACE, s, num_generations=4, key=key, mesh=mesh)
    assert res.best_value == pytest.approx(float(a_state.best_value), rel=1e-6)
    # Equal results alone would not show the mesh was used: in the compiled
    # search each device's objective computes its own 64 / 8 rows.
    text = jax.jit(lambda k: jaxhpo.run(s, f, k, 1, mesh=mesh)).lower(key).compile().as_text()
    assert sine_rows(text) == {8}
    assert sine_rows(jax.jit(lambda k: jaxhpo.run(s, f, k, 1)).lower(key).compile().as_text()) == {64}


def test_sharded_cmaes_is_bit_identical():
    # The strategy's side runs replicated (jaxhpo.loop._replicate): without it
    # the partitioner shards ask's z @ sqrt_C by rows, and XLA:CPU rounds the
    # smaller per-device products 1 ulp differently from the second generation on.
    s = CMAES(SPACE, 16)
    key = jax.random.key(5)
    a_state, a = jaxhpo.run(s, f, key, 3, history="all")
    b_state, b = jaxhpo.run(s, f, key, 3, history="all", mesh=mesh_of(8))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a_state.mean, b_state.mean)
    np.testing.assert_array_equal(a_state.C, b_state.C)
    # so does its re-expression of initial points (in place of 20 proposals over two generations)
    initial = np.where(np.arange(SPACE.dim) % 2, np.nan, np.linspace(0.05, 0.95, 20)[:, None]).astype(np.float32)
    a_state, a = jaxhpo.run(s, f, key, 5, history="all", initial=initial)
    b_state, b = jaxhpo.run(s, f, key, 5, history="all", mesh=mesh_of(8), initial=initial)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a_state.C, b_state.C)


def test_sharded_and_chunked_together():
    s = RandomSearch(SPACE, 32)
    mesh = mesh_of(4)
    key = jax.random.key(1)
    _, a = jaxhpo.run(s, f, key, 3, history="values")
    _, b = jaxhpo.run(s, f, key, 3, history="values", mesh=mesh, chunk_size=4)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)
    # A mesh of other devices than the one a key (or params) was placed on.
    others = Mesh(np.array(jax.devices()[4:8]).reshape(2, 2), ("x", "y"))
    on_first = jax.device_put(key, jax.devices()[0])
    _, c = jaxhpo.run(s, f, on_first, 3, history="values", mesh=others, chunk_size=4,
                      params=jax.device_put(s.default_params(), jax.devices()[0]))
    np.testing.assert_array_equal(b.values, c.values)
    # ... or of those devices and others
    _, d = jaxhpo.run(s, f, on_first, 3, history="values", mesh=mesh, chunk_size=4)
    np.testing.assert_array_equal(b.values, d.values)
    # ... or of the same devices in another order
    from jax.sharding import NamedSharding, PartitionSpec

    reordered = Mesh(np.array(jax.devices()[:4])[::-1].reshape(2, 2), ("x", "y"))
    on_mesh = jax.device_put(key, NamedSharding(mesh, PartitionSpec()))
    _, e = jaxhpo.run(s, f, on_mesh, 3, history="values", mesh=reordered, chunk_size=4)
    np.testing.assert_array_equal(b.values, e.values)


def test_each_device_evaluates_its_own_rows_a_chunk_at_a_time():
    """With a mesh and a chunk size, every chunk takes chunk // devices rows of each
    device (a chunked loop over the sharded axis had every device compute all rows);
    the per-device shape of the objective's sine, in the partitioned program, says so."""
    from jaxhpo.evaluate import evaluate

    mesh = Mesh(np.array(jax.devices()[:4]), ("pop",))
    params = {"a": jnp.linspace(-3.0, 3.0, 64), "b": jnp.full(64, 0.5), "n": jnp.arange(64) % 10}
    want = jax.vmap(f)(params)
    for chunk, rows in ((None, 16), (16, 4), (5, 1), (64, 16)):
        fn = jax.jit(lambda p, chunk=chunk: evaluate(f, p, chunk_size=chunk, mesh=mesh))
        sines = sine_rows(fn.lower(params).compile().as_text())
        assert sines == {rows}, (chunk, sines)
        np.testing.assert_allclose(np.asarray(fn(params)), np.asarray(want), rtol=1e-6, atol=1e-6)
    # rows per device not a multiple of the chunk: the rest of each device's rows vmapped
    odd = jax.jit(lambda p: evaluate(f, p, chunk_size=12, mesh=mesh))
    np.testing.assert_allclose(np.asarray(odd(params)), np.asarray(want), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of the mesh's 4 devices"):
        evaluate(f, {k: v[:30] for k, v in params.items()}, chunk_size=4, mesh=mesh)
    from jaxhpo.evaluate import map_population
    with pytest.raises(ValueError, match="population of 30 cannot be chunked over the mesh's 4 devices"):
        jax.jit(lambda p: map_population(f, p, 4, mesh))({k: v[:30] for k, v in params.items()})


def test_evaluate_takes_inputs_from_other_devices_onto_its_mesh():
    # Called outside jit evaluate compiles one program, which takes its inputs
    # from the mesh's devices: rows on device 0, or the output of a mesh in
    # another device order, are copied onto it (they used to raise).
    from jaxhpo.evaluate import evaluate

    devices = jax.devices()
    params = {"a": jnp.linspace(-3.0, 3.0, 16), "b": jnp.full(16, 0.5), "n": jnp.arange(16) % 10}
    want = np.asarray(jax.vmap(f)(params))
    on_first = jax.device_put(params, devices[0])
    tail = Mesh(np.array(devices[4:8]), ("pop",))
    np.testing.assert_allclose(np.asarray(evaluate(f, on_first, mesh=tail)), want, rtol=1e-6, atol=1e-6)
    forward, backward = Mesh(np.array(devices[:8]), ("pop",)), Mesh(np.array(devices[7::-1]), ("pop",))
    out = evaluate(lambda p: {**p, "a": p["a"] + 0.0}, params, mesh=forward)
    np.testing.assert_allclose(np.asarray(evaluate(f, out, mesh=backward)), want, rtol=1e-6, atol=1e-6)


def test_mesh_validation():
    mesh = mesh_of(8)
    with pytest.raises(ValueError, match="multiple of the mesh"):
        jaxhpo.run(RandomSearch(SPACE, 12), f, jax.random.key(0), 2, mesh=mesh)
    with pytest.raises(TypeError, match="mesh"):
        jaxhpo.run(RandomSearch(SPACE, 16), f, jax.random.key(0), 2, mesh="devices")


def test_auto_chunk_size_with_a_mesh(monkeypatch):
    import importlib

    from jaxhpo.evaluate import per_config_bytes
    from jaxhpo.loop import _resolve_chunk_size

    evaluate_module = importlib.import_module("jaxhpo.evaluate")
    s = RandomSearch(SPACE, 32)
    mesh = mesh_of(4)
    per = per_config_bytes(f, jax.ShapeDtypeStruct((SPACE.dim,), jnp.float32), SPACE.decode)
    # each of the 4 devices can hold 2 configurations' evaluation in half its memory: chunks of 8
    monkeypatch.setattr(evaluate_module, "free_memory_bytes", lambda devices=None: 2 * 2 * per)
    assert _resolve_chunk_size("auto", s, f, mesh) == 8
    key = jax.random.key(1)
    _, a = jaxhpo.run(s, f, key, 3, history="values")
    _, b = jaxhpo.run(s, f, key, 3, history="values", mesh=mesh, chunk_size="auto")
    np.testing.assert_allclose(a.values, b.values, rtol=1e-6, atol=1e-6)


def test_sharded_auxiliary_outputs_equal_unsharded():
    s = RandomSearch(SPACE, 64)
    mesh = mesh_of(8)

    def g(p):
        return f(p), {"n": p["n"], "twice": 2.0 * f(p)}

    _, a = jaxhpo.run(s, g, jax.random.key(4), 3, history="values", has_aux=True)
    _, b = jaxhpo.run(s, g, jax.random.key(4), 3, history="values", has_aux=True, mesh=mesh, chunk_size=16)
    np.testing.assert_array_equal(a.aux["n"], b.aux["n"])
    np.testing.assert_allclose(a.aux["twice"], b.aux["twice"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.best_aux["twice"], 2.0 * b.best_value, rtol=1e-6)
    np.testing.assert_array_equal(a.best_aux["n"], b.best_aux["n"])


def test_standardized_columns_round_alike_on_one_device_and_replicated_on_eight():
    # GP-BO with several objectives standardises its ParEGO targets as a vmapped
    # batch over one mask. Dividing that batch by the count let XLA rewrite the
    # division as a product in a replicated 8-device program only, and a
    # sharded multi-objective GP-BO search proposed other points from its 4th
    # generation on.
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxhpo.strategies import gp

    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.normal(size=(32, 8)) * 3.7 + 1.3, jnp.float32)
    mask = jnp.asarray(rng.random(32) < 0.7)
    columns = jax.jit(lambda y, m: jax.vmap(gp.standardize, in_axes=(1, None))(y, m))
    one = columns(y, mask)
    replicated = jax.device_put((y, mask), NamedSharding(mesh_of(8), PartitionSpec()))
    for a, b in zip(one, columns(*replicated)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and as each column alone (vmapped searches reproduce single runs)
    for j in range(8):
        alone = jax.jit(gp.standardize)(y[:, j], mask)
        for a, b in zip(one, alone):
            np.testing.assert_array_equal(np.asarray(a)[j], np.asarray(b))
