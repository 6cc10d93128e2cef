"""Several processes under ``jax.distributed``, on one machine.

Two Python processes on localhost, each with 4 forced CPU host devices, join
one ``jax.distributed`` cluster of 8 devices (cross-process collectives: gloo,
jax's CPU default). Each builds one ``Mesh`` over all 8 (``jax.devices()``),
runs the same searches with ``mesh=`` and writes what it got back to a file.
Both must agree with each other and with an unsharded run in this process.

The same file is the worker: ``python tests/test_multihost.py PID PORT OUT``.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np

NUM_PROCESSES = 2
LOCAL_DEVICES = 4
TIMEOUT_S = 180  # a hang (e.g. a collective one process never joins) fails instead of blocking
GENERATIONS = 3


def _searches():
    """name -> ``run(mesh)`` for every search compared; shared by the workers and the test.

    Imports jax inside: a worker must call ``jax.distributed.initialize`` first.
    """
    import jax
    import jax.numpy as jnp

    import jaxhpo
    from jaxhpo import CMAES, Float, Int, RandomSearch, Space
    from jaxhpo.training import Trainer, pbt, successive_halving

    space = Space(a=Float(-3.0, 3.0), b=Float(1e-3, 1.0, log=True), n=Int(0, 9))

    def f(p):
        return jnp.sin(p["a"]) * p["n"] + jnp.log(p["b"]) ** 2

    def random_search(mesh):
        r = jaxhpo.minimize(f, space, RandomSearch(space, 16), num_generations=GENERATIONS, key=3,
                            history="all", mesh=mesh)
        return dict(best_value=r.best_value, best_x=r.best_x, best_params=_params(r.best_params),
                    values=r.history.values, x=r.history.x, best_trace=r.history.best_value)

    def cmaes(mesh):
        r = jaxhpo.minimize(f, space, CMAES(space, 16), num_generations=GENERATIONS, key=5,
                            history="all", mesh=mesh)
        return dict(best_value=r.best_value, best_x=r.best_x, best_params=_params(r.best_params),
                    values=r.history.values, x=r.history.x, mean=np.asarray(r.state.mean),
                    sigma=np.asarray(r.state.sigma))

    hp_space = Space(lr=Float(0.01, 0.5, log=True), shift=Int(0, 3))
    target = jnp.array([1.0, -2.0, 0.5], jnp.float32)
    trainer = Trainer(
        lambda key, hp: {"w": jax.random.normal(key, (3,), jnp.float32)},
        lambda s, hp: {"w": s["w"] - hp["lr"] * (s["w"] - target + 0.05 * hp["shift"].astype(jnp.float32))},
        lambda s, hp: jnp.sum((s["w"] - target) ** 2),
    )

    def halving(mesh):
        # Rungs of 16, 8 and 4 configurations: the last is padded to the mesh's 8 devices.
        r = successive_halving(trainer, hp_space, 7, num_configs=16, min_budget=1, max_budget=4, eta=2,
                               mesh=mesh)
        return dict(loss=r.loss, x=r.x, budget=r.budget, best_index=r.best_index, best_loss=r.best_loss,
                    best_params=_params(r.best_params), best_w=np.asarray(r.best_state["w"]))

    def population(mesh):
        r = pbt(trainer, hp_space, 11, popsize=8, num_rounds=3, fraction=0.25, mesh=mesh)
        # r.states stays a global array sharded over the mesh: each process
        # reports the members' rows it holds, and which members they are.
        shards = r.states["w"].addressable_shards
        return dict(losses=r.losses, parents=r.parents, lr=r.hparams["lr"], best_index=r.best_index,
                    best_loss=r.best_loss, best_w=np.asarray(r.best_state["w"]),
                    local_w=np.concatenate([np.asarray(s.data) for s in shards]),
                    local_members=np.concatenate([np.arange(8)[s.index[0]] for s in shards]))

    return dict(random_search=random_search, cmaes=cmaes, halving=halving, pbt=population)


def _params(p):
    return np.asarray([p[k] for k in sorted(p)], np.float64)


def _flat(results):
    return {f"{name}/{k}": np.asarray(v) for name, out in results.items() for k, v in out.items()}


def _worker(process_id, port, out_path):
    import jax

    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=NUM_PROCESSES,
                               process_id=process_id)
    from jax.sharding import Mesh

    assert jax.process_count() == NUM_PROCESSES and jax.local_device_count() == LOCAL_DEVICES
    mesh = Mesh(np.array(jax.devices()), ("pop",))  # every process's devices: 8
    results = {name: run(mesh) for name, run in _searches().items()}
    np.savez(out_path + ".tmp.npz", **_flat(results))
    os.replace(out_path + ".tmp.npz", out_path)
    jax.distributed.shutdown()


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _child_env():
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    # The parent's other XLA flags too (conftest.py), so the programs compile alike.
    env["XLA_FLAGS"] = " ".join([f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"] + flags)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_two_processes_agree_with_each_other_and_with_one(tmp_path):
    start = time.monotonic()
    port = _free_port()
    outs = [str(tmp_path / f"process{i}.npz") for i in range(NUM_PROCESSES)]
    logs = [open(tmp_path / f"process{i}.log", "wb") for i in range(NUM_PROCESSES)]
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), outs[i]], env=_child_env(),
                              stdout=logs[i], stderr=subprocess.STDOUT)
             for i in range(NUM_PROCESSES)]
    try:
        # The unsharded reference, in this process, while the workers run.
        reference = _flat({name: run(None) for name, run in _searches().items()})
        for p in procs:
            p.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for f in logs:
            f.close()
    for i, p in enumerate(procs):
        log = (tmp_path / f"process{i}.log").read_text(errors="replace")[-4000:]
        assert p.returncode == 0, f"process {i} exited with {p.returncode} (-9: killed at the timeout):\n{log}"
    got = [dict(np.load(o)) for o in outs]

    # PBT's final population states: each process holds its own 4 members' rows.
    members = [g.pop("pbt/local_members") for g in got]
    rows = [g.pop("pbt/local_w") for g in got]
    assert [len(m) for m in members] == [4, 4] and sorted(np.concatenate(members).tolist()) == list(range(8))
    np.testing.assert_array_equal(np.concatenate(rows)[np.argsort(np.concatenate(members))],
                                  reference.pop("pbt/local_w"))
    reference.pop("pbt/local_members")
    assert sorted(got[0]) == sorted(got[1]) == sorted(reference)
    for k in reference:
        # Every process gets the same result back, bit for bit, and it is the
        # unsharded run's: only the evaluation (training) is sharded; the
        # strategies' updates run replicated (see jaxhpo.loop._replicate).
        # The unsharded program fuses the objective differently, so its float
        # values may differ in the last bit.
        np.testing.assert_array_equal(got[0][k], got[1][k], err_msg=k)
        if np.issubdtype(reference[k].dtype, np.floating):
            np.testing.assert_allclose(got[0][k], reference[k], rtol=1e-6, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(got[0][k], reference[k], err_msg=k)


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
