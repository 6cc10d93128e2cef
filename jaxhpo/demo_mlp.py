"""The MLP demo: tune a small network on the digits data with Hyperband and with PBT.

Task: classify the 8x8 digits (1797 images, shipped with jaxhpo) with a ReLU
MLP trained full batch. Searched: learning rate, weight decay, width, depth
and the optimiser (sgd / momentum / adam / adamw / rmsprop). Every
configuration of a rung or population runs in one vmapped program: widths and
depths by masks on the largest network, the optimiser by ``lax.switch``.

Three searches, each selecting its best configuration by validation loss and
reporting that model's test accuracy:

* Hyperband (``max_budget`` units, ``eta``);
* random search given Hyperband's total training budget, every
  configuration trained to ``max_budget`` (the baseline Hyperband must match);
* population-based training with the same population size as Hyperband's
  largest bracket and a comparable budget.

``run_mlp_demo`` returns the rows, ``format_mlp_table`` prints them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from .datasets_digits import digits_split
from ._keys import seed_key
from .space import Categorical, Float, Int, Space
from .training.classifier import MLPClassifierTrainer
from .training.hyperband import hyperband, hyperband_schedule, successive_halving
from .training.optimizers import OPTIMIZERS
from .training.pbt import pbt

__all__ = ["MLP_SPACE", "MLP_METHODS", "MLP_QUICK_SETTINGS", "MLPDemoRow", "make_digits_trainer",
           "run_mlp_demo", "format_mlp_table"]

MAX_WIDTH, MAX_DEPTH = 64, 2
MLP_SPACE = Space(
    learning_rate=Float(1e-4, 3e-1, log=True),
    weight_decay=Float(1e-6, 1e-2, log=True),
    width=Int(8, MAX_WIDTH),
    depth=Int(1, MAX_DEPTH),
    optimizer=Categorical(list(OPTIMIZERS)),
)
MLP_METHODS = ("hyperband", "random", "pbt")
# Smaller budgets for a fast check (the tests, ``--quick``).
MLP_QUICK_SETTINGS = dict(max_budget=3, steps_per_unit=10, max_width=16, max_depth=2)


def make_digits_trainer(split: dict, *, max_width: int = MAX_WIDTH, max_depth: int = MAX_DEPTH,
                        steps_per_unit: int = 8, has_aux: bool = False) -> MLPClassifierTrainer:
    """The demo's trainer: masked MLP on ``split``'s train part, validation cross-entropy
    (with ``has_aux``, and the validation accuracy as ``{"accuracy": ...}``)."""
    return MLPClassifierTrainer(split["X_train"], split["y_train"], split["X_val"], split["y_val"],
                                max_width=max_width, max_depth=max_depth, optimizers=OPTIMIZERS,
                                steps_per_unit=steps_per_unit, num_classes=10, has_aux=has_aux)


@dataclasses.dataclass(frozen=True)
class MLPDemoRow:
    """One search's outcome.

    Attributes:
      method: ``"hyperband"``, ``"random"`` or ``"pbt"``.
      num_configs: configurations trained (PBT: population size).
      total_budget: budget units trained in all (one unit = ``steps_per_unit`` steps).
      best: the best configuration as Python values (PBT: its final hyperparameters).
      val_loss: its validation cross-entropy.
      val_accuracy: its validation accuracy (recorded by the search itself,
        the trainer's auxiliary output).
      test_accuracy: its trained model's accuracy on the held-out test split.
      seconds: wall time of the search, JIT compilation included.
    """

    method: str
    num_configs: int
    total_budget: int
    best: dict
    val_loss: float
    val_accuracy: float
    test_accuracy: float
    seconds: float


def run_mlp_demo(*, seed: int = 0, max_budget: int = 9, eta: int = 3, steps_per_unit: int = 8,
                 max_width: int = MAX_WIDTH, max_depth: int = MAX_DEPTH,
                 methods: Sequence[str] = MLP_METHODS) -> list[MLPDemoRow]:
    """Tune the digits MLP with each method in ``methods``.

    Args:
      seed: seeds the data split and every search.
      max_budget: Hyperband's ``R`` in units (a unit is ``steps_per_unit``
        full-batch optimiser steps); random search trains every
        configuration this long, PBT runs ``max_budget`` units per member.
      eta: Hyperband's halving rate.
      steps_per_unit: optimiser steps per budget unit.
      max_width, max_depth: the largest network (widths are searched in
        ``[8, max_width]``, depths in ``[1, max_depth]``).
      methods: names from ``MLP_METHODS``.
    Returns:
      one ``MLPDemoRow`` per method, in the order asked.
    """
    for name, value, low in (("seed", seed, 0), ("max_budget", max_budget, 1), ("eta", eta, 2),
                             ("steps_per_unit", steps_per_unit, 1), ("max_width", max_width, 8),
                             ("max_depth", max_depth, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if seed >= 2**64:  # every seed below this makes its own key (seed_key)
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if isinstance(methods, str):
        raise TypeError("methods must be a sequence of names, e.g. ('hyperband', 'pbt')")
    unknown = [m for m in methods if m not in MLP_METHODS]
    if unknown:
        raise ValueError(f"methods: unknown method(s) {unknown}; choose from {MLP_METHODS}")
    space = MLP_SPACE
    if max_width != MAX_WIDTH or max_depth != MAX_DEPTH:
        space = Space(learning_rate=MLP_SPACE["learning_rate"], weight_decay=MLP_SPACE["weight_decay"],
                      width=Int(8, max_width), depth=Int(1, max_depth), optimizer=MLP_SPACE["optimizer"])
    split = digits_split(seed)
    trainer = make_digits_trainer(split, max_width=max_width, max_depth=max_depth,
                                  steps_per_unit=steps_per_unit, has_aux=True)
    schedule = hyperband_schedule(max_budget, eta)
    hb_budget = sum(b[0][0] * b[0][1] + sum(n * (r - rp) for (n, r), (_, rp) in zip(b[1:], b))
                    for b in schedule)
    key = seed_key(seed)
    rows = []

    def acc(state, params_py):
        hp = {k: jnp.asarray(v) for k, v in space.from_python(params_py).items()}
        return float(jax.jit(trainer.accuracy)(state, hp, split["X_test"], split["y_test"]))

    for method in methods:
        start = time.perf_counter()
        if method == "hyperband":
            # Defaults: the brackets train side by side, and on a CPU every level
            # shares one compiled program (compiling dominates a search this small).
            res = hyperband(trainer, space, jax.random.fold_in(key, 1), max_budget=max_budget, eta=eta)
            n, budget, best, val, state = len(res.loss), res.total_budget, res.best_params, res.best_loss, \
                res.best_state
        elif method == "random":
            # The same total budget, every configuration trained to max_budget.
            n = max(1, math.floor(hb_budget / max_budget))
            res = successive_halving(trainer, space, jax.random.fold_in(key, 2), num_configs=n,
                                     min_budget=max_budget, max_budget=max_budget, eta=eta)
            budget, best, val, state = res.total_budget, res.best_params, res.best_loss, res.best_state
        else:
            # at least 4 members: pbt's default fraction (a quarter) then replaces one each round
            n = max(4, schedule[0][0][0])
            # rounds of equal length that make up max_budget exactly: the
            # divisor of max_budget nearest max_budget / 3 (every 3 units)
            rounds = min((r for r in range(1, max_budget + 1) if max_budget % r == 0),
                         key=lambda r: (abs(r - max_budget / 3), r))
            res = pbt(trainer, space, jax.random.fold_in(key, 3), popsize=n, num_rounds=rounds,
                      steps_per_round=max_budget // rounds)
            budget, best, val, state = res.total_budget, res.best_params, res.best_loss, res.best_state
        test = acc(state, best) if best is not None else float("nan")
        val_acc = float(res.best_aux["accuracy"]) if best is not None else float("nan")
        seconds = time.perf_counter() - start
        rows.append(MLPDemoRow(method=method, num_configs=n, total_budget=int(budget), best=best or {},
                               val_loss=float(val), val_accuracy=val_acc, test_accuracy=test, seconds=seconds))
    return rows


def format_mlp_table(rows: Sequence[MLPDemoRow]) -> str:
    """A readable table of ``run_mlp_demo``'s rows."""
    header = ("method", "configs", "budget", "lr", "wd", "width", "depth", "optimizer", "val loss",
              "val acc", "test acc", "wall (s)")
    body = []
    for r in rows:
        b = r.best
        body.append((r.method, str(r.num_configs), str(r.total_budget),
                     f"{b.get('learning_rate', float('nan')):.3g}", f"{b.get('weight_decay', float('nan')):.2g}",
                     str(b.get("width", "-")), str(b.get("depth", "-")), str(b.get("optimizer", "-")),
                     f"{r.val_loss:.4f}", f"{r.val_accuracy:.4f}", f"{r.test_accuracy:.4f}", f"{r.seconds:.1f}"))
    widths = [max(len(h), *(len(x[i]) for x in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([
        "digits (8x8 images, 10 classes; 60/20/20 train/val/test): MLP, full-batch training; "
        "searched lr, weight decay, width, depth, optimizer",
        line(header), line(["-" * w for w in widths]), *(line(x) for x in body),
        "best = lowest validation loss; budget in units of steps_per_unit optimiser steps; "
        "wall time includes JIT compilation.",
    ])
