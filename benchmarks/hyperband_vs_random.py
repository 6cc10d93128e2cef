"""Hyperband against random search on the digits MLP, at the same total training budget.

The task (as ``jaxhpo demo --task mlp``): a masked ReLU MLP on the digits
training split (fixed split, seed 0), full-batch training, searched over
learning rate, weight decay, width ``[8, 64]``, depth ``[1, 2]`` and the
optimiser (sgd / momentum / adam / adamw / rmsprop); one budget unit is
``--steps-per-unit`` optimiser steps.

* Hyperband: ``jaxhpo.training.hyperband`` with ``R = --max-budget`` units
  and ``--eta``; every rung one vmapped program, survivors' states carried on.
* Random search: ``floor(B / R)`` configurations, each trained ``R`` units,
  where ``B`` is the units Hyperband trains in all (so random search never
  gets more training than Hyperband), as one vmapped program.
* Random search at the nominal budget (``random_nominal``): ``floor(N / R)``
  configurations, where ``N = sum n_i r_i`` over every rung of every bracket
  is Hyperband's budget as Li et al. count it (what it costs when each rung
  retrains its members from scratch). Hyperband trains fewer units than
  ``N`` because survivors carry their states on; this arm shows what that
  saving is worth against random search given the same nominal budget.
  Skipped when it would hold as many configurations as ``random``.
* Hyperband's first bracket alone (``first_bracket``): successive halving of
  ``eta^s_max`` configurations from 1 to ``R`` units, the most aggressive
  bracket; Hyperband's incumbent when its brackets run one after another
  and it is stopped after the first. Against ``random`` it answers how
  long Hyperband takes to reach the accuracy random search reaches with
  the whole budget.

Both pick their best configuration by validation cross-entropy (Hyperband:
among the configurations trained to ``R``) and report that model's accuracy
on the held-out test split. Each seed seeds every method's search (the
sampled configurations and initial weights), each method's key folded from
it with its own number (``fold_in`` 0 for Hyperband, 1 for the others), so
paired results share the seed, not the random draws; the methods alternate seed by seed
so that other processes' load hits both alike. Wall time is per search,
compilation included: the first seed compiles, later seeds reuse the
compiled programs, so the median is the warm cost. CPU seconds (all
threads) are recorded too.

Cold start: ``--cold-runs`` fresh processes per method (alternating) each
time one first search, every compile included, so that neither method pays
for the other's warm-up of JAX.

Run: ``python -m benchmarks.hyperband_vs_random [--seeds 5] [--max-budget 27]
[--eta 3] [--steps-per-unit 8] [--chunk-size 0] [--block-size auto|none|N]
[--sequential] [--cold-runs 2] [--compile-cache DIR] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks._common import parse_args, print_table, write_results
from jaxhpo import use_compile_cache
from jaxhpo.datasets_digits import digits_split
from jaxhpo.demo_mlp import MLP_SPACE, make_digits_trainer
from jaxhpo.space import Int, Space
from jaxhpo.training import hyperband, hyperband_schedule, successive_halving

METHODS = ("hyperband", "random", "random_nominal", "first_bracket")
# (method, baseline, name): the comparisons reported, where both ran.
PAIRS = (("hyperband", "random", "hyperband_vs_random"),
         ("hyperband", "random_nominal", "hyperband_vs_random_nominal"),
         ("first_bracket", "random", "first_bracket_vs_random"))


def _units(budget) -> int:
    """A rung's budget in whole trainer steps, as ``jaxhpo.training.hyperband`` rounds it."""
    return max(1, int(round(budget)))


def schedule_budget(max_budget: int, eta: int) -> int:
    """Units Hyperband trains in all: every rung's members times that rung's extra units."""
    total = 0
    for bracket in hyperband_schedule(max_budget, eta):
        done = 0
        for n, r in bracket:
            total += n * (_units(r) - done)
            done = _units(r)
    return total


def nominal_budget(max_budget: int, eta: int) -> int:
    """Hyperband's budget as Li et al. count it: ``sum n_i r_i`` over every rung of every bracket."""
    return sum(n * _units(r) for bracket in hyperband_schedule(max_budget, eta) for n, r in bracket)


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
    ap.add_argument("--compile-cache", metavar="DIR", default=None,
                    help="the fresh processes keep compiled programs in DIR (jaxhpo.use_compile_cache); each "
                         "method's first fresh process, which fills it, is not counted")
    ap.add_argument("--cold-one", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    args = parse_args(ap, argv)
    if args.cold_one and args.compile_cache:
        use_compile_cache(args.compile_cache)
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
    nominal = nominal_budget(R, eta)
    n_nominal = max(1, math.floor(nominal / R))
    random_configs = {"random": n_random, "random_nominal": n_nominal}
    methods = tuple(m for m in METHODS if m != "random_nominal" or n_nominal > n_random)
    first_bracket = hyperband_schedule(R, eta)[0]
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
        elif method == "first_bracket":
            (n0, r0), *_ = first_bracket
            res = successive_halving(trainer, space, key, num_configs=n0, min_budget=r0, max_budget=R, eta=eta,
                                     chunk_size=chunk_size, block_size=block_size)
        else:
            res = successive_halving(trainer, space, key, num_configs=random_configs[method], min_budget=R,
                                     max_budget=R, eta=eta, chunk_size=chunk_size, block_size=block_size)
        jax.block_until_ready(res.best_state)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        row = dict(method=method, seed=seed, configs=len(res.loss), total_budget=res.total_budget,
                   val_loss=res.best_loss, test_accuracy=test_accuracy(res), seconds=wall, cpu_seconds=cpu,
                   best=res.best_params)
        print(f"  seed {seed} {method:<14} configs {row['configs']:<4} budget {row['total_budget']:<5} "
              f"val {row['val_loss']:.4f}  test acc {row['test_accuracy']:.4f}  {wall:7.2f} s  cpu {cpu:7.2f} s",
              flush=True)
        return row

    if args.cold_one:
        # One first search in this fresh process: its wall time includes every compile.
        row = run(args.cold_one, 0)
        print("COLD " + json.dumps({"method": args.cold_one, "seconds": row["seconds"],
                                    "cpu_seconds": row["cpu_seconds"]}))
        return row

    print(f"Hyperband R={R}, eta={eta}: {budget} units trained in all (nominal budget sum n_i r_i = {nominal}); "
          f"random search: {n_random} configurations x {R} units = {n_random * R} units"
          + (f", at the nominal budget {n_nominal} x {R} = {n_nominal * R}" if "random_nominal" in methods else "")
          + f"; first bracket {first_bracket}; {args.steps_per_unit} steps per unit; {args.seeds} seeds",
          flush=True)
    rows = []
    for seed in range(args.seeds):
        # Rotate which goes first so none always meets a cold cache or a load spike.
        for i in range(len(methods)):
            rows.append(run(methods[(seed + i) % len(methods)], seed))

    summary = []
    for method in methods:
        rs = [r for r in rows if r["method"] == method]
        warm = [r for r in rs if r["seed"] > 0] or rs
        summary.append(dict(
            method=method, seeds=len(rs), configs=rs[0]["configs"], total_budget=rs[0]["total_budget"],
            median_test_accuracy=statistics.median(r["test_accuracy"] for r in rs),
            mean_test_accuracy=statistics.mean(r["test_accuracy"] for r in rs),
            median_val_loss=statistics.median(r["val_loss"] for r in rs),
            median_seconds=statistics.median(r["seconds"] for r in rs),
            median_warm_seconds=statistics.median(r["seconds"] for r in warm),
            median_warm_cpu_seconds=statistics.median(r["cpu_seconds"] for r in warm),
            first_seed_seconds=rs[0]["seconds"] if rs[0]["seed"] == 0 else None,
        ))
    by_method = {entry["method"]: entry for entry in summary}
    pairs = [(a, b, name) for a, b, name in PAIRS if a in by_method and b in by_method]
    ratios = {}
    for a, b, name in pairs:
        ea, eb = by_method[a], by_method[b]
        matched = [(ra, rb) for ra in rows if ra["method"] == a
                   for rb in rows if rb["method"] == b and rb["seed"] == ra["seed"]]
        paired = [(ra["test_accuracy"], rb["test_accuracy"]) for ra, rb in matched]
        differences = [x - y for x, y in paired]
        ratios.update({
            f"{name}_median_accuracy_difference": ea["median_test_accuracy"] - eb["median_test_accuracy"],
            f"{name}_mean_paired_accuracy_difference": statistics.mean(differences),
            f"{name}_paired_accuracy_difference_standard_error": (
                statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else None),
            f"{name}_wins_or_ties": sum(x >= y for x, y in paired),
            f"{name}_wins": sum(x > y for x, y in paired),
            f"{name}_ties": sum(x == y for x, y in paired),
            f"{name}_losses": sum(x < y for x, y in paired),
            f"{name}_lower_val_loss": sum(ra["val_loss"] < rb["val_loss"] for ra, rb in matched),
            f"{name}_wall_ratio": ea["median_seconds"] / eb["median_seconds"],
            f"{name}_warm_wall_ratio": ea["median_warm_seconds"] / eb["median_warm_seconds"],
            f"{name}_warm_cpu_ratio": ea["median_warm_cpu_seconds"] / eb["median_warm_cpu_seconds"],
        })
    # A first search in a fresh process, each method alone (compiling included;
    # within this process the first seed's order decides who pays for warming up JAX).
    cold = []
    forwarded = ["--max-budget", str(R), "--eta", str(eta), "--steps-per-unit", str(args.steps_per_unit),
                 "--max-width", str(args.max_width), "--max-depth", str(args.max_depth),
                 "--chunk-size", str(args.chunk_size), "--block-size", args.block_size]
    forwarded += ["--sequential"] if args.sequential else []
    forwarded += ["--compile-cache", args.compile_cache] if args.compile_cache else []

    def fresh_process(method):
        # This process holds JAX's default share of an accelerator's memory (75%):
        # the child allocates as it goes instead of failing to take as much.
        env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
        out = subprocess.run([sys.executable, "-m", "benchmarks.hyperband_vs_random", *forwarded,
                              "--cold-runs", "0", "--cold-one", method],
                             capture_output=True, text=True, check=True, env=env).stdout
        return json.loads(next(l for l in out.splitlines() if l.startswith("COLD "))[5:])

    if args.compile_cache and args.cold_runs:
        for method in methods:  # fills the cache; not counted
            print(f"  fresh process filling the compile cache: {method:<14} "
                  f"{fresh_process(method)['seconds']:.2f} s", flush=True)
    for rep in range(args.cold_runs):
        for method in (methods[(rep + i) % len(methods)] for i in range(len(methods))):
            cold.append(fresh_process(method))
            print(f"  fresh process: {method:<14} first search {cold[-1]['seconds']:.2f} s", flush=True)
    for entry in summary:
        times = [c["seconds"] for c in cold if c["method"] == entry["method"]]
        entry["median_fresh_process_seconds"] = statistics.median(times) if times else None
    if cold:
        for a, b, name in pairs:
            ratios[f"{name}_fresh_process_ratio"] = (
                by_method[a]["median_fresh_process_seconds"] / by_method[b]["median_fresh_process_seconds"])

    print_table(rows, ["method", "seed", "configs", "total_budget", "val_loss", "test_accuracy", "seconds",
                       "cpu_seconds"], title="per seed")
    print_table(summary, ["method", "seeds", "configs", "total_budget", "median_test_accuracy",
                          "mean_test_accuracy", "median_val_loss",
                          "median_seconds", "median_warm_seconds", "median_warm_cpu_seconds",
                          "first_seed_seconds", "median_fresh_process_seconds"],
                title=f"digits MLP ({jax.default_backend()}), medians over {args.seeds} seeds")
    for k, v in ratios.items():
        print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v} of {args.seeds}" if v is not None
              else f"  {k}: -")
    write_results("hyperband_vs_random", rows, extra=dict(
        summary=summary, ratios=ratios, max_budget=R, eta=eta, steps_per_unit=args.steps_per_unit,
        max_width=args.max_width, max_depth=args.max_depth, seeds=args.seeds, hyperband_budget=budget,
        random_configs=n_random, nominal_budget=nominal, random_nominal_configs=n_nominal,
        chunk_size=chunk_size, block_size=args.block_size,
        concurrent_brackets=not args.sequential, fresh_process=cold,
        fresh_process_compile_cache=bool(args.compile_cache)))


if __name__ == "__main__":
    main()
