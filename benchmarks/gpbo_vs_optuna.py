"""GPBO against Optuna's GPSampler and TPESampler: search quality and time per suggestion.

Quality: median simple regret (best value found minus the known minimum) over
several seeds on Branin (50 evaluations) and Hartmann-6 (100 evaluations, one
point per generation, and batches of 8 per generation for GPBO; Optuna runs
sequentially, one trial at a time, which is the stronger baseline). GPSampler
is told the objectives are deterministic (``deterministic_objective=True``);
GPBO runs with its default fitted noise and, one point per generation, with
``deterministic=True`` too. GPBO's seeds run vmapped in one program; Optuna's
run one after another.

Speed: time of one suggestion given N observations (random points of
Hartmann-6) for GPBO (one jitted ``ask`` on a buffer of capacity N, after
compilation, its kernel fit warm-started from a previous ask on the same
data) and Optuna's GPSampler (one ``study.ask`` on a study holding the same N
trials; its fit starts from the kernel cached by the previous ask).

  python -m benchmarks.gpbo_vs_optuna [--seeds 10] [--optuna-seeds 10] [--obs 100 200 1000] [--quick]

``--quick`` (a smoke run): 2 seeds each, 100 observations, 1 repeat.

Optuna (and torch, for GPSampler) are benchmark-only dependencies.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from jaxhpo.strategies.gpbo import GPBO

from ._common import median_time, parse_args, print_table, write_results

# ------------------------------------------------------------------ problems
BRANIN_MIN = 0.397887357729739
HARTMANN6_MIN = -3.322368011391339
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])


def branin_np(x1, x2):
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1 - t) * np.cos(x1) + 10.0


def hartmann6_np(x):
    x = np.asarray(x, np.float64)
    return -np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x[..., None, :] - _H_P) ** 2, -1)), -1)


BRANIN_SPACE = jaxhpo.Space(x1=jaxhpo.Float(-5.0, 10.0), x2=jaxhpo.Float(0.0, 15.0))
H6_SPACE = jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(6)})


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * jnp.pi**2), 5 / jnp.pi, 1 / (8 * jnp.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1 - t) * jnp.cos(x1) + 10.0


def hartmann6(p):
    x = jnp.stack([p[f"x{i}"] for i in range(6)])
    inner = jnp.sum(jnp.asarray(_H_A, jnp.float32) * (x - jnp.asarray(_H_P, jnp.float32)) ** 2, -1)
    return -jnp.sum(jnp.asarray(_H_ALPHA, jnp.float32) * jnp.exp(-inner))


PROBLEMS = {
    "branin": (BRANIN_SPACE, branin, BRANIN_MIN, 50),
    "hartmann6": (H6_SPACE, hartmann6, HARTMANN6_MIN, 100),
}


def optuna_objective(name):
    if name == "branin":
        return lambda t: branin_np(t.suggest_float("x1", -5.0, 10.0), t.suggest_float("x2", 0.0, 15.0))
    return lambda t: float(hartmann6_np([t.suggest_float(f"x{i}", 0.0, 1.0) for i in range(6)]))


# ------------------------------------------------------------------ quality
def gpbo_regrets(name, popsize, seeds, deterministic=False):
    space, f, fmin, evals = PROBLEMS[name]
    gens = -(-evals // popsize)
    s = GPBO(space, popsize=popsize, capacity=gens * popsize, deterministic=deterministic)
    keys = jax.random.split(jax.random.key(0), seeds)
    search = jax.jit(jax.vmap(lambda k: jaxhpo.run(s, f, k, gens, history="values")[1].values))
    t0 = time.perf_counter()
    values = np.asarray(jax.block_until_ready(search(keys)))  # (seeds, gens, popsize)
    wall = time.perf_counter() - t0
    best = values.reshape(seeds, -1)[:, :evals].min(axis=1)
    return best - fmin, wall


def optuna_regrets(name, sampler_name, seeds):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _, _, fmin, evals = PROBLEMS[name]
    out = []
    t0 = time.perf_counter()
    for seed in range(seeds):
        sampler = (optuna.samplers.GPSampler(seed=seed, deterministic_objective=True)
                   if sampler_name == "GPSampler" else optuna.samplers.TPESampler(seed=seed))
        study = optuna.create_study(sampler=sampler)
        study.optimize(optuna_objective(name), n_trials=evals)
        out.append(study.best_value - fmin)
    return np.array(out), time.perf_counter() - t0


# -------------------------------------------------------------------- speed
def random_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 6)).astype(np.float32)
    return x, hartmann6_np(x).astype(np.float32)


def gpbo_suggest_time(n, repeats):
    x, y = random_data(n)
    s = GPBO(H6_SPACE, popsize=1, capacity=n)
    state = s.init(jax.random.key(0))
    state = state._replace(generation=jnp.int32(10**6))  # past the initial design

    @jax.jit
    def fill(state, x, y):
        return jax.lax.fori_loop(0, n, lambda i, st: s.tell(st, x[i][None], y[i][None]), state)

    state = fill(state, jnp.asarray(x), jnp.asarray(y))
    ask = jax.jit(s.ask)
    # As in a running search (and as Optuna's GPSampler, which starts its fit
    # from the previous trial's kernel), the fit starts from the kernel the
    # previous ask fitted on the same data.
    _, fitted = ask(jax.random.key(0), state)
    state = state._replace(kernel=fitted.kernel)
    t, _ = median_time(lambda: jax.block_until_ready(ask(jax.random.key(1), state)),
                       repeats=repeats, warmup=1)
    return t


def optuna_suggest_time(n, repeats):
    import optuna
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = random_data(n)
    dists = {f"x{i}": FloatDistribution(0.0, 1.0) for i in range(6)}
    study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0, deterministic_objective=True))
    study.add_trials([
        optuna.trial.create_trial(params={f"x{i}": float(r[i]) for i in range(6)},
                                  distributions=dists, value=float(v))
        for r, v in zip(x, y)
    ])

    def suggest():
        trial = study.ask(dists)  # GPSampler fits and optimises here
        # Failed trials are ignored by the GP, so the data stays the same N points.
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    t, _ = median_time(suggest, repeats=repeats, warmup=1)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--optuna-seeds", type=int, default=10)
    ap.add_argument("--obs", type=int, nargs="+", default=[100, 200, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 100 observations, 1 repeat (smoke run)")
    args = parse_args(ap, argv, rivals=("optuna",))
    if args.quick:
        args.seeds, args.optuna_seeds, args.obs, args.repeats = 2, 2, [100], 1

    rows = []
    if not args.skip_quality:
        # GPSampler runs with deterministic_objective=True (the test functions
        # have no noise); GPBO both ways, its default (noise fitted) and as GPSampler.
        for name, popsize, deterministic in (("branin", 1, False), ("branin", 1, True), ("hartmann6", 1, False),
                                             ("hartmann6", 1, True), ("hartmann6", 8, False)):
            evals = PROBLEMS[name][3]
            reg, wall = gpbo_regrets(name, popsize, args.seeds, deterministic)
            label = f"GPBO popsize={popsize}" + (" deterministic" if deterministic else "")
            rows.append(dict(problem=name, evals=evals, method=label,
                             seeds=args.seeds, median_regret=float(np.median(reg)),
                             q25=float(np.quantile(reg, 0.25)), q75=float(np.quantile(reg, 0.75)),
                             wall_s=wall, regrets=reg.tolist()))
            print(rows[-1]["method"], name, rows[-1]["median_regret"], flush=True)
        for name in ("branin", "hartmann6"):
            evals = PROBLEMS[name][3]
            for sampler in ("GPSampler", "TPESampler"):
                seeds = args.optuna_seeds if sampler == "GPSampler" or args.quick else max(args.optuna_seeds, 10)
                reg, wall = optuna_regrets(name, sampler, seeds)
                rows.append(dict(problem=name, evals=evals, method=f"Optuna {sampler}", seeds=seeds,
                                 median_regret=float(np.median(reg)),
                                 q25=float(np.quantile(reg, 0.25)), q75=float(np.quantile(reg, 0.75)),
                                 wall_s=wall, regrets=reg.tolist()))
                print(rows[-1]["method"], name, rows[-1]["median_regret"], flush=True)
        print_table(rows, ["problem", "evals", "method", "seeds", "median_regret", "q25", "q75", "wall_s"],
                    "Simple regret (lower is better)")

    speed = []
    if not args.skip_speed:
        for n in args.obs:
            ours = gpbo_suggest_time(n, args.repeats)
            theirs = optuna_suggest_time(n, args.repeats)
            speed.append(dict(observations=n, gpbo_s=ours, optuna_gp_s=theirs, speedup=theirs / ours))
            print(speed[-1], flush=True)
        print_table(speed, ["observations", "gpbo_s", "optuna_gp_s", "speedup"],
                    "Time per suggestion, Hartmann-6 data (seconds; speedup = Optuna / GPBO)")
    # A part run alone keeps its own file, so that it does not replace the other's figures.
    name = "gpbo_vs_optuna" + ("_quality" if args.skip_speed else "_speed" if args.skip_quality else "")
    write_results(name, rows + speed, extra={"args": vars(args)},
                  packages=("optuna", "torch", "scipy"))


if __name__ == "__main__":
    main()
