"""Search quality: simple regret at 50/100/200 evaluations on five test functions, jaxhpo vs Optuna and Hyperopt.

Measured: simple regret (the best value found so far minus the known
minimum) after 50, 100 and 200 evaluations, as the median and interquartile
range (25th-75th percentile) over seeds, on five problems with known minima:

  branin        2-D, [-5, 10] x [0, 15], min 0.397887357729739
  hartmann6     6-D, [0, 1]^6, min -3.322368011391339
  rosenbrock10  10-D, [-5, 10]^10, min 0
  ackley10      10-D, [-32.768, 32.768]^10, min 0
  rastrigin10   10-D, [-5.12, 5.12]^10, min 0

Each search runs once to the largest budget; the smaller budgets are read off
its best-so-far curve.

jaxhpo: RandomSearch and Sobol (10 points per generation), CMA-ES (its
default population 4 + floor(3 ln n), IPOP restarts), DifferentialEvolution,
GeneticAlgorithm and LocalSearch (10 per generation), TPE (multivariate, one
point per generation, as Optuna's default) and GPBO (one point per
generation, log-EI; once with its default fitted noise, once with
``deterministic=True`` as Optuna's GPSampler runs here). All seeds of one
method run vmapped in one compiled program (``--seeds``, default 16). GPBO
is the exception on two counts: by default it runs on branin and hartmann6
only (``--gp-all`` adds the 10-D problems, for GPSampler too), and with
``--gpbo-seeds`` (default 4) seeds, because its 200 sequential kernel fits
and acquisition optimisations cost minutes per search on two busy CPU cores
and vmapping does not share that work. Every evaluated point is then
re-evaluated in float64 by the same NumPy function the competitors use, so
regrets below float32 resolution (Branin's value is a sum of terms near 10)
are comparable.

Competitors, one seed after another (``--competitor-seeds``, default 5):
Optuna's RandomSampler, TPESampler (multivariate by default), CmaEsSampler,
GPSampler (``deterministic_objective=True``; branin and hartmann6 unless
``--gp-all``; ``--gp-seeds``, default 3: minutes per study) and Hyperopt's
``tpe.suggest``, all with their default settings otherwise and one trial at
a time.

``wall_s`` is the time of all seeds of a cell: for jaxhpo one program
(compilation included), for the others the sum of sequential studies.

  python -m benchmarks search_quality [--quick] [--problems branin hartmann6 ...]
      [--seeds 16] [--gpbo-seeds 4] [--competitor-seeds 5] [--gp-seeds 3]
      [--evals 50 100 200] [--gp-all] [--skip-competitors]

On two busy CPU cores the full run should take about half an hour (estimated
from timed cells), two thirds of it in the two GP methods. ``--quick``:
branin and hartmann6 at 50 and 100 evaluations, 4 jaxhpo seeds (GPBO 2), one
competitor seed, no GPSampler; a few minutes. Optuna, torch (GPSampler) and
Hyperopt are benchmark-only dependencies.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from benchmarks.gpbo_vs_optuna import (BRANIN_MIN, BRANIN_SPACE, H6_SPACE, HARTMANN6_MIN, branin, branin_np,
                                       hartmann6, hartmann6_np)
from benchmarks.tpe_vs_optuna import ackley


# ------------------------------------------------------------------ problems
class Problem(NamedTuple):
    space: jaxhpo.Space
    f: Callable          # jnp, one decoded configuration (a dict of 0-d arrays) -> scalar
    f_np: Callable       # NumPy float64, points (n, dim) in the problem's coordinates -> (n,)
    fmin: float


def rosenbrock(x, xp=jnp):
    return xp.sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1.0 - x[..., :-1]) ** 2, axis=-1)


def rastrigin(x, xp=jnp):
    return 10.0 * x.shape[-1] + xp.sum(x**2 - 10.0 * xp.cos(2 * math.pi * x), axis=-1)


def _box(dim, low, high):
    return jaxhpo.Space({f"x{i}": jaxhpo.Float(low, high) for i in range(dim)})


def _vector_problem(space, f, fmin, batched=True):
    names = space.names

    def f_jax(p):
        return f(jnp.stack([p[n] for n in names]), jnp)

    def f_np(x):
        x = np.asarray(x, np.float64)
        # tpe_vs_optuna's Ackley sums over every axis, so it takes one point at a time.
        return f(x, np) if batched else np.array([f(row, np) for row in x])

    return Problem(space, f_jax, f_np, fmin)


PROBLEMS = {
    "branin": Problem(BRANIN_SPACE, branin, lambda x: branin_np(x[:, 0], x[:, 1]), BRANIN_MIN),
    "hartmann6": Problem(H6_SPACE, hartmann6, hartmann6_np, HARTMANN6_MIN),
    "rosenbrock10": _vector_problem(_box(10, -5.0, 10.0), rosenbrock, 0.0),
    "ackley10": _vector_problem(_box(10, -32.768, 32.768), ackley, 0.0, batched=False),
    "rastrigin10": _vector_problem(_box(10, -5.12, 5.12), rastrigin, 0.0),
}
SMALL = ("branin", "hartmann6")  # where the GP methods run by default


def _bounds(space):
    dims = space.dims.values()
    return np.array([d.low for d in dims]), np.array([d.high for d in dims])


def regrets_at(values, evals, fmin):
    """Best-so-far regret after each budget in ``evals``: ``(seeds, len(evals))``."""
    best = np.minimum.accumulate(np.asarray(values, np.float64), axis=-1)
    # The tabulated minima are rounded in the last digits, so a run that hits
    # the optimum can land a hair below them.
    return np.maximum(best[:, [e - 1 for e in evals]] - fmin, 0.0)


# -------------------------------------------------------------------- jaxhpo
def jaxhpo_methods(name, evals, gp_all):
    space = PROBLEMS[name].space
    capacity = max(evals)  # the model-based buffers hold the whole search
    methods = {
        "RandomSearch": jaxhpo.RandomSearch(space, 10),
        "Sobol": jaxhpo.QuasiRandom(space, 10, "sobol"),
        "CMAES": jaxhpo.CMAES(space),
        "DifferentialEvolution": jaxhpo.DifferentialEvolution(space, 10),
        "GeneticAlgorithm": jaxhpo.GeneticAlgorithm(space, 10),
        "LocalSearch": jaxhpo.LocalSearch(space, 10),
        "TPE": jaxhpo.TPE(space, 1, capacity=capacity, multivariate=True),
    }
    if gp_all or name in SMALL:
        methods["GPBO"] = jaxhpo.GPBO(space, 1, capacity=capacity)
        # As Optuna's GPSampler runs here (deterministic_objective=True): the
        # test functions have no noise, so the GP may interpolate them.
        methods["GPBO deterministic"] = jaxhpo.GPBO(space, 1, capacity=capacity, deterministic=True)
    return methods


def jaxhpo_regrets(name, strategy, evals, seeds):
    prob = PROBLEMS[name]
    n = max(evals)
    gens = -(-n // strategy.popsize)

    def one(key):
        trace = jaxhpo.run(strategy, prob.f, key, gens, history="all")[1]
        return trace.x, trace.valid

    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    x, valid = jax.block_until_ready(jax.jit(jax.vmap(one))(keys))
    wall = time.perf_counter() - t0
    x = np.asarray(x, np.float64).reshape(seeds, -1, strategy.dim)
    valid = np.asarray(valid).reshape(seeds, -1)
    lo, hi = _bounds(prob.space)
    values = []
    for xs, vs in zip(x, valid):
        xs = xs[vs][:n]  # in evaluation order; padded rows were never evaluated
        if len(xs) < n:
            raise RuntimeError(f"{type(strategy).__name__} evaluated {len(xs)} < {n} points")
        # Float.decode's affine map, in float64.
        values.append(prob.f_np(np.clip(lo + xs * (hi - lo), lo, hi)))
    return regrets_at(values, evals, prob.fmin), wall


# --------------------------------------------------------------- competitors
def optuna_regrets(name, sampler_name, evals, seeds):
    import optuna

    prob = PROBLEMS[name]
    dims = prob.space.dims

    def objective(trial):
        x = np.array([[trial.suggest_float(k, d.low, d.high) for k, d in dims.items()]])
        return float(prob.f_np(x)[0])

    samplers = {
        "RandomSampler": lambda s: optuna.samplers.RandomSampler(seed=s),
        "TPESampler": lambda s: optuna.samplers.TPESampler(seed=s),
        "CmaEsSampler": lambda s: optuna.samplers.CmaEsSampler(seed=s),
        "GPSampler": lambda s: optuna.samplers.GPSampler(seed=s, deterministic_objective=True),
    }
    values, t0 = [], time.perf_counter()
    for s in range(seeds):
        study = optuna.create_study(sampler=samplers[sampler_name](s))
        study.optimize(objective, n_trials=max(evals))
        values.append([t.value for t in study.trials])
    return regrets_at(values, evals, prob.fmin), time.perf_counter() - t0


def hyperopt_regrets(name, evals, seeds):
    import hyperopt
    from hyperopt import hp

    prob = PROBLEMS[name]
    names = prob.space.names
    space = {k: hp.uniform(k, d.low, d.high) for k, d in prob.space.dims.items()}

    def objective(p):
        return float(prob.f_np(np.array([[p[k] for k in names]]))[0])

    values, t0 = [], time.perf_counter()
    for s in range(seeds):
        trials = hyperopt.Trials()
        hyperopt.fmin(objective, space, algo=hyperopt.tpe.suggest, max_evals=max(evals), trials=trials,
                      rstate=np.random.default_rng(s), show_progressbar=False)
        values.append(trials.losses())
    return regrets_at(values, evals, prob.fmin), time.perf_counter() - t0


# ---------------------------------------------------------------------- main
def _summary(problem, system, method, evals, reg, wall):
    rows = []
    for j, e in enumerate(evals):
        r = reg[:, j]
        rows.append(dict(problem=problem, system=system, method=method, evals=e, seeds=len(r),
                         median_regret=float(np.median(r)), q25=float(np.quantile(r, 0.25)),
                         q75=float(np.quantile(r, 0.75)), wall_s=wall, regrets=r.tolist()))
    print(f"{problem:13s} {system:9s} {method:22s} "
          + "  ".join(f"@{x['evals']}: {x['median_regret']:.4g}" for x in rows) + f"  ({wall:.1f} s)", flush=True)
    return rows


def print_problem_table(problem, rows, evals):
    table = []
    for row in rows:
        if row["problem"] != problem:
            continue
        if row["evals"] == evals[0]:
            table.append(dict(system=row["system"], method=row["method"], seeds=row["seeds"],
                              wall_s=row["wall_s"]))
        table[-1][f"median@{row['evals']}"] = row["median_regret"]
        table[-1][f"IQR@{row['evals']}"] = f"{row['q25']:.3g}-{row['q75']:.3g}"
    columns = ["system", "method"] + [c for e in evals for c in (f"median@{e}", f"IQR@{e}")] + ["seeds", "wall_s"]
    print_table(table, columns,
                f"{problem}: simple regret after N evaluations (median, IQR = q25-q75; lower is better)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="branin and hartmann6 at 50/100 evaluations, 4 + 1 seeds, no GPSampler (smoke run)")
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=None)
    ap.add_argument("--evals", type=int, nargs="+", default=None, help="budgets (default 50 100 200)")
    ap.add_argument("--seeds", type=int, default=16, help="jaxhpo seeds (vmapped)")
    ap.add_argument("--gpbo-seeds", type=int, default=4, help="jaxhpo GPBO seeds (vmapped)")
    ap.add_argument("--competitor-seeds", type=int, default=5, help="Optuna / Hyperopt studies per cell")
    ap.add_argument("--gp-seeds", type=int, default=3, help="Optuna GPSampler studies per cell")
    ap.add_argument("--gp-all", action="store_true",
                    help="run the GP methods (jaxhpo's GPBO, Optuna's GPSampler) on the 10-D problems too")
    ap.add_argument("--skip-competitors", action="store_true")
    args = parse_args(ap, argv, rivals=lambda a: () if a.skip_competitors else ("optuna", "hyperopt"))

    if not args.skip_competitors:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        logging.getLogger("hyperopt").setLevel(logging.WARNING)

    if args.quick:
        problems = args.problems or list(SMALL)
        evals = sorted(args.evals or [50, 100])
        seeds, gpbo_seeds, cseeds, gp_seeds = 4, 2, 1, 0
    else:
        problems = args.problems or list(PROBLEMS)
        evals = sorted(args.evals or [50, 100, 200])
        seeds, gpbo_seeds, cseeds, gp_seeds = args.seeds, args.gpbo_seeds, args.competitor_seeds, args.gp_seeds

    rows = []
    for name in problems:
        for method, strategy in jaxhpo_methods(name, evals, args.gp_all).items():
            reg, wall = jaxhpo_regrets(name, strategy, evals, gpbo_seeds if method.startswith("GPBO") else seeds)
            rows += _summary(name, "jaxhpo", method, evals, reg, wall)
        if args.skip_competitors:
            continue
        samplers = ["RandomSampler", "TPESampler", "CmaEsSampler"]
        if (name in SMALL or args.gp_all) and gp_seeds > 0:
            samplers.append("GPSampler")
        for sampler in samplers:
            reg, wall = optuna_regrets(name, sampler, evals, gp_seeds if sampler == "GPSampler" else cseeds)
            rows += _summary(name, "Optuna", sampler, evals, reg, wall)
        reg, wall = hyperopt_regrets(name, evals, cseeds)
        rows += _summary(name, "Hyperopt", "tpe.suggest", evals, reg, wall)

    for name in problems:
        print_problem_table(name, rows, evals)
    write_results("search_quality", rows, extra={"args": vars(args), "problems": problems, "evals": evals},
                  packages=("optuna", "hyperopt", "torch", "cmaes", "scipy"))


if __name__ == "__main__":
    main()
