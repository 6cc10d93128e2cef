"""The trial record: one configuration of a ``Study`` and what became of it."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Any

__all__ = ["Trial", "TrialState", "TRIAL_STATES", "FINISHED_STATES"]


class TrialState:
    """The life of a trial: ``waiting`` -> ``running`` -> ``complete``, ``failed`` or ``pruned``.

    A trial is *waiting* once its generation has been proposed, *running*
    once a worker has claimed it, and *finished* (``complete`` with a finite
    value, ``failed`` with an error text, or ``pruned``: stopped early by a
    pruner, with its last reported value) once its value is told. Only
    finished trials are final: a running trial whose process died goes back
    to waiting.
    """

    WAITING = "waiting"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    PRUNED = "pruned"


TRIAL_STATES = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.FAILED,
                TrialState.PRUNED)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.FAILED, TrialState.PRUNED)


def _when(t: float | None) -> _dt.datetime | None:
    return None if t is None else _dt.datetime.fromtimestamp(t)


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trial of a ``Study``, as stored.

    Attributes:
      number: position in the study, ``0, 1, 2, ...`` in proposal order.
      generation: the strategy generation (``ask`` round) it belongs to.
      index: its row in that generation's population, ``0 <= index < popsize``.
      params: the configuration as plain Python values (labels restored;
        inactive conditional parameters left out).
      value: the objective value in the user's sign, ``None`` unless complete
        (and ``None`` in a study of several objectives: see ``values``); for
        a pruned trial its last reported value (``None`` if not finite).
      state: one of ``TRIAL_STATES``.
      error: why it failed (exception text, or the non-finite value), else ``None``.
      created_at, started_at, finished_at: UNIX times (seconds) or ``None``.
      worker: who ran it (``host:pid``), or ``None``.
      values: studies of several objectives: the ``m`` objective values in
        the user's signs, ``None`` unless complete.
      constraints: their constraint values (feasible when every one is
        ``<= 0``); ``()`` without constraints, ``None`` unless complete.
      intermediate_values: ``{step: value}`` reported while it ran (``nan``
        for a non-finite report); filled by ``Study.get_trials``.
      study: the name of the study it belongs to (``tell`` refuses a trial
        of another study).
      user_attrs: what the objective recorded beside its value
        (``Study.set_user_attr``), ``{key: JSON value}``.
    """

    number: int
    generation: int
    index: int
    params: dict
    value: float | None
    state: str
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    values: tuple | None = None
    constraints: tuple | None = None
    intermediate_values: dict = dataclasses.field(default_factory=dict)
    study: str | None = None
    user_attrs: dict = dataclasses.field(default_factory=dict)

    @property
    def last_step(self) -> int | None:
        """The latest reported step, or ``None`` without reports."""
        return max(self.intermediate_values) if self.intermediate_values else None

    @property
    def feasible(self) -> bool:
        """Complete with every constraint value ``<= 0`` (always, without constraints)."""
        if self.state != TrialState.COMPLETE:
            return False
        return self.constraints is None or all(g <= 0.0 for g in self.constraints)

    @property
    def finished(self) -> bool:
        """Complete, failed or pruned: final."""
        return self.state in FINISHED_STATES

    @property
    def duration(self) -> float | None:
        """Seconds from claim to finish, or ``None`` if not finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def datetime_start(self) -> _dt.datetime | None:
        """``started_at`` as a local ``datetime`` (``None`` if not started)."""
        return _when(self.started_at)

    @property
    def datetime_complete(self) -> _dt.datetime | None:
        """``finished_at`` as a local ``datetime`` (``None`` if not finished)."""
        return _when(self.finished_at)

    def to_record(self) -> dict[str, Any]:
        """A flat dict: the fields, with each parameter as ``params_<name>``
        (and, with several objectives, ``values_<i>`` and ``constraints_<i>``),
        each user attribute as ``user_attrs_<key>``."""
        rec = {
            "number": self.number,
            "generation": self.generation,
            "index": self.index,
            "state": self.state,
            "value": self.value,
            "error": self.error,
            "duration": self.duration,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker": self.worker,
            "last_step": self.last_step,
        }
        if self.values is not None:
            rec.update({f"values_{i}": v for i, v in enumerate(self.values)})
        if self.constraints:
            rec.update({f"constraints_{i}": v for i, v in enumerate(self.constraints)})
        for k, v in self.params.items():
            rec[f"params_{k}"] = v
        for k, v in self.user_attrs.items():
            rec[f"user_attrs_{k}"] = v
        return rec
