"""The study commands of the ``jaxhpo`` command line: ``run``, ``show``, ``plot``.

``add_subcommands(subparsers)`` adds them to the main parser's subparsers;
each sets ``func`` (``args.func(args) -> exit code``). ``main(argv)`` runs
them alone, for tests and for ``python -m jaxhpo.cli_study``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._labels import INACTIVE_TEXT as _INACTIVE, label_text

__all__ = ["add_subcommands", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _fail(cmd: str, exc: BaseException) -> int:
    print(f"jaxhpo {cmd}: error: {exc}", file=sys.stderr)
    return 2


def _cell(column: str, value: Any) -> Any:
    """A trials.csv cell: a parameter's label as ``label_text`` writes it, a
    user attribute as JSON (a string quoted, ``None`` as ``null``; an empty
    cell: not set)."""
    if column.startswith("params_"):
        return label_text(value)
    if column.startswith("user_attrs_"):
        return json.dumps(value)
    return value


def _write_results(study: Any, folder: Path) -> dict:
    """best.json and trials.csv in ``folder``; returns the best summary.

    In trials.csv an inactive parameter's cell is empty, a ``None`` label is
    written ``None``, and a text label that would read as another value
    (``"None"``, ``""``, ``"1"``, ``"'a'"``), or that holds a line break, is
    written as its Python repr (``'None'``, ``''``, ``'1'``): see ``label_text``.
    User attributes are ``user_attrs_<key>`` columns, each value as JSON (a
    string quoted, ``None`` as ``null``, non-finite numbers as Python's
    ``json`` writes them: ``NaN``, ``Infinity``); an empty cell: not set."""
    folder.mkdir(parents=True, exist_ok=True)
    records = [{k: _cell(k, v) for k, v in r.items()} for r in study.to_records()]
    columns: list[str] = []
    for r in records:
        for k in r:
            if k not in columns:
                columns.append(k)
    with open(folder / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(records)
    if getattr(study, "num_objectives", 1) > 1:
        front, _ = study.pareto_front()
        summary = {"name": study.name, "directions": list(study.directions),
                   "pareto_front": [{"trial": t.number, "values": list(t.values), "params": t.params}
                                    for t in front],
                   "hypervolume": study.hypervolume() if front else None}
    else:
        try:
            best = study.best_trial
            summary = {"name": study.name, "best_value": best.value, "best_params": best.params,
                       "best_trial": best.number}
        except ValueError:
            summary = {"name": study.name, "best_value": None, "best_params": None, "best_trial": None}
    counts: dict[str, int] = {}
    for r in records:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary["trials"] = counts
    (folder / "best.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _plots(study: Any, folder: Path) -> list[Path]:
    try:
        from .plot import save_plots

        return save_plots(study, folder)
    except ImportError as e:
        print(f"plots skipped: {e}", file=sys.stderr)
        return []


def cmd_run(args: argparse.Namespace) -> int:
    from .study import Study, StorageError
    from .study.config import load_config
    from .study.storage import storage_path

    try:
        cfg = load_config(args.config)
        if args.output is not None:
            cfg.output = Path(args.output)
            if args.storage is None and not cfg.storage_given:  # the default storage follows the output
                cfg.storage = str(cfg.output / "study.db")
        if args.storage is not None:
            cfg.storage = args.storage
        objective = cfg.load_objective()
        given = {"output": "--output" if args.output is not None else "config: output",
                 "storage's folder": "--storage's folder" if args.storage is not None else "config: storage's folder"}
        for what, folder in (("output", cfg.output), ("storage's folder", Path(storage_path(cfg.storage)).parent)):
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"{given[what]} {str(folder)!r} is a file, not a folder")
        # The file's folder, however the storage is named (a path or "sqlite:///...").
        Path(storage_path(cfg.storage)).parent.mkdir(parents=True, exist_ok=True)
        study = Study(cfg.space, cfg.strategy, seed=cfg.seed, maximize=cfg.maximize,
                      storage=cfg.storage, name=cfg.name, pruner=cfg.pruner)
        if study.storage.read_only:
            study.close()
            raise StorageError(f"storage {cfg.storage!r} is read-only for this process: jaxhpo run writes its "
                               "trials there (jaxhpo show and jaxhpo plot read it as it is)")
        for config in cfg.enqueue:  # once: a rerun finds them tried or queued
            study.enqueue_trial(config, skip_if_exists=True)
    except (ValueError, TypeError, StorageError, OSError) as e:
        return _fail("run", e)
    except KeyboardInterrupt:  # while the strategy compiles, before this run's first trial
        print("\njaxhpo run: interrupted before any trial of this run; nothing stored is lost; run the same "
              "command again to go on", file=sys.stderr)
        return 130
    with study:
        budget: dict[str, Any] = {"timeout": cfg.timeout}
        run = True
        if cfg.num_trials is not None:
            budget["max_trials"] = cfg.num_trials  # a total: rerunning resumes
        if cfg.num_generations is not None:
            left = cfg.num_generations - study.generation
            run = left > 0
            budget["num_generations"] = max(left, 1)
        if run:
            try:
                study.optimize(objective, progress=not args.no_progress, n_jobs=cfg.n_jobs, **budget)
            except StorageError as e:  # the file's lock held past its timeout, say
                return _fail("run", e)
            except KeyboardInterrupt:
                print(f"\njaxhpo run: interrupted; the finished trials are stored in {cfg.storage}; "
                      "run the same command again to resume", file=sys.stderr)
                return 130
        try:
            summary = _write_results(study, cfg.output)
            plots = [] if args.no_plots else _plots(study, cfg.output / "plots")
        except OSError as e:  # an output path that is a file, a read-only folder
            return _fail("run", e)
        except KeyboardInterrupt:
            print(f"\njaxhpo run: interrupted while writing results; every trial is stored in {cfg.storage}; "
                  "`jaxhpo show` and `jaxhpo plot` read them", file=sys.stderr)
            return 130
    print(f"study {cfg.name!r}: {summary['trials']}")
    if "pareto_front" in summary:
        print(f"Pareto front: {len(summary['pareto_front'])} trials, hypervolume {summary['hypervolume']} "
              f"(see best.json; jaxhpo show lists them)")
    else:
        print(f"best value {summary['best_value']} at trial {summary['best_trial']}: {summary['best_params']}")
    print(f"results in {cfg.output} (study.db storage: {cfg.storage})")
    for p in plots:
        print(f"  {p}")
    return 0


def _study_file(study: str) -> Path:
    """The file of a ``STUDY.db`` argument: a path or a ``sqlite:///`` URL."""
    from .study.storage import storage_path

    return Path(storage_path(study))


def _open(args: argparse.Namespace, cmd: str) -> Any:
    from .study import Study

    path = _study_file(args.study)
    if path.is_dir():
        raise ValueError(f"{args.study!r} is a folder, not a study file (give its study.db)")
    if not path.is_file():
        raise ValueError(f"{args.study!r} does not exist")
    try:
        return Study.load(str(path), args.name)
    except (ValueError, TypeError) as e:
        if "pass strategy=" not in str(e) and "pass space=" not in str(e):
            raise
        opened = _open_with_stand_in(path, args.name)
        if opened is not None:
            return opened
        # Study.load's remedy (space=, strategy=) is Python's, not the command line's.
        raise ValueError(f"{e.args[0].rsplit(';', 1)[0]}: the command line cannot open it; in Python, "
                         f"Study.load({str(path)!r}, space=..., strategy=...) with the objects the study "
                         "was made with reads it") from None


def _open_with_stand_in(path: Path, name: str | None) -> Any:
    """The study with a stand-in for a strategy that cannot be rebuilt here (a
    user's class, defined in a script), or ``None``.

    ``show`` and ``plot`` read stored trials and never ask the strategy for
    points: a random search under the stored class name and ``repr`` is
    what ``Study`` checks a stored study against. Only a single-objective
    study whose space can be rebuilt opens so (a multi-objective strategy's
    constraints are among its own settings).
    """
    from .strategies import RandomSearch
    from .study import Study
    from .study.specs import space_from_spec
    from .study.storage import open_storage

    store = open_storage(str(path), must_exist=True)
    try:
        with store.transaction(write=False) as c:
            names = store.study_names(c)
            row = store.get_study(c, name if name is not None else (names[0] if len(names) == 1 else ""))
    finally:
        store.close()
    if row is None or row.get("directions"):
        return None
    space_spec, spec = json.loads(row["space"]), json.loads(row["strategy"])
    if "__unrepresentable__" in space_spec or ":" not in spec.get("class", ""):
        return None
    module, _, qualname = spec["class"].partition(":")
    stored_repr = spec.get("repr", qualname)
    stand_in = type(qualname.rpartition(".")[2], (RandomSearch,),
                    {"__module__": module, "__qualname__": qualname, "__repr__": lambda self: stored_repr})
    space = space_from_spec(space_spec, where="stored space")
    return Study.load(str(path), row["name"], space=space, strategy=stand_in(space, popsize=int(row["popsize"])))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _param(t: Any, name: str) -> str:
    """A trial's parameter for ``jaxhpo show``: ``-`` where inactive."""
    return _fmt(label_text(t.params[name])) if name in t.params else _INACTIVE


def _attr_names(trials: list) -> list[str]:
    """The user attributes ``jaxhpo show`` lists: those holding a number, string
    or bool in a shown trial, in the order first set."""
    names: list[str] = []
    for t in trials:
        names += [k for k, v in t.user_attrs.items() if _scalar(v) and k not in names]
    return names


def _scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, (list, dict))


def _attr(t: Any, name: str) -> str:
    """A trial's user attribute in ``jaxhpo show``: a text as ``label_text``
    writes a label (so that it reads as neither ``-`` nor a number), ``-``
    where it has no number, string or bool."""
    value = t.user_attrs.get(name)
    return _fmt(label_text(value)) if _scalar(value) else _INACTIVE


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    from .study import StorageError

    try:
        study = _open(args, "show")
    except (ValueError, TypeError, StorageError) as e:
        return _fail("show", e)
    with study:
        trials = study.trials
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state] = counts.get(t.state, 0) + 1
        print(f"study {study.name!r}  strategy {study.strategy!r}  seed {study.seed}  "
              f"{' '.join(study.directions)}")
        print(f"generations told {study.generation}  trials {dict(sorted(counts.items()))}")
        if study.num_objectives > 1:
            _show_front(study, args)
        else:
            _show_best(study, trials, args)
        failed = [t for t in trials if t.state == "failed"]
        if failed and args.all:
            print("\nfailed trials:")
            for t in failed:
                print(f"  {t.number}: {t.error}")
    return 0


def _show_front(study: Any, args: argparse.Namespace) -> None:
    """The Pareto front (feasible, non-dominated trials), best first objective first."""
    front, _ = study.pareto_front()
    m, c = study.num_objectives, study.num_constraints
    names = list(study.space.names)
    heads = [f"f{k} ({d[:3]})" for k, d in enumerate(study.directions)]
    heads += [f"g{k}" for k in range(c)]
    shown = front if args.all else front[: args.top]
    attrs = _attr_names(shown)
    rows = [[str(i + 1), str(t.number)] + [_fmt(v) for v in t.values] + [_fmt(g) for g in t.constraints]
            + [_param(t, n) for n in names] + [_attr(t, a) for a in attrs] for i, t in enumerate(shown)]
    hv = f", hypervolume {_fmt(study.hypervolume())}" if front and m <= 3 else ""
    more = "" if len(shown) == len(front) else f" (first {len(shown)}; --all lists every one)"
    print(f"Pareto front: {len(front)} trials{hv}{more}")
    print(_table(rows, ["#", "trial"] + heads + names + [f"attr:{a}" for a in attrs]))


def _show_best(study: Any, trials: list, args: argparse.Namespace) -> None:
    """The best complete trials of a single-objective study."""
    done = [t for t in trials if t.state == "complete" and t.feasible]
    maximize = bool(np.ravel([study.maximize])[0])  # a tuple with constraints
    done.sort(key=lambda t: (-t.value if maximize else t.value, t.number))
    shown = done if args.all else done[: args.top]
    names = list(study.space.names)
    attrs = _attr_names(shown)
    rows = [[str(i + 1), str(t.number), _fmt(t.value)] + [_param(t, n) for n in names] + [_attr(t, a) for a in attrs]
            for i, t in enumerate(shown)]
    print(_table(rows, ["rank", "trial", "value"] + names + [f"attr:{a}" for a in attrs]))


def cmd_plot(args: argparse.Namespace) -> int:
    from .study import StorageError

    try:
        study = _open(args, "plot")
    except (ValueError, TypeError, StorageError) as e:
        return _fail("plot", e)
    file = _study_file(args.study)
    out = Path(args.output) if args.output else file.parent / (file.stem + "_plots")
    with study:
        try:
            from . import plot

            if args.objective is not None and (args.kind != "importance" or study.num_objectives == 1):
                raise ValueError("--objective picks the objective of --kind importance on a study with several "
                                 f"objectives (study {study.name!r} has {study.num_objectives}, --kind is "
                                 f"{args.kind})")
            if args.kind == "all":
                paths = plot.save_plots(study, out)
            else:
                fn = {"history": plot.plot_history, "parallel_coordinates": plot.plot_parallel_coordinates,
                      "slice": plot.plot_slice, "importance": plot.plot_importance,
                      "intermediate_values": plot.plot_intermediate_values,
                      "pareto_front": plot.plot_pareto_front}[args.kind]
                path = out / f"{args.kind}.png"
                if study.num_objectives > 1 and args.kind not in ("importance", "pareto_front"):
                    raise ValueError(f"study {study.name!r} has {study.num_objectives} objectives; --kind "
                                     f"{args.kind} shows one value per trial: use --kind pareto_front, or "
                                     "--kind importance --objective K")
                out.mkdir(parents=True, exist_ok=True)
                if args.kind == "importance" and study.num_objectives > 1:
                    if args.objective is None:
                        raise ValueError(f"study {study.name!r} has {study.num_objectives} objectives: "
                                         f"--kind importance needs --objective K, 0 <= K < {study.num_objectives}")
                    plot.plot_importance(study, path, objective=args.objective)
                else:
                    fn(study, path)
                paths = [path]
        except (ImportError, ValueError, OSError) as e:
            return _fail("plot", e)
    if not paths:
        return _fail("plot", ValueError(f"study {study.name!r} has no complete trial to plot"))
    for p in paths:
        print(p)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add ``run``, ``show`` and ``plot`` to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "run", help="run a study from a config file",
        description="Run (or resume) the study a TOML/JSON/YAML config describes: space, strategy, "
                    "objective import path, budget. Writes study.db, best.json, trials.csv and plots "
                    "to the output folder. Rerunning the same config resumes the study.")
    p.add_argument("config", help="config file (.toml, .json, .yaml)")
    p.add_argument("--output", help="output folder (overrides the config's 'output')")
    p.add_argument("--storage", help="storage URL or file (overrides the config's 'storage')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw plots")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("show", help="print the best trials of a stored study",
                              description="Print a study's summary and its best trials (with several "
                                          "objectives: its Pareto front and hypervolume).")
    p.add_argument("study", metavar="STUDY.db", help="the study's SQLite file")
    p.add_argument("--name", help="study name (needed when the file holds several)")
    p.add_argument("--top", type=_positive_int, default=10, help="how many trials to list (default 10)")
    p.add_argument("--all", action="store_true", help="list every complete trial (feasible ones, with constraints; the whole "
                   "Pareto front, with several objectives) and the failures with their errors")
    p.set_defaults(func=cmd_show)

    p = subparsers.add_parser("plot", help="draw a stored study's plots to PNG files",
                              description="Write history, parallel coordinates, slice, importance and "
                                          "intermediate-value plots of a stored study as PNG files.")
    p.add_argument("study", metavar="STUDY.db", help="the study's SQLite file")
    p.add_argument("--name", help="study name (needed when the file holds several)")
    p.add_argument("--output", help="folder for the PNGs (default: STUDY_plots next to the file)")
    p.add_argument("--kind", default="all",
                   choices=("all", "history", "parallel_coordinates", "slice", "importance", "intermediate_values",
                            "pareto_front"),
                   help="one plot only (default all: every plot the study supports; for a study of "
                        "several objectives that is the Pareto front)")
    p.add_argument("--objective", type=int, default=None,
                   help="with several objectives, the objective (0, 1, ...) --kind importance ranks for")
    p.set_defaults(func=cmd_plot)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one study command: ``main(["show", "study.db"])``."""
    parser = argparse.ArgumentParser(prog="jaxhpo", description="jaxhpo study commands")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
