"""GP-BO searching longer than its buffer: the newest half kept beside the best half, or the best alone.

Once a ``GPBO`` buffer of ``capacity`` rows is full, a single-objective GP-BO
keeps the newest half of its successful rows and the best half of the others
(``jaxhpo.strategies._buffer.kept_rows(newest_half=True)``). The other arm
keeps the ``capacity`` best alone, as GP-BO did before: each poor point is
forgotten as soon as it is told, and the acquisition can propose it again.
Both arms run the same seeds (the same initial designs and candidate draws
until their buffers differ), vmapped. Measured per problem: simple regret at
the last evaluation (every evaluated point re-scored in float64, as
search_quality does), the share of proposals after the buffer filled that
repeat an earlier one of the same search (within 1e-4 in the cube), and the
seeds on which keeping the newest half ends lower, higher or equal.

  python -m benchmarks gpbo_full_buffer [--seeds 8] [--quick]

``--quick``: Branin, 2 seeds, capacity 8, 24 evaluations.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from benchmarks.search_quality import PROBLEMS, _bounds, regrets_at

# problem -> (capacity, popsize, evaluations)
SETTINGS = {
    "branin": (16, 1, 80),
    "hartmann6": (32, 4, 120),
    "rosenbrock10": (32, 4, 120),
    "ackley10": (32, 4, 120),
}


class BestOnlyGPBO(jaxhpo.GPBO):
    """GP-BO whose full buffer keeps the best rows alone (the rule before the newest half)."""

    _keep_newest = False


def searched(name, strategy, evals, seeds):
    """``(regret (seeds,), repeats (seeds,), wall s)`` of ``seeds`` vmapped searches."""
    prob = PROBLEMS[name]
    gens = -(-evals // strategy.popsize)

    def one(key):
        return jaxhpo.run(strategy, prob.f, key, gens, history="all")[1].x

    keys = jax.random.split(jax.random.key(0), seeds)
    t0 = time.perf_counter()
    x = jax.block_until_ready(jax.jit(jax.vmap(one))(keys))
    wall = time.perf_counter() - t0
    x = np.asarray(x, np.float64).reshape(seeds, -1, strategy.dim)[:, :evals]
    lo, hi = _bounds(prob.space)
    regret = regrets_at([prob.f_np(np.clip(lo + xs * (hi - lo), lo, hi)) for xs in x], [evals], prob.fmin)[:, 0]
    # A proposal after the buffer filled repeats one when it lies within 1e-4
    # of any earlier proposal of its search (before the fill included).
    gaps = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)
    gaps = np.where(np.tril(np.ones(gaps.shape[1:], bool), k=-1), gaps, np.inf)
    repeated = gaps.min(axis=2) < 1e-4
    return regret, repeated[:, strategy.capacity:].mean(axis=1), wall


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--seeds", type=int, default=8, help="seeds, vmapped")
    ap.add_argument("--quick", action="store_true", help="branin, 2 seeds, capacity 8, 24 evaluations (smoke run)")
    args = parse_args(ap, argv)
    settings = {p: SETTINGS[p] for p in args.problems}
    if args.quick:
        settings, args.seeds = {"branin": (8, 1, 24)}, 2
        args.problems = list(settings)  # recorded as run
    rows, table = [], []
    for name, (capacity, popsize, evals) in settings.items():
        out = {}
        for arm, cls in (("newest half", jaxhpo.GPBO), ("best only", BestOnlyGPBO)):
            strategy = cls(PROBLEMS[name].space, popsize, capacity=capacity)
            regret, repeats, wall = searched(name, strategy, evals, args.seeds)
            out[arm] = regret
            rows.append(dict(problem=name, arm=arm, capacity=capacity, popsize=popsize, evals=evals,
                             regret=regret.tolist(), repeats=repeats.tolist(), wall_s=wall))
            table.append(dict(problem=name, arm=arm, capacity=capacity, evals=evals,
                              median_regret=float(np.median(regret)),
                              q25=float(np.percentile(regret, 25)), q75=float(np.percentile(regret, 75)),
                              repeats=float(np.mean(repeats))))
        new, old = out["newest half"], out["best only"]
        table[-2].update(lower=int(np.sum(new < old)), higher=int(np.sum(new > old)), equal=int(np.sum(new == old)))
    print_table(table, ["problem", "arm", "capacity", "evals", "median_regret", "q25", "q75", "repeats",
                        "lower", "higher", "equal"],
                f"GPBO past its buffer, {args.seeds} paired seeds (lower / higher / equal: newest half against "
                "best only)")
    write_results("gpbo_full_buffer", rows, extra={"args": vars(args), "table": table})


if __name__ == "__main__":
    main()
