"""Progress reports: a bar for host loops, a periodic line from compiled loops.

``progress_bar`` uses tqdm when it is installed (the optional ``progress``
extra) and otherwise prints a plain line to stderr at most once a second, so
a study never needs tqdm to run. ``report_every`` is for code under ``jit``
(``lax.scan`` loops such as ``jaxhpo.minimize``): a host callback every ``k``
generations, compiled away when disabled.
"""

from __future__ import annotations

import math
import numbers
import sys
import threading
import time
from typing import Any, Callable, TextIO

__all__ = ["progress_bar", "PlainProgress", "report_every"]


def _fmt(best: float | None) -> str:
    return "n/a" if best is None or not math.isfinite(best) else f"{best:.6g}"


class PlainProgress:
    """A dependency-free progress line: ``trials 40/100  best 0.0123  pruned 12  2.1 s``.

    Prints at most every ``interval`` seconds (and at the end) to ``file``.
    """

    def __init__(self, total: int | None, desc: str = "trials", file: TextIO | None = None,
                 interval: float = 1.0):
        self.total, self.desc, self.file, self.interval = total, desc, file or sys.stderr, interval
        self.n, self.best, self.failed, self.pruned = 0, None, 0, 0
        self._t0 = self._last = time.perf_counter()
        self._printed_n = None  # the count the last line showed
        self._lock = threading.Lock()  # optimize's worker threads update it

    def update(self, n: int = 1, best: float | None = None, failed: int = 0, pruned: int = 0) -> None:
        with self._lock:
            self.n += n
            self.failed += failed
            self.pruned += pruned
            if best is not None:
                self.best = best
            now = time.perf_counter()
            if now - self._last >= self.interval:
                self._last = now
                self._print()

    def _print(self) -> None:
        self._printed_n = self.n
        total = f"/{self.total}" if self.total is not None else ""
        failed = f"  failed {self.failed}" if self.failed else ""
        pruned = f"  pruned {self.pruned}" if self.pruned else ""
        print(f"{self.desc} {self.n}{total}  best {_fmt(self.best)}{failed}{pruned}  "
              f"{time.perf_counter() - self._t0:.1f} s", file=self.file, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._printed_n != self.n:  # (the last update may have printed this line already)
                self._print()


class _TqdmProgress:
    def __init__(self, total: int | None, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="trial", dynamic_ncols=True)
        self.failed = self.pruned = 0
        self._lock = threading.Lock()  # optimize's worker threads update it

    def update(self, n: int = 1, best: float | None = None, failed: int = 0, pruned: int = 0) -> None:
        with self._lock:
            self.failed += failed
            self.pruned += pruned
            if best is not None or failed or pruned:
                post = {"best": _fmt(best)}
                if self.failed:
                    post["failed"] = self.failed
                if self.pruned:
                    post["pruned"] = self.pruned
                self.bar.set_postfix(post, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class _NoProgress:
    def update(self, n: int = 1, best: float | None = None, failed: int = 0, pruned: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, enabled: bool = True, desc: str = "trials") -> Any:
    """An object with ``update(n, best=..., failed=..., pruned=...)`` and ``close()``.

    tqdm when installed, else ``PlainProgress``; a no-op when not ``enabled``.
    """
    if not enabled:
        return _NoProgress()
    try:
        return _TqdmProgress(total, desc)
    except ImportError:
        return PlainProgress(total, desc)


def _default_report(generation: Any, best: Any, total: int | None) -> None:
    of = f"/{total}" if total else ""
    print(f"generation {int(generation)}{of}  best {_fmt(float(best))}", file=sys.stderr, flush=True)


def report_every(every: int | None, generation: Any, best_value: Any, *, total: int | None = None,
                 report: Callable[[Any, Any, Any], None] | None = None) -> None:
    """Inside jitted code: call ``report(generation, best_value, total)`` on the
    host every ``every`` generations (``generation`` counted from 1).

    ``every=None`` or ``0`` emits nothing at all, so compiled loops pay nothing
    when reports are off. Use it in a ``lax.scan`` body::

        report_every(10, state.generation, state.best_value, total=num_generations)
    """
    if every is not None and (isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 0):
        raise ValueError(f"every must be a positive integer, 0 or None, got {every!r}")
    if not every:
        return
    every = int(every)
    import jax
    import jax.numpy as jnp

    fn = report or _default_report

    def emit(g, b):
        fn(g, b, total)

    gen = jnp.asarray(generation)
    jax.lax.cond(gen % every == 0,
                 lambda g, b: jax.debug.callback(emit, g, b, ordered=True),
                 lambda g, b: None, gen, jnp.asarray(best_value))
