"""Search overhead: evaluations/s on Branin and Hartmann6 for every jaxhpo strategy, the jit(vmap) limit and rivals.

On a cheap objective the cost of a search is the search itself, so
evaluations per second measure each system's overhead. For Branin (2-D) and
Hartmann6 (6-D), in one run, this measures:

* the limit: a hand-written ``jit`` of a ``lax.scan`` that draws a uniform
  batch of ``POP`` = 256 points, evaluates ``vmap(f)`` and keeps the
  minimum, for ``G`` = 1024 generations, and the same as a Python loop
  calling one compiled generation per batch; the faster of the two is the
  limit: what a random search costs written by hand. Strategies that draw
  fewer random numbers per point (a grid, Sobol, DE) can run faster than it
  ("vs limit" above 1).
* every public jaxhpo strategy, each as one compiled program
  ``jit(lambda key: jaxhpo.run(strategy, f, key, G, history="best"))``:
  RandomSearch, GridSearch (the largest full grid of at most ``POP * G``
  points), QuasiRandom (sobol, halton, lhs), CMAES (IPOP restarts, the
  default, and ``restarts=None``), SepCMAES, DifferentialEvolution,
  GeneticAlgorithm and LocalSearch at popsize ``POP`` for ``G``
  generations, as the limit. The model-based
  strategies run at their natural setting instead: TPE (univariate and
  multivariate) at popsize 1 and 8 with a buffer of the whole budget (200
  evaluations), GPBO at popsize 1 with 100 evaluations. Their cost per
  generation grows with the number of observations, so their figure is
  evaluations/s over a whole search of that many evaluations, not a steady
  rate.
* Optuna (``study.optimize`` on a Python objective): RandomSampler and
  CmaEsSampler (1000 trials), TPESampler (200), GPSampler (100);
  Hyperopt ``fmin`` with ``tpe.suggest`` and ``rand.suggest`` (200 trials);
  evosax 0.3 ``CMA_ES``, ``Sep_CMA_ES``, ``DifferentialEvolution`` and ``SimpleGA`` written
  as the same jitted ask -> evaluate -> tell scan at popsize ``POP`` (the
  evaluated point clipped to the cube); pycma ``CMAEvolutionStrategy``
  (``bounds=[0, 1]``, popsize ``POP``) in an ask/tell loop over a NumPy
  objective called per point, for at most ``G`` generations (it may stop
  earlier on its own termination criteria; its count of evaluations is used).

Every figure is evaluations (trials) per second of a whole search by wall
time, the median of repeats (5 for jitted programs, 3 for Python loops, 1
for GPSampler; runs under a few milliseconds repeat more, slow rows stop
once a time budget is spent; raw wall and CPU times are in the JSON). A
warm-up call excludes compilation (a short search of the same kind warms up
the Python rivals' imports); its time is recorded. Python rivals build a
fresh study per repeat.

``ratio_vs_limit`` = evals/s / the limit's evals/s (the limit at popsize
``POP``, also for rows with smaller batches). ``ratio_vs_family`` = a jaxhpo
row's evals/s / that of the fastest rival of the same family
(``family_best``): random (Optuna RandomSampler, Hyperopt rand), CMA-ES
(evosax, pycma, Optuna CmaEsSampler), separable CMA-ES (evosax
Sep_CMA_ES), DE and GA (evosax), TPE (Optuna
TPESampler, Hyperopt tpe) and GP (Optuna GPSampler); grid, quasi-random and
local search have no rival here. Budgets differ between rows (the table
states them), which matters for the model-based ones.

    python -m benchmarks search_overhead [--quick] [--problems branin,hartmann6]

``--quick`` (a smoke test) runs ``G`` = 256 generations, repeats jitted
programs 3 times and Python loops once, runs TPE at popsize 8 only with 50
evaluations, GPBO and GPSampler with 20, Optuna RandomSampler and
CmaEsSampler with 200 trials and Hyperopt with 50; the model-based rows'
ratios depend on the budget, so they differ from the full run's. Raw
figures go to ``results/search_overhead.json`` (``search_overhead_quick.json``
with ``--quick``, so a smoke test never replaces the full figures). The
rivals come with ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from benchmarks.gpbo_vs_optuna import (
    BRANIN_SPACE, H6_SPACE, branin, branin_np, hartmann6, hartmann6_np, optuna_objective,
)

POP = 256
# jaxhpo's CMAES / SepCMAES default step (cube units), which the rivals start with too.
CMAES_SIGMA0 = jaxhpo.CMAES(H6_SPACE, 4).sigma0

# name -> (space, jax objective on the decoded dict, box low, box high)
PROBLEMS = {
    "branin": (BRANIN_SPACE, branin, np.array([-5.0, 0.0]), np.array([10.0, 15.0])),
    "hartmann6": (H6_SPACE, hartmann6, np.zeros(6), np.ones(6)),
}

FAMILY = {
    "RandomSearch": "random", "CMAES": "cmaes", "CMAES restarts=None": "cmaes", "SepCMAES": "sepcmaes",
    "DifferentialEvolution": "de", "GeneticAlgorithm": "ga",
    "TPE": "tpe", "TPE multivariate": "tpe", "GPBO": "gp",
}


def names(space):
    return list(space.dims)


def cube_objective(name):
    """JAX objective of a cube point ``u`` (what the limit and evosax evaluate)."""
    space, f, low, high = PROBLEMS[name]
    keys, low, high = names(space), jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)

    def f_cube(u):
        x = low + u * (high - low)
        return f({k: x[i] for i, k in enumerate(keys)})

    return f_cube


def numpy_cube_objective(name):
    """NumPy objective of one cube point, for pycma."""
    _, _, low, high = PROBLEMS[name]
    if name == "branin":
        return lambda u: float(branin_np(*(low + np.asarray(u) * (high - low))))
    return lambda u: float(hartmann6_np(np.asarray(u)))


def timed(fn, repeats, budget_s, warmup=None, short_s=0.25, max_repeats=25):
    """Median wall seconds of ``fn()`` (blocking), raw wall and CPU seconds, warm-up seconds, last output.

    ``warmup()`` (default ``fn()``: compilation for jitted programs) runs
    first, untimed. Repeats stop early, after at least one, once
    ``budget_s`` is spent; short runs repeat more (up to ``max_repeats``,
    until ``short_s`` is spent), since a millisecond on a shared machine is
    mostly noise.
    """
    t0 = time.perf_counter()
    out = (warmup or fn)()
    first = time.perf_counter() - t0
    wall, cpu = [], []
    while ((len(wall) < repeats and (not wall or sum(wall) < budget_s))
           or (sum(wall) < short_s and len(wall) < max_repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), wall, cpu, first, out


# ------------------------------------------------------------------ the limit
def limit_search(name, popsize, generations):
    f_cube = cube_objective(name)
    dim = PROBLEMS[name][0].dim

    @jax.jit
    def go(key):
        def body(best, key):
            values = jax.vmap(f_cube)(jax.random.uniform(key, (popsize, dim)))
            return jnp.minimum(best, jnp.min(values)), None

        best, _ = jax.lax.scan(body, jnp.float32(jnp.inf), jax.random.split(key, generations))
        return best, jnp.int32(popsize * generations)

    return go


def limit_step_loop(name, popsize, generations):
    """The same search as a Python loop calling one compiled generation per batch."""
    f_cube = cube_objective(name)
    dim = PROBLEMS[name][0].dim

    @jax.jit
    def step(best, key):
        return jnp.minimum(best, jnp.min(jax.vmap(f_cube)(jax.random.uniform(key, (popsize, dim)))))

    def go(key):
        best = jnp.float32(jnp.inf)
        for k in jax.random.split(key, generations):
            best = step(best, k)
        return best, popsize * generations

    return go


# ------------------------------------------------------------------ jaxhpo
def jaxhpo_rows(name, generations, tpe_evals, tpe_popsizes, gpbo_evals):
    """(method, strategy, generations) for every public strategy."""
    space = PROBLEMS[name][0]
    grid_num = int((POP * generations) ** (1 / space.dim) + 1e-9)
    grid = jaxhpo.GridSearch(space, POP, num=grid_num)
    out = [
        ("RandomSearch", jaxhpo.RandomSearch(space, POP), generations),
        (f"GridSearch num={grid_num}", grid, grid.num_generations),
        *[(f"QuasiRandom {m}", jaxhpo.QuasiRandom(space, POP, m), generations) for m in ("sobol", "halton", "lhs")],
        ("CMAES", jaxhpo.CMAES(space, POP), generations),
        # IPOP's population buffer (POP * 2**6 rows) is most of CMAES's cost at
        # this popsize; evosax's and pycma's loops here never restart either.
        ("CMAES restarts=None", jaxhpo.CMAES(space, POP, restarts=None), generations),
        ("SepCMAES", jaxhpo.SepCMAES(space, POP), generations),
        ("DifferentialEvolution", jaxhpo.DifferentialEvolution(space, POP), generations),
        ("GeneticAlgorithm", jaxhpo.GeneticAlgorithm(space, POP), generations),
        ("LocalSearch", jaxhpo.LocalSearch(space, POP), generations),
    ]
    for multivariate in (False, True):
        for popsize in tpe_popsizes:
            gens = -(-tpe_evals // popsize)
            s = jaxhpo.TPE(space, popsize, capacity=gens * popsize, multivariate=multivariate)
            out.append(("TPE multivariate" if multivariate else "TPE", s, gens))
    out.append(("GPBO", jaxhpo.GPBO(space, 1, capacity=gpbo_evals), gpbo_evals))
    return out


def jaxhpo_search(name, strategy, generations):
    f = PROBLEMS[name][1]

    @jax.jit
    def go(key):
        _, trace = jaxhpo.run(strategy, f, key, generations, history="best")
        # num_valid excludes the grid's padding rows.
        return trace.best_value[-1], jnp.sum(trace.num_valid)

    return go


# ------------------------------------------------------------------ evosax
def evosax_search(name, algo, popsize, generations):
    from evosax.algorithms import CMA_ES, DifferentialEvolution as EvoDE, Sep_CMA_ES, SimpleGA

    f_cube = cube_objective(name)
    dim = PROBLEMS[name][0].dim
    evaluate = jax.vmap(lambda u: f_cube(jnp.clip(u, 0.0, 1.0)))
    solution = jnp.zeros(dim)
    es = {"CMA_ES": CMA_ES, "Sep_CMA_ES": Sep_CMA_ES, "DifferentialEvolution": EvoDE, "SimpleGA": SimpleGA}[algo](
        population_size=popsize, solution=solution)
    params = es.default_params
    distribution = algo in ("CMA_ES", "Sep_CMA_ES")
    if distribution:
        # The start jaxhpo's CMAES uses: the cube's centre, its default step.
        params = params.replace(std_init=jnp.asarray(CMAES_SIGMA0))

    @jax.jit
    def go(key):
        k_pop, k_init, k_loop = jax.random.split(key, 3)
        if distribution:
            state = es.init(k_init, jnp.full(dim, 0.5), params)
        else:
            # evosax's population-based strategies start from an evaluated population.
            pop = jax.random.uniform(k_pop, (popsize, dim))
            state = es.init(k_init, pop, evaluate(pop), params)

        def body(state, key):
            k_ask, k_tell = jax.random.split(key)
            x, state = es.ask(k_ask, state, params)
            state, _ = es.tell(k_tell, x, evaluate(x), state, params)
            return state, None

        state, _ = jax.lax.scan(body, state, jax.random.split(k_loop, generations))
        return state.best_fitness, jnp.int32(popsize * generations)

    return go


# ------------------------------------------------------------------ Python rivals
def optuna_search(name, sampler_name, trials):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {
        "RandomSampler": lambda: optuna.samplers.RandomSampler(seed=0),
        "TPESampler": lambda: optuna.samplers.TPESampler(seed=0),
        "CmaEsSampler": lambda: optuna.samplers.CmaEsSampler(seed=0),
        "GPSampler": lambda: optuna.samplers.GPSampler(seed=0, deterministic_objective=True),
    }
    objective = optuna_objective(name)

    def go(trials=trials):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study = optuna.create_study(sampler=samplers[sampler_name]())
        study.optimize(objective, n_trials=trials)
        return study.best_value, trials

    return go


def hyperopt_search(name, algo, trials):
    import hyperopt
    from hyperopt import hp

    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    space, _, low, high = PROBLEMS[name]
    keys = names(space)
    hspace = {k: hp.uniform(k, float(lo), float(hi)) for k, lo, hi in zip(keys, low, high)}
    if name == "branin":
        def objective(p):
            return float(branin_np(p["x1"], p["x2"]))
    else:
        def objective(p):
            return float(hartmann6_np(np.array([p[k] for k in keys])))
    suggest = {"tpe": hyperopt.tpe.suggest, "rand": hyperopt.rand.suggest}[algo]

    def go(trials=trials):
        t = hyperopt.Trials()
        hyperopt.fmin(objective, hspace, algo=suggest, max_evals=trials, trials=t,
                      rstate=np.random.default_rng(0), show_progressbar=False)
        return min(t.losses()), len(t.trials)

    return go


def pycma_search(name, popsize, generations):
    import cma

    f_np = numpy_cube_objective(name)
    dim = PROBLEMS[name][0].dim

    def go(generations=generations):
        es = cma.CMAEvolutionStrategy(np.full(dim, 0.5), CMAES_SIGMA0, {
            "popsize": popsize, "bounds": [0, 1], "seed": 1, "verbose": -9, "maxiter": generations})
        while not es.stop():
            xs = es.ask()
            es.tell(xs, [f_np(x) for x in xs])
        return es.result.fbest, es.countevals

    return go


def rivals(name, args):
    """(system, method, family, popsize, fn, warmup, repeats, budget_s) for every rival.

    The Python rivals warm up (imports, first-use caches) with a short search
    of the same kind rather than a whole one.
    """
    q = args.quick
    py_rep = 1 if q else 3
    n_random = n_cmaes = 200 if q else 1000
    out = []
    for method, fam, n, repeats, budget in (("RandomSampler", "random", n_random, py_rep, 20),
                                            ("TPESampler", "tpe", args.tpe_evals, py_rep, 20),
                                            ("CmaEsSampler", "cmaes", n_cmaes, py_rep, 20),
                                            # of the order of a second per trial: one repeat
                                            ("GPSampler", "gp", args.gpbo_evals, 1, 0)):
        go = optuna_search(name, method, n)
        out.append(("optuna", method, fam, 1, go, lambda go=go: go(12), repeats, budget))
    for algo, fam in (("tpe", "tpe"), ("rand", "random")):
        go = hyperopt_search(name, algo, args.tpe_evals)
        out.append(("hyperopt", f"fmin {algo}.suggest", fam, 1, go, lambda go=go: go(12), py_rep, 20))
    go = pycma_search(name, POP, args.generations)
    out.append(("pycma", "CMAEvolutionStrategy", "cmaes", POP, go, lambda go=go: go(2), py_rep, 20))
    for algo, fam in (("CMA_ES", "cmaes"), ("Sep_CMA_ES", "sepcmaes"), ("DifferentialEvolution", "de"),
                      ("SimpleGA", "ga")):
        go = evosax_search(name, algo, POP, args.generations)
        out.append(("evosax", algo, fam, POP, lambda go=go: jax.block_until_ready(go(jax.random.key(0))), None,
                    args.repeats, 30))
    return out


# ------------------------------------------------------------------ main
def measure(row, fn, repeats, budget_s, warmup=None):
    median, wall, cpu, first, (best, evals) = timed(fn, repeats, budget_s, warmup)
    evals = int(evals)
    row.update(evaluations=evals, evals_per_s=evals / median, best_value=float(best),
               warmup_s=first, repeats=len(wall), raw_wall_s=wall, raw_cpu_s=cpu)
    print(f"{row['problem']}: {row['system']} {row['method']} popsize={row['popsize']}: "
          f"{row['evals_per_s']:.4g} evals/s ({evals} evaluations, warm-up {first:.3g} s)", flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller budgets and fewer repeats (smoke test)")
    ap.add_argument("--problems", default="branin,hartmann6")
    ap.add_argument("--generations", type=int, default=None,
                    help=f"generations at popsize {POP} (default 1024; --quick 256)")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of jitted programs (default 5; --quick 3)")
    args = parse_args(ap, argv, rivals=("optuna", "hyperopt", "evosax", "cma"))
    args.generations = args.generations or (256 if args.quick else 1024)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.tpe_evals = 50 if args.quick else 200
    # Each TPE row compiles for ~10 s; --quick keeps one batch size.
    args.tpe_popsizes = (8,) if args.quick else (1, 8)
    args.gpbo_evals = 20 if args.quick else 100

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    key = jax.random.key(0)
    rows = []
    for name in args.problems.split(","):
        prows = []
        # The limit: the faster of two hand-written forms.
        limits = []
        for method, go in (("jit(scan(vmap f))", limit_search(name, POP, args.generations)),
                           ("loop of jit(vmap f) steps", limit_step_loop(name, POP, args.generations))):
            limits.append(measure(dict(problem=name, system="limit", method=method, popsize=POP),
                                  lambda go=go: jax.block_until_ready(go(key)), args.repeats, 30))
        prows += limits
        limit = max(limits, key=lambda r: r["evals_per_s"])
        for method, strategy, gens in jaxhpo_rows(name, args.generations, args.tpe_evals, args.tpe_popsizes,
                                                  args.gpbo_evals):
            go = jaxhpo_search(name, strategy, gens)
            # The model-based searches take seconds: a smaller budget for repeats.
            budget = 20 if method.startswith(("TPE", "GPBO")) else 30
            prows.append(measure(dict(problem=name, system="jaxhpo", method=method, popsize=strategy.popsize,
                                      family=FAMILY.get(method)),
                                 lambda go=go: jax.block_until_ready(go(key)), args.repeats, budget))
        for system, method, fam, popsize, fn, warmup, repeats, budget in rivals(name, args):
            prows.append(measure(dict(problem=name, system=system, method=method, popsize=popsize, family=fam),
                                 fn, repeats, budget, warmup))
        best_rival = {}
        for r in prows:
            if r["system"] not in ("jaxhpo", "limit") and r["evals_per_s"] > best_rival.get(r["family"], {}).get(
                    "evals_per_s", 0.0):
                best_rival[r["family"]] = r
        for r in prows:
            r["ratio_vs_limit"] = r["evals_per_s"] / limit["evals_per_s"]
            rival = best_rival.get(r.get("family")) if r["system"] == "jaxhpo" else None
            if rival is not None:
                r["ratio_vs_family"] = r["evals_per_s"] / rival["evals_per_s"]
                r["family_best"] = f"{rival['system']} {rival['method']}"
        print_table(prows, ["system", "method", "popsize", "evaluations", "evals_per_s", "ratio_vs_limit",
                            "ratio_vs_family", "family_best"],
                    title=f"{name}: evaluations/s of a whole search (wall time, median of repeats, "
                          f"compile excluded); ratio_vs_limit against the faster "
                          f"limit ({limit['method']}) at popsize {POP}, ratio_vs_family against family_best")
        rows += prows
    extra = {"popsize": POP, "generations": args.generations, "repeats": args.repeats,
             "tpe_evaluations": args.tpe_evals, "tpe_popsizes": list(args.tpe_popsizes),
             "gpbo_evaluations": args.gpbo_evals, "quick": args.quick,
             "load_average_before": load_before,
             "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None}
    write_results("search_overhead", rows, extra,
                  packages=("optuna", "hyperopt", "evosax", "cma", "cmaes", "torch", "scipy"))


if __name__ == "__main__":
    main()
