"""Shared benchmark plumbing: timing, tables, and raw results with the machine recorded."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

# (an empty JAXHPO_BENCH_RESULTS is unset, not the working directory)
RESULTS_DIR = Path(os.environ.get("JAXHPO_BENCH_RESULTS") or Path(__file__).parent / "results")
_QUICK = False  # set by parse_args: this run is a --quick smoke run


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
               rivals: Sequence[str] | Callable[[argparse.Namespace], Sequence[str]] = ()) -> argparse.Namespace:
    """A benchmark's arguments, whole words only (an abbreviated ``--qui`` is
    not ``--quick``, whose run must not write a full run's file); exits with
    a message before any work if a rival system (an importable module name;
    ``rivals`` may pick them from the arguments) is not installed."""
    global _QUICK
    parser.allow_abbrev = False
    args = parser.parse_args(argv)
    _QUICK = bool(getattr(args, "quick", False))
    missing = [m for m in (rivals(args) if callable(rivals) else rivals) if importlib.util.find_spec(m) is None]
    if missing:
        parser.exit(2, f"{parser.prog}: compares against {', '.join(missing)}, not installed here: "
                       "pip install -e '.[bench]'\n")
    return args


def versions(*packages: str) -> dict[str, str | None]:
    out = {}
    for p in ("jax", "jaxlib", "optax", "numpy", *packages):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def code_version() -> dict[str, Any]:
    """jaxhpo's version, and its git commit (``+dirty`` with uncommitted changes) in a checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    out: dict[str, Any] = {"jaxhpo": None, "commit": None}
    try:
        out["jaxhpo"] = metadata.version("jaxhpo")
    except metadata.PackageNotFoundError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["commit"] = (commit + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout
        pass
    # a copy without .git (a device machine): the commit its runner names
    out["commit"] = out["commit"] or os.environ.get("JAXHPO_COMMIT") or None
    return out


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux; ``platform.processor()``
    there gives only the architecture)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind,
    }


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def print_table(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def write_results(name: str, rows: Sequence[dict], extra: dict | None = None, packages: Sequence[str] = ()) -> Path:
    """Write raw figures to ``benchmarks/results/<name>.json`` and return the path.

    A smoke run (``--quick``, read by ``parse_args``) writes
    ``<name>_quick.json`` instead, so that it never replaces a full run's figures.
    """
    if _QUICK:
        name += "_quick"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(*packages),
        "code": code_version(),
        "rows": list(rows),
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"\nraw figures: {path}")
    return path
