"""Accuracy against size: the Pareto front of MLPs on the digits data, by NSGA-II.

Task: classify the 8x8 digits (1797 images shipped with jaxhpo; stratified
60/20/20 train / validation / test split) with a ReLU MLP trained full batch
by Adam. Searched: hidden width (log scale), depth and learning rate.
Objectives: validation accuracy (maximised) and the network's parameter
count (minimised); optionally a constraint ``parameters <= --max-params``.

Every generation of ``NSGA2`` is one vmapped program: widths and depths are
masks on the largest network (``jaxhpo.training.MaskedMLP``), so the whole
population trains at once, and the search is one ``jaxhpo.minimize`` call
(one compiled ``lax.scan`` over the generations). All members start from the
same initial weights (one key), so differences come from the configuration.

Printed: the Pareto front (validation and test accuracy, parameters,
configuration) and its hypervolume with the reference point (accuracy 0,
the largest network's parameter count), also as a share of that box. The
plot (``--out``) shows every evaluated configuration and the front.

Run:  python examples/mo_digits.py [--quick] [--out mo_digits.png] [--max-params 1000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from jaxhpo.datasets_digits import digits_split
from jaxhpo.training.classifier import MLPClassifierTrainer

IN_DIM, NUM_CLASSES = 64, 10
# Full run: about 15-20 s on two CPU cores. Quick: a smoke test.
FULL = dict(popsize=20, num_generations=8, steps=120, max_width=64, max_depth=2)
QUICK = dict(popsize=8, num_generations=3, steps=30, max_width=16, max_depth=2)


def param_count(width, depth, in_dim: int = IN_DIM, out_dim: int = NUM_CLASSES):
    """Weights and biases of the ``width`` x ``depth`` network (arrays or ints, same shape)."""
    return in_dim * width + width + (depth - 1) * (width * width + width) + width * out_dim + out_dim


def make_space(max_width: int, max_depth: int) -> jaxhpo.Space:
    return jaxhpo.Space(
        width=jaxhpo.Int(2, max_width, log=True),
        depth=jaxhpo.Int(1, max_depth),
        learning_rate=jaxhpo.Float(1e-3, 1e-1, log=True),
    )


def make_trainer(split: dict, max_width: int, max_depth: int, steps: int) -> MLPClassifierTrainer:
    """Adam, full batch; one ``step`` call is ``steps`` optimiser steps."""
    return MLPClassifierTrainer(split["X_train"], split["y_train"], split["X_val"], split["y_val"],
                                max_width=max_width, max_depth=max_depth, optimizers=("adam",),
                                steps_per_unit=steps, num_classes=NUM_CLASSES)


def _train(trainer: MLPClassifierTrainer, cfg: dict):
    hp = {"width": cfg["width"], "depth": cfg["depth"], "learning_rate": cfg["learning_rate"]}
    state = trainer.init(jax.random.key(0), hp)
    return trainer.step(state, hp), hp


def make_objective(trainer: MLPClassifierTrainer, split: dict, max_params: int | None):
    """``f(config) -> (2,)`` [validation accuracy, parameters], or ``(3,)`` with the
    constraint ``parameters - max_params`` (feasible when ``<= 0``)."""

    def objective(cfg):
        state, hp = _train(trainer, cfg)
        acc = trainer.accuracy(state, hp, split["X_val"], split["y_val"])
        n = param_count(cfg["width"], cfg["depth"]).astype(jnp.float32)
        out = [acc, n] + ([n - max_params] if max_params is not None else [])
        return jnp.stack(out)

    return objective


def run_mo_digits(*, popsize: int, num_generations: int, steps: int, max_width: int, max_depth: int,
                  seed: int = 0, max_params: int | None = None, test_accuracy: bool = True) -> dict:
    """Search, then retrain the front to report its test accuracy (``test_accuracy``).

    Returns a dict: ``result`` (the ``jaxhpo.Result``), ``front`` (list of
    dicts: ``val_accuracy``, ``test_accuracy``, ``params``, ``config``;
    fewest parameters first), ``hypervolume`` (reference point: accuracy 0,
    ``param_count(max_width, max_depth)`` parameters), ``hypervolume_share``
    (the same over that box's area), ``ref_point``, ``space``, ``seconds``
    and ``cpu_seconds`` (the search, compilation included; CPU time of this
    process, all threads).
    """
    split = digits_split(seed=0)
    space = make_space(max_width, max_depth)
    trainer = make_trainer(split, max_width, max_depth, steps)
    strategy = jaxhpo.NSGA2(space, popsize=popsize, num_objectives=2,
                            num_constraints=0 if max_params is None else 1)
    biggest = float(param_count(max_width, max_depth))
    ref = (0.0, biggest)
    t0, c0 = time.perf_counter(), time.process_time()
    result = jaxhpo.minimize(make_objective(trainer, split, max_params), space, strategy, key=seed,
                             num_generations=num_generations, maximize=(True, False), ref_point=ref,
                             history="all")
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0

    # Training is deterministic given the configuration, so retraining the
    # front reproduces its models; scored once more, on the held-out test part.
    configs = {k: jnp.asarray([p[k] for p in result.pareto_params]) for k in space.names}
    configs["learning_rate"] = configs["learning_rate"].astype(jnp.float32)

    def test_score(cfg):
        state, hp = _train(trainer, cfg)
        return trainer.accuracy(state, hp, split["X_test"], split["y_test"])

    if test_accuracy and result.pareto_params:
        test_acc = np.asarray(jax.jit(jax.vmap(test_score))(configs))
    else:
        test_acc = np.full(len(result.pareto_params), np.nan)
    front = [dict(val_accuracy=float(v[0]), test_accuracy=float(t), params=int(round(v[1])), config=p)
             for v, t, p in zip(result.pareto_values, test_acc, result.pareto_params)]
    front.sort(key=lambda r: r["params"])
    return dict(result=result, front=front, hypervolume=float(result.hypervolume),
                hypervolume_share=float(result.hypervolume) / biggest, ref_point=ref, space=space,
                seconds=seconds, cpu_seconds=cpu_seconds)


def format_front(front: list[dict]) -> str:
    lines = [f"{'params':>7}  {'val acc':>7}  {'test acc':>8}  {'width':>5}  {'depth':>5}  {'lr':>8}"]
    for r in front:
        c = r["config"]
        lines.append(f"{r['params']:>7d}  {r['val_accuracy']:>7.4f}  {r['test_accuracy']:>8.4f}  "
                     f"{c['width']:>5d}  {c['depth']:>5d}  {c['learning_rate']:>8.4g}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test (seconds)")
    parser.add_argument("--out", default="mo_digits.png", help="PNG path of the Pareto-front plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--popsize", type=int)
    parser.add_argument("--generations", type=int)
    parser.add_argument("--steps", type=int, help="Adam steps per training run")
    parser.add_argument("--max-params", type=int, help="constraint: at most this many parameters")
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name, value in (("popsize", args.popsize), ("num_generations", args.generations), ("steps", args.steps)):
        if value is not None:
            settings[name] = value
    out = run_mo_digits(seed=args.seed, max_params=args.max_params, **settings)
    res = out["result"]
    print(f"NSGA2 popsize {settings['popsize']} x {settings['num_generations']} generations, "
          f"{settings['steps']} Adam steps per network (width <= {settings['max_width']}, depth <= "
          f"{settings['max_depth']}): {res.num_evaluations} trainings in {out['seconds']:.1f} s "
          f"wall, {out['cpu_seconds']:.1f} s CPU (compilation included), {res.num_failed} failed")
    print(f"Pareto front ({len(out['front'])} configurations, fewest parameters first):")
    print(format_front(out["front"]))
    print(f"hypervolume {out['hypervolume']:.6g} w.r.t. (accuracy {out['ref_point'][0]}, "
          f"{out['ref_point'][1]:.0f} parameters) = {out['hypervolume_share']:.4f} of that box")
    from jaxhpo import plot

    fig = plot.pareto_front(res, objectives=(1, 0), names=("validation accuracy", "parameters"),
                            title="digits MLP: accuracy against size (NSGA-II)")
    fig.axes[0].set_xscale("log")
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}")
    print(f"backend: {jax.default_backend()}")


if __name__ == "__main__":
    main()
