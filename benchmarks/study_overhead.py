"""Per-trial overhead of the host-side Study with SQLite storage, against Optuna.

Both run the same cheap Python objective (a few arithmetic operations) with a
random sampler over the same 4-parameter mixed space (float, log-float, int,
categorical), for ``--trials`` trials, storing every trial in a fresh SQLite
file (and, for reference, in memory). jaxhpo runs with its default SQLite settings (WAL,
``synchronous=NORMAL``: a finished trial survives a killed process) and, in
one more row, with ``synchronous=FULL`` (also survives a power cut, like
Optuna's SQLite defaults). The objective's own time is measured
and subtracted, so the figure is what the library adds per trial: proposing,
recording, committing. jaxhpo's compile time is excluded by a warm-up study
(it is paid once per process and strategy); Optuna's import and study
creation are excluded likewise.

    python -m benchmarks.study_overhead            # 1000 trials
    python -m benchmarks.study_overhead --trials 200
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

from benchmarks._common import parse_args, print_table, write_results


def objective_py(x: float, lr: float, n: int, kind: str) -> float:
    return (x - 0.3) ** 2 + abs(lr - 0.01) + 0.1 * n + (kind != "b")


class Timed:
    """Wraps an objective and adds up the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.spent, self.calls = fn, 0.0, 0

    def __call__(self, *args):
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.spent += time.perf_counter() - t0
        self.calls += 1
        return out


def run_jaxhpo(trials: int, storage: str | None, popsize: int) -> dict:
    import jaxhpo
    from jaxhpo.study import Study

    space = jaxhpo.Space(
        x=jaxhpo.Float(-2.0, 2.0),
        lr=jaxhpo.Float(1e-4, 1e-1, log=True),
        n=jaxhpo.Int(1, 8),
        kind=jaxhpo.Categorical(["a", "b", "c"]),
    )
    # warm-up: compile the jitted ask/tell for this strategy (cached per process)
    warm = Study(space, jaxhpo.RandomSearch(space, popsize), seed=1)
    warm.optimize(lambda p: objective_py(**p), num_trials=2 * popsize, progress=False)

    inner = Timed(objective_py)
    study = Study(space, jaxhpo.RandomSearch(space, popsize), seed=0, storage=storage, name="bench")
    t0 = time.perf_counter()  # study creation excluded, as Optuna's is
    study.optimize(lambda p: inner(p["x"], p["lr"], p["n"], p["kind"]), num_trials=trials, progress=False)
    total = time.perf_counter() - t0
    assert inner.calls == trials and len(study.get_trials(["complete"])) == trials
    study.close()
    return {"total_s": total, "objective_s": inner.spent}


def run_optuna(trials: int, storage: str | None) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    inner = Timed(objective_py)

    def objective(trial):
        return inner(trial.suggest_float("x", -2.0, 2.0), trial.suggest_float("lr", 1e-4, 1e-1, log=True),
                     trial.suggest_int("n", 1, 8), trial.suggest_categorical("kind", ["a", "b", "c"]))

    # warm-up outside the timing: imports, storage engine and schema creation of a first study
    optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).optimize(objective, n_trials=2)
    inner.spent, inner.calls = 0.0, 0
    # Creation outside the timing: on SQLite it sets up the engine and the
    # schema (seconds on the first file), which the in-memory warm-up does not.
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0),
                                study_name="bench")
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    total = time.perf_counter() - t0
    assert inner.calls == trials and len(study.trials) == trials
    return {"total_s": total, "objective_s": inner.spent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 trials (smoke run)")
    args = parse_args(parser, rivals=("optuna",))
    n = 100 if args.quick else args.trials
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("sqlite", "memory"):
            def url(tag):
                return None if storage == "memory" else f"sqlite:///{os.path.join(tmp, tag + '.db')}"

            opt = run_optuna(n, url("optuna"))
            runs = [("optuna", "RandomSampler", opt)]
            for popsize in (1, 16):
                runs.append(("jaxhpo", f"RandomSearch(popsize={popsize})",
                             run_jaxhpo(n, url(f"jaxhpo{popsize}"), popsize)))
            if storage == "sqlite":
                # Optuna's SQLite (through SQLAlchemy) keeps SQLite's defaults: rollback journal and
                # synchronous=FULL, an fsync per commit. jaxhpo's default (WAL, NORMAL) survives a
                # killed process but not a power cut; this row pays for the same durability as Optuna.
                from jaxhpo.study import SQLiteStorage

                full = SQLiteStorage(os.path.join(tmp, "jaxhpo_full.db"), synchronous="FULL")
                runs.append(("jaxhpo", "RandomSearch(popsize=1), synchronous=FULL",
                             run_jaxhpo(n, full, 1)))
                full.close()
            opt_over = (opt["total_s"] - opt["objective_s"]) / n
            for system, sampler, r in runs:
                over = (r["total_s"] - r["objective_s"]) / n
                rows.append({
                    "system": system, "sampler": sampler, "storage": storage, "trials": n,
                    "total_s": r["total_s"], "overhead_ms_per_trial": 1e3 * over,
                    "optuna_over_this": opt_over / over,
                })
    print_table(rows, ["system", "sampler", "storage", "trials", "total_s", "overhead_ms_per_trial",
                       "optuna_over_this"],
                title=f"Study per-trial overhead, {n} trials, cheap objective (target: optuna_over_this >= 3 "
                      "with sqlite)")
    write_results("study_overhead", rows, packages=("optuna", "sqlalchemy"))


if __name__ == "__main__":
    main()
