"""Throughput of ``jaxhpo.minimize`` with RandomSearch against hand-written JAX loops and Optuna.

For Branin (2-D) and Hartmann6 (6-D), at batch sizes 10^3 .. 10^6, measure
evaluations per second of

* ``jaxhpo.minimize(f, space, RandomSearch(space, batch), ...)`` (history "best"),
* a hand-written ``jit`` of a ``lax.scan`` that draws a uniform batch, scales
  it to the box, evaluates ``vmap(f)`` and keeps the minimum,
* a Python loop calling ``jit(vmap(f))`` on each batch, the draw and the
  minimum op by op (what many users write),
* a Python loop calling one compiled step (draw, evaluate, minimum) per batch,

and, once per problem, Optuna's ``RandomSampler`` running ``study.optimize``
over the same function in plain Python (``--optuna-trials`` trials), so that
``ratio_vs_optuna`` = jaxhpo evaluations/s / Optuna trials/s.
``ratio_vs_limit`` is jaxhpo against the fastest of the three hand-written
forms in each cell (``limit`` names it): none is fastest everywhere.

Compile time is excluded (one warm-up call); each figure is the median of
repeats, as wall time and as process CPU time (the ``*_cpu`` ratios; on a
shared machine they are the steadier of the two). Run:
``python -m benchmarks.random_search_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results

BRANIN_SPACE = jaxhpo.Space(x1=jaxhpo.Float(-5.0, 10.0), x2=jaxhpo.Float(0.0, 15.0))
HARTMANN_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(6)})

_A = jnp.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]], jnp.float32)
_P = 1e-4 * jnp.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                       [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]], jnp.float32)
_ALPHA = jnp.array([1.0, 1.2, 3.0, 3.2], jnp.float32)


def branin_xy(x1, x2):
    b, c = 5.1 / (4 * jnp.pi**2), 5.0 / jnp.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * jnp.pi)) * jnp.cos(x1) + 10


def hartmann6_x(x):
    return -jnp.sum(_ALPHA * jnp.exp(-jnp.sum(_A * (x - _P) ** 2, axis=-1)))


def branin(p):
    return branin_xy(p["x1"], p["x2"])


def hartmann6(p):
    return hartmann6_x(jnp.stack([p[f"x{i}"] for i in range(6)]))


# The hand-written versions take the raw box point.
def branin_vec(x):
    return branin_xy(x[0], x[1])


PROBLEMS = {
    "branin": (BRANIN_SPACE, branin, branin_vec, jnp.array([-5.0, 0.0]), jnp.array([10.0, 15.0])),
    "hartmann6": (HARTMANN_SPACE, hartmann6, hartmann6_x, jnp.zeros(6), jnp.ones(6)),
}


@partial(jax.jit, static_argnames=("f", "batch", "generations"))
def hand_written_scan(f, key, low, high, batch, generations):
    def body(best, key):
        u = jax.random.uniform(key, (batch, low.shape[0]))
        values = jax.vmap(f)(low + u * (high - low))
        return jnp.minimum(best, jnp.min(values)), None

    best, _ = jax.lax.scan(body, jnp.float32(jnp.inf), jax.random.split(key, generations))
    return best


def python_loop(f_batch, key, low, high, batch, generations):
    best = jnp.inf
    for k in jax.random.split(key, generations):
        u = jax.random.uniform(k, (batch, low.shape[0]))
        best = jnp.minimum(best, jnp.min(f_batch(low + u * (high - low))))
    return jax.block_until_ready(best)


@partial(jax.jit, static_argnames=("f", "batch"))
def _one_batch(f, best, key, low, high, batch):
    u = jax.random.uniform(key, (batch, low.shape[0]))
    return jnp.minimum(best, jnp.min(jax.vmap(f)(low + u * (high - low))))


def jitted_step_loop(f, key, low, high, batch, generations):
    """A Python loop over batches, each batch (draw, evaluate, minimum) one compiled call."""
    best = jnp.float32(jnp.inf)
    for k in jax.random.split(key, generations):
        best = _one_batch(f, best, k, low, high, batch)
    return jax.block_until_ready(best)


def timed(fn, repeats, warmup=1):
    """Median wall and process-CPU seconds of ``fn()`` (which blocks until done)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), wall


def branin_python(x1, x2):
    b, c = 5.1 / (4 * math.pi**2), 5.0 / math.pi
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10


def hartmann6_python(x):
    a, p, alpha = np.asarray(_A), np.asarray(_P), np.asarray(_ALPHA)
    return float(-np.sum(alpha * np.exp(-np.sum(a * (np.asarray(x) - p) ** 2, axis=-1))))


def optuna_random(problem, trials):
    """Optuna RandomSampler trials per second (wall and CPU) and its best value."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if problem == "branin":
        def objective(trial):
            return branin_python(trial.suggest_float("x1", -5.0, 10.0), trial.suggest_float("x2", 0.0, 15.0))
    else:
        def objective(trial):
            return hartmann6_python([trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    t0, c0 = time.perf_counter(), time.process_time()
    study.optimize(objective, n_trials=trials)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return trials / wall, trials / cpu, study.best_value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller budget (smoke test)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--optuna-trials", type=int, default=None, help="Optuna trials per problem (default 2000)")
    ap.add_argument("--problems", default="branin,hartmann6")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes")
    args = parse_args(ap, argv, rivals=("optuna",))
    batches = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    if args.batches:
        batches = [int(float(b)) for b in args.batches.split(",")]
    total = 10**6 if args.quick else 4 * 10**6
    optuna_trials = args.optuna_trials or (500 if args.quick else 2000)
    rows, optuna_rows = [], []
    for name in args.problems.split(","):
        space, f, f_vec, low, high = PROBLEMS[name]
        opt_wall, opt_cpu, opt_best = optuna_random(name, optuna_trials)
        optuna_rows.append(dict(problem=name, trials=optuna_trials, optuna_trials_per_s=opt_wall,
                                optuna_trials_per_cpu_s=opt_cpu, optuna_best=opt_best))
        print(f"{name}: Optuna RandomSampler {opt_wall:.4g} trials/s ({optuna_trials} trials)", flush=True)
        f_batch = jax.jit(jax.vmap(f_vec))
        for batch in batches:
            gens = max(2, total // batch)
            strategy = jaxhpo.RandomSearch(space, batch)
            key = jax.random.key(0)
            t_hpo, c_hpo, raw_hpo = timed(lambda: jaxhpo.minimize(f, space, strategy, num_generations=gens, key=0),
                                          args.repeats)
            t_scan, c_scan, raw_scan = timed(
                lambda: hand_written_scan(f_vec, key, low, high, batch, gens).block_until_ready(), args.repeats)
            t_py, c_py, raw_py = timed(lambda: python_loop(f_batch, key, low, high, batch, gens), args.repeats)
            t_step, c_step, raw_step = timed(lambda: jitted_step_loop(f_vec, key, low, high, batch, gens),
                                             args.repeats)
            # The limit: the fastest hand-written form in this cell, by wall time and
            # (separately: it may be another form) by CPU time.
            forms = ((t_scan, c_scan, "scan"), (t_py, c_py, "pyloop"), (t_step, c_step, "steploop"))
            t_lim, _, limit = min(forms)
            c_lim, limit_cpu = min((c, name) for _, c, name in forms)
            evals = batch * gens
            rows.append(dict(
                problem=name, batch=batch, generations=gens,
                jaxhpo_evals_per_s=evals / t_hpo, scan_evals_per_s=evals / t_scan,
                pyloop_evals_per_s=evals / t_py, steploop_evals_per_s=evals / t_step, optuna_trials_per_s=opt_wall,
                ratio_vs_scan=t_scan / t_hpo, ratio_vs_pyloop=t_py / t_hpo, ratio_vs_steploop=t_step / t_hpo,
                ratio_vs_scan_cpu=c_scan / c_hpo, ratio_vs_pyloop_cpu=c_py / c_hpo,
                ratio_vs_steploop_cpu=c_step / c_hpo,
                limit=limit, ratio_vs_limit=t_lim / t_hpo, limit_cpu=limit_cpu, ratio_vs_limit_cpu=c_lim / c_hpo,
                ratio_vs_optuna=evals / t_hpo / opt_wall, ratio_vs_optuna_cpu=evals / c_hpo / opt_cpu,
                raw_s=dict(jaxhpo=raw_hpo, scan=raw_scan, pyloop=raw_py, steploop=raw_step),
            ))
            r = rows[-1]
            print(f"{name} batch={batch}: jaxhpo/limit ({limit}) {r['ratio_vs_limit']:.3f} "
                  f"(cpu {r['ratio_vs_limit_cpu']:.3f}), jaxhpo/optuna {r['ratio_vs_optuna']:.3g}", flush=True)
    print_table(rows, ["problem", "batch", "generations", "jaxhpo_evals_per_s", "scan_evals_per_s",
                       "pyloop_evals_per_s", "steploop_evals_per_s", "ratio_vs_scan", "ratio_vs_pyloop",
                       "ratio_vs_steploop", "limit", "ratio_vs_limit", "ratio_vs_limit_cpu", "ratio_vs_optuna"],
                title="RandomSearch via jaxhpo.minimize vs hand-written loops and Optuna (evaluations/s, median)")
    print_table(optuna_rows, ["problem", "trials", "optuna_trials_per_s", "optuna_trials_per_cpu_s", "optuna_best"],
                title="Optuna RandomSampler, study.optimize over a Python objective")
    write_results("random_search_throughput", rows,
                  {"total_evaluations": total, "repeats": args.repeats, "optuna": optuna_rows},
                  packages=("optuna",))


if __name__ == "__main__":
    main()
