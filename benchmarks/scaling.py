"""Scaling: search throughput with 1, 2, 4, 8 devices and with several chunk sizes.

RandomSearch on Branin and CMA-ES on Hartmann6 (cheap objectives, so the
figures measure the search machinery), run through ``jaxhpo.minimize``

* without a mesh, then with ``mesh=`` over the first k devices (k = 1, 2, 4,
  8; the population axis sharded over them),
* with ``chunk_size`` None, popsize/64, popsize/8 and ``"auto"``, without
  a mesh and with one over all the devices.

Each row gives evaluations/s (wall and process CPU time, median of repeats,
compile excluded) and, from ``memory_analysis`` of the compiled search, the
bytes passed in (the key: nothing there is worth donating) and the peak bytes
per device (output + temporaries).

On a CPU the devices are host devices forced with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set here before jax
is imported). They share the machine's cores, so more of them cannot beat the
cores there are; on a machine with several accelerators the same run shards
over real devices. Run: ``python -m benchmarks.scaling [--quick]``.
"""

from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

import jaxhpo  # noqa: E402
from benchmarks._common import parse_args, print_table, write_results  # noqa: E402
from benchmarks.random_search_throughput import BRANIN_SPACE, HARTMANN_SPACE, branin, hartmann6  # noqa: E402
from jaxhpo.loop import search_memory  # noqa: E402


def timed(fn, repeats):
    """Median wall and process-CPU seconds of ``fn()`` after one warm-up call, and the last result."""
    out = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), wall, out


def measure(name, strategy, objective, space, generations, repeats, mesh, chunk_size):
    def go():
        return jaxhpo.minimize(objective, space, strategy, num_generations=generations, key=0, mesh=mesh,
                               chunk_size=chunk_size)

    wall, cpu, raw, res = timed(go, repeats)
    mem = search_memory(strategy, objective, generations, chunk_size=chunk_size, mesh=mesh)
    evals = strategy.popsize * generations
    return dict(
        search=name, devices=0 if mesh is None else mesh.size, chunk=str(chunk_size),
        chunk_resolved=str(mem["chunk_size"]), popsize=strategy.popsize, generations=generations,
        evals_per_s=evals / wall, evals_per_cpu_s=evals / cpu,
        argument_bytes=mem["argument_bytes"], peak_mib=mem["peak_bytes"] / 2**20,
        best_value=res.best_value, raw_s=raw,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller populations (smoke test)")
    ap.add_argument("--repeats", type=int, default=5)
    args = parse_args(ap, argv)
    devices = jax.devices()
    counts = [k for k in (1, 2, 4, 8) if k <= len(devices)]
    # Populations divisible by 8 (the mesh) and by the chunk divisors below.
    searches = [
        ("random/branin", jaxhpo.RandomSearch(BRANIN_SPACE, 2**16 if args.quick else 2**20), branin, BRANIN_SPACE,
         4 if args.quick else 8),
        ("cmaes/hartmann6", jaxhpo.CMAES(HARTMANN_SPACE, 2**10 if args.quick else 2**12), hartmann6, HARTMANN_SPACE,
         10 if args.quick else 20),
    ]
    rows = []
    for name, strategy, objective, space, gens in searches:
        settings = [(None, None)] + [(Mesh(np.array(devices[:k]), ("pop",)), None) for k in counts]
        for mesh_k in (None, counts[-1]):
            for chunk in (strategy.popsize // 64, strategy.popsize // 8, "auto"):
                mesh = None if mesh_k is None else Mesh(np.array(devices[:mesh_k]), ("pop",))
                settings.append((mesh, chunk))
        for mesh, chunk in settings:
            row = measure(name, strategy, objective, space, gens, args.repeats, mesh, chunk)
            rows.append(row)
            print(f"{name} devices={row['devices']} chunk={row['chunk']}: {row['evals_per_s']:.4g} evals/s "
                  f"({row['evals_per_cpu_s']:.4g} per CPU s), peak {row['peak_mib']:.1f} MiB", flush=True)
    print_table(rows, ["search", "devices", "chunk", "chunk_resolved", "popsize", "generations", "evals_per_s",
                       "evals_per_cpu_s", "argument_bytes", "peak_mib"],
                title="jaxhpo.minimize throughput by devices (0 = no mesh) and chunk size")
    write_results("scaling", rows, {"repeats": args.repeats, "num_devices": len(devices),
                                    "cpu_count": os.cpu_count(), "load_average": os.getloadavg()})


if __name__ == "__main__":
    main()
