"""Pruning in the host-side Study against Optuna's pruners, on a training loop that is not JAX.

The objective trains scikit-learn's ``SGDClassifier`` (logistic loss,
``learning_rate="invscaling"``) on the digits data for ``--epochs`` epochs,
one ``partial_fit`` pass per epoch over a fixed per-epoch shuffle, and
reports the validation log-loss after each epoch; its value is the last
epoch's. Searched: ``alpha`` (log, 1e-6..1e-1), ``eta0`` (log, 1e-4..1) and
``power_t`` (0.1..0.9). Both systems run TPE one trial at a time
(jaxhpo ``TPE(space, 1)``, Optuna ``TPESampler(seed=s)``), each with no
pruner, the median rule (``MedianPruner(n_startup_trials=5)``),
asynchronous successive halving (``SuccessiveHalvingPruner(min_resource=1,
reduction_factor=3)``) and Hyperband (``HyperbandPruner(min_resource=1,
max_resource=epochs, reduction_factor=3)``), ``--trials`` trials and
``--seeds`` seeds per arm.

Per arm, medians over seeds: epochs trained (the cost), the best complete
trial's validation loss and its test accuracy (the quality), the wall time,
and the time the library spends per ``report`` + ``should_prune`` pair
(``--storage memory``: jaxhpo's SQLite in memory against Optuna's in-memory
storage; ``--storage sqlite``: both in a fresh SQLite file per study, jaxhpo
with its defaults, Optuna through its RDB storage). jaxhpo's compile is paid
by an untimed warm-up study.

    python -m benchmarks study_pruning [--trials 40] [--seeds 5] [--epochs 27]
        [--storage memory|sqlite] [--quick]

``--scaling`` measures instead how one pruning decision's time grows with the
study: ``N`` finished trials of 27 reports each (random curves),
then one running trial that reports steps 0..9 and asks ``should_prune``
at step 9 (ASHA's rung; the median rule's decision at that step), a fresh
such trial per repeat; median of 20 repeats, jaxhpo against Optuna, in
memory or (``--storage sqlite``) both in SQLite files.

    python -m benchmarks study_pruning --scaling [--sizes 250 1000 4000] [--storage sqlite]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
import warnings

import numpy as np

from benchmarks._common import parse_args, print_table, write_results


def make_trainer(epochs: int):
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import log_loss

    from jaxhpo.datasets_digits import digits_split

    d = digits_split(0)
    classes = np.arange(10)
    orders = [np.random.default_rng(e).permutation(len(d["y_train"])) for e in range(epochs)]

    def train(alpha, eta0, power_t, report_and_check):
        """Runs the epochs; ``report_and_check(loss, epoch) -> stop?``. Returns (val loss, test acc, epochs)."""
        model = SGDClassifier(loss="log_loss", alpha=alpha, learning_rate="invscaling", eta0=eta0,
                              power_t=power_t, random_state=0)
        loss = math.inf
        for epoch in range(epochs):
            order = orders[epoch]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.partial_fit(d["X_train"][order], d["y_train"][order], classes=classes)
                proba = model.predict_proba(d["X_val"])
            loss = float(log_loss(d["y_val"], proba, labels=classes)) if np.all(np.isfinite(proba)) else math.inf
            if report_and_check(loss, epoch):
                return None, None, epoch + 1
        return loss, float(np.mean(model.predict(d["X_test"]) == d["y_test"])), epochs

    return train


PRUNERS = ("none", "median", "asha", "hyperband")


class Meter:
    """Adds up epochs and the time spent in the library's report/should_prune calls."""

    def __init__(self):
        self.epochs, self.prune_s, self.calls, self.test = 0, 0.0, 0, {}

    def checker(self, report, should_prune):
        """``train``'s per-epoch callback: ``report(loss, epoch)``, then ``should_prune()``, timed."""
        def check(loss, epoch):
            t0 = time.perf_counter()
            report(loss, epoch)
            stop = should_prune()
            self.prune_s += time.perf_counter() - t0
            self.calls += 1
            return stop
        return check

    def run(self, train, params: dict, check, pruned: type) -> float:
        """One trial: train, count its epochs, raise ``pruned`` if stopped, else its val loss."""
        loss, acc, used = train(params["alpha"], params["eta0"], params["power_t"], check)
        self.epochs += used
        if loss is None:
            raise pruned()
        self.test[loss] = acc
        return loss


def run_jaxhpo(train, pruner_name: str, seed: int, trials: int, folder: str | None,
               epochs: int) -> tuple[dict, Meter]:
    import jaxhpo
    from jaxhpo.study import (HyperbandPruner, MedianPruner, Study, SuccessiveHalvingPruner, TrialPruned, report,
                              should_prune)

    space = jaxhpo.Space(alpha=jaxhpo.Float(1e-6, 1e-1, log=True), eta0=jaxhpo.Float(1e-4, 1.0, log=True),
                         power_t=jaxhpo.Float(0.1, 0.9))
    pruner = {"none": None, "median": MedianPruner(n_startup_trials=5),
              "asha": SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
              "hyperband": HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)}[pruner_name]
    storage = None if folder is None else os.path.join(folder, f"jaxhpo_{pruner_name}_{seed}.db")
    study = Study(space, jaxhpo.TPE(space, 1), seed=seed, pruner=pruner, storage=storage)
    meter = Meter()
    check = meter.checker(report, should_prune)
    study.optimize(lambda p: meter.run(train, p, check, TrialPruned), num_trials=trials, progress=False)
    best = study.best_value
    out = dict(best_val_loss=best, test_acc=meter.test[best], pruned=sum(t.state == "pruned" for t in study.trials))
    study.close()
    return out, meter


def run_optuna(train, pruner_name: str, seed: int, trials: int, folder: str | None,
               epochs: int) -> tuple[dict, Meter]:
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    pruner = {"none": optuna.pruners.NopPruner(), "median": optuna.pruners.MedianPruner(n_startup_trials=5),
              "asha": optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
              "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs,
                                                          reduction_factor=3)}[pruner_name]
    storage = None if folder is None else f"sqlite:///{os.path.join(folder, f'optuna_{pruner_name}_{seed}.db')}"
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner, storage=storage)
    meter = Meter()

    def objective(trial):
        params = dict(alpha=trial.suggest_float("alpha", 1e-6, 1e-1, log=True),
                      eta0=trial.suggest_float("eta0", 1e-4, 1.0, log=True),
                      power_t=trial.suggest_float("power_t", 0.1, 0.9))
        return meter.run(train, params, meter.checker(trial.report, trial.should_prune), optuna.TrialPruned)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
        study.optimize(objective, n_trials=trials)
    best = study.best_value
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return dict(best_val_loss=best, test_acc=meter.test[best], pruned=pruned), meter


def _curves(n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, (n, 1)) * (1.0 - rng.uniform(0.0, 0.1, (n, 1))) ** np.arange(steps)


def decision_time(sizes, folder: str | None, steps: int = 27, rung: int = 9, repeats: int = 20) -> list[dict]:
    """Milliseconds per ``should_prune`` with ``n`` finished trials in the study
    (in memory, or in SQLite files in ``folder``)."""
    import optuna

    import jaxhpo
    from jaxhpo.study import MedianPruner, Study, SuccessiveHalvingPruner

    optuna.logging.set_verbosity(logging.WARNING)
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    rows = []
    for n in sizes:
        curves = _curves(n, steps)
        for name in ("median", "asha"):
            ours = MedianPruner(n_startup_trials=5) if name == "median" else \
                SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
            storage = None if folder is None else os.path.join(folder, f"jaxhpo_{name}_{n}.db")
            study = Study(space, jaxhpo.RandomSearch(space, n), seed=0, pruner=ours, storage=storage)
            for trial, curve in zip(study.ask_trials(), curves):
                for step, v in enumerate(curve):
                    study.report(trial, float(v), step)
                study.tell(trial, float(curve[-1]))
            def ours_probe():
                (probe,) = study.ask_trials(1)  # from the next generation
                for step in range(rung + 1):
                    study.report(probe, 1.5, step)
                return lambda: study.should_prune(probe)

            ours_ms = median_ms(ours_probe, repeats)
            rows.append(dict(system="jaxhpo", pruner=name, trials=n, ms=ours_ms))

            theirs = optuna.pruners.MedianPruner(n_startup_trials=5) if name == "median" else \
                optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
            ostorage = None if folder is None else f"sqlite:///{os.path.join(folder, f'optuna_{name}_{n}.db')}"
            ostudy = optuna.create_study(pruner=theirs, storage=ostorage)
            dist = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
            # Optuna's ASHA reads each trial's value at a rung from a system
            # attribute it sets when the trial passes there: set them as it would have.
            ostudy.add_trials([optuna.trial.create_trial(
                params={"x": 0.5}, distributions=dist, value=float(c[-1]),
                intermediate_values={k: float(v) for k, v in enumerate(c)},
                system_attrs={f"completed_rung_{k}": float(c[3 ** k]) for k in range(3)}) for c in curves])

            def theirs_probe():
                # a fresh trial each time: Optuna's ASHA records the rungs a trial passed
                otrial = ostudy.ask(dist)
                for step in range(rung + 1):
                    otrial.report(1.5, step)
                return otrial.should_prune

            theirs_ms = median_ms(theirs_probe, repeats)
            rows.append(dict(system="optuna", pruner=name, trials=n, ms=theirs_ms))
            study.close()
            print(f"  {name:6s} {n:5d} trials: jaxhpo {ours_ms:.3f} ms, Optuna {theirs_ms:.3f} ms", flush=True)
    return rows


def median_ms(make, repeats: int) -> float:
    """Median milliseconds of ``make()()``, timing only the call ``make`` returns."""
    times = []
    for _ in range(repeats):
        fn = make()
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=27)
    ap.add_argument("--storage", choices=("memory", "sqlite"), default="memory")
    ap.add_argument("--quick", action="store_true", help="10 trials, 1 seed, 9 epochs (smoke run)")
    ap.add_argument("--scaling", action="store_true", help="time one decision against the study's size")
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000])
    args = parse_args(ap, argv, rivals=("optuna", "sklearn"))
    if args.scaling:
        with tempfile.TemporaryDirectory() as tmp:
            rows = decision_time([50, 200] if args.quick else args.sizes, tmp if args.storage == "sqlite" else None)
        print_table(rows, ["system", "pruner", "trials", "ms"], "one should_prune at step 9 with N finished "
                    f"trials of 27 reports, storage {args.storage} (median ms)")
        write_results(f"study_pruning_scaling_{args.storage}", rows, extra={"args": vars(args)},
                      packages=("optuna",))
        return
    trials, seeds, epochs = (10, 1, 9) if args.quick else (args.trials, args.seeds, args.epochs)
    train = make_trainer(epochs)
    tmp = tempfile.TemporaryDirectory() if args.storage == "sqlite" else None
    folder = None if tmp is None else tmp.name
    run_jaxhpo(train, "asha", 0, 3, None, epochs)  # warm-up: compiles the TPE's ask and tell

    rows = []
    for seed in range(seeds):
        # the arms rotate per seed, so a slow spell of the machine does not land on one arm
        arms = [(s, p) for p in PRUNERS for s in ("jaxhpo", "optuna")]
        for system, pruner in arms[seed % len(arms):] + arms[:seed % len(arms)]:
            run = run_jaxhpo if system == "jaxhpo" else run_optuna
            t0 = time.perf_counter()
            out, meter = run(train, pruner, seed, trials, folder, epochs)
            wall = time.perf_counter() - t0
            rows.append(dict(system=system, pruner=pruner, seed=seed, epochs=meter.epochs, wall_s=wall,
                             prune_call_ms=1e3 * meter.prune_s / max(meter.calls, 1), **out))
            print(f"  {system:6s} {pruner:9s} seed {seed}: {meter.epochs} epochs, best val loss "
                  f"{out['best_val_loss']:.4f}, test acc {out['test_acc']:.4f}, {wall:.1f} s", flush=True)

    table = []
    for system in ("jaxhpo", "optuna"):
        for pruner in PRUNERS:
            sel = [r for r in rows if r["system"] == system and r["pruner"] == pruner]
            table.append(dict(
                system=system, pruner=pruner,
                epochs=float(np.median([r["epochs"] for r in sel])),
                share_of_full=float(np.median([r["epochs"] for r in sel])) / (trials * epochs),
                pruned=float(np.median([r["pruned"] for r in sel])),
                best_val_loss=float(np.median([r["best_val_loss"] for r in sel])),
                test_acc=float(np.median([r["test_acc"] for r in sel])),
                wall_s=float(np.median([r["wall_s"] for r in sel])),
                prune_call_ms=float(np.median([r["prune_call_ms"] for r in sel]))))
    print_table(table, ["system", "pruner", "epochs", "share_of_full", "pruned", "best_val_loss", "test_acc",
                        "wall_s", "prune_call_ms"],
                f"SGDClassifier on digits, TPE, {trials} trials x {epochs} epochs, storage {args.storage}, "
                f"medians over {seeds} seeds")
    name = "study_pruning" if args.storage == "memory" else "study_pruning_sqlite"
    write_results(name, rows, extra={"table": table, "args": vars(args)}, packages=("optuna", "scikit-learn"))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
