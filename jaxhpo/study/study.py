"""The host-side ``Study``: ask/tell and ``optimize`` for any Python objective.

A study drives one strategy over one space, generation by generation, and
records every configuration as a trial in its storage (in memory, or an
SQLite file that survives crashes and can be shared by processes).

Determinism. The key of generation ``g`` is ``fold_in(key_loop, g)`` where
``key_init, key_loop = split(key(seed))``; the initial strategy state comes
from ``key_init``. Generation ``g`` is proposed from the state after ``g``
tells, which is stored, so whichever process proposes it, and however often
the study was interrupted, it gets the same configurations as one
uninterrupted run (given the same values). The stored state carries a
digest; one whose bytes changed on disk is rebuilt, with a warning, by
replaying every told generation's stored points and values from the
stored initial state, and written back.

Generations. A generation's trials are created together (*waiting*), claimed
one by one by workers (*running*) and finished (*complete* or *failed*). The
strategy's ``tell`` runs, inside the transaction that finishes the last of
them, with failed trials told as ``nan``; then the next generation can be
proposed. A trial running in a process that died goes back to waiting, so it
is run again (on this host at once; on others, with ``stale_after``, once its
worker has stopped marking it alive); a finished trial is never run again.

Several objectives. With a strategy that has ``num_objectives`` (``NSGA2``)
the objective returns ``num_objectives`` values, then ``num_constraints``
constraint values (feasible when ``<= 0``); ``maximize`` takes one flag per
objective (or ``directions=("minimize", "maximize")``). Trials keep their
vectors (``Trial.values``, ``Trial.constraints``), ``best_trials`` is the
Pareto front of the feasible complete trials and ``hypervolume`` measures it.
A vector with a non-finite entry, or of the wrong length, fails its trial.

Pruning. An objective that trains step by step reports intermediate values
(``report(value, step)`` inside ``optimize``; ``study.report(trial, value,
step)`` with ask/tell), asks ``should_prune()`` and raises ``TrialPruned``
when told to stop; the study's ``pruner`` decides from the stored reports
(``jaxhpo.study.pruners``). A pruned trial keeps its last reported value and
the strategy is told that value: it is a poor one (that is why the run was
stopped), so the strategy learns to avoid the region instead of seeing a gap
(``nan``) there. One objective only; with constraints, a pruned trial has
no constraint values and the strategy is told it as failed.
"""

from __future__ import annotations

import atexit
import json
import math
import numbers
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
import weakref
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from .._keys import check_key
from .._scalars import scalar_item
from ..space import Categorical, Float, Int, Space, _same_label
from ..strategies.base import Strategy, host_float32_values
from .serialize import StateChecksumError, StateFormatError, state_from_bytes, state_to_bytes
from .specs import space_from_spec, space_to_spec, spec_json, strategy_from_spec, strategy_to_spec
from .heartbeat import Heartbeat, beat_interval
from .storage import SQLiteStorage, StorageError, open_storage
from .progress import progress_bar
from .pruners import Pruner, ReportView, TrialPruned
from .report_cache import FinishedReports
from .trial import FINISHED_STATES, Trial, TrialState

__all__ = ["Study", "report", "should_prune"]

_MISSING = object()
# Owner ids of the Study objects open in this process, and of those inside
# optimize (how many calls), whose running trials are in flight, not held by hand.
_LIVE_OWNERS: set[str] = set()
_OPTIMIZING: dict[str, int] = {}
_OWNERS_LOCK = threading.Lock()
_DIRECTIONS = ("minimize", "maximize")
_SQLITE_INT_END = 2**63  # SQLite stores integers in 64 bits


def _release_at_exit(ref: "weakref.ref[Study]") -> None:
    """At interpreter exit, which stops the worker threads of an interrupted
    ``optimize`` mid-objective: their trials go back to waiting."""
    study = ref()
    if study is not None:
        try:
            study._release_in_flight()
        except StorageError:  # nothing more can be done at exit
            pass


def _propose_impl(strategy, key_loop, generation, state):
    key = jax.random.fold_in(key_loop, generation)
    x, state = strategy.ask(key, state)
    return x, strategy.valid(state), strategy.space.decode(x), state


def _tell_impl(strategy, state, x, values, injected):
    if strategy.accepts_points:  # rows that enqueued configurations took (usually none)
        state = strategy.inject(state, x, injected)
    return strategy.tell(state, x, values)


# One compiled ask and tell per strategy (strategies compare by settings), so
# every Study of an equal strategy shares them, and no call re-hashes the
# strategy the way a static jit argument would.
_COMPILED: dict = {}


# Strategies whose ask and tell this process has compiled (see Study._warm).
_WARM: set = set()
# The longest each strategy's ask took in this process, in seconds. Once one
# took longer than _ASK_AHEAD_SECONDS (GP-BO's first model-based ask), asks
# run before the write transaction that needs them (see Study._ask_ahead);
# until then inside it, since asking ahead costs a read transaction (a few
# ms on a file), more than a random search's ask.
_ASK_SECONDS: dict = {}
_ASK_AHEAD_SECONDS = 0.05


def _compiled(strategy: Strategy) -> tuple[Callable, Callable, Callable]:
    fns = _COMPILED.get(strategy)
    if fns is None:
        fns = (jax.jit(partial(_propose_impl, strategy)), jax.jit(partial(_tell_impl, strategy)),
               jax.jit(strategy.space.decode))
        _COMPILED[strategy] = fns
    return fns


def _check_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _is_real(value: Any) -> bool:
    """Whether ``value`` may be read as a real number: not a bool, text, a
    complex number or an array of such a dtype. Another library's scalar (a
    PyTorch tensor, a ``Decimal``) is left to ``float``, except where its
    dtype's name says bool or complex."""
    if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
        return False
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        return False
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return True
    try:
        kind = np.dtype(dtype).kind
    except TypeError:  # a dtype NumPy does not know (PyTorch's): by its name, else float() decides
        return not any(word in str(dtype) for word in ("bool", "complex"))
    if kind == "O":  # an object array: what it holds (a 0-d one; others are no scalar)
        return np.ndim(value) == 0 and _is_real(np.asarray(value).item())
    # ml_dtypes' bfloat16, float8 and int4 are of kind "V"
    return kind in "iuf" or (kind == "V" and ("float" in str(dtype) or "int" in str(dtype)))


def _real_scalar(what: str, value: Any) -> float:
    """A real number or a 0-d numeric array (NumPy, JAX) as a float; ``TypeError`` naming ``what``."""
    try:
        if np.ndim(value) == 0 and _is_real(value):
            return float(value)
    except OverflowError:  # a Python int beyond float's range
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError, RuntimeError):  # (PyTorch raises RuntimeError)
        pass
    raise TypeError(f"{what}: value must be a real number, got {value!r}")


def _as_value(raw: Any, said: str = "objective returned") -> tuple[float | None, str | None]:
    """An objective's return -> ``(value, None)`` or ``(None, why it failed)``, the
    reason starting with ``said``."""
    try:
        if np.ndim(raw) != 0:
            return None, f"{said} an array of shape {np.shape(raw)}, not a scalar"
        if not _is_real(raw):  # a comparison's bool, text, a complex number
            return None, f"{said} {raw!r}, not a number"
        value = float(raw)
    except (TypeError, ValueError, RuntimeError):  # (PyTorch raises RuntimeError)
        return None, f"{said} a {type(raw).__name__}, not a number"
    except OverflowError:  # a Python int beyond float's range
        return None, f"{said} an integer of {len(str(abs(int(raw))))} digits, beyond float's range"
    if not math.isfinite(value):
        return None, f"{said} {value}"
    return value, None


def _as_vector(raw: Any, m: int, c: int, said: str = "objective returned") -> tuple[tuple | None, str | None]:
    """A multi-objective return -> ``(m + c floats, None)`` or ``(None, why it failed)``."""
    k = m + c
    if k == 1 and not isinstance(raw, (str, bytes)) and np.ndim(raw) == 0:
        value, why = _as_value(raw, said)
        return (None, why) if value is None else ((value,), None)
    if raw is None or isinstance(raw, (str, bytes, dict)):
        return None, f"{said} {raw!r}, not a vector of {k} numbers"
    try:
        # bools, text and complex numbers first: a cast to float64 would take them
        # (one entry among numbers too: (True, 2.0) makes a float64 array)
        entries = list(raw) if isinstance(raw, (tuple, list)) or np.ndim(raw) == 1 else [raw]
        if np.asarray(raw).dtype.kind in ("b", "U", "S", "c") or not all(
                np.ndim(v) > 0 or _is_real(v) for v in entries):
            return None, f"{said} {raw!r}, not real numbers"
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"{said} a {type(raw).__name__}, not a vector of {k} numbers"
    except OverflowError:  # a Python int beyond float's range
        return None, f"{said} an integer beyond float's range among {k} values"
    what = f"{m} objective value{'s' if m > 1 else ''}" + (f" then {c} constraint value{'s' if c > 1 else ''}"
                                                          if c else "")
    if arr.shape != (k,):
        return None, f"{said} shape {arr.shape}, not ({k},) ({what})"
    if not np.all(np.isfinite(arr)):
        return None, f"{said} {arr.tolist()}"
    return tuple(float(v) for v in arr), None


def _nondominated(values: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: rows of ``values (n, m)`` (minimised) that no other row Pareto-dominates."""
    n = values.shape[0]
    keep = np.ones(n, bool)
    # One row at a time keeps memory at O(n m) for large histories.
    for i in range(n):
        v = values[i]
        if np.any(np.all(values <= v, axis=1) & np.any(values < v, axis=1)):
            keep[i] = False
    return keep


def _check_directions(strategy: Strategy, maximize: Any, directions: Any) -> tuple[bool, Any]:
    """-> ``(multi, maximize)``: a bool with one objective, a tuple of bools with several."""
    m = getattr(strategy, "num_objectives", None)
    if directions is not None:
        if maximize is not False:
            raise ValueError("give maximize or directions, not both")
        if isinstance(directions, str) or not isinstance(directions, Sequence) or not all(
                d in _DIRECTIONS for d in directions):
            raise ValueError(f"directions must be a sequence of 'minimize' / 'maximize', got {directions!r}")
        maximize = tuple(d == "maximize" for d in directions)
        if m is not None and len(maximize) != m:
            raise ValueError(f"directions must give one direction per objective ({m} for "
                             f"{type(strategy).__name__}), got {tuple(directions)!r}")
        if m is None:
            if len(maximize) != 1:
                raise ValueError(f"directions: {type(strategy).__name__} has one objective, got {len(maximize)} "
                                 "directions; several objectives need a strategy with num_objectives (NSGA2)")
            maximize = maximize[0]
    if m is None:
        if not isinstance(maximize, (bool, np.bool_)):
            raise TypeError(f"maximize must be True or False for a single-objective strategy, got {maximize!r}")
        return False, bool(maximize)
    if isinstance(maximize, (bool, np.bool_)):
        maximize = (bool(maximize),) * m
    if not isinstance(maximize, (tuple, list)) or len(maximize) != m or not all(
            isinstance(f, (bool, np.bool_)) for f in maximize):
        raise ValueError(f"maximize must be a bool or a tuple of {m} bools (one per objective of "
                         f"{type(strategy).__name__}), got {maximize!r}")
    return True, tuple(bool(f) for f in maximize)


def _all_added(queue: list[tuple], n: int) -> bool:
    """Whether the queue's first ``n`` entries exist and are all added trials
    (an outcome with each): a generation of them is proposed and told at once."""
    return len(queue) >= n and all(q[2] is not None for q in queue[:n])


def _number_and_start(row: tuple) -> tuple[int, float]:
    """A claimed trial row's number and claim time: which of its runs holds it
    (a trial taken over and claimed again by the same study is a new run)."""
    return row[0], row[8]


def _claim_of(row: tuple) -> tuple:
    """A claimed trial row's claim: ``(owner, started_at)``, new at every claim."""
    return row[13], row[8]


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _stored_maximize(row: dict) -> Any:
    """A stored study's direction: a bool, or a tuple of bools with several objectives."""
    if row.get("directions") is not None:
        return tuple(bool(f) for f in json.loads(row["directions"]))
    return bool(row["maximize"])


class _Budget:
    """Trials this call may still start (thread-safe); ``None`` is unlimited."""

    def __init__(self, total: int | None):
        self.left, self._lock = total, threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.left is None:
                return True
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            if self.left is not None:
                self.left += 1


class Study:
    """Optimise any Python objective with a jaxhpo strategy, trial by trial.

    Args:
      space: the ``Space``; must be the strategy's.
      strategy: any ``Strategy``; its ``popsize`` is the generation size.
      seed: integer seed; fixes every proposal (see the module docstring).
      maximize: maximise the objective. Values are stored as the objective
        returned them; only the strategy sees them negated. With several
        objectives: a bool for all, or a tuple of one bool per objective.
      directions: instead of ``maximize``: ``"minimize"`` / ``"maximize"``
        per objective, e.g. ``("maximize", "minimize")``.
      storage: ``None`` (in memory), ``"sqlite:///path.db"``, a file path, or
        an ``SQLiteStorage``. A file records every trial and the strategy
        state after each tell; opening it again with the same ``name``
        resumes the study.
      name: the study's name inside the storage (one file holds many).
      params: the strategy's hyperparameters (``strategy.init``'s ``params``);
        used when the study is created.
      stale_after: seconds after which a running trial of any worker (also on
        other hosts) whose worker has not signalled is presumed dead and run
        again; ``None`` (default) re-runs only trials of dead processes on
        this host. Every study object marks the trials it holds alive every
        ``min(5, stale_after / 4)`` seconds (5 without ``stale_after``;
        ``jaxhpo.study.heartbeat``), so a trial may run longer than
        ``stale_after``: only a stopped or frozen worker's trials go stale
        (those of a study object open in this process never do).
        Give every worker of a storage the same ``stale_after`` (or one above
        15 s). A trial taken over belongs to its new run: the old run's
        reports and result, should it still reach them, are not recorded.
      pruner: a ``jaxhpo.study.pruners.Pruner`` that ``should_prune`` asks,
        or ``None`` (never prune). Not stored: each process opening the study
        brings its own. Studies of one objective only (with or without
        constraints).

    Reopening a stored study with a different space, strategy, seed or
    direction raises ``ValueError``; ``Study.load`` reopens it without them.
    """

    def __init__(self, space: Space, strategy: Strategy, *, seed: int = 0, maximize: Any = False,
                 storage: Any = None, name: str = "study", params: dict | None = None,
                 stale_after: float | None = None, directions: Sequence[str] | None = None,
                 pruner: Pruner | None = None):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a jaxhpo strategy, got {type(strategy).__name__}")
        if strategy.space != space:
            raise ValueError("strategy was built for a different space than the one given to Study")
        seed = scalar_item(seed)  # a concrete 0-d integer array is a seed too
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
        multi, maximize = _check_directions(strategy, maximize, directions)
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        if stale_after is not None:
            if isinstance(stale_after, bool) or not isinstance(stale_after, numbers.Real) or not stale_after > 0:
                raise ValueError(f"stale_after must be a positive number of seconds or None, got {stale_after!r}")
        self.space, self.strategy, self.seed, self.maximize, self.name = (
            space, strategy, int(seed), maximize, name)
        self.multi_objective = multi
        self.num_objectives = int(strategy.num_objectives) if multi else 1
        self.num_constraints = int(getattr(strategy, "num_constraints", 0)) if multi else 0
        self.stale_after = None if stale_after is None else float(stale_after)
        if pruner is not None and not isinstance(pruner, Pruner):
            raise TypeError(f"pruner must be a jaxhpo.study.pruners.Pruner or None, got {pruner!r}")
        if pruner is not None and self.num_objectives > 1:
            raise ValueError(f"pruner: a study of {self.num_objectives} objectives cannot be pruned (a pruner "
                             "ranks one value per step); use pruner=None")
        self.pruner = pruner
        self._finished_reports = FinishedReports()
        own = not isinstance(storage, SQLiteStorage)
        self._storage = open_storage(storage)
        self._owns_storage = own
        self._owner = uuid.uuid4().hex
        # While this object lives, trials it claimed are held; once it is closed
        # or collected, another Study in this process sends them back to waiting.
        _LIVE_OWNERS.add(self._owner)
        weakref.finalize(self, _LIVE_OWNERS.discard, self._owner)
        key_init, self._key_loop = jax.random.split(jax.random.key(self.seed))
        # The initial state doubles as the template that stored states must match.
        self._template = strategy.init(key_init, params)
        space_spec = space_to_spec(space)
        self._labels_by_index = space_spec is None
        self._space_text = spec_json(space_spec if space_spec is not None
                                     else {"__unrepresentable__": repr(space)})
        self._strategy_spec = strategy_to_spec(strategy)
        self._propose, self._tell, self._decode = _compiled(strategy)
        self._cache_state: tuple[int, Any] | None = None
        self._cache_ask: tuple[int, Any, np.ndarray, np.ndarray] | None = None
        self._ahead: tuple[int, Any] | None = None  # see _ask_ahead
        # The ask of the generation proposed in the open transaction: its tell,
        # in the same transaction (a generation of added trials), reuses it.
        self._tx_ask: tuple | None = None
        self._ahead_lock = threading.Lock()
        self._pending: list[Callable[[], None]] = []
        self._last_batch: list[int] = []
        # Claims (number, started_at) optimize's workers hold (see optimize): a
        # trial this object claimed again after another worker took it over is
        # a new claim, held by another of its runs.
        self._in_flight: set[tuple[int, float]] = set()
        self._claims = threading.Lock()
        try:
            with self._tx(write=not self._storage.read_only) as c:
                row = self._storage.get_study(c, name)
                if row is None and self._storage.read_only:
                    raise StorageError(f"storage {self._storage.path!r} has no study {name!r} and is read-only "
                                       "for this process")
                if row is None:
                    self._id = self._storage.create_study(
                        c, name, self._space_text, spec_json(self._strategy_spec), self.seed,
                        self.maximize[0] if multi else self.maximize, strategy.popsize,
                        state_to_bytes(self._template),
                        json.dumps(list(self.maximize)) if multi else None)
                    template = self._template
                    self._pending.append(lambda: setattr(self, "_cache_state", (0, template)))
                else:
                    self._check_same(row)
                    self._id = row["id"]
        except BaseException:
            self.close()
            raise
        # Started by the first claim: keeps this object's running trials from going stale.
        self._heartbeat = Heartbeat(self._storage, self._id, self._owner, beat_interval(self.stale_after))
        weakref.finalize(self, self._heartbeat.stop)

    # ----------------------------------------------------------- opening
    def _legacy_space_text(self) -> str | None:
        """How studies stored before conditions entered a dimension's repr (and
        before storage schema 6) kept a space JSON cannot hold (its repr
        without them): such a study still opens."""
        if not self._labels_by_index:
            return None

        def plain(d):
            if isinstance(d, (Float, Int)):
                return f"{type(d).__name__}({d.low}, {d.high}, log={d.log})"
            return f"Categorical({list(d.choices)!r})"

        inner = ", ".join(f"{n}={plain(d)}" for n, d in self.space.dims.items())
        return spec_json({"__unrepresentable__": f"Space({inner})"})

    def _same_space(self, text: str) -> bool:
        """Whether a stored space's JSON builds this space: a file written before
        conditions were kept in their parents' order (``when={"opt": ["b", "a"]}``)
        holds the same space in other words."""
        try:
            return space_from_spec(json.loads(text)) == self.space
        except (ValueError, TypeError, KeyError):
            return False

    def _check_same(self, row: dict) -> None:
        where = f"study {self.name!r} in {self._storage.url}"
        stored = json.loads(row["strategy"])
        diffs = []
        # The old repr only for studies made before storage schema 6 (no stored
        # initial state): it leaves conditions out, so it matches any space
        # that differs in them only.
        legacy = self._legacy_space_text() if row.get("initial_state") is None else None
        if row["space"] not in (self._space_text, legacy) and not self._same_space(row["space"]):
            diffs.append(f"space {json.loads(row['space'])}, not {json.loads(self._space_text)}")
        if (stored.get("class"), stored.get("repr")) != (self._strategy_spec["class"], self._strategy_spec["repr"]):
            diffs.append(f"strategy {stored.get('repr')}, not {self._strategy_spec['repr']}")
        if row["seed"] != self.seed:
            diffs.append(f"seed {row['seed']}, not {self.seed}")
        stored_max = _stored_maximize(row)
        if stored_max != self.maximize:
            diffs.append(f"maximize={stored_max}, not {self.maximize}")
        if diffs:
            raise ValueError(
                f"{where} was created with " + "; ".join(diffs)
                + ". Use another name, or Study.load(storage, name) to continue it as it is."
            )

    @classmethod
    def load(cls, storage: Any, name: str | None = None, *, space: Space | None = None,
             strategy: Strategy | None = None, stale_after: float | None = None,
             pruner: Pruner | None = None) -> "Study":
        """Reopen a stored study, rebuilding its space and strategy from the storage.

        Args:
          storage: as for ``Study``; must hold the study.
          name: the study; may be left out when the storage holds exactly one.
          space, strategy: give them only if they cannot be rebuilt (labels or
            settings that are not JSON-representable); they must match. A
            strategy is rebuilt from its class and public settings alone:
            give a user's strategy whose methods read anything else.
          stale_after, pruner: as for ``Study`` (neither is stored).

        Raises:
          StorageError: a file that does not exist (nothing is created).
        """
        store = open_storage(storage, must_exist=True)
        try:
            with store.transaction(write=False) as c:
                names = store.study_names(c)
                if name is None:
                    if len(names) != 1:
                        raise ValueError(
                            f"name is required: {store.url} holds {len(names)} studies {names}")
                    name = names[0]
                row = store.get_study(c, name)
            if row is None:
                raise ValueError(f"{store.url} holds no study named {name!r}; it holds {names}")
            if space is None:
                spec = json.loads(row["space"])
                if "__unrepresentable__" in spec:
                    raise ValueError(f"the space of study {name!r} cannot be rebuilt "
                                     f"({spec['__unrepresentable__']}); pass space=")
                space = space_from_spec(spec, where="stored space")
            if strategy is None:
                strategy = strategy_from_spec(json.loads(row["strategy"]), space)
            study = cls(space, strategy, seed=row["seed"], maximize=_stored_maximize(row),
                        storage=store, name=name, stale_after=stale_after, pruner=pruner)
        except BaseException:
            if not isinstance(storage, SQLiteStorage):
                store.close()
            raise
        study._owns_storage = not isinstance(storage, SQLiteStorage)
        return study

    @staticmethod
    def names(storage: Any) -> list[str]:
        """Names of the studies held by ``storage`` (a file that does not exist: ``StorageError``)."""
        store = open_storage(storage, must_exist=True)
        try:
            with store.transaction(write=False) as c:
                return store.study_names(c)
        finally:
            if not isinstance(storage, SQLiteStorage):
                store.close()

    def close(self) -> None:
        """Close the storage if this study opened it. Trials an interrupted
        ``optimize``'s worker threads still run go back to waiting. Trials
        asked by ``ask`` / ``ask_trials`` and not told stay running, so that
        any ``Study`` on this storage, in this process or another, may still
        tell them by number; an ``optimize`` in this process runs them again
        once this object is closed, one in another process once this process
        has ended or, with ``stale_after``, once that time has passed since
        this object stopped marking them alive (see ``stale_after``)."""
        if getattr(self, "_in_flight", None):
            self._release_in_flight()
        if getattr(self, "_heartbeat", None) is not None:
            self._heartbeat.stop()
        _LIVE_OWNERS.discard(getattr(self, "_owner", None))
        if getattr(self, "_owns_storage", False):
            self._storage.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("a Study cannot be pickled or copied: it holds an open storage connection and locks. "
                        "In another process, open the same storage: Study.load(storage, name) (or Study(...) "
                        "with the same arguments)")

    def __repr__(self) -> str:
        return (f"Study(name={self.name!r}, strategy={self.strategy!r}, seed={self.seed}, "
                f"maximize={self.maximize}, storage={self._storage.url!r})")

    @property
    def storage(self) -> SQLiteStorage:
        """The ``SQLiteStorage`` holding the study."""
        return self._storage

    # ----------------------------------------------------- transactions
    @contextmanager
    def _tx(self, write: bool = True):
        """A storage transaction; in-memory caches change only once it commits."""
        with self._storage._lock:
            self._pending = []
            try:
                with self._storage.transaction(write) as c:
                    yield c
                for apply in self._pending:
                    apply()
            finally:
                self._pending = []
                self._tx_ask = None

    def _state_at(self, c, generation: int) -> Any:
        """The strategy state after ``generation`` tells (cached, else stored)."""
        if self._cache_state is not None and self._cache_state[0] == generation:
            return self._cache_state[1]
        stored = self._storage.load_state(c, self._id)
        try:
            state = state_from_bytes(stored, self._template)
        except StateChecksumError as e:
            state = self._replayed_state(c, generation, e)
            warnings.warn(f"study {self.name!r}: {e}; rebuilt it from the {generation} told generations "
                          "the storage holds", RuntimeWarning, stacklevel=2)
            if not self._storage.read_only:
                self._pending.append(partial(self._store_rebuilt, generation, stored, state))
        except StateFormatError as e:  # intact bytes of another layout: an older jaxhpo's strategy
            raise StateFormatError(
                f"study {self.name!r}: its stored {type(self.strategy).__name__} state does not fit this "
                f"jaxhpo's ({e}); it was probably written by an older jaxhpo, whose state differed. Its trials "
                "still read (study.trials); to go on, make a new study and give it these trials with "
                "add_trial") from e
        self._pending.append(lambda: setattr(self, "_cache_state", (generation, state)))
        return state

    def _store_rebuilt(self, generation: int, damaged: bytes, state: Any) -> None:
        """Write a rebuilt state over the damaged bytes it replaces, so the
        next reader, in any process, finds it whole. Best effort: a study
        that has moved on meanwhile, or a storage locked past its timeout,
        keeps what it holds (the next reader rebuilds again)."""
        try:
            with self._storage.transaction() as c:
                self._storage.replace_state(c, self._id, generation, damaged, state_to_bytes(state))
        except StorageError:
            pass

    def _replayed_state(self, c, generation: int, damage: StateChecksumError) -> Any:
        """The state after ``generation`` tells, from the stored initial state
        (the creating process's ``params`` made it): every told generation
        asked again with its key and told its stored points and values, as
        ``_tell_generation`` told them (the same programs on the same inputs
        give the same state. Under another ``jax_enable_x64`` setting than the
        study ran with, a strategy that computes in the default float type
        (CMA-ES) rebuilds another state: its draws are float64 there, so its
        restart mean, for one, differs; the others' states are the same)."""
        initial = self._storage.load_initial_state(c, self._id)
        if initial is None:
            raise StateChecksumError(f"study {self.name!r}: {damage}; the study was made before jaxhpo stored "
                                     "initial states (storage schema 6), so it cannot be rebuilt") from damage
        state = state_from_bytes(initial, self._template)
        for g in range(generation):
            proposed, _, _, ask_state = self._run_ask(g, state)
            x, injected = self._generation_x(c, g, proposed)
            state = self._tell(ask_state, x, self._generation_values(c, g), injected)
        return state

    def _generation_x(self, c, generation: int, proposed: Any) -> tuple[np.ndarray, np.ndarray]:
        """The cube points ``generation``'s trials ran (``(popsize, dim)``) and
        which rows enqueued configurations took: those that differ from the
        strategy's ``proposed`` points."""
        xb, rows, dim = self._storage.get_generation_x(c, self._id, generation)
        x = np.frombuffer(xb, np.float32).reshape(rows, dim).copy()
        return x, np.any(x != np.asarray(proposed), axis=1)

    def _ask_state_at(self, c, generation: int) -> tuple[Any, np.ndarray, np.ndarray]:
        """The state after asking ``generation``, its cube points, and which rows
        enqueued configurations took (``(popsize,)`` bool).

        Not stored: after a restart (or in another process) the ask is
        repeated from the stored state with the generation's key, which gives
        the same state and proposals. The stored points are what the trials
        ran, so they are what the strategy is told; rows that differ from the
        proposals are the enqueued ones.
        """
        for cached in (self._tx_ask, self._cache_ask):
            if cached is not None and cached[0] == generation:
                return cached[1:]
        proposed, _, _, ask_state = self._asked(c, generation)
        x, injected = self._generation_x(c, generation, proposed)
        self._pending.append(lambda: setattr(self, "_cache_ask", (generation, ask_state, x, injected)))
        return ask_state, x, injected

    # ------------------------------------------------------ params codec
    def _dump_params(self, params: dict) -> str:
        if self._labels_by_index:
            dims = self.space.dims
            params = {k: ({"__choice__": dims[k].index(v)} if isinstance(dims[k], Categorical) else v)
                      for k, v in params.items()}
        return json.dumps(params, separators=(",", ":"))

    def _load_params(self, text: str) -> dict:
        params = json.loads(text)
        if self._labels_by_index:
            dims = self.space.dims
            params = {k: (dims[k].choices[v["__choice__"]] if isinstance(v, dict) else v)
                      for k, v in params.items()}
        return params

    def _trial(self, row: tuple, reports: dict | None = None) -> Trial:
        (number, generation, idx, params, state, value, error, created, started, finished,
         host, pid, _id, _owner, vals, user_attrs) = row
        values = constraints = None
        if vals is not None:
            v = json.loads(vals)
            values, constraints = tuple(v[:self.num_objectives]), tuple(v[self.num_objectives:])
            if self.num_objectives == 1:  # one objective with constraints: its value is the value
                value = values[0]
        return Trial(number=number, generation=generation, index=idx, params=self._load_params(params),
                     value=value, state=state, error=error, created_at=created, started_at=started,
                     finished_at=finished, worker=f"{host}:{pid}" if host else None,
                     values=values, constraints=constraints, intermediate_values=reports or {},
                     study=self.name, user_attrs=json.loads(user_attrs) if user_attrs else {})

    def _check_given_value(self, what: str, value: Any) -> None:
        """A value given to ``what`` (not an objective's return, which fails its
        trial instead): a real number, or with several objectives and
        constraints one per entry; ``TypeError`` / ``ValueError`` naming ``what``."""
        k = self.num_objectives + self.num_constraints
        if not self.multi_objective or (k == 1 and np.ndim(value) == 0):
            _real_scalar(what, value)
            return
        if isinstance(value, (str, bytes)) or np.shape(value) != (k,):
            raise ValueError(f"{what}: value must be {k} numbers ({self.num_objectives} objective values, "
                             f"then {self.num_constraints} constraint values), got {value!r}")
        for entry in (value.tolist() if isinstance(value, np.ndarray) else value):
            _real_scalar(what, entry)

    def _parse(self, raw: Any, said: str = "objective returned") -> tuple[Any, str | None]:
        """An objective's return (or what ``said`` names) -> ``(value, None)`` or
        ``(None, why it failed)``; with several objectives the value is a tuple
        of ``num_objectives + num_constraints`` floats."""
        if self.multi_objective:
            return _as_vector(raw, self.num_objectives, self.num_constraints, said)
        return _as_value(raw, said)

    def _signs(self) -> np.ndarray:
        """``(m + c,)`` minimisation signs per column of a stored vector (constraints never flip)."""
        return np.array([-1.0 if f else 1.0 for f in self.maximize] + [1.0] * self.num_constraints)

    # ------------------------------------------------- generation steps
    def _warm(self) -> None:
        """Compile the strategy's ask and tell before a write transaction runs them:
        a first compile (seconds; GP-BO's took 14 s) inside one would hold the
        file's write lock, and with it every other worker's reports and tells."""
        if self.strategy in _WARM:
            return
        key, generation = self._key_loop, np.uint32(0)
        self._propose.lower(key, generation, self._template).compile()
        x, _, _, ask_state = jax.eval_shape(self._propose, key, generation, self._template)
        p = self.strategy.popsize
        values = (p, self._signs().size) if self.multi_objective else (p,)
        self._tell.lower(ask_state, jax.ShapeDtypeStruct(x.shape, np.float32),
                         jax.ShapeDtypeStruct(values, np.float32), jax.ShapeDtypeStruct((p,), np.bool_)).compile()
        _WARM.add(self.strategy)

    def _asked(self, c, generation: int) -> tuple:
        """The strategy's ask of ``generation`` from the stored state: ``_propose``'s
        outputs, computed ahead of the transaction where ``_ask_ahead`` could."""
        ahead = self._ahead
        if ahead is not None and ahead[0] == generation:
            return ahead[1]
        return self._run_ask(generation, self._state_at(c, generation))

    def _run_ask(self, generation: int, state: Any) -> tuple:
        start = time.perf_counter()
        out = jax.block_until_ready(self._propose(self._key_loop, np.uint32(generation), state))
        took = time.perf_counter() - start
        _ASK_SECONDS[self.strategy] = max(took, _ASK_SECONDS.get(self.strategy, 0.0))
        return out

    def _slow_ask(self) -> bool:
        """Whether asking ahead pays (unknown: it may; see ``_ASK_SECONDS``)."""
        return _ASK_SECONDS.get(self.strategy, math.inf) > _ASK_AHEAD_SECONDS

    def _ask_ahead(self, generation: int | None = None) -> None:
        """Run the strategy's ask of ``generation`` (``None``: the next one to propose,
        if none is proposed; else only if one trial of it is unfinished, the
        one about to finish, whose transaction tells it) before the write
        transaction that needs it.

        The ask of generation ``g`` depends only on the state stored after
        ``g`` tells and on ``g``'s key, so it can run outside any transaction
        and be used by any later one while the study is still at ``g``. A
        model-based strategy's ask (GP-BO fits its Gaussian processes and
        optimises the acquisition: seconds) then no longer holds the file's
        write lock, which every other worker needs to report or finish a
        trial. Where another process proposes ``g`` first, the work is wasted,
        never wrong.
        """
        with self._ahead_lock:
            with self._tx(write=False) as c:
                current, proposed, exhausted = self._storage.study_progress(c, self._id)
                limit = getattr(self.strategy, "num_generations", None)
                if generation is None and (proposed or exhausted or (isinstance(limit, int) and current >= limit)):
                    return
                if generation is not None and generation != current:
                    return  # told already: the stored state is a later generation's
                if (self._ahead is not None and self._ahead[0] == current) or (
                        self._cache_ask is not None and self._cache_ask[0] == current):
                    return
                unfinished = (TrialState.WAITING, TrialState.RUNNING)
                if generation is not None and self._storage.count(c, self._id, unfinished, generation) > 1:
                    return
                generation = current
                state = self._state_at(c, generation)
            self._ahead = (generation, self._run_ask(generation, state))

    def _propose_generation(self, c, generation: int) -> None:
        """Ask the strategy for generation ``generation`` and store its trials."""
        limit = getattr(self.strategy, "num_generations", None)
        if isinstance(limit, int) and generation >= limit:
            self._storage.set_exhausted(c, self._id)
            return
        x, valid, decoded, ask_state = self._asked(c, generation)
        x, valid = np.asarray(x), np.asarray(valid)
        rows = np.flatnonzero(valid)
        if rows.size == 0:  # a finite strategy (a grid) has nothing left
            self._storage.set_exhausted(c, self._id)
            return
        params = self.space.to_python({k: np.asarray(v)[rows] for k, v in decoded.items()})
        injected = np.zeros(x.shape[0], bool)
        queue = self._storage.queued(c, self._id, rows.size)
        if queue:
            x, injected, params = self._take_queue(queue, x, rows, params)
            self._storage.dequeue(c, [q[0] for q in queue])
        trials = [(int(r), self._dump_params(p), queue[i][1] if i < len(queue) else None)
                  for i, (r, p) in enumerate(zip(rows, params))]
        self._storage.add_generation(c, self._id, generation, x.tobytes(), x.shape[0], x.shape[1], trials)
        self._tx_ask = (generation, ask_state, x, injected)
        self._pending.append(lambda: setattr(self, "_cache_ask", (generation, ask_state, x, injected)))
        added = [(int(r), json.loads(q[2])) for r, q in zip(rows, queue) if q[2] is not None]
        for idx, outcome in added:
            value, vals, error = outcome.get("value"), outcome.get("vals"), outcome.get("error")
            state = TrialState.FAILED if error is not None else TrialState.COMPLETE
            attrs = outcome.get("user_attrs")
            self._storage.record_added(c, self._id, generation, idx, state, value, error,
                                       None if vals is None else json.dumps(vals),
                                       None if attrs is None else json.dumps(attrs))
        if added and not self._storage.count(c, self._id, (TrialState.WAITING,), generation):
            self._tell_generation(c, generation)  # nothing of it left to run

    def _take_queue(self, queue: list[tuple[int, str, str | None]], x: np.ndarray, rows: np.ndarray,
                    params: list[dict]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """The first proposals (of ``rows``) give way to the queued configurations.

        Each fixes the coordinates of the parameters it names and keeps the
        proposal's for the others. Its trial's parameters are the decoded
        point with the named values as they were enqueued (a log-scale
        value decoded in float32 can differ from the one given in its last
        digit); a named parameter that the others make inactive is left out.
        """
        x = x.copy()
        injected = np.zeros(x.shape[0], bool)
        given = [self._load_params(q[1]) for q in queue]
        taken = rows[:len(given)]
        fixed = self.space.fixed_coordinates(given)
        x[taken] = np.where(np.isnan(fixed), x[taken], fixed)
        injected[taken] = True
        # every row decoded, the taken ones kept: one shape, one compiled decode
        # (not one per queue length, inside the write transaction)
        fresh = self.space.to_python({k: np.asarray(v)[taken] for k, v in self._decode(x).items()})
        params = list(params)
        for i, (g, p) in enumerate(zip(given, fresh)):
            params[i] = {k: g.get(k, v) for k, v in p.items()}
        return x, injected, params

    def _check_given(self, what: str, params: Any) -> None:
        """A configuration given by the user may take a proposal's place: the strategy
        accepts other points and ``params`` is a dict."""
        if not self.strategy.accepts_points:
            raise ValueError(f"{what}: {type(self.strategy).__name__} evaluates a fixed set of points, "
                             "which other configurations cannot replace")
        if not isinstance(params, Mapping):
            raise TypeError(f"{what} params must be a dict of parameter values, got {type(params).__name__}")

    def enqueue_trial(self, params: Any, *, skip_if_exists: bool = False) -> bool:
        """Try ``params`` in the next generation proposed, in place of one of the strategy's proposals.

        For configurations known to be good (the current defaults, a
        published setting) or worth checking. Queued configurations are kept
        in the storage (they survive a crash and are shared by every process
        on it) and taken oldest first, as many per generation as it has
        trials; the strategy is told their values like any other trial's.

        Args:
          params: a dict naming any subset of the parameters, with values
            as ``optimize``'s objective receives them (labels for
            categoricals); the parameters left out are the strategy's
            proposal. Checked now: an unknown name or a value outside its
            parameter's range raises.
          skip_if_exists: do nothing if a trial (in any state) or a queued
            configuration already has these values for these parameters
            (a trial that ran a queued configuration counts with the values
            queued, also those its other values left out as inactive; in a
            file from before storage schema 5, which did not record them,
            only with its own values).
        Returns:
          whether it was queued.
        """
        self._check_given("enqueue_trial", params)
        if not isinstance(skip_if_exists, (bool, np.bool_)):
            raise TypeError(f"enqueue_trial skip_if_exists must be True or False, got {skip_if_exists!r}")
        if not params:
            raise ValueError("enqueue_trial params must name at least one parameter")
        _named("enqueue_trial", self.space.fixed_coordinates, params)  # names and values checked
        params = self.space.canonical_python(params)
        with self._tx() as c:
            if skip_if_exists:
                dims = self.space.dims

                def same(other: dict) -> bool:
                    return all(k in other and (_same_label(other[k], v) if isinstance(dims[k], Categorical)
                                               else other[k] == v) for k, v in params.items())
                # A trial from the queue is compared with what was queued too: it
                # lacks a named parameter that its other values made inactive.
                tried = [self._load_params(j) for row in self._storage.enqueued_configs(c, self._id)
                         for j in row if j is not None]
                queued = [self._load_params(q[1]) for q in self._storage.queued(c, self._id)]
                if any(same(p) for p in tried + queued):
                    return False
            self._storage.enqueue(c, self._id, self._dump_params(params))
        return True

    def add_trial(self, params: Any, value: Any, user_attrs: Any = None) -> None:
        """Record a configuration evaluated elsewhere (an earlier study, a past
        experiment) as a finished trial; the strategy learns from it.

        Like an enqueued configuration it takes the place of a proposal of
        the next generation proposed: at once when the queue holds a whole
        generation (``popsize``) of such trials, which is then told (with
        ``popsize`` 1, every call); else when ``optimize`` or ``ask``
        proposes the next generation, among its proposals. A model-based
        strategy (``TPE``, ``GPBO``) starts its model from past results this way.

        Args:
          params: a dict of every active parameter's value (labels for
            categoricals), as ``optimize``'s objective receives them.
          value: the objective's value (with several objectives, the
            objective values then the constraint values); ``None`` or a
            non-finite value records a failed trial.
          user_attrs: ``None`` or a dict of the trial's user attributes (str
            keys; values as ``set_user_attr`` takes them), recorded with it.
        """
        self._check_given("add_trial", params)
        _named("add_trial", self.space.from_python, params)  # every active parameter present, values checked
        if value is not None:
            self._check_given_value("add_trial", value)
        attrs = _attrs_given("add_trial", user_attrs)
        v, why = (None, "added without a value") if value is None else self._parse(value, "add_trial was given")
        outcome = {"error": why} if v is None else {"vals": list(v)} if self.multi_objective else {"value": v}
        if attrs:
            outcome["user_attrs"] = attrs
        self._warm()
        if self._slow_ask() and self._completes_generation():
            self._ask_ahead()  # the generation this trial completes is proposed below: ask outside the lock
        with self._tx() as c:
            self._storage.enqueue(c, self._id, self._dump_params(self.space.canonical_python(params)),
                                  json.dumps(outcome))
            # Whole generations of finished trials are proposed and told now.
            popsize = self.strategy.popsize
            while True:
                generation, proposed, exhausted = self._storage.study_progress(c, self._id)
                head = self._storage.queued(c, self._id, popsize)
                if proposed or exhausted or not _all_added(head, popsize):
                    break
                self._propose_generation(c, generation)
                if self._storage.study_progress(c, self._id)[0] == generation:
                    break
            if exhausted and any(q[2] is not None for q in self._storage.queued(c, self._id)):
                raise ValueError(f"add_trial: study {self.name!r} is exhausted (its strategy has no "
                                 "generation left to hold the trial)")

    def _completes_generation(self) -> bool:
        """Whether one more added trial fills an unproposed generation with added trials."""
        with self._tx(write=False) as c:
            _, proposed, exhausted = self._storage.study_progress(c, self._id)
            head = self._storage.queued(c, self._id, self.strategy.popsize)
        # (this trial queues behind the head)
        return not proposed and not exhausted and _all_added(head + [(None, None, "")], self.strategy.popsize)

    def _tell_generation(self, c, generation: int) -> None:
        """Every trial of ``generation`` is finished: tell the strategy, store its state."""
        ask_state, x, injected = self._ask_state_at(c, generation)
        new_state = self._tell(ask_state, x, self._generation_values(c, generation), injected)
        self._storage.save_tell(c, self._id, generation, state_to_bytes(new_state))
        self._pending.append(lambda: setattr(self, "_cache_state", (generation + 1, new_state)))

    def _generation_values(self, c, generation: int) -> np.ndarray:
        """What the strategy is told of ``generation``'s finished trials:
        float32 ``(popsize,)``, or ``(popsize, objectives + constraints)``, to be
        minimised; NaN where a trial failed."""
        if self.multi_objective:
            signs = self._signs()
            values = np.full((self.strategy.popsize, signs.size), np.nan)
            for idx, state, value, vals in self._storage.generation_values(c, self._id, generation):
                if state == TrialState.COMPLETE and vals is not None:
                    values[idx] = signs * np.asarray(json.loads(vals), np.float64)
                elif state == TrialState.PRUNED and value is not None and signs.size == 1:
                    # one objective, no constraint: a pruned trial's value is its last
                    # report, as in a scalar study (with constraints it has no constraint
                    # values to tell and counts as failed, see the module docstring)
                    values[idx] = signs * value
        else:
            values = np.full((self.strategy.popsize,), np.nan)
            sign = -1.0 if self.maximize else 1.0
            for idx, state, value, _ in self._storage.generation_values(c, self._id, generation):
                # a pruned trial's value is its last report (see the module docstring)
                if state in (TrialState.COMPLETE, TrialState.PRUNED) and value is not None:
                    values[idx] = sign * value
        # A finite value beyond float32's range is its largest (the worst result), not
        # a failure; a positive constraint below float32's smallest normal is a
        # violation (Trial.feasible says so), kept one.
        return host_float32_values(values, self.num_objectives if self.num_constraints else None)

    def _claim(self, n: int, generation_limit: int | None = None,
               trial_limit: int | None = None, hold: Callable[[list[int]], None] | None = None,
               ) -> tuple[list[tuple], str]:
        """Claim up to ``n`` trials of the current generation, proposing it if needed.

        Returns ``(rows, status)``: status ``"ok"``, ``"wait"`` (every trial of
        the generation is running elsewhere), ``"limit"`` or ``"exhausted"``.
        ``hold(claims)`` records the claims ``(number, started_at)`` before the
        claim commits, so an interrupt right after the commit leaves no claim unknown.
        """
        st = self._storage
        self._warm()
        if self._slow_ask():
            self._ask_ahead()
        with self._tx() as c:
            st.requeue_dead(c, self._id, self.stale_after, _LIVE_OWNERS)
            while True:
                # Checked again after a generation of trials evaluated elsewhere
                # (add_trial) is proposed and told at once: they count too.
                if trial_limit is not None:
                    used = st.count(c, self._id, (TrialState.RUNNING, *FINISHED_STATES))
                    if used >= trial_limit:
                        return [], "limit"
                    n = min(n, trial_limit - used)
                generation, proposed, exhausted = st.study_progress(c, self._id)
                if generation_limit is not None and generation >= generation_limit:
                    return [], "limit"
                if exhausted:
                    return [], "exhausted"
                if proposed:
                    break
                self._propose_generation(c, generation)
                if st.study_progress(c, self._id)[:2] == (generation, True):
                    break
            rows = st.claim(c, self._id, generation, n, self._owner)
            if hold is not None and rows:
                hold([_number_and_start(r) for r in rows])
            if rows:
                self._heartbeat.start()
            return rows, ("ok" if rows else "wait")

    def _finish(self, row: tuple, value: Any, error: str | None, pruned: bool = False) -> bool:
        """Record a claimed trial's outcome (``value`` from ``_parse``; with ``pruned``,
        its last report replaces it); the last one of a generation triggers the tell."""
        generation, trial_id = row[1], row[12]
        state = TrialState.COMPLETE if value is not None else TrialState.FAILED
        vals = None
        if self.multi_objective:
            vals, value = (None if value is None else json.dumps(list(value))), None
        self._warm()
        cached = self._cache_ask
        if (cached is None or cached[0] != generation) and self._slow_ask():  # another process proposed it
            self._ask_ahead(generation)
        with self._tx() as c:
            if pruned:
                reports = self._storage.trial_reports(c, trial_id)
                state, value, error = TrialState.PRUNED, (reports[-1][1] if reports else None), None
            if not self._storage.finish(c, trial_id, state, value, error, vals, claim=_claim_of(row)):
                return False
            unfinished = self._storage.count(c, self._id, (TrialState.WAITING, TrialState.RUNNING), generation)
            if unfinished == 0:
                self._tell_generation(c, generation)
        return True

    def _check_not_held_by_hand(self, in_flight: set[tuple[int, float]]) -> None:
        """``RuntimeError`` if the current generation waits on trials asked by hand
        (``ask``) and never told, from this study object or another one open in
        this process and not optimizing: ``optimize`` would wait forever."""
        me = (self._storage.host, os.getpid())
        with self._tx(write=False) as c:
            g = self._storage.study_progress(c, self._id)[0]
            running = [r for r in self._storage.trials(c, self._id, (TrialState.RUNNING,)) if r[1] == g]
        mine = [r[0] for r in running if r[13] == self._owner and _number_and_start(r) not in in_flight]
        if mine:
            raise RuntimeError(
                f"optimize: generation {g} waits on trial(s) {mine}, asked from this study and not told; "
                "tell their values (study.tell) before optimize can go on")
        other = [r[0] for r in running if r[13] != self._owner and (r[10], r[11]) == me
                 and r[13] in _LIVE_OWNERS and not _OPTIMIZING.get(r[13])]
        if other:
            # That object may have finished them and left its optimize since the
            # read: it records a trial before leaving, so a read now shows it.
            with self._tx(write=False) as c:
                still = {r[0] for r in self._storage.trials(c, self._id, (TrialState.RUNNING,))}
            other = [n for n in other if n in still]
        if other:
            raise RuntimeError(
                f"optimize: generation {g} waits on trial(s) {other}, asked from another Study object of "
                f"{self.name!r} in this process and not told; tell their values there, or close that "
                "object (its untold trials then go back to waiting)")

    def _release_in_flight(self, held: set[tuple[int, float]] | None = None) -> None:
        """Trials an interrupted ``optimize``'s worker threads still run (or only
        the claims ``held`` of them) go back to waiting (a result they reach
        later is not recorded): once this object closes or the process ends,
        those threads cannot record them."""
        with self._claims:
            held = set(self._in_flight if held is None else held)
        if not held or self._storage.read_only or self._storage._conn is None:  # (closed)
            return
        with self._tx(write=False) as c:
            rows = [r for r in self._storage.trials(c, self._id, (TrialState.RUNNING,))
                    if _number_and_start(r) in held and r[13] == self._owner]
        if rows:
            self._release(rows)

    def _release(self, rows: Iterable[tuple]) -> None:
        with self._tx() as c:
            self._storage.release(c, [(r[12], r[8]) for r in rows])

    # ------------------------------------------------------------ ask/tell
    def ask_trials(self, n: int | None = None) -> list[Trial]:
        """Claim up to ``n`` (default: all remaining) trials of the current generation.

        Returns ``Trial`` records in state ``running``; an empty list when a
        finite strategy (a grid) has nothing left. Tell their values with
        ``tell(trial, value)`` (or ``tell(values)`` for the whole batch).

        Raises:
          RuntimeError: every trial of the current generation is already
            running (asked and not told yet); the next generation needs
            their values first.
        """
        n = self.strategy.popsize if n is None else _check_count("n", n)
        rows, status = self._claim(n)
        if status == "wait":
            with self._tx(write=False) as c:
                g = self._storage.study_progress(c, self._id)[0]
                running = [r[0] for r in self._storage.trials(c, self._id, (TrialState.RUNNING,))]
            raise RuntimeError(
                f"generation {g} has no trial left to ask: trials {running} are running; tell their "
                "values (study.tell) before asking for the next generation"
            )
        self._last_batch = [r[0] for r in rows]
        return [self._trial(r) for r in rows]

    def ask(self, n: int | None = None) -> list[dict]:
        """Propose configurations: plain Python dicts (labels restored).

        ``n`` defaults to the rest of the current generation (``popsize`` at
        the start of one). Tell their values with ``tell(values)`` in the
        same order.
        """
        return [dict(t.params) for t in self.ask_trials(n)]

    def tell(self, trial: Any, value: Any = _MISSING, *, error: str | None = None, pruned: bool = False) -> None:
        """Record values of asked trials.

        ``tell(values)``: one value per configuration of the latest ``ask``,
        in order. ``tell(trial, value)``: one trial, given as a ``Trial`` or
        its number. A value that is ``None`` or not finite records the trial
        as failed (with ``error`` as its text, if given; one trial told a
        result and an ``error`` is refused). With several
        objectives a value is a sequence: the objective values, then the
        constraint values; one with a non-finite entry fails the trial. A value that
        is no number (text, ``True``, a vector of another length) is refused before
        anything is told. When the last trial of a generation is told, the strategy
        learns from the generation.

        ``tell(trial, pruned=True)``: the trial was stopped early (``should_prune``);
        it is recorded as pruned with its last reported value, and no value is given.
        """
        if not isinstance(pruned, bool):
            raise TypeError(f"tell: pruned must be a bool, got {pruned!r}")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"tell: error must be the failure's text (a str) or None, got {error!r}")
        if pruned and (value is not _MISSING or isinstance(trial, (list, tuple, np.ndarray, jax.Array))):
            raise ValueError("tell(trial, pruned=True) takes one trial and no value: a pruned trial "
                             "keeps its last reported value")
        if pruned and error is not None:
            raise ValueError("tell(trial, pruned=True) takes no error: a pruned trial did not fail "
                             "(tell it error=... without pruned to record a failure)")
        if value is _MISSING and not pruned:
            values = trial
            if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray, jax.Array)):
                raise TypeError("tell(values) needs a sequence with one value per configuration of the latest ask")
            if isinstance(values, (np.ndarray, jax.Array)) and values.ndim == 0:
                raise TypeError("tell(values) needs a sequence with one value per configuration of the latest ask, "
                                f"got a 0-d array {values!r} (tell(trial, value) tells one trial)")
            values = list(values)
            if len(values) != len(self._last_batch):
                raise ValueError(
                    f"tell: got {len(values)} values for the {len(self._last_batch)} configurations of the latest ask"
                )
            items = list(zip(self._last_batch, values))
        else:
            items = [(self._number("tell", trial), None if pruned else value)]
        for _, raw in items:
            # Given values are checked as add_trial checks them (an objective's
            # bad return fails its trial instead); None is a failure.
            if raw is not None:
                self._check_given_value("tell", raw)
        prepared = []
        with self._tx(write=False) as c:
            for number, raw in items:
                row = self._running_row(c, "tell", number, "only asked (running) trials can be told")
                if isinstance(trial, Trial) and trial.params != self._load_params(row[3]):
                    raise ValueError(f"tell: trial {number} of study {self.name!r} has other parameters "
                                     "than the Trial given; was it asked from another study?")
                v, why = (None, None) if pruned else self._parse(raw, "tell was given")
                if v is not None and error is not None and value is not _MISSING:
                    raise ValueError(f"tell: trial {number} was given a result ({raw!r}) and an error; an error "
                                     "is the text of a failed trial: tell it value=None (or a non-finite "
                                     "value) with error=...")
                prepared.append((row, v, (error or why) if v is None and not pruned else None))
        for row, v, why in prepared:
            if not self._finish(row, v, why, pruned):
                raise ValueError(f"tell: trial {row[0]} was finished meanwhile by another worker")
        told = {row[0] for row, _, _ in prepared}
        self._last_batch = [n for n in self._last_batch if n not in told]

    # ------------------------------------------------------------ pruning
    def _number(self, what: str, trial: Any) -> int:
        if isinstance(trial, Trial):
            if trial.study is not None and trial.study != self.name:
                raise ValueError(f"{what}: trial {trial.number} belongs to study {trial.study!r}, "
                                 f"not to {self.name!r}")
            return trial.number
        trial = scalar_item(trial)  # a 0-d NumPy or JAX integer
        if isinstance(trial, numbers.Integral) and not isinstance(trial, bool):
            if not 0 <= trial < _SQLITE_INT_END:
                raise ValueError(f"{what}: a trial number is an integer in [0, 2**63), got {trial!r}")
            return int(trial)
        hint = " (study.ask() gives plain dicts; study.ask_trials() gives Trials)" if isinstance(trial, dict) else ""
        raise TypeError(f"{what}: trial must be a Trial or a trial number, got {trial!r}{hint}")

    def _running_row(self, c, what: str, number: int, rule: str = "only running trials report",
                     claim: tuple | None = None) -> tuple | None:
        """Trial ``number``'s row; ``ValueError`` naming ``what`` and ``rule`` unless it is
        running. Under ``claim`` (a run of ``optimize``), ``None`` where the trial is no
        longer that run's: it went stale, and another run holds or finished it."""
        rows = self._storage.trials(c, self._id, number=number)
        if not rows:
            raise ValueError(f"{what}: study {self.name!r} has no trial {number}")
        if claim is not None and (rows[0][4] != TrialState.RUNNING or _claim_of(rows[0]) != claim):
            return None
        if rows[0][4] != TrialState.RUNNING:
            raise ValueError(f"{what}: trial {number} is {rows[0][4]}; {rule}")
        return rows[0]

    def report(self, trial: Any, value: Any, step: int) -> None:
        """Record a running trial's intermediate ``value`` at ``step`` (an integer ``>= 0``,
        each step once per run, in increasing order). ``value``: a real number or a 0-d
        array; a non-finite one is recorded as ``nan`` (and pruned by the built-in
        pruners). Inside ``optimize``, call ``jaxhpo.study.report(value, step)``."""
        self._report(self._number("report", trial), value, step)

    def _report(self, number: int, value: Any, step: int, claim: tuple | None = None) -> None:
        if self.num_objectives > 1:
            # As Optuna: intermediate values serve pruning, which ranks one objective.
            raise ValueError(f"report: a study of {self.num_objectives} objectives takes no intermediate "
                             "values (pruning ranks one objective); a trial may still stop early by "
                             "raising TrialPruned, recorded as pruned without a value")
        step = scalar_item(step)  # a 0-d NumPy or JAX integer (a training state's step)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < _SQLITE_INT_END:
            raise ValueError(f"report: step must be an integer in [0, 2**63), got {step!r}")
        value = _real_scalar("report", value)
        with self._tx() as c:
            row = self._running_row(c, "report", number, claim=claim)
            if row is None:
                return  # this run's claim went stale: another run holds or finished the trial
            # In increasing order: pruners judge a trial by its latest step, and
            # an earlier step reported after it would have them judge a rung again.
            reported = self._storage.trial_reports(c, row[12])
            last = reported[-1][0] if reported else -1
            if int(step) < last:
                raise ValueError(f"report: trial {number} already reported step {last}; report steps in "
                                 f"increasing order, got {int(step)}")
            if not self._storage.add_report(c, self._id, row[12], int(step), value):
                raise ValueError(f"report: trial {number} already reported step {int(step)}; "
                                 "report each step once")

    def set_user_attr(self, trial: Any, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` beside a running trial's result (an
        accuracy beside a loss, a training time, a path to a checkpoint);
        ``Trial.user_attrs`` holds them, ``to_records`` as ``user_attrs_<key>``
        columns. ``value``: ``None``, a bool, number or string, a NumPy or
        JAX array (stored as nested lists), or lists and string-keyed dicts
        of these. Setting a key again replaces its value. A trial sent back
        to waiting (an interrupted run) loses its attributes with its
        reports. Inside ``optimize``, call ``jaxhpo.study.set_user_attr(key,
        value)``."""
        self._set_user_attr(self._number("set_user_attr", trial), key, value)

    def _set_user_attr(self, number: int, key: Any, value: Any, claim: tuple | None = None) -> None:
        _check_attr_key("set_user_attr", key)
        text = json.dumps(_attr_value("set_user_attr", key, value))  # refused here, before any transaction
        with self._tx() as c:
            row = self._running_row(c, "set_user_attr", number, "only running trials take user attributes",
                                    claim=claim)
            if row is None:
                return  # this run's claim went stale: another run holds or finished the trial
            attrs = json.loads(row[15]) if row[15] else {}
            attrs[key] = json.loads(text)
            self._storage.set_user_attrs(c, row[12], json.dumps(attrs))

    def should_prune(self, trial: Any) -> bool:
        """Whether the study's pruner stops this running trial now (``False`` without a
        pruner or before its first report). Then stop it with ``tell(trial, pruned=True)``."""
        return self._should_prune(self._number("should_prune", trial))

    def _should_prune(self, number: int, claim: tuple | None = None) -> bool:
        with self._tx(write=False) as c:
            row = self._running_row(c, "should_prune", number, claim=claim)
            if self.pruner is None or row is None:
                return False
            reports = self._storage.trial_reports(c, row[12])
            if not reports:
                return False
            self._finished_reports.refresh(c, self._storage, self._id)
            sign = -1.0 if self._maximize_first else 1.0
            steps = np.array([r[0] for r in reports], np.int64)
            values = np.array([np.nan if r[1] is None else sign * r[1] for r in reports], np.float64)
            return bool(self.pruner.should_prune(steps, values, _StoredReports(self, c, row[12], number, sign)))

    # ------------------------------------------------------------ optimize
    def optimize(self, objective: Callable[[dict], Any], num_trials: int | None = None,
                 num_generations: int | None = None, *, max_trials: int | None = None,
                 timeout: float | None = None, catch: Any = (Exception,), progress: bool = True,
                 n_jobs: int = 1, callbacks: Sequence[Callable[["Study", Trial], None]] = ()) -> None:
        """Run ``objective(params) -> float`` on the strategy's proposals.

        Stops at the first budget reached: ``num_trials`` more trials run by
        this call, ``num_generations`` more generations told, ``max_trials``
        trials in the whole study (counting other workers: rerunning the same
        script after a crash finishes the budget instead of starting over),
        ``timeout`` seconds, or a finite strategy running out. With no budget,
        a finite strategy runs to its end.

        Args:
          objective: takes a dict of Python values (labels restored), returns
            a number (minimised unless the study maximises); with several
            objectives, a sequence of ``num_objectives`` values then
            ``num_constraints`` constraint values. While it runs it may call
            ``jaxhpo.study.report(value, step)`` and ``should_prune()``, and
            raise ``TrialPruned`` to stop (the trial is recorded as pruned).
          catch: exception classes recorded as failed trials (with their
            text) while the study goes on; other ``Exception``s are recorded
            and re-raised. An exception not derived from ``Exception``
            (``KeyboardInterrupt``, ``SystemExit``) interrupts: its trial goes
            back to waiting, runs again in a later ``optimize``, and the
            exception is re-raised. An objective returning a non-finite value
            fails its trial too.
          progress: show a progress bar (tqdm if installed) with the best value.
          n_jobs: worker threads running the objective at once (for objectives
            that release the GIL: subprocesses, I/O, numpy); ``-1``: one per
            CPU (``os.cpu_count()``). For processes,
            run the same script several times on one ``storage``.
          callbacks: a list of ``f(study, trial)``, called after each finished trial.

        Raises:
          RuntimeError: the current generation waits on trials this study
            object asked (``ask``) and has not told: tell them first.
        """
        if not callable(objective):
            raise TypeError("objective must be callable")
        num_trials = _check_count("num_trials", num_trials)
        num_generations = _check_count("num_generations", num_generations)
        max_trials = _check_count("max_trials", max_trials)
        if isinstance(catch, type):
            catch = (catch,)
        elif isinstance(catch, list):
            catch = tuple(catch)
        if not isinstance(catch, tuple) or not all(isinstance(e, type) and issubclass(e, BaseException) for e in catch):
            raise TypeError(f"catch must be an exception class or a tuple (or list) of them, got {catch!r}")
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, numbers.Integral) or not (n_jobs >= 1 or n_jobs == -1):
            raise ValueError(f"n_jobs must be a positive integer or -1, got {n_jobs!r}")
        if n_jobs == -1:
            n_jobs = os.cpu_count() or 1
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Iterable):
            raise TypeError(f"callbacks must be a list of callables f(study, trial), got {callbacks!r}")
        callbacks = list(callbacks)
        if not all(callable(f) for f in callbacks):
            raise TypeError("callbacks must be a list of callables f(study, trial)")
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        finite = getattr(self.strategy, "num_generations", None)
        if num_trials is None and num_generations is None and max_trials is None and timeout is None:
            if not isinstance(finite, int):
                raise ValueError(
                    f"give num_trials, num_generations, max_trials or timeout: {type(self.strategy).__name__} "
                    "proposes without end"
                )

        with self._tx(write=False) as c:
            generation = self._storage.study_progress(c, self._id)[0]
            finished = self._storage.count(c, self._id, FINISHED_STATES)
            # (a resumed generation's finished trials count toward num_generations)
            finished_now = self._storage.count(c, self._id, FINISHED_STATES, generation)
            best_row = None if self.multi_objective else self._storage.best_trial(c, self._id, self.maximize)
        # the progress bar's "best": one objective's best feasible value (a front has none)
        single = self.num_objectives == 1
        if single and self.multi_objective:  # constrained
            front = self._front()[0]
            best_start = front[0].values[0] if front else None
        else:
            best_start = None if best_row is None else best_row[5]
        generation_limit = None if num_generations is None else generation + num_generations
        totals = [t for t in (
            num_trials,
            None if num_generations is None else num_generations * self.strategy.popsize - finished_now,
            None if max_trials is None else max(max_trials - finished, 0),
        ) if t is not None]
        most = min(totals) if totals else None  # trials this call may run
        if most is not None:  # no more threads than those (each thread is started up front)
            n_jobs = max(1, min(n_jobs, most))
        # (a budget already spent runs nothing: no bar, which tqdm would draw with no total)
        bar = progress_bar(most, enabled=bool(progress) and most != 0)
        budget = _Budget(num_trials)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        stop = threading.Event()
        failure: list[BaseException] = []
        best = [best_start]
        lock = threading.Lock()
        warned: list[int] = []

        def finish(row: tuple, value: Any, error: str | None, pruned: bool = False) -> bool:
            try:
                return self._finish(row, value, error, pruned)
            except BaseException:
                # Interrupted while recording (say, during the strategy's tell):
                # the transaction rolled back, so the trial goes back to be run again.
                self._release([row])
                raise

        def run_one(row: tuple) -> None:
            params = self._load_params(row[3])
            pruned = False
            outer = getattr(_CURRENT, "trial", None)  # a study run inside another's objective
            _CURRENT.trial = (self, row[0], _claim_of(row))
            try:
                raw = objective(params)
                value, error = self._parse(raw)
            except TrialPruned:
                value, error, pruned = None, None, True
            except catch as exc:  # a failed trial, the study goes on
                value, error = None, _error_text(exc)
            except Exception as exc:
                finish(row, None, _error_text(exc))
                bar.update(1, best=best[0], failed=1)
                raise
            except BaseException:  # interrupted, not finished: it will be run again
                self._release([row])
                raise
            finally:
                _CURRENT.trial = outer
            if not finish(row, value, error, pruned):
                return  # taken over by another run (stale, or released): that run's result counts
            with lock:
                if value is None and not pruned and not warned:
                    # Once per call: a failure is a result, but a mistake in the
                    # objective fails every trial, and would otherwise go unseen.
                    warned.append(row[0])
                    warnings.warn(f"trial {row[0]} failed: {error}. Failed trials are recorded (trial.error) "
                                  "and the study goes on; further failures in this optimize call are not "
                                  "reported here", RuntimeWarning, stacklevel=2)
                v = value
                if single and self.multi_objective and value is not None:
                    v = value[0] if all(g <= 0.0 for g in value[1:]) else None
                maximize = self._maximize_first
                if v is not None and single and (best[0] is None or (v > best[0] if maximize else v < best[0])):
                    best[0] = v
            bar.update(1, best=best[0], failed=int(value is None and not pruned), pruned=int(pruned))
            if callbacks:
                trial = self.get_trials(number=row[0])[0]  # as stored: final once finished
                for f in callbacks:
                    f(self, trial)

        # Trials this object's optimize workers hold, also those of an earlier,
        # interrupted call whose threads still run their objective: a rerun
        # waits for them instead of taking them for trials asked by hand.
        in_flight, claims = self._in_flight, self._claims
        mine: set[tuple[int, float]] = set()  # this call's claims (in_flight may hold an earlier call's too)
        with _OWNERS_LOCK:  # its claims are in flight, not held by hand (_check_not_held_by_hand)
            _OPTIMIZING[self._owner] = _OPTIMIZING.get(self._owner, 0) + 1

        def hold(held: list[tuple[int, float]]) -> None:
            in_flight.update(held)
            mine.update(held)

        def worker() -> None:
            delay = 0.0005
            while not stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if not budget.take():
                    return
                with claims:  # a claim and its record as one step: no worker sees it half done
                    if stop.is_set():
                        return
                    rows, status = self._claim(1, generation_limit, max_trials, hold)
                    if status == "wait":
                        self._check_not_held_by_hand(in_flight)
                if status != "ok":
                    budget.give_back()
                    if status != "wait":
                        return
                    # another worker holds the rest of this generation: wait for its tell
                    time.sleep(delay)
                    delay = min(2 * delay, 0.05)
                    continue
                delay = 0.0005
                try:
                    run_one(rows[0])
                finally:
                    with claims:
                        in_flight.discard(_number_and_start(rows[0]))
                        mine.discard(_number_and_start(rows[0]))

        # The call counts as optimizing (its claims in flight, not held by hand)
        # until it and every worker thread it started are done: after an
        # interrupt the threads go on with their trials.
        busy = [1]

        def done() -> None:
            with _OWNERS_LOCK:
                busy[0] -= 1
                if busy[0]:
                    return
                _OPTIMIZING[self._owner] -= 1
                if not _OPTIMIZING[self._owner]:
                    del _OPTIMIZING[self._owner]

        def guarded() -> None:
            try:
                worker()
            except BaseException as exc:
                failure.append(exc)
                stop.set()
            finally:
                done()

        try:
            if n_jobs == 1:
                try:
                    worker()
                except BaseException:
                    # Interrupted anywhere from a claim to its record: nothing runs
                    # the trial any more, so it goes back to waiting.
                    self._release_in_flight(mine)
                    raise
            else:
                threads = [threading.Thread(target=guarded, daemon=True) for _ in range(n_jobs)]
                try:  # (an interrupt can come while the last threads start)
                    for t in threads:
                        with _OWNERS_LOCK:
                            busy[0] += 1
                        try:
                            t.start()
                        except BaseException:
                            done()  # (it never ran)
                            raise
                    for t in threads:
                        t.join()
                except BaseException:
                    stop.set()
                    atexit.register(_release_at_exit, weakref.ref(self))
                    with claims:
                        running = sorted({n for n, _ in in_flight})
                    if running:  # Python cannot stop a thread inside the objective
                        print(f"jaxhpo: optimize interrupted; trial(s) {running} finish in their worker "
                              "threads and are recorded then (no new trial starts); should this study "
                              "close or the process end first, they go back to waiting, to run again",
                              file=sys.stderr)
                    raise
                if failure:
                    raise failure[0]
        finally:
            bar.close()
            done()

    # ------------------------------------------------------------ results
    def get_trials(self, states: Sequence[str] | None = None, *, number: int | None = None) -> list[Trial]:
        """Trials in number order, optionally only those in ``states`` (or the one ``number``),
        with their reported intermediate values."""
        if isinstance(states, str):
            states = (states,)
        if states is not None:
            states = tuple(states)
            bad = [s for s in states if s not in (TrialState.WAITING, TrialState.RUNNING, *FINISHED_STATES)]
            if bad:
                raise ValueError(f"states: unknown trial state(s) {bad}")
        if number is not None and (isinstance(number, bool) or not isinstance(number, numbers.Integral)
                                   or not 0 <= number < _SQLITE_INT_END):
            raise ValueError(f"number must be a trial number (an integer in [0, 2**63)) or None, got {number!r}")
        with self._tx(write=False) as c:
            rows = self._storage.trials(c, self._id, states, None if number is None else int(number))
            reports: dict[int, dict] = {}
            for n, step, value in self._storage.study_reports(c, self._id, number):
                reports.setdefault(n, {})[step] = math.nan if value is None else value
        return [self._trial(r, reports.get(r[0])) for r in rows]

    @property
    def trials(self) -> list[Trial]:
        """Every trial, in number order."""
        return self.get_trials()

    @property
    def best_trial(self) -> Trial:
        """The complete trial with the best value (the earliest among ties).

        With constraints, the best feasible one. Raises ``ValueError`` for a study
        of several objectives (see ``best_trials``).
        """
        if self.multi_objective and self.num_objectives == 1:
            front = self._front()[0]
            if not front:
                with self._tx(write=False) as c:
                    raise self._no_complete_trial(c, "feasible ")
            return min(front, key=lambda t: t.number)
        if self.multi_objective:
            raise ValueError(f"study {self.name!r} has {self.num_objectives} objectives and no single best "
                             "trial; use study.best_trials (the Pareto front)")
        with self._tx(write=False) as c:
            row = self._storage.best_trial(c, self._id, self.maximize)
            if row is None:
                raise self._no_complete_trial(c)
            # with its reports, as study.trials gives it
            reports = {step: math.nan if value is None else value
                       for step, value in self._storage.trial_reports(c, row[12])}
        return self._trial(row, reports)

    def _no_complete_trial(self, c, kind: str = "") -> ValueError:
        """The error of a study with no complete (``kind``) trial; it says where
        ``add_trial``'s trials wait, where there are some."""
        added = sum(q[2] is not None for q in self._storage.queued(c, self._id))
        where = "" if not added else (
            f"; its {added} added trial(s) are recorded when the next generation is proposed (the next "
            f"ask or optimize), or at once when they fill a generation ({self.strategy.popsize})")
        return ValueError(f"study {self.name!r} has no complete {kind}trial yet{where}")

    @property
    def best_params(self) -> dict:
        """Parameters of ``best_trial``."""
        return dict(self.best_trial.params)

    @property
    def best_value(self) -> float:
        """Value of ``best_trial``, as the objective returned it."""
        return self.best_trial.value

    @property
    def _maximize_first(self) -> bool:
        """Whether the (first) objective is maximised: the direction of reports."""
        return bool(self.maximize[0] if self.multi_objective else self.maximize)

    @property
    def directions(self) -> tuple[str, ...]:
        """``"minimize"`` / ``"maximize"`` per objective."""
        flags = self.maximize if self.multi_objective else (self.maximize,)
        return tuple(_DIRECTIONS[int(f)] for f in flags)

    def _front(self) -> tuple[list[Trial], np.ndarray]:
        """Feasible complete trials on the front, and their values ``(k, m)`` in minimisation signs."""
        if self.multi_objective:
            trials = [t for t in self.get_trials((TrialState.COMPLETE,)) if t.feasible]
            signs = self._signs()[:self.num_objectives]
            vals = np.array([t.values for t in trials], np.float64).reshape(len(trials), self.num_objectives)
        else:
            trials = self.get_trials((TrialState.COMPLETE,))
            signs = np.array([-1.0 if self.maximize else 1.0])
            vals = np.array([[t.value] for t in trials], np.float64).reshape(len(trials), 1)
        vals = vals * signs
        keep = _nondominated(vals)
        return [t for t, k in zip(trials, keep) if k], vals[keep]

    @property
    def best_trials(self) -> list[Trial]:
        """The Pareto front: complete, feasible trials that no other such trial
        dominates (in the study's directions), in trial-number order; ties (equal
        values) all stay. With one objective: every trial with the best value."""
        return self._front()[0]

    def pareto_front(self) -> tuple[list[Trial], np.ndarray]:
        """``(trials, values)``: ``best_trials`` and their objective values
        ``(k, num_objectives)`` in the user's signs, sorted by the first objective
        (in its direction, best first)."""
        trials, vals = self._front()
        order = np.argsort(vals[:, 0], kind="stable")
        signs = self._signs()[:self.num_objectives] if self.multi_objective else \
            np.array([-1.0 if self.maximize else 1.0])
        return [trials[i] for i in order], vals[order] * signs

    def hypervolume(self, ref_point: Any = None, *, key: Any = None, num_samples: int = 100_000) -> float:
        """Hypervolume of the Pareto front (``jaxhpo.pareto.hypervolume``).

        Args:
          ref_point: ``(num_objectives,)`` reference point in the user's signs
            (worse than every point of interest in each objective's
            direction). ``None``: the front's worst value in each objective
            moved out by 10% of the front's range (by 1 where the range is 0),
            as ``jaxhpo.minimize`` does.
          key, num_samples: for 4 or more objectives (a Monte Carlo estimate);
            ``key`` defaults to the study's seed.
        Returns:
          the volume (0.0 with no feasible complete trial), computed in
          minimisation signs, so it does not depend on the directions.
        """
        from .. import pareto

        _, vals = self._front()
        # as strategies rank them: a value beyond float32 is its largest, not a failure
        vals = host_float32_values(vals)
        m = vals.shape[1]
        signs = self._signs()[:m] if self.multi_objective else np.array([-1.0 if self.maximize else 1.0])
        if ref_point is None:
            if not len(vals):
                return 0.0
            ref = pareto.default_ref_point(vals)
        else:
            ref = signs * pareto.check_ref_point(ref_point, m, np.float32)  # the front's dtype
        if not len(vals):
            return 0.0
        if key is None and m >= 4:  # a Monte Carlo estimate: draws from the study's seed
            key = self.seed
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            key = check_key(key, allow_seed=True)
        # (padded: a front of a new size compiles nothing new within its power of two)
        return pareto.padded_hypervolume(vals, ref, key=key, num_samples=num_samples)

    @property
    def generation(self) -> int:
        """Generations told so far."""
        with self._tx(write=False) as c:
            return self._storage.study_progress(c, self._id)[0]

    @property
    def exhausted(self) -> bool:
        """Whether a finite strategy has proposed everything it has."""
        with self._tx(write=False) as c:
            return bool(self._storage.study_progress(c, self._id)[2])

    @property
    def state(self) -> Any:
        """The strategy state after the latest tell."""
        with self._tx(write=False) as c:
            generation = self._storage.study_progress(c, self._id)[0]
            return self._state_at(c, generation)

    def to_records(self, states: Sequence[str] | None = None) -> list[dict]:
        """Trials as flat dicts (``Trial.to_record``), for CSV or a data frame.

        A record holds the parameters active in its trial and the user
        attributes set on it, so records may differ in their keys (a missing
        one is not a value of ``None``, which can be a label): a CSV writer
        needs their union, ``list(dict.fromkeys(k for r in records for k in
        r))``, as ``jaxhpo run``'s ``trials.csv`` takes it."""
        return [t.to_record() for t in self.get_trials(states)]

    def to_dataframe(self, states: Sequence[str] | None = None):
        """Trials as a pandas ``DataFrame`` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas (pip install pandas); to_records() does not") from None
        return pd.DataFrame(self.to_records(states))


class _StoredReports(ReportView):
    """A pruner's view of the other trials' reports, inside one read transaction: the
    finished trials' from the study's cache (refreshed for this decision), the
    running trials' from storage."""

    def __init__(self, study: Study, c: Any, trial_id: int, number: int, sign: float):
        self._study, self._c, self._trial_id, self._sign = study, c, trial_id, sign
        self.trial_number = number
        self.maximize = sign < 0

    def num_complete(self) -> int:
        return self._study._finished_reports.num_complete

    def max_complete_step(self) -> int | None:
        return self._study._finished_reports.max_complete_step

    def first_complete_step(self) -> int | None:
        return self._study._finished_reports.first_complete_step

    def values_at(self, step: int, *, complete_only: bool, exact: bool,
                  among: Callable[[int], bool] | None = None, since: int | None = None) -> np.ndarray:
        numbers, complete, values = self._study._finished_reports.column(step, exact, since)
        if complete_only:
            numbers, values = numbers[complete], values[complete]
        else:
            running = self._study._storage.reports_at(self._c, self._study._id, step, self._trial_id,
                                                      state=TrialState.RUNNING, exact=exact)
            if running:
                numbers = np.concatenate([numbers, np.array([n for n, _ in running], np.int64)])
                values = np.concatenate([values, np.array([np.nan if v is None else v for _, v in running],
                                                          np.float64)])
        if among is not None:
            values = values[np.fromiter((among(int(n)) for n in numbers), bool, numbers.size)]
        return self._sign * values


# The trial that Study.optimize is running in this thread: (study, number).
_CURRENT = threading.local()


def _current(what: str) -> tuple[Study, int, tuple]:
    current = getattr(_CURRENT, "trial", None)
    if current is None:
        raise RuntimeError(f"jaxhpo.study.{what}() works inside an objective run by Study.optimize; "
                           f"with ask/tell, call study.{what}(trial, ...)")
    return current


def report(value: float, step: int) -> None:
    """Inside ``Study.optimize``: record the running trial's intermediate ``value`` at ``step``.

    A run whose trial was meanwhile sent back as stale (``stale_after``) and
    claimed by another run reports nothing more: the trial's reports are the
    new run's."""
    study, number, claim = _current("report")
    study._report(number, value, step, claim)


def set_user_attr(key: str, value: Any) -> None:
    """Inside ``Study.optimize``: record ``value`` under ``key`` beside the
    running trial's result (see ``Study.set_user_attr``)."""
    study, number, claim = _current("set_user_attr")
    study._set_user_attr(number, key, value, claim)


def _named(where: str, check: Callable, *args: Any) -> Any:
    """``check(*args)``, its ``TypeError`` or ``ValueError`` naming the call ``where``."""
    try:
        return check(*args)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


def _check_attr_key(where: str, key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{where}: a user attribute's key must be a non-empty str, got {key!r}")


def _attrs_given(where: str, user_attrs: Any) -> dict:
    """``user_attrs`` (``None`` or a dict) as plain JSON data, checked as
    ``set_user_attr`` checks each key and value."""
    if user_attrs is None:
        return {}
    if not isinstance(user_attrs, Mapping):
        raise TypeError(f"{where}: user_attrs must be None or a dict of str keys, got "
                        f"{type(user_attrs).__name__}")
    for key in user_attrs:
        _check_attr_key(where, key)
    return {key: _attr_value(where, key, value) for key, value in user_attrs.items()}


def _attr_value(where: str, key: str, value: Any, _within: tuple = ()) -> Any:
    """``value`` as plain JSON data (NumPy and JAX numbers and arrays as Python
    numbers and nested lists; floats of every width as float64), refused
    naming the call (``where``) and ``key`` where it has none."""
    rule = ("a value must be None, a bool, number or str, a numeric array, or lists and str-keyed dicts of "
            "these")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.timedelta64, np.datetime64)):  # numpy counts a timedelta64 as Integral
        raise TypeError(f"{where}: {key!r}: {rule}; got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (Mapping, list, tuple)):
        if any(value is v for v in _within):
            raise TypeError(f"{where}: {key!r}: a value must not contain itself")
        within = _within + (value,)
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{where}: {key!r}: a dict value needs str keys, got {list(value)!r}")
            return {k: _attr_value(where, key, v, within) for k, v in value.items()}
        return [_attr_value(where, key, v, within) for v in value]
    if isinstance(value, (np.ndarray, np.generic, jax.Array)):
        a = np.asarray(value)
        if jax.numpy.issubdtype(a.dtype, jax.numpy.floating):  # bfloat16 and float8 too
            return a.astype(np.float64).tolist()
        if a.dtype.kind in "biu":
            return a.tolist()
    raise TypeError(f"{where}: {key!r}: {rule}; got {type(value).__name__}")


def should_prune() -> bool:
    """Inside ``Study.optimize``: whether the study's pruner stops the running trial now;
    then ``raise jaxhpo.study.TrialPruned()``."""
    study, number, claim = _current("should_prune")
    return study._should_prune(number, claim)
