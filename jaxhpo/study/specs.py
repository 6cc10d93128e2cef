"""Spaces and strategies as JSON-able specs, and strategies by name.

A stored study records its space and strategy as specs, so that
``Study.load`` can rebuild them and a reopened study can check that it is
given the same ones. Config files (``jaxhpo run``) use the same space spec::

    {"lr":    {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
     "depth": {"type": "int", "low": 1, "high": 8},
     "opt":   {"type": "categorical", "choices": ["sgd", "adam"]},
     "mom":   {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}}}
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from ..space import Categorical, Float, Int, Space
from ..strategies.base import Strategy

__all__ = [
    "space_to_spec", "space_from_spec", "strategy_to_spec", "strategy_from_spec",
    "resolve_strategy", "build_strategy", "STRATEGY_NAMES",
]

# Short names accepted wherever a strategy is named (config files, the CLI).
# Modules are imported only when a name is used, so a strategy that is not
# part of this installation fails only when asked for.
STRATEGY_NAMES = {
    "random": "jaxhpo.strategies.random:RandomSearch",
    "grid": "jaxhpo.strategies.grid:GridSearch",
    "quasirandom": "jaxhpo.strategies.quasirandom:QuasiRandom",
    "de": "jaxhpo.strategies.de:DifferentialEvolution",
    "ga": "jaxhpo.strategies.ga:GeneticAlgorithm",
    "local_search": "jaxhpo.strategies.local_search:LocalSearch",
    "cmaes": "jaxhpo.strategies.cmaes:CMAES",
    "tpe": "jaxhpo.strategies.tpe:TPE",
    "gpbo": "jaxhpo.strategies.gpbo:GPBO",
    "nsga2": "jaxhpo.strategies.nsga2:NSGA2",
    "motpe": "jaxhpo.strategies.motpe:MOTPE",
}

_TYPES = {"float": Float, "int": Int, "categorical": Categorical}
_JSON_LABEL = (str, int, float, bool, type(None))


# ----------------------------------------------------------------- spaces
def space_to_spec(space: Space) -> dict | None:
    """The spec of ``space``, or ``None`` if a label is not JSON-representable."""
    spec = {}
    for name, d in space.dims.items():
        if isinstance(d, Categorical):
            if not all(isinstance(c, _JSON_LABEL) and not (isinstance(c, float) and not math.isfinite(c))
                       for c in d.choices):
                return None
            entry: dict[str, Any] = {"type": "categorical", "choices": list(d.choices)}
        else:
            entry = {"type": d.kind, "low": d.low, "high": d.high, "log": d.log}
        if d.when:
            entry["when"] = {p: list(allowed) for p, allowed in d.when}
        spec[name] = entry
    return spec


def space_from_spec(spec: Any, where: str = "space") -> Space:
    """Build a ``Space`` from its spec; errors name ``where`` and the parameter."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(f"{where} must be a non-empty table of parameter name -> definition, got {spec!r}")
    dims = {}
    for name, entry in spec.items():
        at = f"{where}.{name}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{at} must be a table like {{type = \"float\", low = 0, high = 1}}, got {entry!r}")
        entry = dict(entry)
        kind = entry.pop("type", None)
        if kind not in _TYPES:
            raise ValueError(f"{at}.type must be one of {sorted(_TYPES)}, got {kind!r}")
        allowed = {"when"} | ({"choices"} if kind == "categorical" else {"low", "high", "log"})
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise ValueError(f"{at} has unknown key(s) {unknown}; a {kind} takes {sorted(allowed)}")
        try:
            if kind == "categorical":
                if "choices" not in entry:
                    raise ValueError("needs 'choices'")
                dims[name] = Categorical(entry["choices"], when=entry.get("when"))
            else:
                missing = [k for k in ("low", "high") if k not in entry]
                if missing:
                    raise ValueError(f"needs {missing}")
                log = entry.get("log", False)
                if not isinstance(log, bool):
                    raise TypeError(f"log must be true or false, got {log!r}")
                dims[name] = _TYPES[kind](entry["low"], entry["high"], log, when=entry.get("when"))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{at}: {e}") from None
    try:
        return Space(dims)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {e}") from None


# ------------------------------------------------------------- strategies
def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    raise TypeError(f"not JSON-representable: {v!r}")


def strategy_to_spec(strategy: Strategy) -> dict:
    """``{"class": "module:Class", "settings": {...}}``; settings are the public attributes.

    ``settings`` is ``None`` when a setting is not JSON-representable; the
    spec then still identifies the strategy (by ``repr``) but cannot rebuild it.
    """
    cls = type(strategy)
    settings = {k: v for k, v in vars(strategy).items() if not k.startswith("_") and k != "space"}
    try:
        settings = _jsonable(settings)
    except TypeError:
        settings = None
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "settings": settings, "repr": repr(strategy)}


def _import(path: str, what: str) -> Any:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ValueError(f"{what} must look like 'package.module:name', got {path!r}")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{what} {path!r}: cannot import module {module!r} ({e})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module!r} has no attribute {attr!r}") from None
    return obj


def resolve_strategy(name: str) -> type:
    """A strategy class from a short name (``STRATEGY_NAMES``), a class name
    exported by ``jaxhpo`` (``"RandomSearch"``), or an import path
    (``"package.module:Class"``)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"strategy name must be a non-empty string, got {name!r}")
    if name in STRATEGY_NAMES:
        path = STRATEGY_NAMES[name]
    elif ":" in name:
        path = name
    else:
        import jaxhpo

        cls = getattr(jaxhpo, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Strategy)) or cls is Strategy:  # (the abstract base)
            raise ValueError(
                f"unknown strategy {name!r}; use one of {sorted(STRATEGY_NAMES)}, a strategy class "
                "exported by jaxhpo (e.g. 'RandomSearch'), or an import path 'package.module:Class'"
            )
        return cls
    cls = _import(path, "strategy")
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)) or cls is Strategy:
        raise ValueError(f"strategy {name!r} resolves to {cls!r}, which is not a jaxhpo Strategy class")
    return cls


def build_strategy(name: str, space: Space, settings: Mapping[str, Any] | None = None,
                   where: str = "strategy") -> Strategy:
    """``resolve_strategy(name)(space, **settings)`` with errors that name ``where``."""
    cls = resolve_strategy(name)
    settings = dict(settings or {})
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):  # no introspectable signature: let the class check
        sig = None
    if sig is not None:
        has_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        known = [p for p in sig.parameters if p not in ("self", "space")]
        unknown = sorted(set(settings) - set(known))
        if unknown and not has_kwargs:
            raise ValueError(f"{where}: {cls.__name__} has no setting(s) {unknown}; it takes {known}")
        popsize = sig.parameters.get("popsize")
        if popsize is not None and popsize.default is inspect.Parameter.empty and "popsize" not in settings:
            raise ValueError(f"{where}: {cls.__name__} needs popsize (points per generation)")
    try:
        return cls(space, **settings)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where} ({cls.__name__}): {e}") from None


def strategy_from_spec(spec: Mapping[str, Any], space: Space) -> Strategy:
    """Rebuild a strategy recorded by ``strategy_to_spec``."""
    if spec.get("settings") is None:
        raise ValueError(
            f"the stored strategy {spec.get('repr')} cannot be rebuilt from its settings; "
            "pass strategy= explicitly"
        )
    try:
        strategy = build_strategy(spec["class"], space, spec["settings"], where="stored strategy")
    except (TypeError, ValueError) as e:
        raise type(e)(f"{e}; pass strategy= explicitly") from None
    if repr(strategy) != spec.get("repr", repr(strategy)):
        raise ValueError(
            f"rebuilding the stored strategy gave {strategy!r}, not {spec['repr']}; pass strategy= explicitly"
        )
    return strategy


def spec_json(obj: Any) -> str:
    """JSON text of a spec, for storage and comparison.

    Keys keep their order: a space's parameter order fixes its cube
    coordinates, so it must survive the round trip.
    """
    return json.dumps(obj, separators=(",", ":"))
