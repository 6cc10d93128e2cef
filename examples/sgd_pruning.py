"""Stop unpromising training runs early: a ``Study`` with a pruner.

A scikit-learn ``SGDClassifier`` trains on the digits data one epoch at a
time; after each epoch the objective reports the validation log-loss, and
the study's pruner (asynchronous successive halving by default) stops the
runs that fall behind. The study is stored in an SQLite file: rerunning the
script resumes it.

    python examples/sgd_pruning.py                      # 40 trials, ASHA
    python examples/sgd_pruning.py --pruner median      # the median stopping rule
    python examples/sgd_pruning.py --pruner hyperband   # ASHA brackets judging from 1, 3, 9 epochs
    python examples/sgd_pruning.py --pruner none        # every run to the end
    jaxhpo plot sgd_pruning.db --name sgd-asha          # intermediate_values.png among the plots

Each pruner's run is its own study in the file (``sgd-asha``, ``sgd-median``,
...): ``jaxhpo plot`` needs ``--name`` once the file holds several.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss

import jaxhpo
from jaxhpo.datasets_digits import digits_split
from jaxhpo.study import (HyperbandPruner, MedianPruner, Study, SuccessiveHalvingPruner, TrialPruned, TrialState,
                          report, should_prune)

SPACE = jaxhpo.Space(
    alpha=jaxhpo.Float(1e-6, 1e-1, log=True),
    eta0=jaxhpo.Float(1e-4, 1.0, log=True),
    power_t=jaxhpo.Float(0.1, 0.9),
)
EPOCHS = 27
DATA = digits_split(0)
CLASSES = np.arange(10)


def objective(p: dict) -> float:
    """Validation log-loss after ``EPOCHS`` epochs (minimised); reports it after every epoch."""
    model = SGDClassifier(loss="log_loss", alpha=p["alpha"], learning_rate="invscaling", eta0=p["eta0"],
                          power_t=p["power_t"], random_state=0)
    rng = np.random.default_rng(0)
    loss = math.inf
    for epoch in range(EPOCHS):
        order = rng.permutation(len(DATA["y_train"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence warnings of a single pass
            model.partial_fit(DATA["X_train"][order], DATA["y_train"][order], classes=CLASSES)
        proba = model.predict_proba(DATA["X_val"])
        loss = float(log_loss(DATA["y_val"], proba, labels=CLASSES)) if np.all(np.isfinite(proba)) else math.inf
        report(loss, epoch)  # a diverged run (inf) is pruned at once
        if should_prune():
            raise TrialPruned()
    return loss


def main(argv=None) -> Study:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40, help="trials in the whole study (rerunning resumes)")
    ap.add_argument("--pruner", choices=("asha", "hyperband", "median", "none"), default="asha")
    ap.add_argument("--storage", default="sgd_pruning.db")
    args = ap.parse_args(argv)
    pruner = {"asha": SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
              "hyperband": HyperbandPruner(min_resource=1, max_resource=EPOCHS, reduction_factor=3),
              "median": MedianPruner(n_startup_trials=5), "none": None}[args.pruner]
    study = Study(SPACE, jaxhpo.TPE(SPACE, 1), seed=0, storage=args.storage, name=f"sgd-{args.pruner}",
                  pruner=pruner)
    study.optimize(objective, max_trials=args.trials)
    trials = study.trials
    epochs = sum(len(t.intermediate_values) for t in trials)
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    print(f"{len(trials)} trials, {pruned} pruned, {epochs} of {len(trials) * EPOCHS} epochs trained")
    print(f"best validation log-loss {study.best_value:.4f} with {study.best_params}")
    return study


if __name__ == "__main__":
    main()
