"""Generations per second of jaxhpo's evolutionary strategies against evosax.

On the 10-D sphere over ``[-5, 5]^10`` at population sizes 16, 256 and 4096,
each search runs ``G`` generations (200; 50 at popsize 4096; CMA-ES 100,
50 and 30) as one jitted program (ask -> evaluate -> tell inside
``lax.scan``):

* jaxhpo: ``jit(lambda key: jaxhpo.run(strategy, sphere, key, G))`` with
  ``DifferentialEvolution`` (rand/1/bin), ``GeneticAlgorithm`` and, when
  ``jaxhpo.strategies.cmaes`` is importable, ``CMAES`` (without restarts, as
  evosax's CMA-ES has none). The objective reads the decoded dict, as a
  jaxhpo user's does.
* evosax: the same loop written with ``evosax.algorithms`` ``DifferentialEvolution``,
  ``SimpleGA`` (the counterpart of the GA row) and ``CMA_ES`` (``init`` /
  ``ask`` / ``tell`` with default params) on raw vectors.

CMA-ES converges on the sphere to float32 resolution within about 130
generations at popsize 16 (60 at 256, 40 at 4096); jaxhpo's then terminates and freezes
its state, while evosax's keeps adapting a degenerate distribution, which
gets slower. Timing past that point would compare different work, so the
CMA-ES rows stop before it, and ``jaxhpo_stopped`` records whether jaxhpo's
search terminated within the timed generations (it must not).

Compile time is excluded (one warm-up call) and reported separately; each
figure is the median of repeats. ``ratio = jaxhpo / evosax`` generations per
second by wall time (above 1: jaxhpo is faster); ``ratio_cpu`` is the same by
process CPU time, the steadier figure on a shared machine. Run:
``python -m benchmarks.evolution_throughput [--quick] [--generations G] [--algorithms CMA-ES ...]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from jaxhpo.strategies.de import DifferentialEvolution
from jaxhpo.strategies.ga import GeneticAlgorithm

DIM = 10
LOW, HIGH = -5.0, 5.0
SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(LOW, HIGH) for i in range(DIM)})
POPSIZES = (16, 256, 4096)


def sphere_vec(x):
    return jnp.sum((x - 1.0) ** 2)


def sphere(p):
    return sphere_vec(jnp.stack([p[f"x{i}"] for i in range(DIM)]))


# ------------------------------------------------------------------ jaxhpo
def jaxhpo_builders():
    out = {
        "DE": lambda p: DifferentialEvolution(SPACE, p),
        "GA": lambda p: GeneticAlgorithm(SPACE, p),
    }
    try:
        from jaxhpo.strategies.cmaes import CMAES
    except ImportError as e:  # written in parallel; the table simply lacks it
        print(f"note: jaxhpo CMAES not importable ({e}); CMA-ES rows skipped")
    else:
        out["CMA-ES"] = lambda p: CMAES(SPACE, p, restarts=None)
    return out


def jaxhpo_search(strategy, generations):
    @jax.jit
    def go(key):
        _, trace = jaxhpo.run(strategy, sphere, key, generations)
        return trace.best_value[-1]

    return go


# ------------------------------------------------------------------ evosax
def evosax_search(name, popsize, generations):
    from evosax.algorithms import CMA_ES, DifferentialEvolution as EvoDE, SimpleGA

    solution = jnp.zeros(DIM)
    if name == "CMA-ES":
        es = CMA_ES(population_size=popsize, solution=solution)
    elif name == "DE":
        es = EvoDE(population_size=popsize, solution=solution)
    else:
        es = SimpleGA(population_size=popsize, solution=solution)
    params = es.default_params
    population_based = name != "CMA-ES"

    @jax.jit
    def go(key):
        k_pop, k_init, k_loop = jax.random.split(key, 3)
        if population_based:
            # evosax's population-based strategies start from an evaluated population.
            pop = jax.random.uniform(k_pop, (popsize, DIM), minval=LOW, maxval=HIGH)
            state = es.init(k_init, pop, jax.vmap(sphere_vec)(pop), params)
        else:
            state = es.init(k_init, solution, params)

        def body(state, key):
            k_ask, k_tell = jax.random.split(key)
            x, state = es.ask(k_ask, state, params)
            state, _ = es.tell(k_tell, x, jax.vmap(sphere_vec)(x), state, params)
            return state, state.best_fitness

        _, best = jax.lax.scan(body, state, jax.random.split(k_loop, generations))
        return best[-1]

    return go


def stopped_within(strategy, generations):
    """Whether the strategy's search terminated within the timed generations (CMA-ES only)."""
    if not hasattr(strategy, "restarts"):
        return None
    state, _ = jax.jit(lambda k: jaxhpo.run(strategy, sphere, k, generations))(jax.random.key(0))
    return bool(state.stopped)


def timed(fns, repeats, budget_s=60.0):
    """For each of ``fns``: wall and process-CPU seconds per call (medians), raw wall
    times, first-call seconds and the best value.

    The functions' repeats alternate (a, b, a, b, ...), so that a change in
    the machine's load hits them alike. Repeats stop early (after at least 3)
    once ``budget_s`` is spent. CPU time is reported beside wall time because
    on a shared machine wall time also counts waiting for cores (XLA splits
    large fusions over threads).
    """
    key = jax.random.key(0)
    firsts, compile_s = [], []
    for fn in fns:
        t0 = time.perf_counter()
        firsts.append(float(fn(key).block_until_ready()))
        compile_s.append(time.perf_counter() - t0)
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    while len(wall[0]) < repeats and (len(wall[0]) < 3 or sum(map(sum, wall)) < budget_s):
        for i, fn in enumerate(fns):
            w0, c0 = time.perf_counter(), time.process_time()
            fn(key).block_until_ready()
            wall[i].append(time.perf_counter() - w0)
            cpu[i].append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c), w, comp, first)
            for w, c, comp, first in zip(wall, cpu, compile_s, firsts)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer generations and repeats (smoke test)")
    ap.add_argument("--generations", type=int, default=None,
                    help="generations per run (default: DE and GA 200, 50 at popsize 4096; CMA-ES 100 / 50 / 30 at "
                         "popsize 16 / 256 / 4096; --quick: 30, 10)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--algorithms", nargs="+", default=None, help="a subset of DE GA CMA-ES")
    args = parse_args(ap, argv, rivals=("evosax",))

    def gens(name, popsize):
        if args.generations:
            return args.generations
        if name == "CMA-ES" and not args.quick:
            return {16: 100, 256: 50}.get(popsize, 30)
        # evosax's DE is quadratic in popsize (a weighted choice per member),
        # so the largest population runs fewer generations. (Longer runs at
        # popsize 16 would mostly time evosax's CMA-ES after convergence,
        # where its generations get several times slower.)
        if args.quick:
            return 10 if popsize >= 4096 else 30
        return 50 if popsize >= 4096 else 200

    repeats = args.repeats or (3 if args.quick else 15)

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name, build in jaxhpo_builders().items():
        if args.algorithms and name not in args.algorithms:
            continue
        for popsize in POPSIZES:
            generations = gens(name, popsize)
            (t_j, c_j, raw_j, comp_j, best_j), (t_e, c_e, raw_e, comp_e, best_e) = timed(
                [jaxhpo_search(build(popsize), generations), evosax_search(name, popsize, generations)],
                repeats)
            rows.append(dict(
                algorithm=name, popsize=popsize, generations=generations,
                jaxhpo_gen_per_s=generations / t_j, evosax_gen_per_s=generations / t_e,
                ratio=t_e / t_j, ratio_cpu=c_e / c_j,
                jaxhpo_compile_s=comp_j, evosax_compile_s=comp_e,
                jaxhpo_best=best_j, evosax_best=best_e,
                raw_wall_s=dict(jaxhpo=raw_j, evosax=raw_e), cpu_s=dict(jaxhpo=c_j, evosax=c_e),
                jaxhpo_stopped=stopped_within(build(popsize), generations),
                repeats=len(raw_j),  # fewer than asked where the time budget ran out
            ))
            print(f"{name} popsize={popsize}: ratio jaxhpo/evosax = {rows[-1]['ratio']:.3f}", flush=True)
    print_table(rows, ["algorithm", "popsize", "generations", "repeats", "jaxhpo_gen_per_s", "evosax_gen_per_s",
                       "ratio", "ratio_cpu", "jaxhpo_compile_s", "evosax_compile_s", "jaxhpo_stopped"],
                title=f"Evolutionary strategies, {DIM}-D sphere, whole loop jitted "
                      f"(generations/s by wall time, median of up to {repeats} repeats, at least 3, within "
                      f"60 s a row; ratio = jaxhpo / evosax "
                      f"by wall time, ratio_cpu by process CPU time)")
    extra = {"repeats": repeats, "dim": DIM,
             "load_average_before": load_before,
             "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None}
    name = "evolution_throughput" + ("_" + "_".join(args.algorithms) if args.algorithms else "")
    write_results(name, rows, extra, packages=("evosax",))


if __name__ == "__main__":
    main()
