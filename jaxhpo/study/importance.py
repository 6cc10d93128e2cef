"""A simple hyperparameter importance: how much of the variance of the
(rank-transformed) objective each parameter explains on its own.

For each parameter the complete trials are grouped by its value (each
choice of a categorical, equal-count bins of a numeric parameter, one more
group for trials where a conditional parameter is inactive), and the score
is the correlation ratio ``eta^2 = between-group variance / total variance``
of the values' ranks (ties share their mean rank), less what ``g`` groups
explain of pure noise: ``epsilon^2 = (eta^2 - (g - 1) / (n - 1)) / (1 - (g - 1) / (n - 1))``
(its expectation under no effect, ``(g - 1) / (n - 1)``, else grows with
the bins: 7/63 = 0.11 for an irrelevant parameter in 8 bins of 64 trials), floored
at 0. This is the first-order (main-effect) term of a functional ANOVA
estimated without a surrogate model: cheap, dependency-free and robust to
outliers (ranks), but blind to interactions. Scores are normalised to sum
to 1 (equal shares where no parameter explains more than noise).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from ..space import Categorical, Space
from .trial import Trial, TrialState

__all__ = ["param_importance", "NotEnoughTrials"]


class NotEnoughTrials(ValueError):
    """The trials cannot rank any parameter yet: fewer than two complete, or all of one value."""


_INACTIVE = object()  # a conditional parameter a trial left out (``None`` may be a choice)


def _groups(values: list, numeric: bool, num_bins: int) -> np.ndarray:
    """Group index per trial; ``_INACTIVE`` is a group of its own."""
    n = len(values)
    out = np.zeros(n, np.int64)
    active = np.array([v is not _INACTIVE for v in values])
    if numeric:
        x = np.array([float(v) if v is not _INACTIVE else np.nan for v in values])
        xa = x[active]
        if xa.size:
            edges = np.unique(np.quantile(xa, np.linspace(0, 1, num_bins + 1)[1:-1]))
            out[active] = np.searchsorted(edges, xa, side="right")
    else:
        labels: dict = {}
        for i, v in enumerate(values):
            if v is not _INACTIVE:
                out[i] = labels.setdefault((type(v).__name__, repr(v)), len(labels))
    out[~active] = out.max(initial=0) + 1
    return out


def average_ranks(y: np.ndarray) -> np.ndarray:
    """Ranks ``0 .. n-1`` of ``y`` ``(n,)``, tied values sharing their mean rank
    (``scipy.stats.rankdata(y) - 1``): ties carry no order, so trial order
    cannot pass for an effect."""
    order = np.argsort(y, kind="stable")
    _, first, counts = np.unique(y[order], return_index=True, return_counts=True)
    ranks = np.empty(y.size, float)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0, counts)
    return ranks


def param_importance(study: Any = None, *, space: Space | None = None,
                     trials: Sequence[Trial] | None = None, num_bins: int | None = None,
                     objective: int | None = None) -> dict[str, float]:
    """Importance of each parameter, largest first, summing to 1.

    Every complete trial counts, infeasible ones (a study with constraints)
    included: the score says how much a parameter moves the objective, which
    an infeasible trial measures as well as a feasible one (Optuna's
    importances count them too); the plots of values leave them out.

    Args:
      study: a ``Study`` (or give ``space`` and ``trials``).
      num_bins: bins per numeric parameter; default ``clip(n // 8, 2, 10)``.
      objective: with several objectives, which one (index into
        ``Trial.values``); required then, since importance is per objective.
    Returns:
      dict name -> score in ``[0, 1]``.
    Raises:
      ValueError: fewer than 2 complete trials with distinct values.
    """
    if study is not None:
        space, trials = study.space, study.get_trials((TrialState.COMPLETE,))
    if space is None or trials is None:
        raise TypeError("param_importance needs a study, or space= and trials=")
    multi = any(t.values is not None and len(t.values) > 1 for t in trials)
    if multi:
        m = min(len(t.values) for t in trials if t.values is not None)
        if isinstance(objective, bool) or not isinstance(objective, numbers.Integral) or not 0 <= objective < m:
            raise ValueError(f"param_importance: the trials have {m} objectives; pass objective= an index "
                             f"in [0, {m}), got {objective!r}")
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
        y = np.array([t.values[int(objective)] for t in done], float)
    else:
        if objective is not None and (isinstance(objective, bool) or objective != 0):
            raise ValueError(f"param_importance: the trials have one objective; objective= may only be None or 0, "
                             f"got {objective!r}")
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        y = np.array([t.value for t in done], float)
    if len(done) < 2:
        raise NotEnoughTrials(f"param_importance needs at least 2 complete trials, got {len(done)}")
    ranks = average_ranks(y)
    total = float(np.sum((ranks - ranks.mean()) ** 2))
    if total == 0.0:
        raise NotEnoughTrials("param_importance needs complete trials with different values")
    if num_bins is None:
        num_bins = int(np.clip(len(done) // 8, 2, 10))
    elif isinstance(num_bins, bool) or not isinstance(num_bins, numbers.Integral) or num_bins < 2:
        raise ValueError(f"param_importance num_bins must be an integer >= 2, got {num_bins!r}")
    scores = {}
    for name, d in space.dims.items():
        vals = [t.params.get(name, _INACTIVE) for t in done]
        g = _groups(vals, not isinstance(d, Categorical), num_bins)
        between = 0.0
        groups = np.unique(g)
        for k in groups:
            r = ranks[g == k]
            between += r.size * (r.mean() - ranks.mean()) ** 2
        chance = (groups.size - 1) / (len(done) - 1)  # E[eta^2] when the parameter does nothing
        scores[name] = max(0.0, (between / total - chance) / (1.0 - chance)) if chance < 1.0 else 0.0
    s = sum(scores.values())
    if s <= 0 or not math.isfinite(s):
        scores = {k: 1.0 / len(scores) for k in scores}
    else:
        scores = {k: float(v / s) for k, v in scores.items()}
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))
