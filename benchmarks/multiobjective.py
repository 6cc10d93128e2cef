"""jaxhpo's NSGA2 against Optuna's NSGAIISampler: hypervolume at a fixed budget.

Problems (all objectives minimised):
  * ZDT1 and ZDT2, 30-D on ``[0, 1]^30``, reference point ``(1.1, 1.1)``
    (the best possible hypervolumes are ``1.21 - 1/3 ~= 0.8767`` and
    ``1.21 - 2/3 ~= 0.5433``).
  * Binh-Korn, 2-D on ``[0, 5] x [0, 3]`` with two constraints, reference
    point ``(140, 55)``.

Both run a population of ``POPSIZE`` for ``GENERATIONS`` generations (the
same number of evaluations) with their default operators otherwise. The
figure is the hypervolume of the Pareto front of every *feasible* point a
search evaluated, computed by ``jaxhpo.pareto.hypervolume`` for both sides;
median over seeds. jaxhpo's seeds run vmapped in one program; Optuna's
studies run one after another (``--optuna-seeds``, default 5, fewer than
jaxhpo's because each 2500-trial study takes tens of seconds). Uniform random
search with the same budget is listed as a floor. Target: ratio (jaxhpo /
Optuna) >= 0.95.

Run: ``python -m benchmarks.multiobjective [--quick] [--seeds N] [--optuna-seeds N]``.
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
from jaxhpo import pareto
from jaxhpo.strategies.nsga2 import NSGA2

POPSIZE = 50
GENERATIONS = 50

# ------------------------------------------------------------------ problems
ZDT_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(30)})
BK_SPACE = jaxhpo.Space(x=jaxhpo.Float(0.0, 5.0), y=jaxhpo.Float(0.0, 3.0))


def zdt1(x, xp=jnp):
    g = 1.0 + 9.0 * xp.mean(x[1:])
    return [x[0], g * (1.0 - xp.sqrt(x[0] / g))], []


def zdt2(x, xp=jnp):
    g = 1.0 + 9.0 * xp.mean(x[1:])
    return [x[0], g * (1.0 - (x[0] / g) ** 2)], []


def binh_korn(x, xp=jnp):
    a, b = x[0], x[1]
    f = [4.0 * a**2 + 4.0 * b**2, (a - 5.0) ** 2 + (b - 5.0) ** 2]
    g = [(a - 5.0) ** 2 + b**2 - 25.0, 7.7 - (a - 8.0) ** 2 - (b + 3.0) ** 2]
    return f, g


PROBLEMS = {
    # name: (space, function, number of constraints, reference point)
    "zdt1_30d": (ZDT_SPACE, zdt1, 0, (1.1, 1.1)),
    "zdt2_30d": (ZDT_SPACE, zdt2, 0, (1.1, 1.1)),
    "binh_korn": (BK_SPACE, binh_korn, 2, (140.0, 55.0)),
}


def _jax_objective(space, f):
    names = space.names

    def objective(p):
        obj, cons = f(jnp.stack([p[n] for n in names]).astype(jnp.float32))
        return jnp.stack([*obj, *cons])

    return objective


def _front_hypervolume(values: np.ndarray, num_constraints: int, ref) -> float:
    """Hypervolume of the feasible evaluated points ``values`` ``(N, 2 + c)``."""
    values = np.asarray(values, np.float32)
    feasible = np.all(values[:, 2:] <= 0.0, axis=1) if num_constraints else np.ones(len(values), bool)
    return float(pareto.hypervolume(values[:, :2], np.asarray(ref, np.float32), feasible))


# ------------------------------------------------------------------- jaxhpo
def jaxhpo_hypervolumes(name: str, seeds: int, generations: int, random: bool = False) -> np.ndarray:
    space, f, c, ref = PROBLEMS[name]
    objective = _jax_objective(space, f)
    ref = jnp.asarray(ref, jnp.float32)

    def front_hv(values):
        feasible = jnp.all(values[:, 2:] <= 0.0, axis=1)
        return pareto.hypervolume(values[:, :2], ref, feasible)

    if random:
        def one(k):
            x = space.sample(k, POPSIZE * generations)
            return front_hv(jax.vmap(objective)(space.decode(x)))
    else:
        strategy = NSGA2(space, POPSIZE, 2, c)

        def one(k):
            k_init, k_loop = jax.random.split(k)
            state = strategy.init(k_init)

            def generation(state, key):
                x, state = strategy.ask(key, state)
                values = jax.vmap(objective)(space.decode(x))
                return strategy.tell(state, x, values), values

            _, values = jax.lax.scan(generation, state, jax.random.split(k_loop, generations))
            return front_hv(values.reshape(-1, 2 + c))

    keys = jax.random.split(jax.random.key(2024), seeds)
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


# ------------------------------------------------------------------- optuna
def optuna_values(name: str, sampler, n_trials: int) -> np.ndarray:
    """``(n, 2 + c)`` objectives and constraints of one Optuna study's complete trials, in order."""
    import optuna

    space, f, c, _ = PROBLEMS[name]
    dims = space.dims

    def objective(trial):
        x = np.array([trial.suggest_float(n, d.low, d.high) for n, d in dims.items()])
        obj, cons = f(x, np)
        trial.set_user_attr("constraints", [float(g) for g in cons])
        # Optuna 5 reads constraints set on the trial (constraints_func is deprecated).
        for i, g in enumerate(cons):
            trial.set_constraint(str(i), float(g))
        return tuple(float(v) for v in obj)

    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return np.array([[*t.values, *t.user_attrs["constraints"]] for t in study.trials
                     if t.state == optuna.trial.TrialState.COMPLETE])


def optuna_hypervolumes(name: str, seeds: int, generations: int) -> tuple[np.ndarray, float]:
    import optuna

    _, _, c, ref = PROBLEMS[name]
    out, t0 = [], time.perf_counter()
    for s in range(seeds):
        sampler = optuna.samplers.NSGAIISampler(population_size=POPSIZE, seed=s)
        out.append(_front_hypervolume(optuna_values(name, sampler, POPSIZE * generations), c, ref))
    return np.asarray(out), (time.perf_counter() - t0) / seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 generations, 4 / 2 seeds (smoke run)")
    parser.add_argument("--seeds", type=int, default=16, help="jaxhpo seeds (vmapped)")
    parser.add_argument("--optuna-seeds", type=int, default=5, help="Optuna studies per problem")
    args = parse_args(parser, rivals=("optuna",))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    seeds, oseeds, gens = (4, 2, 10) if args.quick else (args.seeds, args.optuna_seeds, GENERATIONS)

    rows = []
    for name in PROBLEMS:
        t0 = time.perf_counter()
        ours = jaxhpo_hypervolumes(name, seeds, gens)
        t_ours = time.perf_counter() - t0
        rand = jaxhpo_hypervolumes(name, seeds, gens, random=True)
        theirs, t_theirs = optuna_hypervolumes(name, oseeds, gens)
        rows.append({
            "problem": name, "evals": POPSIZE * gens, "popsize": POPSIZE,
            "jaxhpo_median_hv": float(np.median(ours)),
            "optuna_median_hv": float(np.median(theirs)),
            "random_median_hv": float(np.median(rand)),
            # Both fronts can miss the reference box entirely in a short (--quick) run.
            "ratio": float(np.median(ours) / np.median(theirs)) if np.median(theirs) > 0 else None,
            "jaxhpo_seeds": seeds, "optuna_seeds": oseeds,
            "jaxhpo_s_all_seeds": t_ours, "optuna_s_per_seed": t_theirs,
            "jaxhpo_hv": ours.tolist(), "optuna_hv": theirs.tolist(), "random_hv": rand.tolist(),
        })
        print(name, rows[-1]["ratio"], flush=True)
    print_table(rows, ["problem", "evals", "jaxhpo_median_hv", "optuna_median_hv", "random_median_hv", "ratio",
                       "jaxhpo_seeds", "optuna_seeds", "jaxhpo_s_all_seeds", "optuna_s_per_seed"],
                title="Hypervolume of the feasible evaluated front (ratio = jaxhpo / Optuna; target >= 0.95)")
    write_results("multiobjective", rows, packages=("optuna",),
                  extra={"popsize": POPSIZE, "generations": gens,
                         "reference_points": {k: v[3] for k, v in PROBLEMS.items()}})


if __name__ == "__main__":
    main()
