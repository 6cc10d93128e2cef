"""Hyperband against random search on the digits MLP, at the same total training budget.

The task (as ``jaxhpo demo --task mlp``): a masked ReLU MLP on the digits
training split (fixed split, seed 0), full-batch training, searched over
learning rate, weight decay, width ``[8, 64]``, depth ``[1, 2]`` and the
optimiser (sgd / momentum / adam / adamw / rmsprop); one budget unit is
``--steps-per-unit`` optimiser steps.

* Hyperband: ``jaxhpo.training.hyperband`` with ``R = --max-budget`` units
  and ``--eta``; every rung one vmapped program, survivors' states carried on.
* Random search: ``floor(B / R)`` configurations, each trained ``R`` units,
  where ``B`` is Hyperband's total budget in units (so random search never
  gets more training than Hyperband), as one vmapped program.

Both pick their best configuration by validation cross-entropy (Hyperband:
among the configurations trained to ``R``) and report that model's accuracy
on the held-out test split. Each seed seeds both searches (the sampled
configurations and initial weights); the two methods alternate seed by seed
so that other processes' load hits both alike. Wall time is per search,
compilation included: the first seed compiles, later seeds reuse the
compiled programs, so the median is the warm cost. CPU seconds (all
threads) are recorded too.

Cold start: ``--cold-runs`` fresh processes per method (alternating) each
time one first search, every compile included, so that neither method pays
for the other's warm-up of JAX.

Run: ``python -m benchmarks.hyperband_vs_random [--seeds 5] [--max-budget 27]
[--eta 3] [--steps-per-unit 8] [--chunk-size 0] [--block-size auto|none|N]
[--sequential] [--cold-runs 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks._common import print_table, write_results
from jaxhpo.datasets_digits import digits_split
from jaxhpo.demo_mlp import MLP_SPACE, make_digits_trainer
from jaxhpo.space import Int, Space
from jaxhpo.training import hyperband, hyperband_schedule, successive_halving


def schedule_budget(max_budget: int, eta: int) -> int:
    """Units Hyperband trains in all: every rung's members times that rung's extra units."""
    total = 0
    for bracket in hyperband_schedule(max_budget, eta):
        done = 0
        for n, r in bracket:
            steps = max(1, int(round(r)))
            total += n * (steps - done)
            done = steps
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-budget", type=int, default=27, help="Hyperband's R, in units")
    ap.add_argument("--eta", type=int, default=3)
    ap.add_argument("--steps-per-unit", type=int, default=8)
    ap.add_argument("--max-width", type=int, default=64)
    ap.add_argument("--max-depth", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=0,
                    help="members trained at once within a rung (lax.map); 0 (default) vmaps the whole rung")
    ap.add_argument("--block-size", default="auto",
                    help="hyperband/successive_halving block_size: 'auto' (default), 'none' or an integer")
    ap.add_argument("--sequential", action="store_true",
                    help="run Hyperband's brackets one after another (concurrent_brackets=False)")
    ap.add_argument("--cold-runs", type=int, default=2,
                    help="fresh processes per method timing a first search, compile included (0: skip)")
    ap.add_argument("--cold-one", choices=("hyperband", "random"), help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    args = ap.parse_args(argv)
    choice = args.block_size.lower()
    block_size = "auto" if choice == "auto" else None if choice == "none" else int(choice)
    if args.quick:
        args.seeds, args.max_budget, args.steps_per_unit, args.max_width = 2, 9, 4, 16
    chunk_size = args.chunk_size or None

    split = digits_split(0)
    trainer = make_digits_trainer(split, max_width=args.max_width, max_depth=args.max_depth,
                                  steps_per_unit=args.steps_per_unit)
    space = MLP_SPACE
    if args.max_width != 64 or args.max_depth != 2:
        space = Space(learning_rate=MLP_SPACE["learning_rate"], weight_decay=MLP_SPACE["weight_decay"],
                      width=Int(8, args.max_width), depth=Int(1, args.max_depth),
                      optimizer=MLP_SPACE["optimizer"])
    R, eta = args.max_budget, args.eta
    budget = schedule_budget(R, eta)
    n_random = max(1, math.floor(budget / R))
    X_test, y_test = jnp.asarray(split["X_test"]), jnp.asarray(split["y_test"])
    accuracy = jax.jit(lambda state, hp: trainer.accuracy(state, hp, X_test, y_test))

    def test_accuracy(res):
        hp = {k: jnp.asarray(v[res.best_index]) for k, v in res.hparams.items()}
        return float(accuracy(res.best_state, hp))

    def run(method, seed):
        key = jax.random.fold_in(jax.random.key(seed), 0 if method == "hyperband" else 1)
        t0, c0 = time.perf_counter(), time.process_time()
        if method == "hyperband":
            res = hyperband(trainer, space, key, max_budget=R, eta=eta, chunk_size=chunk_size,
                            block_size=block_size, concurrent_brackets=False if args.sequential else None)
        else:
            res = successive_halving(trainer, space, key, num_configs=n_random, min_budget=R, max_budget=R,
                                     eta=eta, chunk_size=chunk_size, block_size=block_size)
        jax.block_until_ready(res.best_state)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = dict(method=method, seed=seed, configs=len(res.loss), total_budget=res.total_budget,
                   val_loss=res.best_loss, test_accuracy=test_accuracy(res), seconds=wall, cpu_seconds=cpu,
                   best=res.best_params)
        print(f"  seed {seed} {method:<10} configs {row['configs']:<4} budget {row['total_budget']:<5} "
              f"val {row['val_loss']:.4f}  test acc {row['test_accuracy']:.4f}  {wall:7.2f} s  cpu {cpu:7.2f} s",
              flush=True)
        return row

    if args.cold_one:
        # One first search in this fresh process: its wall time includes every compile.
        row = run(args.cold_one, 0)
        print("COLD " + json.dumps({"method": args.cold_one, "seconds": row["seconds"],
                                    "cpu_seconds": row["cpu_seconds"]}))
        return row

    print(f"Hyperband R={R}, eta={eta}: {budget} units in all; random search: {n_random} configurations x {R} units"
          f" = {n_random * R} units; {args.steps_per_unit} steps per unit; {args.seeds} seeds", flush=True)
    rows = []
    for seed in range(args.seeds):
        # Alternate which goes first so neither always meets a cold cache or a load spike.
        order = ("hyperband", "random") if seed % 2 == 0 else ("random", "hyperband")
        for method in order:
            rows.append(run(method, seed))

    summary = []
    for method in ("hyperband", "random"):
        rs = [r for r in rows if r["method"] == method]
        warm = [r for r in rs if r["seed"] > 0] or rs
        summary.append(dict(
            method=method, seeds=len(rs), configs=rs[0]["configs"], total_budget=rs[0]["total_budget"],
            median_test_accuracy=statistics.median(r["test_accuracy"] for r in rs),
            median_val_loss=statistics.median(r["val_loss"] for r in rs),
            median_seconds=statistics.median(r["seconds"] for r in rs),
            median_warm_seconds=statistics.median(r["seconds"] for r in warm),
            median_warm_cpu_seconds=statistics.median(r["cpu_seconds"] for r in warm),
            first_seed_seconds=rs[0]["seconds"] if rs[0]["seed"] == 0 else None,
        ))
    hb, rnd = summary
    ratios = dict(
        accuracy_difference=hb["median_test_accuracy"] - rnd["median_test_accuracy"],
        wall_ratio_hyperband_over_random=hb["median_seconds"] / rnd["median_seconds"],
        warm_wall_ratio_hyperband_over_random=hb["median_warm_seconds"] / rnd["median_warm_seconds"],
        warm_cpu_ratio_hyperband_over_random=hb["median_warm_cpu_seconds"] / rnd["median_warm_cpu_seconds"],
        hyperband_wins_or_ties=sum(
            a["test_accuracy"] >= b["test_accuracy"]
            for a in rows if a["method"] == "hyperband"
            for b in rows if b["method"] == "random" and b["seed"] == a["seed"]),
    )
    # A first search in a fresh process, each method alone (compiling included;
    # within this process the first seed's order decides who pays for warming up JAX).
    cold = []
    forwarded = ["--max-budget", str(R), "--eta", str(eta), "--steps-per-unit", str(args.steps_per_unit),
                 "--max-width", str(args.max_width), "--max-depth", str(args.max_depth),
                 "--chunk-size", str(args.chunk_size), "--block-size", args.block_size]
    forwarded += ["--sequential"] if args.sequential else []
    for rep in range(args.cold_runs):
        for method in (("hyperband", "random") if rep % 2 == 0 else ("random", "hyperband")):
            out = subprocess.run([sys.executable, "-m", "benchmarks.hyperband_vs_random", *forwarded,
                                  "--cold-runs", "0", "--cold-one", method],
                                 capture_output=True, text=True, check=True).stdout
            cold.append(json.loads(next(l for l in out.splitlines() if l.startswith("COLD "))[5:]))
            print(f"  fresh process: {method:<10} first search {cold[-1]['seconds']:.2f} s", flush=True)
    for entry in summary:
        times = [c["seconds"] for c in cold if c["method"] == entry["method"]]
        entry["median_fresh_process_seconds"] = statistics.median(times) if times else None
    if cold:
        ratios["fresh_process_ratio_hyperband_over_random"] = (
            summary[0]["median_fresh_process_seconds"] / summary[1]["median_fresh_process_seconds"])

    print_table(rows, ["method", "seed", "configs", "total_budget", "val_loss", "test_accuracy", "seconds",
                       "cpu_seconds"], title="per seed")
    print_table(summary, ["method", "seeds", "configs", "total_budget", "median_test_accuracy", "median_val_loss",
                          "median_seconds", "median_warm_seconds", "median_warm_cpu_seconds",
                          "first_seed_seconds", "median_fresh_process_seconds"],
                title=f"digits MLP ({jax.default_backend()}), medians over {args.seeds} seeds")
    for k, v in ratios.items():
        print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v} of {args.seeds}")
    write_results("hyperband_vs_random", rows, extra=dict(
        summary=summary, ratios=ratios, max_budget=R, eta=eta, steps_per_unit=args.steps_per_unit,
        max_width=args.max_width, max_depth=args.max_depth, seeds=args.seeds, hyperband_budget=budget,
        random_configs=n_random, chunk_size=chunk_size, block_size=args.block_size,
        concurrent_brackets=not args.sequential, fresh_process=cold))


if __name__ == "__main__":
    main()
