"""How long a GP-BO Study holds its SQLite file's write lock, asking ahead or inside.

Every other worker on the file waits while one holds the write lock (to report
an intermediate value, finish a trial, claim the next). A strategy's ask that
runs inside the write transaction storing its generation holds the lock for
as long as the ask takes: GP-BO fits its Gaussian processes and optimises
the acquisition there. A Study runs an ask slower than
``jaxhpo.study.study._ASK_AHEAD_SECONDS`` before that transaction instead
("ask ahead", the default); "ask inside" sets the threshold to infinity.

Both modes run the same GP-BO study (same seed, same proposals: checked) on
a fresh file, ``--trials`` trials of a cheap objective, the compiles paid by
a warm-up study first (past GP-BO's initial design, so that the model's
ask is compiled); the modes alternate over ``--repeats`` runs, each going
first in turn. Reported:
the longest write transaction, the time spent in write transactions in
all, and the wall time, medians over the repeats.

    python -m benchmarks study_write_lock            # 160 trials, capacity 256, 8-D
    python -m benchmarks study_write_lock --quick
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import time

from benchmarks._common import parse_args, print_table, write_results


def one_study(space, strategy, trials: int, folder: str, tag: str) -> dict:
    from jaxhpo.study import Study, storage as storage_module

    real = storage_module.SQLiteStorage.transaction
    held: list[float] = []

    @contextlib.contextmanager
    def timed(self, write=True):
        start = time.perf_counter()
        with real(self, write) as c:
            yield c
        if write:
            held.append(time.perf_counter() - start)

    storage_module.SQLiteStorage.transaction = timed
    try:
        study = Study(space, strategy, seed=0, storage=os.path.join(folder, f"{tag}.db"))
        start = time.perf_counter()
        study.optimize(lambda p: sum((v - 0.3) ** 2 for v in p.values()), max_trials=trials, progress=False)
        wall = time.perf_counter() - start
        proposals = [tuple(t.params.values()) for t in study.trials]
        study.close()
    finally:
        storage_module.SQLiteStorage.transaction = real
    return {"longest_write_s": max(held), "write_total_s": sum(held), "write_transactions": len(held),
            "wall_s": wall, "proposals": proposals}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=160)
    ap.add_argument("--capacity", type=int, default=256)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    args = parse_args(ap, argv)
    if args.quick:
        args.trials, args.capacity, args.dim, args.repeats = 12, 16, 2, 1

    import jaxhpo
    import jaxhpo.study.study as study_module

    space = jaxhpo.Space({f"x{i}": jaxhpo.Float(-2.0, 2.0) for i in range(args.dim)})
    strategy = jaxhpo.GPBO(space, popsize=1, capacity=args.capacity)
    default = study_module._ASK_AHEAD_SECONDS
    modes = {"ask ahead (default)": default, "ask inside": math.inf}
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as folder:
        # Compiles, excluded: past the initial design, so that the model's
        # ask is compiled too (it would fall on the first timed run).
        one_study(space, strategy, strategy.n_init + 2, folder, "warm")
        for r in range(args.repeats):
            # Each mode goes first in turn.
            for mode, threshold in (list(modes.items()) if r % 2 == 0 else list(modes.items())[::-1]):
                study_module._ASK_AHEAD_SECONDS = threshold
                runs[mode].append(one_study(space, strategy, args.trials, folder, f"{r}-{len(runs[mode])}-"
                                            f"{threshold}"))
        study_module._ASK_AHEAD_SECONDS = default
    first = runs["ask ahead (default)"][0]["proposals"]
    assert all(run["proposals"] == first for rs in runs.values() for run in rs), "the modes searched differently"
    rows = []
    for mode, rs in runs.items():
        med = {k: statistics.median(run[k] for run in rs) for k in ("longest_write_s", "write_total_s", "wall_s")}
        rows.append({"mode": mode, "trials": args.trials, "write transactions": rs[0]["write_transactions"],
                     "longest write s": round(med["longest_write_s"], 4),
                     "in write transactions s": round(med["write_total_s"], 4), "wall s": round(med["wall_s"], 2),
                     "raw": [{k: v for k, v in run.items() if k != "proposals"} for run in rs]})
    print_table(rows, ["mode", "trials", "write transactions", "longest write s", "in write transactions s",
                       "wall s"], title=f"GP-BO study, {args.dim}-D, capacity {args.capacity}, "
                                        f"medians of {args.repeats}")
    write_results("study_write_lock", rows,
                  extra={"settings": vars(args)})


if __name__ == "__main__":
    main()
