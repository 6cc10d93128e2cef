"""Run configurations for ``jaxhpo run CONFIG``: JSON, TOML or YAML files.

A config names the space, the strategy, a Python objective by import path
and the budget. Example (TOML)::

    name = "rf"
    objective = "my_project.tuning:objective"   # or "objective.py:objective"
    maximize = true            # several objectives (nsga2): [true, false]
    seed = 0
    num_trials = 60            # trials in the whole study: rerunning resumes
    strategy = { name = "random", popsize = 8 }
    pruner = { name = "asha", reduction_factor = 3 }   # optional: "median", "percentile", "asha", "hyperband",
                                                       # "threshold", "patient" (wrapped = { name = ... })
    enqueue = [{ n_estimators = 100, criterion = "gini" }]  # optional: tried first (any subset of the space)
    output = "rf_results"      # results, study.db and plots go here

    [space]
    n_estimators = { type = "int", low = 10, high = 300, log = true }
    max_depth    = { type = "int", low = 1, high = 20 }
    criterion    = { type = "categorical", choices = ["gini", "entropy"] }

Relative paths (``output``, ``storage``, ``file.py`` objectives) are taken
relative to the config file's folder. ``num_trials`` and ``num_generations``
are totals for the study, so running the same config again after a crash
finishes the job rather than starting over; ``timeout`` is per run (each
rerun may spend it again). Configurations in ``enqueue`` are queued once (a
rerun skips those a trial or the queue already holds).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import numbers
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from ..space import Space
from ..strategies.base import Strategy
from .pruners import Pruner, build_pruner
from .specs import build_strategy, space_from_spec
from .storage import storage_path

__all__ = ["RunConfig", "load_config", "parse_config", "load_objective", "CONFIG_KEYS"]

CONFIG_KEYS = ("name", "objective", "space", "strategy", "seed", "maximize", "num_trials",
               "num_generations", "timeout", "n_jobs", "output", "storage", "pruner", "enqueue")


@dataclasses.dataclass
class RunConfig:
    """A validated run configuration (see the module docstring for the keys)."""

    name: str
    objective: str
    space: Space
    strategy: Strategy
    seed: int
    maximize: Any  # a bool, or a tuple of bools with several objectives
    num_trials: int | None
    num_generations: int | None
    timeout: float | None
    n_jobs: int
    output: Path
    storage: str
    base_dir: Path
    pruner: Pruner | None = None
    enqueue: tuple = ()  # configurations to try first (dicts of Python values)
    storage_given: bool = False  # the config names its storage (else it lives in the output folder)

    def load_objective(self) -> Callable:
        return load_objective(self.objective, self.base_dir)


# YAML 1.2's floats: PyYAML follows YAML 1.1, where a float needs a dot
# ("1e-3" is text there, "1.0e-3" a number); a learning rate's bound is
# written 1e-3.
_YAML_FLOAT = re.compile(r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's safe loader with YAML 1.2's floats (``1e-3`` is a number)."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:float"]
                                      for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML_FLOAT, list("-+0123456789."))
    return Loader


def _read(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"config {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config {path}: invalid JSON: {e}") from None
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise ValueError(f"config {path}: TOML needs Python 3.11+ or the tomli package") from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config {path}: invalid TOML: {e}") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"config {path}: YAML needs the pyyaml package; or use TOML or JSON") from None
        try:
            return yaml.load(text, Loader=_yaml_loader(yaml))
        except yaml.YAMLError as e:
            raise ValueError(f"config {path}: invalid YAML: {e}") from None
    raise ValueError(f"config {path}: unknown format {suffix!r}; use .toml, .json, .yaml or .yml")


def _int(data: Mapping, key: str, default: Any, low: int, high: int | None = None,
         also: tuple = ()) -> Any:
    """``data[key]``: an integer in ``[low, high]`` (or one of ``also``); ``None`` only
    where the key has no default (an explicit null does not stand for the default)."""
    v = data.get(key, default)
    if v is None and default is None:
        return None
    rule = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    rule += "".join(f" or {a}" for a in also)
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and v in also:
        return int(v)
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low or (high is not None and v > high):
        raise ValueError(f"config: {key} must be {rule}, got {v!r}")
    return int(v)


def parse_config(data: Any, base_dir: Path | str = ".", default_name: str = "study") -> RunConfig:
    """Validate a config mapping (already parsed) into a ``RunConfig``."""
    base_dir = Path(base_dir)
    if not isinstance(data, Mapping):
        raise ValueError(f"config must be a table of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"config has unknown key(s) {unknown}; known keys: {list(CONFIG_KEYS)}")
    for key in ("objective", "space"):
        if key not in data:
            raise ValueError(f"config: {key!r} is required")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise ValueError(f"config: name must be a non-empty string, got {name!r}")
    objective = data["objective"]
    if not isinstance(objective, str) or ":" not in objective:
        raise ValueError(
            f"config: objective must be 'package.module:function' or 'file.py:function', got {objective!r}")
    space = space_from_spec(data["space"], where="config space")
    strat = data.get("strategy", {"name": "random", "popsize": 8})
    if isinstance(strat, str):
        strat = {"name": strat}
    if not isinstance(strat, Mapping) or not isinstance(strat.get("name"), str):
        raise ValueError(f"config: strategy must be a name or a table with a 'name', got {strat!r}")
    settings = {k: v for k, v in strat.items() if k != "name"}
    strategy = build_strategy(strat["name"], space, settings, where="config strategy")
    seed = _int(data, "seed", 0, 0, 2**32 - 1)  # Study's seeds
    maximize = data.get("maximize", False)
    if isinstance(maximize, list) and all(isinstance(f, bool) for f in maximize) \
            and getattr(strategy, "num_objectives", None) is not None:
        if len(maximize) != strategy.num_objectives:
            raise ValueError(f"config: maximize must be true, false or a list of {strategy.num_objectives} "
                             f"of them (one per objective), got {maximize!r}")
        maximize = tuple(maximize)
    elif not isinstance(maximize, bool):
        raise ValueError(f"config: maximize must be true or false (a list of them, one per objective, for a "
                         f"strategy with several objectives), got {maximize!r}")
    num_trials = _int(data, "num_trials", None, 1)
    num_generations = _int(data, "num_generations", None, 1)
    timeout = data.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                or not 0 < timeout < math.inf):
        raise ValueError(f"config: timeout must be a positive number of seconds, got {timeout!r}")
    if num_trials is None and num_generations is None and timeout is None \
            and not isinstance(getattr(strategy, "num_generations", None), int):
        raise ValueError("config: give a budget: num_trials, num_generations or timeout")
    n_jobs = _int(data, "n_jobs", 1, 1, also=(-1,))  # -1: one worker per CPU, as in optimize
    output = data.get("output", f"{name}_results")
    if not isinstance(output, str) or not output:
        raise ValueError(f"config: output must be a folder path, got {output!r}")
    output_path = base_dir / output
    storage = data.get("storage", None)
    if storage is None:
        storage = str(output_path / "study.db")
    elif not isinstance(storage, str) or not storage:
        raise ValueError(f"config: storage must be 'sqlite:///path.db' or a file path, got {storage!r}")
    else:  # a URL's file too is relative to the config's folder
        storage = str(base_dir / storage_path(storage))
    pruner = data.get("pruner")
    if pruner is not None:
        if isinstance(pruner, str):
            pruner = {"name": pruner}
        if not isinstance(pruner, Mapping) or not isinstance(pruner.get("name"), str):
            raise ValueError(f"config: pruner must be a name or a table with a 'name', got {pruner!r}")
        num_objectives = int(getattr(strategy, "num_objectives", 1) or 1)
        if num_objectives > 1:
            raise ValueError(f"config: pruner: a study of {num_objectives} objectives cannot be pruned (a pruner "
                             "ranks one value per step); remove the pruner key")
        try:
            pruner = build_pruner(pruner["name"], {k: v for k, v in pruner.items() if k != "name"})
        except (ValueError, TypeError) as e:
            raise ValueError(f"config: {e}") from None
    enqueue = data.get("enqueue", [])
    if not isinstance(enqueue, list) or not all(isinstance(c, Mapping) and c for c in enqueue):
        raise ValueError(f"config: enqueue must be a list of tables of parameter values, got {enqueue!r}")
    if enqueue and not strategy.accepts_points:
        raise ValueError(f"config: enqueue: {type(strategy).__name__} evaluates a fixed set of points, which "
                         "other configurations cannot replace")
    for i, config in enumerate(enqueue):
        try:
            space.fixed_coordinates(config)
        except (ValueError, TypeError) as e:
            raise ValueError(f"config: enqueue[{i}]: {e}") from None
    return RunConfig(name=name, objective=objective, space=space, strategy=strategy, seed=seed,
                     maximize=maximize, num_trials=num_trials, num_generations=num_generations,
                     timeout=None if timeout is None else float(timeout), n_jobs=n_jobs,
                     output=output_path, storage=storage, base_dir=base_dir, pruner=pruner,
                     enqueue=tuple(dict(c) for c in enqueue), storage_given=data.get("storage") is not None)


def load_config(path: Path | str) -> RunConfig:
    """Read and validate a config file (``.toml``, ``.json``, ``.yaml``/``.yml``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config file {str(path)!r} is a folder, not a file")
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    return parse_config(_read(path), base_dir=path.parent, default_name=path.stem)


def load_objective(spec: str, base_dir: Path | str = ".") -> Callable:
    """``"package.module:function"`` or ``"path/file.py:function"`` -> the callable."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"objective must be 'package.module:function' or 'file.py:function', got {spec!r}")
    base_dir = Path(base_dir)
    if target.endswith(".py"):
        file = Path(target) if Path(target).is_absolute() else base_dir / target
        if not file.is_file():
            raise ValueError(f"objective {spec!r}: file {str(file)!r} does not exist")
        # its folder first, as `python file.py` puts it: modules beside it import
        folder = str(file.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        mod_name = f"_jaxhpo_objective_{abs(hash(str(file.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise ValueError(f"objective {spec!r}: running {str(file)!r} failed: {type(e).__name__}: {e}") from e
    else:
        # the config's folder first, so a module next to the config is found
        for p in (str(base_dir.resolve()), str(Path.cwd())):
            if p not in sys.path:
                sys.path.insert(0, p)
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"objective {spec!r}: cannot import {target!r} ({e})") from None
        except Exception as e:
            raise ValueError(f"objective {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from e
    fn = getattr(module, attr, None)
    if fn is None:
        raise ValueError(f"objective {spec!r}: {target!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ValueError(f"objective {spec!r} is not callable")
    return fn
