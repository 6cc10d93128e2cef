"""Cross-validated grid search against scikit-learn's GridSearchCV, on the same folds.

The task of ``jaxhpo demo`` (and of scikit-learn's own grid-search example):
multinomial logistic regression on standardised features, scored by 5-fold
stratified cross-validated accuracy, over a log-spaced grid of ``C`` in
``[1e-3, 1e3]``:

* iris (150 x 4, 3 classes): ``C`` x penalty {l1, l2}; scikit-learn fits l1
  with ``saga`` and l2 with ``lbfgs`` (its fastest solvers for each);
* digits (1797 x 64, 10 classes): ``C`` with the l2 penalty, ``lbfgs``
  (``max_iter=1000``: the default 100 stops short of the optimum for large C).

scikit-learn: ``GridSearchCV(make_pipeline(StandardScaler(),
LogisticRegression()), grid, cv=splits)``, timed three ways: ``n_jobs=1``
(BLAS with its default threads), ``n_jobs=1`` with BLAS held to one thread
(``threadpoolctl``), and ``n_jobs=-1`` (a worker per core). The ratio is
taken against the fastest of the three. jaxhpo: ``minimize`` with
``GridSearch`` over the same grid points, every configuration and fold fitted
by FISTA (``jaxhpo.demo.fit_logreg``; 1000 steps on iris as in the demo, 200
on digits, where 300 or 1000 steps move no configuration's CV accuracy closer
to scikit-learn's by more than one validation sample in five folds) in one
vmapped program;
"cold" is the first search of that size in the process (compilation
included, JAX's own start not), "warm" the median of ``--repeats`` further
ones.

Both use the same fold indices (``StratifiedKFold(5, shuffle=True,
random_state=0)``), so the per-configuration CV accuracies are comparable:
the table reports the largest difference over the grid and both best scores.
scikit-learn runs only up to ``--sklearn-max`` configurations per dataset;
beyond that its time is extrapolated (``_extrapolated``: a fixed cost plus a
cost per fit, fitted through the two largest sizes measured; its fits are
independent), and the row says so.

Run: ``python -m benchmarks cv_vs_sklearn [--sizes 16 64 256] [--datasets iris digits]
[--repeats 3] [--sklearn-max iris=256 digits=64] [--num-iters iris=1000 digits=200]
[--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from benchmarks._common import parse_args, print_table, write_results
from jaxhpo import demo
from jaxhpo.cv import masks_from_splits
from jaxhpo.datasets import load_iris
from jaxhpo.datasets_digits import load_digits
from jaxhpo.loop import minimize
from jaxhpo.space import Categorical, Space
from jaxhpo.strategies import GridSearch

FOLDS = 5
SKLEARN_MODES = ("n_jobs=1", "n_jobs=1, 1 BLAS thread", "n_jobs=-1")
# digits searches only the l2 penalty: one space with penalty fixed to it.
L2_SPACE = Space(C=demo.SPACE["C"], penalty=Categorical(["l2"]))


class _FixedPenalty:
    """``LogRegCV`` with the penalty read from a one-choice categorical (always l2)."""

    def __init__(self, objective: demo.LogRegCV):
        self.objective = objective

    def __eq__(self, other):
        return type(other) is _FixedPenalty and self.objective == other.objective

    def __hash__(self):
        return hash(self.objective)

    def __call__(self, config):
        return self.objective({"C": config["C"], "penalty": config["penalty"] + demo.PENALTIES.index("l2")})


def task(name: str, size: int):
    """``(X, y, space, grid sizes)`` of a search of ``size`` configurations on ``name``."""
    if name == "iris":
        X, y = load_iris()
        space, sizes = demo.SPACE, {"C": size // 2}
    else:
        X, y = load_digits()
        space, sizes = L2_SPACE, {"C": size}
    return X, y, space, sizes


def sklearn_grid(space: Space, sizes: dict) -> tuple[list[dict], list[tuple[float, str]]]:
    """scikit-learn's param grid for the points of ``space.grid(sizes=...)``, and those points in order."""
    points = space.grid(sizes=sizes)
    decoded = space.decode(points)
    configs = [(float(c), space["penalty"].choices[int(p)]) for c, p in zip(np.asarray(decoded["C"], np.float64),
                                                                            np.asarray(decoded["penalty"]))]
    grid = []
    for penalty in dict.fromkeys(p for _, p in configs):
        Cs = sorted({c for c, p in configs if p == penalty})
        grid.append({"logisticregression__C": Cs,
                     "logisticregression__l1_ratio": [1.0 if penalty == "l1" else 0.0],
                     "logisticregression__solver": ["saga" if penalty == "l1" else "lbfgs"]})
    return grid, configs


def run_sklearn(X, y, splits, grid, mode: str):
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    # refit=False: the timed work is the 5-fold scores of every configuration, as jaxhpo's.
    search = GridSearchCV(pipe, grid, cv=splits, scoring="accuracy", n_jobs=-1 if mode == "n_jobs=-1" else 1,
                          refit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's ConvergenceWarning at the largest C
        t0 = time.perf_counter()
        if mode == "n_jobs=1, 1 BLAS thread":
            with threadpool_limits(1):
                search.fit(X.astype(np.float64), y)
        else:
            search.fit(X.astype(np.float64), y)
        seconds = time.perf_counter() - t0
    res = search.cv_results_
    scores = {(float(p["logisticregression__C"]),
               "l1" if p["logisticregression__l1_ratio"] == 1.0 else "l2"): s
              for p, s in zip(res["params"], res["mean_test_score"])}
    return seconds, scores, float(search.best_score_)


def run_jaxhpo(objective, space, sizes):
    t0 = time.perf_counter()
    result = minimize(objective, space, GridSearch(space, sizes=sizes), key=0, num_generations=1,
                      maximize=True, history="values")
    values = np.asarray(result.history.values[0])
    return time.perf_counter() - t0, values, float(result.best_value), result.best_params


def _extrapolated(timed: list, fits: int) -> float:
    """scikit-learn's seconds for ``fits`` from ``(fits, seconds)`` timed at
    smaller sizes: a fixed cost (the search's start, the pool's workers) plus
    a cost per fit, fitted through the two largest (never below the largest's
    time); with one size, its time per fit (which spreads the fixed cost and
    so overstates larger searches)."""
    if len(timed) == 1:
        (f, t), = timed
        return t / f * fits
    (f1, t1), (f2, t2) = timed[-2:]
    per_fit = max(t2 - t1, 0.0) / (f2 - f1)  # (noise can time the larger size faster)
    return t2 + per_fit * (fits - f2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256], help="configurations per search")
    ap.add_argument("--datasets", nargs="+", choices=("iris", "digits"), default=["iris", "digits"])
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per system (medians)")
    ap.add_argument("--sklearn-max", nargs="+", default=[],
                    help="largest size scikit-learn runs, per dataset (NAME=SIZE; defaults iris=256 digits=64)")
    ap.add_argument("--num-iters", nargs="+", default=[],
                    help=f"jaxhpo's FISTA steps per fit, per dataset (NAME=STEPS; defaults iris={demo.DEFAULT_ITERS} "
                         "digits=200)")
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    args = parse_args(ap, argv)
    # a dataset not named keeps its default
    sk_max = {"iris": 256, "digits": 64} | {k: int(v) for k, v in (item.split("=") for item in args.sklearn_max)}
    num_iters = {"iris": demo.DEFAULT_ITERS, "digits": 200} | {
        k: int(v) for k, v in (item.split("=") for item in args.num_iters)}
    if args.quick:
        args.sizes, args.repeats = [8], 1
        sk_max, num_iters = {"iris": 8, "digits": 8}, {"iris": 200, "digits": 200}

    jax.numpy.zeros(()).block_until_ready()  # start the backend: "cold" is compiling and running, not JAX's start
    rows = []
    for dataset in args.datasets:
        timed = []  # (fits, seconds) of scikit-learn's fastest mode at each size it ran
        for size in sorted(args.sizes):
            X, y, space, sizes = task(dataset, size)
            splits = list(StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(X, y))
            objective = demo.LogRegCV(X, y, masks_from_splits(splits, len(y)), num_iters[dataset])
            if dataset == "digits":
                objective = _FixedPenalty(objective)
            grid, configs = sklearn_grid(space, sizes)
            n = len(configs)
            row = dict(dataset=dataset, configs=n, fits=n * FOLDS, fista_steps=num_iters[dataset])

            cold, values, best, best_params = run_jaxhpo(objective, space, sizes)
            warm = [run_jaxhpo(objective, space, sizes)[0] for _ in range(args.repeats)]
            row.update(jaxhpo_cold_s=cold, jaxhpo_warm_s=statistics.median(warm), jaxhpo_warm_all=warm,
                       jaxhpo_best_cv=best, jaxhpo_best=best_params)

            if size <= sk_max.get(dataset, 0):
                times = {}
                for rep in range(args.repeats):
                    for mode in SKLEARN_MODES[rep % 3:] + SKLEARN_MODES[:rep % 3]:  # rotate the order
                        seconds, scores, sk_best = run_sklearn(X, y, splits, grid, mode)
                        times.setdefault(mode, []).append(seconds)
                medians = {mode: statistics.median(t) for mode, t in times.items()}
                fastest = min(medians, key=medians.get)
                timed.append((n * FOLDS, medians[fastest]))
                ours = dict(zip(configs, values))
                row.update({f"sklearn_s[{m}]": medians[m] for m in SKLEARN_MODES}, sklearn_all=times,
                           sklearn_fastest=fastest, sklearn_s=medians[fastest], sklearn_best_cv=sk_best,
                           max_abs_cv_diff=max(abs(ours[c] - scores[c]) for c in configs), sklearn_from="measured")
            elif timed:
                row.update(sklearn_s=_extrapolated(timed, n * FOLDS), sklearn_from=(
                    "a fixed and a per-fit cost fitted to the two largest sizes timed" if len(timed) > 1 else
                    "the time per fit at the size timed (in jaxhpo's favour: it spreads the fixed cost)"))
            if "sklearn_s" in row:
                row.update(warm_speedup=row["sklearn_s"] / row["jaxhpo_warm_s"],
                           cold_speedup=row["sklearn_s"] / row["jaxhpo_cold_s"])
            print(f"  {dataset} {n} configs: jaxhpo cold {cold:.2f} s warm {row['jaxhpo_warm_s']:.3f} s; "
                  f"scikit-learn {row.get('sklearn_s', float('nan')):.2f} s ({row.get('sklearn_from', 'not run')})",
                  flush=True)
            rows.append(row)

    print_table(rows, ["dataset", "configs", "fits", "jaxhpo_cold_s", "jaxhpo_warm_s", *(
        f"sklearn_s[{m}]" for m in SKLEARN_MODES), "sklearn_s", "sklearn_from", "cold_speedup", "warm_speedup",
        "jaxhpo_best_cv", "sklearn_best_cv", "max_abs_cv_diff"],
        title=f"{FOLDS}-fold CV grid search, logistic regression ({jax.default_backend()})")
    write_results("cv_vs_sklearn", rows, extra=dict(folds=FOLDS, num_iters=num_iters, repeats=args.repeats,
                                                    sklearn_max=sk_max),
                  packages=("scikit-learn", "threadpoolctl", "scipy"))


if __name__ == "__main__":
    main()
