"""The ``jaxhpo`` command line (also ``python -m jaxhpo``).

    jaxhpo demo             tune logistic regression on iris, print a table
    jaxhpo demo --quick     the same with small budgets, for a fast check
    jaxhpo demo --task mlp  tune an MLP on digits: Hyperband, random search, PBT
    jaxhpo run CONFIG       run a Study described by a JSON / TOML / YAML file
    jaxhpo show STUDY.db    a table of a stored study's best trials
    jaxhpo plot STUDY.db    save the study's plots as PNG files
    jaxhpo bench [NAME]     the benchmark suite (source checkout)

Compiled programs are kept on disk between runs (``compile_cache_dir()``;
``jaxhpo --no-compile-cache ...`` to skip), so a second run compiles little.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .compile_cache import compile_cache_dir, use_compile_cache

__all__ = ["main", "build_parser", "compile_cache_dir"]


def _int_at_least(text: str, least: int, below: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {value}")
    if below is not None and value >= below:
        raise argparse.ArgumentTypeError(f"must be < {below}, got {value}")
    return value


def _seed(text: str) -> int:
    return _int_at_least(text, 0, below=2**64)


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxhpo", description="Hyperparameter optimisation for JAX.")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not keep compiled programs on disk between runs (by default in "
                             "$JAXHPO_CACHE_DIR, else $XDG_CACHE_HOME/jaxhpo/xla, else ~/.cache/jaxhpo/xla; "
                             "JAX_COMPILATION_CACHE_DIR overrides them)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    demo = sub.add_parser(
        "demo",
        help="tune logistic regression on iris by 5-fold cross-validation (--task mlp: an MLP on digits)",
        description=(
            "Tune multinomial logistic regression (C on a log scale in [1e-3, 1e3], "
            "penalty l1 or l2) on the iris data by stratified 5-fold cross-validated "
            "accuracy, with grid, random and Sobol quasi-random search; every "
            "configuration and fold of a search runs as one compiled JAX program."),
    )
    demo.add_argument("--seed", type=_seed, default=0,
                      help="seed of the fold shuffle and the random searches (default 0)")
    demo.add_argument("--quick", action="store_true",
                      help="small budgets (iris: 8 configurations, 4-point C grid, 300 solver steps; "
                           "--task mlp: Hyperband to 3 units of 10 steps, widths up to 16)")
    demo.add_argument("--configs", type=_positive_int, default=None,
                      help="configurations per random / Sobol search (default 32)")
    demo.add_argument("--grid-size", type=_positive_int, default=None,
                      help="grid points for C; the grid holds twice as many (default 16)")
    demo.add_argument("--iters", type=_positive_int, default=None,
                      help="FISTA steps per fit (default 1000)")
    demo.add_argument("--strategies", default=None,
                      help="comma-separated subset of grid,random,sobol (default all)")
    demo.add_argument("--task", choices=("iris", "mlp"), default="iris",
                      help="iris: logistic regression (default); mlp: tune an MLP on the digits data "
                           "with Hyperband, random search and population-based training")
    # Every subcommand sets ``func(args) -> exit status``; main dispatches on it.
    demo.set_defaults(func=_demo)
    from .cli_study import add_subcommands

    add_subcommands(sub)
    bench = sub.add_parser(
        "bench", help="run the benchmark suite (from a source checkout)",
        description="Run benchmarks/ of a jaxhpo source checkout: with no NAME, list them. "
                    "Arguments after NAME go to the benchmark (e.g. --quick).")
    bench.add_argument("name", nargs="?", help="a benchmark's name, or 'all'")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    bench.set_defaults(func=_bench)
    return parser


def _bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    # The suite lives beside the package in a source checkout, not in the wheel.
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").is_file():
        print("jaxhpo bench: needs a source checkout of jaxhpo (benchmarks/ was not found next to "
              f"{root / 'jaxhpo'})", file=sys.stderr)
        return 2
    argv = [sys.executable, "-m", "benchmarks"] + ([args.name] if args.name else []) + list(args.args)
    env = dict(os.environ)
    if env.get("JAXHPO_BENCH_RESULTS"):  # relative to where the user is, not to the checkout it runs in
        env["JAXHPO_BENCH_RESULTS"] = os.path.abspath(env["JAXHPO_BENCH_RESULTS"])
    return subprocess.call(argv, cwd=root, env=env)


def _demo_mlp(args: argparse.Namespace) -> int:
    iris_only = [f for f, v in (("--configs", args.configs), ("--grid-size", args.grid_size),
                                ("--iters", args.iters), ("--strategies", args.strategies)) if v is not None]
    if iris_only:
        print(f"jaxhpo demo: {', '.join(iris_only)} apply to --task iris only", file=sys.stderr)
        return 2
    import jax

    from . import demo_mlp

    settings = dict(demo_mlp.MLP_QUICK_SETTINGS) if args.quick else {}
    rows = demo_mlp.run_mlp_demo(seed=args.seed, **settings)
    print(demo_mlp.format_mlp_table(rows))
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.task == "mlp":
        return _demo_mlp(args)
    from . import demo

    settings = dict(demo.QUICK_SETTINGS) if args.quick else {}
    for name, value in (("num_configs", args.configs), ("grid_size", args.grid_size),
                        ("num_iters", args.iters)):
        if value is not None:
            settings[name] = value
    strategies = demo.STRATEGY_NAMES
    if args.strategies is not None:
        strategies = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
        unknown = [s for s in strategies if s not in demo.STRATEGY_NAMES]
        if unknown or not strategies:
            print(f"jaxhpo demo: --strategies must name some of {','.join(demo.STRATEGY_NAMES)}, "
                  f"got {args.strategies!r}", file=sys.stderr)
            return 2
    import jax

    rows = demo.run_demo(seed=args.seed, strategies=strategies, **settings)
    print(demo.format_table(rows))
    print(f"backend: {jax.default_backend()} ({jax.devices()[0].device_kind})")
    return 0


def main(argv: Sequence[str] | None = None, *, compile_cache: bool | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits on bad usage).

    Args:
      argv: the arguments; ``None``: ``sys.argv[1:]`` (the ``jaxhpo`` program).
      compile_cache: keep compiled programs on disk between runs
        (``compile_cache_dir()``). ``None``: on for the ``jaxhpo`` program
        (``argv`` not given) unless ``--no-compile-cache``, off when called
        with ``argv`` from Python, which should not change JAX's settings.
    """
    args = build_parser().parse_args(argv)
    if compile_cache is None:
        compile_cache = argv is None and not args.no_compile_cache
    if compile_cache:
        try:
            use_compile_cache()
        except (ValueError, OSError) as e:  # e.g. $JAXHPO_CACHE_DIR naming a file
            # The cache only saves compile time: run without it.
            where = f" ($JAXHPO_CACHE_DIR={os.environ['JAXHPO_CACHE_DIR']})" if os.environ.get("JAXHPO_CACHE_DIR") else ""
            print(f"jaxhpo: warning: compiled programs are not kept on disk this run{where}: {e}", file=sys.stderr)
    try:
        status = int(args.func(args))
        if status == 130 and argv is None:
            # Interrupted (the message is out, every finished step committed): end
            # at once. Python's shutdown crashed in an XLA compile the interrupt
            # left running in another thread (a segfault after the message).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return status
    except BrokenPipeError:  # output piped into a reader that stopped (jaxhpo show ... | head)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())
