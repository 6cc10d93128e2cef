"""jaxhpo's TPE against Optuna's TPESampler: search quality and time per suggestion.

(a) Quality: median simple regret (best value found minus the known
    minimum) after 200 evaluations, one per generation, on Hartmann6 (6-D,
    ``[0, 1]^6``) and Ackley-10D (``[-32.768, 32.768]^10``) by default, or
    Branin (``--problems branin``: 2-D, three global minima), for the
    independent (``multivariate=False``) and the multivariate TPE. Both use
    10 startup points (jaxhpo: scrambled Sobol; Optuna: random) and their
    defaults otherwise. jaxhpo's seeds run vmapped in one program; Optuna's
    run one study after another (``--optuna-seeds``, default 300; jaxhpo 512).
    Target: jaxhpo's median regret within 1.25x Optuna's. The regret
    distributions are heavy-tailed and, on Hartmann6, bimodal: a run either
    reaches the global basin or stalls near the local minimum at -3.2032
    (regret 0.119), so the median sits near that gap and moves a lot between
    seed sets: Optuna's share of stalled runs was 21% over its seeds 0-149,
    39% over 1000-1099 and 35% over 2000-2149, which moved its median from
    0.033 to 0.040. Hence the large seed counts. The table also gives both
    quartiles, the share of runs with regret above 0.1 (on Hartmann6: stalled
    outside the global basin) and the two-sided Mann-Whitney U p-value of the
    two regret samples (a small p means the distributions differ).
(b) Speed: time per suggestion with 100, 1000 and 10000 observations of
    Hartmann6 already in the model. jaxhpo: one jitted ``ask`` on a buffer
    of exactly that many rows (compile excluded). Optuna: the same
    observations added with ``create_trial`` + ``add_trials``, then the time
    of ``study.ask(distributions)`` (each timed trial is then told FAIL, so
    the next ask sees the same data). Target: >= 10x faster at 10000.
    Medians and minima over repeats are both reported (minima are steadier
    on a shared machine).

Run: ``python -m benchmarks.tpe_vs_optuna [--quick] [--optuna-seeds N] [--seeds N] [--problems ...]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from scipy.stats import mannwhitneyu

import jaxhpo
from benchmarks._common import median_time, parse_args, print_table, write_results
from jaxhpo.strategies.tpe import TPE

EVALS = 200
N_STARTUP = 10

# ------------------------------------------------------------------ problems
_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
               [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                      [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN6_MIN = -3.32236801141551


def hartmann6(x, xp=jnp):
    return -xp.sum(_ALPHA * xp.exp(-xp.sum(_A * (x - _P) ** 2, axis=-1)))


def ackley(x, xp=jnp):
    d = x.shape[-1]
    return (-20.0 * xp.exp(-0.2 * xp.sqrt(xp.sum(x * x) / d)) - xp.exp(xp.sum(xp.cos(2 * math.pi * x)) / d)
            + 20.0 + math.e)


def branin(x, xp=jnp):
    a, b, c, r, s, t = 1.0, 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * xp.cos(x[0]) + s


PROBLEMS = {
    "hartmann6": (jaxhpo.Space({f"x{i}": jaxhpo.Float(0.0, 1.0) for i in range(6)}), hartmann6, HARTMANN6_MIN),
    "ackley10": (jaxhpo.Space({f"x{i}": jaxhpo.Float(-32.768, 32.768) for i in range(10)}), ackley, 0.0),
    "branin": (jaxhpo.Space(x0=jaxhpo.Float(-5.0, 10.0), x1=jaxhpo.Float(0.0, 15.0)), branin, 0.397887357729739),
}


def _jax_objective(space, f):
    names = space.names
    return lambda p: f(jnp.stack([p[n] for n in names]).astype(jnp.float32))


# ------------------------------------------------------------------- quality
def jaxhpo_regrets(name: str, multivariate: bool, seeds: int) -> np.ndarray:
    space, f, fmin = PROBLEMS[name]
    strategy = TPE(space, 1, capacity=EVALS, multivariate=multivariate, n_startup=N_STARTUP)
    objective = _jax_objective(space, f)
    keys = jax.random.split(jax.random.key(2024), seeds)
    run = jax.jit(jax.vmap(lambda k: jaxhpo.run(strategy, objective, k, EVALS)[1].best_value[-1]))
    best = np.asarray(run(keys), np.float64)
    # Re-evaluate the best value in float64 is unnecessary: regret is >= 1e-4 here.
    return best - fmin


def optuna_regrets(name: str, multivariate: bool, seeds: int) -> tuple[np.ndarray, float]:
    import optuna

    space, f, fmin = PROBLEMS[name]
    dims = space.dims

    def objective(trial):
        x = np.array([trial.suggest_float(n, d.low, d.high) for n, d in dims.items()])
        return float(f(x, np))

    out, t0 = [], time.perf_counter()
    for s in range(seeds):
        sampler = optuna.samplers.TPESampler(n_startup_trials=N_STARTUP, multivariate=multivariate, seed=s)
        study = optuna.create_study(sampler=sampler)
        study.optimize(objective, n_trials=EVALS)
        out.append(study.best_value - fmin)
    return np.asarray(out), (time.perf_counter() - t0) / seeds


# --------------------------------------------------------------------- speed
def _observations(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 6))
    y = np.array([hartmann6(xi, np) for xi in x])
    return x.astype(np.float32), y.astype(np.float32)


def jaxhpo_suggest_time(n: int, multivariate: bool, repeats: int) -> tuple[float, float]:
    space = PROBLEMS["hartmann6"][0]
    s = TPE(space, 1, capacity=n, multivariate=multivariate)
    x, y = _observations(n)
    state = jax.jit(s.warm_start)(s.init(jax.random.key(0)), x, y)
    ask = jax.jit(s.ask)
    key = jax.random.key(1)
    t, times = median_time(lambda: jax.block_until_ready(ask(key, state)[0]), repeats=repeats, warmup=2)
    return t, min(times)


def optuna_suggest_time(n: int, multivariate: bool, repeats: int) -> tuple[float, float]:
    import optuna
    from optuna.distributions import FloatDistribution

    space = PROBLEMS["hartmann6"][0]
    dists = {name: FloatDistribution(0.0, 1.0) for name in space.names}
    x, y = _observations(n)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(
        n_startup_trials=N_STARTUP, multivariate=multivariate, seed=0))
    study.add_trials([
        optuna.trial.create_trial(params={k: float(v) for k, v in zip(space.names, xi)},
                                  distributions=dists, value=float(yi))
        for xi, yi in zip(x, y)
    ])

    def suggest():
        trial = study.ask(dists)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)

    t, times = median_time(suggest, repeats=repeats, warmup=1)
    return t, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and sizes (smoke run)")
    parser.add_argument("--seeds", type=int, default=512, help="jaxhpo seeds (vmapped)")
    parser.add_argument("--optuna-seeds", type=int, default=300, help="Optuna studies per cell")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=["hartmann6", "ackley10"])
    args = parse_args(parser, rivals=("optuna",))
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    seeds, oseeds = (4, 2) if args.quick else (args.seeds, args.optuna_seeds)

    quality, speed = [], []
    if not args.skip_quality:
        for name in args.problems:
            for mv in (False, True):
                t0 = time.perf_counter()
                ours = jaxhpo_regrets(name, mv, seeds)
                t_ours = time.perf_counter() - t0
                theirs, t_theirs = optuna_regrets(name, mv, oseeds)
                q_ours, q_theirs = np.percentile(ours, [25, 75]), np.percentile(theirs, [25, 75])
                quality.append({
                    "problem": name, "multivariate": mv, "evals": EVALS,
                    "jaxhpo_median_regret": float(np.median(ours)),
                    "jaxhpo_iqr": f"{q_ours[0]:.4g}-{q_ours[1]:.4g}",
                    "optuna_median_regret": float(np.median(theirs)),
                    "optuna_iqr": f"{q_theirs[0]:.4g}-{q_theirs[1]:.4g}",
                    "ratio": float(np.median(ours) / np.median(theirs)),
                    "jaxhpo_share_above_0.1": float(np.mean(ours > 0.1)),
                    "optuna_share_above_0.1": float(np.mean(theirs > 0.1)),
                    "mannwhitney_p": float(mannwhitneyu(ours, theirs).pvalue),
                    "jaxhpo_seeds": seeds, "optuna_seeds": oseeds,
                    "jaxhpo_s_all_seeds": t_ours, "optuna_s_per_seed": t_theirs,
                    "jaxhpo_regrets": ours.tolist(), "optuna_regrets": theirs.tolist(),
                })
                print(quality[-1]["problem"], mv, quality[-1]["ratio"], flush=True)
        print_table(quality, ["problem", "multivariate", "jaxhpo_median_regret", "jaxhpo_iqr",
                              "optuna_median_regret", "optuna_iqr", "ratio", "jaxhpo_share_above_0.1",
                              "optuna_share_above_0.1", "mannwhitney_p", "jaxhpo_seeds",
                              "optuna_seeds", "jaxhpo_s_all_seeds", "optuna_s_per_seed"],
                    title=f"Median simple regret after {EVALS} evaluations (ratio = jaxhpo / Optuna; target <= 1.25)")

    if not args.skip_speed:
        sizes = (100, 1000) if args.quick else (100, 1000, 10000)
        for n in sizes:
            for mv in (False, True):
                ours, ours_min = jaxhpo_suggest_time(n, mv, repeats=20)
                theirs, theirs_min = optuna_suggest_time(n, mv, repeats=3 if n >= 10000 else 5)
                speed.append({"observations": n, "multivariate": mv, "jaxhpo_ms": 1e3 * ours,
                              "optuna_ms": 1e3 * theirs, "speedup": theirs / ours,
                              "jaxhpo_min_ms": 1e3 * ours_min, "optuna_min_ms": 1e3 * theirs_min,
                              "speedup_of_min": theirs_min / ours_min})
                print(n, mv, speed[-1]["speedup"], flush=True)
        print_table(speed, ["observations", "multivariate", "jaxhpo_ms", "optuna_ms", "speedup",
                            "jaxhpo_min_ms", "optuna_min_ms", "speedup_of_min"],
                    title="Time per suggestion, Hartmann6 observations (target speedup >= 10 at 10000)")

    # A part run alone keeps its own file, so that it does not replace the other's figures.
    name = "tpe_vs_optuna" + ("_quality" if args.skip_speed else "_speed" if args.skip_quality else "")
    if args.problems != ["hartmann6", "ackley10"] and not args.skip_quality:
        name += "_" + "_".join(args.problems)
    write_results(name, quality + speed, packages=("optuna",),
                  extra={"quality": quality, "speed": speed, "evals": EVALS, "n_startup": N_STARTUP})


if __name__ == "__main__":
    main()
