"""A worker's sign of life for the trials it runs.

``stale_after`` lets any worker, on any host, run again a trial whose worker
died without a trace (a killed machine, a lost container). A trial's age
alone cannot tell a dead worker from a slow trial: a trial running longer
than ``stale_after`` would be run twice, by its live worker and by the one
that took it over. So every ``Study`` object that holds running trials
marks them alive at a steady interval (``SQLiteStorage.beat``) from a
daemon thread, and a trial goes stale only once neither its claim nor a
beat is ``stale_after`` seconds recent: its worker's process (or host) has
stopped, or is frozen. (Within one process the beats are not consulted: a
study object still open there is known alive, even while a long call
holding the GIL keeps its heartbeat thread from running.)

A beat is a write to the storage: while another process holds the file's
write lock (a long ask or tell, perhaps of another study in the same file)
beats wait too, so ``stale_after`` needs a margin above the longest such
step as well as above the beat interval.

The thread keeps no reference to its ``Study``: it stops when the study is
closed or collected (``stop``), and with the process.
"""

from __future__ import annotations

import threading
from typing import Any

from .storage import StorageError

__all__ = ["HEARTBEAT_SECONDS", "Heartbeat", "beat_interval"]

# How often a worker marks its running trials alive, at most. Workers judging
# staleness need ``stale_after`` well above the interval of every worker on
# the storage: a study with ``stale_after`` beats at a quarter of it.
HEARTBEAT_SECONDS = 5.0


# ... and at least this often apart, however small ``stale_after`` (a beat is a write).
MIN_BEAT_SECONDS = 0.01


def beat_interval(stale_after: float | None) -> float:
    """Seconds between beats for a study with this ``stale_after`` (``None``: the default)."""
    if stale_after is None:
        return HEARTBEAT_SECONDS
    return max(MIN_BEAT_SECONDS, min(HEARTBEAT_SECONDS, stale_after / 4))


class Heartbeat:
    """Marks ``owner``'s running trials of study ``study_id`` alive every
    ``interval`` seconds from a daemon thread, from ``start`` until ``stop``."""

    def __init__(self, storage: Any, study_id: int, owner: str, interval: float):
        self._storage, self._study_id, self._owner = storage, study_id, owner
        self._interval = float(interval)
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start beating (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="jaxhpo-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                with self._storage.transaction() as c:
                    self._storage.beat(c, self._study_id, self._owner)
            except StorageError:
                # Closed under us (the study is closing), or locked past the
                # storage's timeout: the next beat tries again, or the stop ends it.
                continue
