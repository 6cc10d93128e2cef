"""Multi-objective search at small budgets: model-based (MOTPE, ParEGO GP-BO) against NSGA-II.

The problems of ``benchmarks.multiobjective`` (ZDT1 and ZDT2 in 30-D, the
constrained Binh-Korn), at 100 and 200 evaluations, where a population-based
method has had only a few generations. The figure is the hypervolume of the
feasible points evaluated within the budget (``jaxhpo.pareto.hypervolume``,
the same reference points), median over seeds:

  jaxhpo MOTPE       ``MOTPE(space, 1, capacity=200)``, one point per generation
  jaxhpo GPBO        ``GPBO(space, 4, capacity=200, num_objectives=2, num_constraints=c)``
                     (ParEGO scalarisations, constrained EI), 4 points per generation
  jaxhpo NSGA2       ``NSGA2(space, 20, 2, c)``
  optuna TPE         ``TPESampler`` with several objectives (Optuna's MOTPE), one trial at a time
  optuna NSGA-II     ``NSGAIISampler(population_size=20)``
  random             uniform points

jaxhpo's seeds run vmapped, one program per method; Optuna's studies one
after another. Claim checked: at these budgets the model-based searches reach
a larger hypervolume than NSGA-II. Run:
``python -m benchmarks.multiobjective_small_budget [--seeds 8] [--optuna-seeds 5] [--quick]``.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from benchmarks.multiobjective import PROBLEMS, _front_hypervolume, _jax_objective, optuna_values
from jaxhpo import pareto

BUDGETS = (100, 200)
NSGA_POP = 20
REFERENCE = {"zdt1_30d": (1.1, 11.0), "zdt2_30d": (1.1, 11.0), "binh_korn": (140.0, 55.0)}


def _problem(name: str):
    space, f, c, _ = PROBLEMS[name]
    return space, f, c, REFERENCE[name]


def _strategy(method: str, space, c: int, budget: int):
    if method == "MOTPE":
        return jaxhpo.MOTPE(space, 1, capacity=budget, num_objectives=2, num_constraints=c)
    if method == "GPBO":
        return jaxhpo.GPBO(space, 4, capacity=budget, num_objectives=2, num_constraints=c)
    return jaxhpo.NSGA2(space, NSGA_POP, 2, c)


def jaxhpo_hypervolumes(name: str, method: str, seeds: int, budget: int) -> tuple[np.ndarray, float]:
    """``(seeds, len(BUDGETS))`` hypervolumes at each budget, and the wall seconds of all seeds."""
    space, f, c, ref = _problem(name)
    objective = _jax_objective(space, f)
    ref = jnp.asarray(ref, jnp.float32)
    cuts = [b for b in BUDGETS if b <= budget]

    def hv_at(values, b):
        v = values[:b]
        return pareto.hypervolume(v[:, :2], ref, jnp.all(v[:, 2:] <= 0.0, axis=1))

    if method == "random":
        def one(k):
            values = jax.vmap(objective)(space.decode(space.sample(k, budget)))
            return jnp.stack([hv_at(values, b) for b in cuts])
    else:
        strategy = _strategy(method, space, c, budget)
        gens = -(-budget // strategy.popsize)

        def one(k):
            _, trace = jaxhpo.run(strategy, objective, k, gens, history="values")
            return jnp.stack([hv_at(trace.values.reshape(-1, 2 + c), b) for b in cuts])

    keys = jax.random.split(jax.random.key(2024), seeds)
    t0 = time.perf_counter()
    out = np.asarray(jax.block_until_ready(jax.jit(jax.vmap(one))(keys)), np.float64)
    return out, time.perf_counter() - t0


def optuna_hypervolumes(name: str, method: str, seeds: int, budget: int) -> tuple[np.ndarray, float]:
    import optuna

    _, _, c, ref = _problem(name)
    out, t0 = [], time.perf_counter()
    for s in range(seeds):
        sampler = (optuna.samplers.TPESampler(seed=s) if method == "TPE"
                   else optuna.samplers.NSGAIISampler(population_size=NSGA_POP, seed=s))
        values = optuna_values(name, sampler, budget)
        out.append([_front_hypervolume(values[:b], c, ref) for b in BUDGETS if b <= budget])
    return np.asarray(out), (time.perf_counter() - t0) / seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="jaxhpo seeds (vmapped)")
    parser.add_argument("--gpbo-seeds", type=int, default=4,
                        help="GPBO seeds (vmapped; it fits a 30-D GP per batch point and generation)")
    parser.add_argument("--optuna-seeds", type=int, default=5, help="Optuna studies per cell")
    parser.add_argument("--quick", action="store_true", help="100 evaluations, 2 seeds, ZDT1 only")
    args = parse_args(parser, rivals=("optuna",))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    budget = 100 if args.quick else max(BUDGETS)
    seeds, oseeds = (2, 1) if args.quick else (args.seeds, args.optuna_seeds)
    gseeds = min(seeds, args.gpbo_seeds)
    problems = ["zdt1_30d"] if args.quick else list(PROBLEMS)

    rows = []
    for name in problems:
        results = {}
        for method in ("MOTPE", "GPBO", "NSGA2", "random"):
            n = gseeds if method == "GPBO" else seeds
            hv, wall = jaxhpo_hypervolumes(name, method, n, budget)
            results[f"jaxhpo {method}" if method != "random" else "random"] = (hv, wall, n)
            print(name, method, np.median(hv, axis=0), f"{wall:.1f}s", flush=True)
        for method in ("TPE", "NSGA-II"):
            hv, per_seed = optuna_hypervolumes(name, method, oseeds, budget)
            results[f"optuna {method}"] = (hv, per_seed * oseeds, oseeds)
            print(name, "optuna", method, np.median(hv, axis=0), f"{per_seed:.1f}s/seed", flush=True)
        nsga = np.median(results["jaxhpo NSGA2"][0], axis=0)
        for label, (hv, wall, n) in results.items():
            med = np.median(hv, axis=0)
            for j, b in enumerate(b for b in BUDGETS if b <= budget):
                rows.append({"problem": name, "evals": b, "method": label, "seeds": n,
                             "median_hv": float(med[j]),
                             "q25": float(np.quantile(hv[:, j], 0.25)), "q75": float(np.quantile(hv[:, j], 0.75)),
                             "vs_jaxhpo_nsga2": float(med[j] / nsga[j]) if nsga[j] > 0 else float("nan"),
                             "wall_s_all_seeds": wall, "hv": hv[:, j].tolist()})
    rows.sort(key=lambda r: (r["problem"], r["evals"], -r["median_hv"]))
    print_table(rows, ["problem", "evals", "method", "seeds", "median_hv", "q25", "q75", "vs_jaxhpo_nsga2",
                       "wall_s_all_seeds"],
                title="Hypervolume of the feasible evaluated front at small budgets (larger is better)")
    write_results("multiobjective_small_budget", rows,
                  packages=("optuna",), extra={"budgets": list(BUDGETS), "nsga_popsize": NSGA_POP})


if __name__ == "__main__":
    main()
