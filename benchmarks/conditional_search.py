"""Search quality on a conditional space: jaxhpo's TPE and GP-BO against Optuna's and Hyperopt's TPE.

A choice between three branches, each with its own two parameters, active
only in their branch (as an optimiser's choice and its settings). The
branches' minima: ``a`` 0.3 (a wide bowl), ``b`` 0.2 (narrower), ``c`` 0
(narrowest, so the easiest branch to leave for ``b``). The figure is the
simple regret (the best value so far, the minimum being 0) after 25, 50 and
100 evaluations, median and quartiles over seeds; the share of runs left in
branch ``b`` (regret >= 0.2) is the stall rate.

  jaxhpo TPE               ``TPE(space, 1, capacity=100)``, multivariate (default) and independent
  jaxhpo GPBO              ``GPBO(space, 1, capacity=100)``
  jaxhpo random            ``RandomSearch(space, 1)``
  optuna TPE               ``TPESampler(seed=s)`` (multivariate by default: with a dynamic space
                           Optuna samples the conditional parameters independently), one trial at a time
  hyperopt TPE             ``tpe.suggest`` over ``hp.choice`` of the three branches' sub-spaces

jaxhpo's seeds run vmapped, one program per method. Run:
``python -m benchmarks conditional_search [--seeds 64] [--gpbo-seeds 16] [--optuna-seeds 30] [--quick]``.
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

BUDGETS = (25, 50, 100)
BRANCHES = ("a", "b", "c")
SPACE = jaxhpo.Space(
    branch=jaxhpo.Categorical(list(BRANCHES)),
    **{f"{v}{b}": jaxhpo.Float(0.0, 1.0, when={"branch": b}) for b in BRANCHES for v in "xy"},
)
STALL = 0.2  # branch b's minimum


def branch_value(b, x, y, xp=np):
    """The objective: branch index ``b`` (0, 1, 2) and its two parameters."""
    fa = 0.3 + (x - 0.5) ** 2 + (y - 0.5) ** 2
    fb = 0.2 + 3.0 * ((x - 0.8) ** 2 + (y - 0.1) ** 2)
    fc = 10.0 * ((x - 0.2) ** 2 + (y - 0.8) ** 2)
    return xp.where(b == 0, fa, xp.where(b == 1, fb, fc))


def objective(p):
    """jaxhpo's objective: decoded parameters (inactive ones hold any value)."""
    b = p["branch"]
    pick = lambda v: jnp.where(b == 0, p[f"{v}a"], jnp.where(b == 1, p[f"{v}b"], p[f"{v}c"]))  # noqa: E731
    return branch_value(b, pick("x"), pick("y"), jnp)


def _best_at(values: np.ndarray, budgets) -> np.ndarray:
    best = np.minimum.accumulate(np.asarray(values, np.float64), axis=-1)
    return best[..., [b - 1 for b in budgets]]


def jaxhpo_regrets(strategy, seeds: int, budget: int) -> tuple[np.ndarray, float]:
    def one(key):
        return jaxhpo.run(strategy, objective, key, budget, history="values")[1].values

    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    values = np.asarray(jax.block_until_ready(jax.jit(jax.vmap(one))(keys))).reshape(seeds, -1)
    return _best_at(values, [b for b in BUDGETS if b <= budget]), time.perf_counter() - t0


def optuna_regrets(seeds: int, budget: int) -> tuple[np.ndarray, float]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def obj(t):
        b = t.suggest_categorical("branch", list(BRANCHES))
        x, y = t.suggest_float("x" + b, 0.0, 1.0), t.suggest_float("y" + b, 0.0, 1.0)
        return float(branch_value(BRANCHES.index(b), x, y))

    out, t0 = [], time.perf_counter()
    for s in range(seeds):
        with warnings.catch_warnings():  # multivariate with a dynamic space: Optuna warns each trial
            warnings.simplefilter("ignore")
            study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=s))
            study.optimize(obj, n_trials=budget)
        out.append([t.value for t in study.trials])
    return _best_at(np.array(out), [b for b in BUDGETS if b <= budget]), time.perf_counter() - t0


def hyperopt_regrets(seeds: int, budget: int) -> tuple[np.ndarray, float]:
    from hyperopt import Trials, fmin, hp, tpe

    logging.getLogger("hyperopt").setLevel(logging.WARNING)
    space = hp.choice("branch", [
        {"b": i, "x": hp.uniform(f"x{b}", 0.0, 1.0), "y": hp.uniform(f"y{b}", 0.0, 1.0)}
        for i, b in enumerate(BRANCHES)
    ])
    out, t0 = [], time.perf_counter()
    for s in range(seeds):
        trials = Trials()
        fmin(lambda p: float(branch_value(p["b"], p["x"], p["y"])), space, algo=tpe.suggest,
             max_evals=budget, trials=trials, rstate=np.random.default_rng(s), show_progressbar=False)
        out.append(trials.losses())
    return _best_at(np.array(out), [b for b in BUDGETS if b <= budget]), time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=64, help="jaxhpo seeds (vmapped)")
    ap.add_argument("--gpbo-seeds", type=int, default=16)
    ap.add_argument("--optuna-seeds", type=int, default=30, help="Optuna and Hyperopt seeds")
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    args = parse_args(ap, argv, rivals=("optuna", "hyperopt"))
    budget = 25 if args.quick else max(BUDGETS)
    seeds, gp_seeds, rival_seeds = (2, 2, 2) if args.quick else (args.seeds, args.gpbo_seeds, args.optuna_seeds)
    budgets = [b for b in BUDGETS if b <= budget]

    methods = {
        "jaxhpo TPE (multivariate)": lambda: jaxhpo_regrets(jaxhpo.TPE(SPACE, 1, capacity=budget), seeds, budget),
        "jaxhpo TPE (independent)": lambda: jaxhpo_regrets(
            jaxhpo.TPE(SPACE, 1, capacity=budget, multivariate=False), seeds, budget),
        "jaxhpo GPBO": lambda: jaxhpo_regrets(jaxhpo.GPBO(SPACE, 1, capacity=budget), gp_seeds, budget),
        "jaxhpo random": lambda: jaxhpo_regrets(jaxhpo.RandomSearch(SPACE, 1), seeds, budget),
        "optuna TPE": lambda: optuna_regrets(rival_seeds, budget),
        "hyperopt TPE": lambda: hyperopt_regrets(rival_seeds, budget),
    }
    rows = []
    for name, fn in methods.items():
        reg, wall = fn()
        row = {"method": name, "seeds": reg.shape[0], "wall_s": wall, "regrets": reg.tolist()}
        for j, b in enumerate(budgets):
            q25, q50, q75 = np.percentile(reg[:, j], [25, 50, 75])
            row[f"@{b}"] = f"{q50:.3g} ({q25:.3g}-{q75:.3g})"
            row[f"stalled@{b}"] = float(np.mean(reg[:, j] >= STALL))
        rows.append(row)
        print(f"{name}: done in {wall:.1f} s", flush=True)
    columns = ["method", "seeds"] + [f"@{b}" for b in budgets] + [f"stalled@{budgets[-1]}"]
    print_table(rows, columns, "simple regret, median (quartiles); stalled: share of runs at >= 0.2")
    write_results("conditional_search", rows, {"budgets": budgets, "stall": STALL}, packages=("optuna", "hyperopt"))


if __name__ == "__main__":
    main()
