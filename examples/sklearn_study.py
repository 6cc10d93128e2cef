"""Tune a scikit-learn random forest through ``jaxhpo.Study``.

The objective is ordinary Python (scikit-learn, not JAX): the Study asks the
strategy for configurations, runs them, records every trial in an SQLite
file, and can be stopped and restarted at any point: rerunning this script
resumes the study where it stopped.

    python examples/sklearn_study.py                 # 30 trials, study in rf_study.db
    python examples/sklearn_study.py --trials 80     # later: continue to 80
    jaxhpo show rf_study.db                          # best trials
    jaxhpo plot rf_study.db                          # PNGs in rf_study_plots/

The same search from a config file: ``jaxhpo run examples/sklearn_study.toml``.
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_score

import jaxhpo
from jaxhpo.study import Study, TrialState

SPACE = jaxhpo.Space(
    n_estimators=jaxhpo.Int(10, 100, log=True),
    max_depth=jaxhpo.Int(1, 16),
    max_features=jaxhpo.Float(0.05, 1.0),
    min_samples_leaf=jaxhpo.Int(1, 20, log=True),
    criterion=jaxhpo.Categorical(["gini", "entropy"]),
)

_DATA = None


def objective(params: dict) -> float:
    """Mean 3-fold cross-validated accuracy of a random forest (maximised);
    each fold's accuracy is stored beside it (``trial.user_attrs``)."""
    global _DATA
    if _DATA is None:
        _DATA = load_breast_cancer(return_X_y=True)
    X, y = _DATA
    model = RandomForestClassifier(random_state=0, n_jobs=1, **params)
    scores = cross_val_score(model, X, y, cv=3)
    jaxhpo.study.set_user_attr("fold_accuracy", scores)
    return float(scores.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials in the whole study")
    parser.add_argument("--storage", default="sqlite:///rf_study.db", help="where the study lives")
    parser.add_argument("--popsize", type=int, default=8, help="configurations per generation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    strategy = jaxhpo.RandomSearch(SPACE, args.popsize)
    with Study(SPACE, strategy, seed=args.seed, maximize=True, storage=args.storage,
               name="random-forest") as study:
        # max_trials counts the whole study, so a rerun after a crash only finishes the budget
        study.optimize(objective, max_trials=args.trials)
        best = study.best_trial
        folds = ", ".join(f"{a:.4f}" for a in best.user_attrs["fold_accuracy"])
        print(f"best accuracy {best.value:.4f} (trial {best.number}; folds {folds}) with {best.params}")
        # The strategy proposes whole generations: trials of the last one that
        # the budget left unrun wait in storage for the next run.
        counts = {state: len(study.get_trials([state]))
                  for state in (TrialState.COMPLETE, TrialState.FAILED, TrialState.WAITING)}
        print(", ".join(f"{n} {state}" for state, n in counts.items()) + f" trials; storage {study.storage.url}")


if __name__ == "__main__":
    main()
