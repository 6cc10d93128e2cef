"""The benchmark suite's entry point.

    python -m benchmarks                 list the benchmarks
    python -m benchmarks NAME [ARGS...]  run one (ARGS go to it, e.g. --quick)
    python -m benchmarks all             run every one, each in its own process

Each benchmark prints a table and writes its raw figures, with the machine and
versions, to ``benchmarks/results/NAME.json`` (``NAME_quick.json`` for a
``--quick`` smoke run). The competing systems come with
``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def available() -> dict[str, str]:
    out = {}
    for mod in pkgutil.iter_modules([str(HERE)]):
        if mod.name.startswith("_"):
            continue
        text = (HERE / f"{mod.name}.py").read_text()
        out[mod.name] = text.split('"""')[1].strip().splitlines()[0] if text.startswith('"""') else ""
    return dict(sorted(out.items()))


def results_env() -> dict[str, str]:
    """The environment of a benchmark's process, which runs in the checkout's
    root: a relative ``JAXHPO_BENCH_RESULTS`` made absolute against this
    process's working directory, where the user gave it."""
    env = dict(os.environ)
    if env.get("JAXHPO_BENCH_RESULTS"):
        env["JAXHPO_BENCH_RESULTS"] = os.path.abspath(env["JAXHPO_BENCH_RESULTS"])
    return env


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__)
        width = max(map(len, names))
        for name, doc in names.items():
            print(f"  {name.ljust(width)}  {doc}")
        return 0
    target, rest = argv[0], argv[1:]
    if target == "all":
        chosen = list(names)
    elif target in names:
        chosen = [target]
    else:
        print(f"unknown benchmark {target!r}; choose from: {', '.join(names)} or all", file=sys.stderr)
        return 2
    status = 0
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        # One process per benchmark: no JAX state or memory carries over.
        status |= subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *rest], cwd=HERE.parent,
                                  env=results_env())
    return status


if __name__ == "__main__":
    sys.exit(main())
