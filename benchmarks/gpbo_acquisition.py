"""GPBO's acquisition refinement with and without lengthscale preconditioning, paired over seeds.

Measured: simple regret after 100 and 200 evaluations of ``GPBO(...,
acq_precondition=False)`` (the default) and ``acq_precondition=True`` on the
same seeds (the same initial designs and candidate draws), on search_quality's
problems, with search_quality's scoring (every evaluated point re-scored in
float64). Per problem: the two medians and the number of seeds on which the
preconditioned search ends lower, higher or equal.

  python -m benchmarks gpbo_acquisition [--problems rosenbrock10 ackley10 rastrigin10]
      [--seeds 8] [--evals 100 200] [--fitted-noise] [--quick]

By default GPBO runs with ``deterministic=True`` (the test functions have no
noise; see search_quality); ``--fitted-noise`` runs its default instead. A
10-D problem costs 3-10 minutes per setting for 8 vmapped seeds on two CPU
cores. ``--quick``: Branin, 2 seeds, 30 evaluations.
"""

from __future__ import annotations

import argparse

import numpy as np

import jaxhpo
from benchmarks._common import parse_args, print_table, write_results
from benchmarks.search_quality import PROBLEMS, _summary, jaxhpo_regrets


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS),
                    default=["rosenbrock10", "ackley10", "rastrigin10"])
    ap.add_argument("--seeds", type=int, default=8, help="seeds, vmapped")
    ap.add_argument("--evals", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--fitted-noise", action="store_true", help="GPBO's default noise fit, not deterministic=True")
    ap.add_argument("--quick", action="store_true", help="branin, 2 seeds, 30 evaluations (smoke run)")
    args = parse_args(ap, argv)
    problems, seeds, evals = args.problems, args.seeds, sorted(args.evals)
    if args.quick:
        problems, seeds, evals = ["branin"], 2, [15, 30]
        args.problems, args.seeds, args.evals = problems, seeds, evals  # recorded as run

    rows, table = [], []
    for name in problems:
        regrets = {}
        for precondition in (False, True):
            strategy = jaxhpo.GPBO(PROBLEMS[name].space, 1, capacity=max(evals),
                                   deterministic=not args.fitted_noise, acq_precondition=precondition)
            reg, wall = jaxhpo_regrets(name, strategy, evals, seeds)
            regrets[precondition] = reg
            rows += _summary(name, "jaxhpo", f"GPBO acq_precondition={precondition}", evals, reg, wall)
        for j, e in enumerate(evals):
            off, on = regrets[False][:, j], regrets[True][:, j]
            table.append(dict(problem=name, evals=e, median_off=float(np.median(off)),
                              median_on=float(np.median(on)), on_lower=int(np.sum(on < off)),
                              on_higher=int(np.sum(on > off)), equal=int(np.sum(on == off))))
    noise = "fitted noise" if args.fitted_noise else "deterministic=True"
    print_table(table, ["problem", "evals", "median_off", "median_on", "on_lower", "on_higher", "equal"],
                f"GPBO ({noise}) simple regret, acq_precondition off / on, {seeds} paired seeds")
    write_results("gpbo_acquisition", rows, extra={"args": vars(args), "paired": table})


if __name__ == "__main__":
    main()
