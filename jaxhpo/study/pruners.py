"""Pruners: stop a ``Study``'s unpromising trials early from their intermediate values.

An objective that trains for many steps (epochs) reports its validation
value as it goes (``jaxhpo.study.report(value, step)`` inside
``Study.optimize``, or ``study.report(trial, value, step)`` with ask/tell)
and asks ``should_prune()``; when a pruner says yes, the objective raises
``TrialPruned`` (ask/tell: ``study.tell(trial, pruned=True)``) and the trial
is recorded as *pruned* with its last reported value.

A pruner decides from the stored reports alone, so its answer does not
depend on which worker or process asks, and survives a crash: no pruner
keeps state of its own. Values reach it in the minimisation sign (a
maximised study's values are negated first).

* ``MedianPruner`` / ``PercentilePruner``: prune a trial whose best value
  so far is worse than the given percentile of the complete trials' values
  at the same step (the median stopping rule of Google Vizier, as Optuna's
  pruners of the same names).
* ``SuccessiveHalvingPruner``: asynchronous successive halving (ASHA, Li et
  al. 2020): rungs at ``min_resource * reduction_factor**k`` steps; a trial
  reaching a rung continues only if its value there is in the top
  ``1 / reduction_factor`` of every trial that reached that rung so far.
* ``HyperbandPruner``: Hyperband's hedge over how early to judge (Li et al.
  2018): each trial falls, by its number, into one of several ASHA brackets
  whose first rungs sit ``reduction_factor`` times apart, and competes only
  with the trials of its bracket.
* ``ThresholdPruner``: prune a trial whose value leaves fixed bounds (a
  diverging loss, an accuracy still at chance level).
* ``PatientPruner``: prune only a trial that has not improved for
  ``patience`` steps and that a wrapped pruner would prune (a noisy curve
  gets time to recover).

Each has ``should_prune(steps, values, view) -> bool``; ``steps`` and
``values`` are the trial's reports in step order and ``view`` answers
questions about the other trials (``ReportView``).
"""

from __future__ import annotations

import math
import numbers
import zlib
from typing import Callable, Protocol

import numpy as np

from ..strategies._checks import check_int, check_real

__all__ = ["Pruner", "ReportView", "NopPruner", "PercentilePruner", "MedianPruner",
           "SuccessiveHalvingPruner", "HyperbandPruner", "ThresholdPruner", "PatientPruner",
           "TrialPruned", "PRUNER_NAMES", "build_pruner"]


class TrialPruned(Exception):
    """Raised by an objective to stop its trial; ``Study.optimize`` records it as pruned."""


class ReportView(Protocol):
    """The other trials' reports, as a pruner may query them (minimisation sign)."""

    trial_number: int  # the number of the trial being judged
    maximize: bool  # whether the study maximises (its values reach pruners negated)

    def num_complete(self) -> int:
        """How many trials of the study are complete."""

    def max_complete_step(self) -> int | None:
        """The largest step any complete trial reported, ``None`` before one did."""

    def first_complete_step(self) -> int | None:
        """The largest step reported by the trial that completed first (of those that
        reported), ``None`` before one did: unlike the maximum, it never changes."""

    def values_at(self, step: int, *, complete_only: bool, exact: bool,
                  among: Callable[[int], bool] | None = None, since: int | None = None) -> np.ndarray:
        """``(k,)`` one value per other trial (whose number passes ``among``, if given):
        its report at ``step`` (``exact``), or at its first reported step ``>= step``;
        ``nan`` for a non-finite report. With ``since`` (the rung below ``step``),
        a pruned trial whose first report past ``step`` was its last is left out
        unless its report before reached ``since``: that last report also crossed
        the lower rung, where it was stopped, so it never reached ``step``."""


class Pruner:
    """Base class: ``should_prune(steps (n,), values (n,), view) -> bool``, ``n >= 1``."""

    def should_prune(self, steps: np.ndarray, values: np.ndarray, view: ReportView) -> bool:
        """Whether to stop a running trial now.

        Args:
          steps: ``(n,)`` int64, the steps it reported, ascending.
          values: ``(n,)`` float64, its reports there, minimised (a maximised
            study's negated); ``nan`` for a non-finite report.
          view: the study's other trials' reports (``ReportView``).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class NopPruner(Pruner):
    """Never prunes (reports are still recorded)."""

    def should_prune(self, steps, values, view) -> bool:
        return False


def _new_window(steps: np.ndarray, warmup: int, interval: int) -> bool:
    """The latest step is the first report in its window of ``interval`` steps after the warm-up."""
    last = int(steps[-1])
    if last < warmup:
        return False
    if steps.size == 1 or int(steps[-2]) < warmup:
        return True
    return (last - warmup) // interval > (int(steps[-2]) - warmup) // interval


def _percentile_worst_last(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) with each non-finite
    value (a diverged trial) ranked worst, as ``+inf``: a percentile that
    reaches into them is ``+inf`` rather than NumPy's ``nan``."""
    v = np.sort(np.where(np.isfinite(values), values, np.inf))
    pos = q / 100.0 * (v.size - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi or v[lo] == v[hi]:
        return float(v[lo])
    if math.isinf(v[hi]):
        return math.inf
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


class PercentilePruner(Pruner):
    """Prune when the trial's best value so far is worse than the ``percentile``-th
    percentile of the complete trials' values at the same step.

    Args:
      percentile: in ``[0, 100]``; 50 is the median rule, lower prunes more.
      n_startup_trials: no pruning before this many trials are complete.
      n_warmup_steps: no pruning at steps below this (learning curves cross early).
      interval_steps: decide at most once per this many steps.
      n_min_trials: no pruning at a step that fewer complete trials reported.

    A latest report that is not finite (a diverged run) is pruned at once; a
    complete trial's non-finite report counts in the percentile as the worst
    value (as ``SuccessiveHalvingPruner`` ranks it), not left out.
    """

    def __init__(self, percentile: float, n_startup_trials: int = 5, n_warmup_steps: int = 0,
                 interval_steps: int = 1, n_min_trials: int = 1):
        self.percentile = check_real("percentile", percentile, 0.0, 100.0)
        self.n_startup_trials = check_int("n_startup_trials", n_startup_trials, 0, int32=False)
        self.n_warmup_steps = check_int("n_warmup_steps", n_warmup_steps, 0, int32=False)
        self.interval_steps = check_int("interval_steps", interval_steps, 1, int32=False)
        self.n_min_trials = check_int("n_min_trials", n_min_trials, 1, int32=False)

    def should_prune(self, steps, values, view) -> bool:
        if not math.isfinite(float(values[-1])):
            return True
        if not _new_window(steps, self.n_warmup_steps, self.interval_steps):
            return False
        if view.num_complete() < self.n_startup_trials:
            return False
        others = view.values_at(int(steps[-1]), complete_only=True, exact=True)
        if others.size < self.n_min_trials:
            return False
        best = float(np.nanmin(values))
        return best > _percentile_worst_last(others, self.percentile)


class MedianPruner(PercentilePruner):
    """``PercentilePruner(50, ...)``: the median stopping rule."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, interval_steps: int = 1,
                 n_min_trials: int = 1):
        super().__init__(50.0, n_startup_trials, n_warmup_steps, interval_steps, n_min_trials)

    def __repr__(self) -> str:
        return (f"MedianPruner(n_startup_trials={self.n_startup_trials}, n_warmup_steps="
                f"{self.n_warmup_steps}, interval_steps={self.interval_steps}, "
                f"n_min_trials={self.n_min_trials})")


class SuccessiveHalvingPruner(Pruner):
    """Asynchronous successive halving over reported steps.

    Rung ``k`` sits at ``min_resource * reduction_factor**(min_early_stopping_rate + k)``
    steps. A trial's value at a rung is its report at its first step at or
    past the rung. When a trial's latest report is its first past a rung, it
    is promoted only if that value ranks within the best
    ``max(1, n // reduction_factor)`` of the ``n`` trials (any state, this
    one included) that have reached the rung; otherwise it is pruned. Early
    trials thus face few competitors (the first always passes), as in ASHA.
    A trial reaches a rung by being promoted at the rung below: one pruned
    by a report that crossed several rungs counts at the lowest of them
    only (ASHA records the rungs a trial passed; from the reports alone, it
    is taken to have been stopped at the first).

    Args:
      min_resource: steps before the first rung (``>= 1``).
      reduction_factor: ``eta >= 2``; a rung keeps about ``1 / eta`` of its trials.
      min_early_stopping_rate: ``s >= 0``; the first rung moves to
        ``min_resource * eta**s`` steps.

    A latest report that is not finite is pruned at once.
    """

    def __init__(self, min_resource: int = 1, reduction_factor: int = 3, min_early_stopping_rate: int = 0):
        self.min_resource = check_int("min_resource", min_resource, 1, int32=False)
        self.reduction_factor = check_int("reduction_factor", reduction_factor, 2, int32=False)
        self.min_early_stopping_rate = check_int("min_early_stopping_rate", min_early_stopping_rate, 0, int32=False)

    def rungs(self, up_to: int) -> list[int]:
        """The rung steps ``<= up_to``, in order."""
        out, r = [], self.min_resource * self.reduction_factor ** self.min_early_stopping_rate
        while r <= up_to:
            out.append(r)
            r *= self.reduction_factor
        return out

    def should_prune(self, steps, values, view, among: Callable[[int], bool] | None = None) -> bool:
        """``among``: only trials whose number passes compete (``HyperbandPruner``'s brackets)."""
        value = float(values[-1])
        if not math.isfinite(value):
            return True
        last = int(steps[-1])
        before = int(steps[-2]) if steps.size > 1 else -1
        rungs = self.rungs(last)
        for k, rung in enumerate(rungs):
            if rung <= before:  # reached earlier and promoted then
                continue
            # Rivals are the trials promoted into this rung, as in ASHA: not one
            # stopped at the rung below by the report that crossed both.
            others = view.values_at(rung, complete_only=False, exact=False, among=among,
                                    since=rungs[k - 1] if k else None)
            # A non-finite rival ranks last; it never blocks a promotion.
            competing = np.sort(np.append(np.where(np.isfinite(others), others, np.inf), value))
            keep = max(1, competing.size // self.reduction_factor)
            if value > competing[keep - 1]:
                return True
        return False


class HyperbandPruner(Pruner):
    """Hyperband over reported steps: ASHA brackets that judge from different first rungs.

    With ``s_max = floor(log_eta(max_resource / min_resource))`` there are
    ``s_max + 1`` brackets; bracket ``b`` is
    ``SuccessiveHalvingPruner(min_resource, eta, min_early_stopping_rate=b)``,
    so bracket 0 judges first at ``min_resource`` steps and the last lets
    its trials run to about ``max_resource`` before judging. A trial's bracket
    follows from its number alone (a CRC-32 of it, weighted by the number of
    configurations Hyperband gives each bracket, ``ceil((s_max + 1) eta^s / (s + 1))``
    for ``s = s_max - b``), so every process assigns it alike, and it
    competes only with the trials of its bracket.

    Args:
      min_resource: steps before the earliest rung (``>= 1``).
      max_resource: the steps a full run reports (``>= min_resource``), or
        ``"auto"``: one more than the last step the first trial to complete
        reported, fixed from then on as Optuna's default fixes it (a later,
        longer trial does not move running trials to other brackets);
        nothing is pruned before a trial completes, since the brackets are
        not known until then.
      reduction_factor: ``eta >= 2``.
    """

    def __init__(self, min_resource: int = 1, max_resource: int | str = "auto", reduction_factor: int = 3):
        self.min_resource = check_int("min_resource", min_resource, 1, int32=False)
        if not (isinstance(max_resource, str) and max_resource == "auto"):
            if isinstance(max_resource, bool) or not isinstance(max_resource, numbers.Integral):
                raise TypeError(f"max_resource must be an integer or 'auto', got {max_resource!r}")
            max_resource = check_int("max_resource", max_resource, self.min_resource, int32=False)
        self.max_resource = max_resource
        self.reduction_factor = check_int("reduction_factor", reduction_factor, 2, int32=False)
        self._layouts: dict[int, tuple[list, np.ndarray]] = {}
        self._bracket_of: dict[tuple[int, int], int] = {}  # memo: each decision asks every rival's bracket

    def __repr__(self) -> str:
        return (f"HyperbandPruner(min_resource={self.min_resource}, max_resource={self.max_resource!r}, "
                f"reduction_factor={self.reduction_factor})")

    def _layout(self, max_resource: int | None) -> tuple[list, np.ndarray]:
        """``(brackets, cumulative weights)`` for ``max_resource`` (this pruner's, if ``None``)."""
        r = self.max_resource if max_resource is None else max(int(max_resource), self.min_resource)
        if r == "auto":
            raise ValueError("max_resource='auto': the brackets are known once a trial completes; "
                             "pass max_resource")
        if r not in self._layouts:
            eta, s_max = self.reduction_factor, 0
            while self.min_resource * eta ** (s_max + 1) <= r:
                s_max += 1
            brackets = [SuccessiveHalvingPruner(self.min_resource, eta, b) for b in range(s_max + 1)]
            weights = [math.ceil((s_max + 1) * eta ** (s_max - b) / (s_max - b + 1)) for b in range(s_max + 1)]
            self._layouts[r] = (brackets, np.cumsum(weights))
        return self._layouts[r]

    def num_brackets(self, max_resource: int | None = None) -> int:
        """Brackets for ``max_resource`` steps (this pruner's own, if ``None``)."""
        return len(self._layout(max_resource)[0])

    def bracket(self, number: int, max_resource: int | None = None) -> int:
        """The bracket of trial ``number``, ``0 <= b < num_brackets(max_resource)``."""
        bounds = self._layout(max_resource)[1]
        key = (int(number), int(bounds[-1]))
        b = self._bracket_of.get(key)
        if b is None:
            slot = zlib.crc32(str(key[0]).encode()) % key[1]
            b = self._bracket_of[key] = int(np.searchsorted(bounds, slot, side="right"))
        return b

    def should_prune(self, steps, values, view) -> bool:
        if not math.isfinite(float(values[-1])):  # a diverged run, before the brackets are known too
            return True
        r = None
        if self.max_resource == "auto":
            last = view.first_complete_step()
            if last is None:
                return False
            r = last + 1
        brackets = self._layout(r)[0]
        mine = self.bracket(view.trial_number, r)
        return brackets[mine].should_prune(steps, values, view, among=lambda n: self.bracket(n, r) == mine)


class ThresholdPruner(Pruner):
    """Prune a trial whose latest value is below ``lower``, above ``upper`` or not finite.

    Args:
      lower, upper: bounds in the study's own sign (an accuracy that a
        maximised study reports: ``lower=0.2``); ``None`` for no bound.
      n_warmup_steps: no pruning at steps below this (except of a non-finite
        value, pruned at once as by every built-in pruner).
      interval_steps: decide at most once per this many steps.
    """

    def __init__(self, lower: float | None = None, upper: float | None = None, n_warmup_steps: int = 0,
                 interval_steps: int = 1):
        self.lower = None if lower is None else check_real("lower", lower, -math.inf, math.inf)
        self.upper = None if upper is None else check_real("upper", upper, -math.inf, math.inf)
        if self.lower is None and self.upper is None:
            raise ValueError("ThresholdPruner needs lower, upper or both")
        if self.lower is not None and self.upper is not None and not self.lower <= self.upper:
            raise ValueError(f"ThresholdPruner needs lower <= upper, got lower={lower!r}, upper={upper!r}")
        self.n_warmup_steps = check_int("n_warmup_steps", n_warmup_steps, 0, int32=False)
        self.interval_steps = check_int("interval_steps", interval_steps, 1, int32=False)

    def should_prune(self, steps, values, view) -> bool:
        value = float(values[-1])
        if not math.isfinite(value):
            return True
        if not _new_window(steps, self.n_warmup_steps, self.interval_steps):
            return False
        if view.maximize:
            value = -value  # back to the study's sign
        return (self.lower is not None and value < self.lower) or (self.upper is not None and value > self.upper)


class PatientPruner(Pruner):
    """Prune only a trial whose best value of its latest ``patience + 1`` reports is
    worse than its best before them by more than ``min_delta`` (and, with a
    ``wrapped`` pruner, only when that one prunes it too).

    This is Optuna's ``PatientPruner`` rule: a trial whose reports hold level,
    or keep improving however little, is never stopped by it; one that has
    fallen back for ``patience + 1`` reports is.

    Args:
      wrapped: a ``Pruner`` asked once patience has run out; ``None``: prune then.
      patience: reports past the best before them that may fall back (``>= 0``).
      min_delta: how far they may fall back from that best (``>= 0``).

    A non-finite latest report is pruned at once, as by every built-in
    pruner (Optuna's ``PatientPruner`` compares with NaN and never prunes);
    earlier non-finite reports are left out of both bests.
    """

    def __init__(self, wrapped: Pruner | None, patience: int, min_delta: float = 0.0):
        if wrapped is not None and not isinstance(wrapped, Pruner):
            raise TypeError(f"PatientPruner wrapped must be a Pruner or None, got {wrapped!r}")
        self.wrapped = wrapped
        self.patience = check_int("patience", patience, 0, int32=False)
        self.min_delta = check_real("min_delta", min_delta, 0.0, math.inf)

    def should_prune(self, steps, values, view) -> bool:
        if not math.isfinite(float(values[-1])):
            return True
        k = self.patience + 1
        if values.size <= k:
            return False
        before, recent = values[:-k], values[-k:]
        if np.isnan(recent).all():
            stalled = True
        elif np.isnan(before).all():
            stalled = False
        else:
            stalled = float(np.nanmin(before)) + self.min_delta < float(np.nanmin(recent))
        if not stalled:
            return False
        return True if self.wrapped is None else self.wrapped.should_prune(steps, values, view)


# Names a run configuration may give (``pruner = { name = "asha", reduction_factor = 3 }``;
# ``{ name = "patient", patience = 3, wrapped = { name = "median" } }``).
_BY_NAME = {"none": NopPruner, "median": MedianPruner, "percentile": PercentilePruner,
            "asha": SuccessiveHalvingPruner, "successive_halving": SuccessiveHalvingPruner,
            "hyperband": HyperbandPruner, "threshold": ThresholdPruner, "patient": PatientPruner}
PRUNER_NAMES = tuple(_BY_NAME)


def build_pruner(name: str, settings: dict | None = None) -> Pruner:
    """A pruner by name (``PRUNER_NAMES``) with keyword ``settings``; errors name the setting.

    ``"patient"``'s ``wrapped`` is itself a table with a ``name`` (or a name), or absent."""
    if name not in _BY_NAME:
        raise ValueError(f"pruner must be one of {PRUNER_NAMES}, got {name!r}")
    settings = dict(settings or {})
    if name == "patient":
        inner = settings.get("wrapped")
        if isinstance(inner, str):
            inner = {"name": inner}
        if inner is not None:
            if not isinstance(inner, dict) or not isinstance(inner.get("name"), str):
                raise ValueError(f"pruner 'patient': wrapped must be a pruner name or a table with a 'name', "
                                 f"got {inner!r}")
            settings["wrapped"] = build_pruner(inner["name"], {k: v for k, v in inner.items() if k != "name"})
        else:
            settings["wrapped"] = None
    try:
        return _BY_NAME[name](**(settings or {}))
    except TypeError as e:
        if "argument" in str(e):  # an unknown or missing keyword
            raise TypeError(f"pruner {name!r}: {e}") from None
        raise
