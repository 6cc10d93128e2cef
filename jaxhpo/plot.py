"""Pictures of a study: history, parallel coordinates, slices, importance, learning
curves (reported intermediate values, or a trainer's), and the Pareto front of a multi-objective study or ``minimize`` result.
Compiled searches' results (``minimize``'s history, Hyperband's rungs, PBT's
schedules) are drawn by ``jaxhpo.plot_results``, whose functions are exported here too.

matplotlib is imported only when a plot is drawn (the optional ``plot``
extra: ``pip install jaxhpo[plot]``). Figures are built with matplotlib's
object API (``Figure``), not ``pyplot``, so drawing never opens a window or
touches global state and works on headless machines. Every function returns
the ``Figure`` and, given ``path``, also writes it (PNG by the suffix).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._plot_figure import NothingToPlot, figure, finish
from .plot_results import plot_pbt, plot_result_history, plot_rungs
from ._labels import label_text
from .space import Categorical
from .study.importance import NotEnoughTrials, param_importance
from .study.trial import TrialState

__all__ = [
    "plot_history", "plot_parallel_coordinates", "plot_slice", "plot_importance",
    "plot_learning_curves", "plot_intermediate_values", "plot_pareto_front", "pareto_front", "save_plots",
    "NothingToPlot", "plot_result_history", "plot_rungs", "plot_pbt",
]


def _single(study: Any) -> None:
    if getattr(study, "num_objectives", 1) > 1:
        raise ValueError(f"study {study.name!r} has {study.num_objectives} objectives; this plot shows one "
                         "value per trial: use plot_pareto_front")


def _maximized(study: Any) -> bool:
    """The (first) objective's direction: a study with constraints keeps a tuple."""
    return bool(np.ravel([study.maximize])[0])


def _complete(study: Any) -> list:
    _single(study)
    trials = [t for t in study.get_trials((TrialState.COMPLETE,)) if t.feasible]
    if not trials:
        raise NothingToPlot(f"study {study.name!r} has no complete (feasible) trial to plot")
    return trials


def _direction(study: Any) -> str:
    return "maximised" if _maximized(study) else "minimised"


def plot_history(study: Any, path: Any = None):
    """Every finished trial's value by trial number, failed ones marked, pruned ones at
    their last reported value, infeasible ones (a study with constraints) apart, and
    the best so far (of complete, feasible trials). Given the ``Result`` of
    ``jaxhpo.minimize`` instead of a study: ``plot_result_history``."""
    if not hasattr(study, "get_trials"):  # a compiled search's result (or something else: named there)
        return plot_result_history(study, path)
    _single(study)
    trials = [t for t in study.get_trials() if t.finished]
    if not any(t.state == TrialState.COMPLETE and t.feasible for t in trials):
        raise NothingToPlot(f"study {study.name!r} has no complete (feasible) trial to plot")
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.feasible]
    num = np.array([t.number for t in done])
    val = np.array([t.value for t in done], float)
    ax.scatter(num, val, s=12, alpha=0.6, label="trial value")
    best = np.maximum.accumulate(val) if _maximized(study) else np.minimum.accumulate(val)
    ax.step(num, best, where="post", color="C3", lw=2, label="best so far")
    infeasible = [t for t in trials if t.state == TrialState.COMPLETE and not t.feasible]
    if infeasible:
        ax.scatter([t.number for t in infeasible], [t.value for t in infeasible], s=12, marker="^",
                   color="C1", alpha=0.5, label="infeasible")
    failed = [t.number for t in trials if t.state == TrialState.FAILED]
    if failed:
        worst = np.max(val) if not _maximized(study) else np.min(val)  # failed trials count as worst
        ax.scatter(failed, np.full(len(failed), worst), marker="x", color="k", s=18, label="failed (at worst)")
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.value is not None]
    if pruned:
        ax.scatter([t.number for t in pruned], [t.value for t in pruned], s=10, color="C7", alpha=0.5,
                   label="pruned (last report)")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"objective ({_direction(study)})")
    ax.set_title(f"{study.name}: optimisation history")
    ax.legend(loc="best", fontsize=8)
    return finish(fig, path)


_INACTIVE = object()  # a conditional parameter a trial left out (``None`` may be a choice)


def _unit(dim: Any, values: Sequence[Any]) -> np.ndarray:
    """Parameter values on ``[0, 1]`` for a common axis (log dims in log space); ``nan`` for ``_INACTIVE``."""
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is _INACTIVE:
            continue
        if isinstance(dim, Categorical):
            k = dim.cardinality
            out[i] = dim.index(v) / (k - 1) if k > 1 else 0.5
        else:
            lo, hi, x = float(dim.low), float(dim.high), float(v)
            if dim.log:
                lo, hi, x = math.log(lo), math.log(hi), math.log(x)
            out[i] = (x - lo) / (hi - lo) if hi > lo else 0.5
    return out


def _param_names(study: Any, params: Sequence[str] | None) -> tuple[list[str], dict]:
    """The parameters to draw (all by default) and the space's dimensions; unknown names raise."""
    if isinstance(params, str):
        params = [params]
    if params is not None and (not isinstance(params, Sequence) or not params
                               or not all(isinstance(n, str) for n in params)):
        raise TypeError(f"params must be a parameter name or a non-empty list of them, got {params!r}")
    names = list(params or study.space.names)
    dims = study.space.dims
    unknown = [n for n in names if n not in dims]
    if unknown:
        raise ValueError(f"params: unknown parameter(s) {unknown}")
    return names, dims


def plot_parallel_coordinates(study: Any, path: Any = None, params: Sequence[str] | None = None):
    """One line per complete trial across every parameter's axis, coloured by value (best on top);
    a conditional parameter a trial left inactive is skipped, the line joining its neighbours."""
    trials = _complete(study)
    names, dims = _param_names(study, params)
    val = np.array([t.value for t in trials], float)
    cols = np.stack([_unit(dims[n], [t.params.get(n, _INACTIVE) for t in trials]) for n in names], axis=1)
    order = np.argsort(val)
    if not _maximized(study):
        order = order[::-1]  # draw the best last, so it sits on top
    fig = figure(figsize=(max(6, 1.4 * len(names) + 2), 4))
    ax = fig.add_subplot()
    lo, hi = float(val.min()), float(val.max())
    import matplotlib
    from matplotlib import cm, colors

    norm = colors.Normalize(lo, hi if hi > lo else lo + 1)
    # bright (yellow) is good in both directions
    cmap = matplotlib.colormaps["viridis_r" if not _maximized(study) else "viridis"]
    xs = np.arange(len(names))
    for i in order:
        on = np.isfinite(cols[i])  # inactive conditionals are nan
        ax.plot(xs[on], cols[i][on], color=cmap(norm(val[i])), alpha=0.5, lw=1,
                marker="." if on.sum() == 1 else None)
    for j, n in enumerate(names):
        ax.axvline(j, color="0.6", lw=0.8)
        d = dims[n]
        if isinstance(d, Categorical):
            k = d.cardinality
            for c_i, c in enumerate(d.choices):
                ax.text(j, c_i / (k - 1) if k > 1 else 0.5, f" {label_text(c)}", fontsize=7, va="center")
        else:
            ax.text(j, -0.06, f"{d.low:g}", fontsize=7, ha="center", va="top")
            ax.text(j, 1.06, f"{d.high:g}", fontsize=7, ha="center", va="bottom")
    ax.set_xticks(xs, names)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    sm = cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="objective")
    ax.set_title(f"{study.name}: parallel coordinates")
    return finish(fig, path)


def plot_slice(study: Any, path: Any = None, params: Sequence[str] | None = None):
    """Objective value against each parameter, one panel per parameter."""
    trials = _complete(study)
    names, dims = _param_names(study, params)
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = figure(figsize=(4 * ncols, 3.2 * nrows))
    val = np.array([t.value for t in trials], float)
    num = np.array([t.number for t in trials], float)
    for j, n in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, j + 1)
        d = dims[n]
        keep = np.array([n in t.params for t in trials])
        raw = [t.params[n] for t in trials if n in t.params]
        if isinstance(d, Categorical):
            x = np.array([d.index(v) for v in raw], float)
            rng = np.random.default_rng(0)
            x = x + rng.uniform(-0.15, 0.15, x.size)  # jitter so equal choices do not hide each other
            ax.set_xticks(range(d.cardinality), [str(label_text(c)) for c in d.choices])
            ax.set_xlim(-0.5, d.cardinality - 0.5)  # every choice's label, tried or not
        else:
            x = np.array(raw, float)
            # The whole range, so that where the trials fell within it shows.
            pad = 0.03 * (math.log(d.high / d.low) if d.log else d.high - d.low)
            if d.log:
                from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

                ax.set_xscale("log")
                ax.set_xlim(d.low / math.exp(pad), d.high * math.exp(pad))
                if d.high / d.low < 100:
                    # Within two decades a log axis has one power of ten
                    # labelled at most (none within one): label the bounds
                    # and two points between them instead.
                    ticks = np.geomspace(d.low, d.high, 4)
                    ax.xaxis.set_major_locator(FixedLocator(ticks))
                    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.3g}")
                    ax.xaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on longer ranges
            else:
                ax.set_xlim(d.low - pad, d.high + pad)
        ax.scatter(x, val[keep], c=num[keep], cmap="viridis", s=14, edgecolors="none",
                   vmin=0, vmax=max(num.max(), 1))
        ax.set_xlabel(n)
        if j % ncols == 0:
            ax.set_ylabel("objective")
    fig.suptitle(f"{study.name}: slices (colour: trial number)")
    return finish(fig, path)


def plot_importance(study: Any, path: Any = None, *, objective: int | None = None):
    """Horizontal bars of ``param_importance`` (variance of the ranks each parameter explains);
    ``objective``: with several objectives, which one."""
    try:
        scores = param_importance(study, objective=objective)
    except NotEnoughTrials as e:
        raise NothingToPlot(str(e)) from e
    names = list(scores)[::-1]
    fig = figure(figsize=(6, 0.5 * len(names) + 1.5))
    ax = fig.add_subplot()
    ax.barh(names, [scores[n] for n in names], color="C0")
    ax.set_xlabel("importance (share of explained rank variance)")
    ax.set_xlim(0, 1)
    ax.set_title(f"{study.name}: parameter importance")
    return finish(fig, path)


def plot_learning_curves(curves: Mapping[Any, Sequence[float]], path: Any = None, *,
                         xlabel: str = "step", ylabel: str = "metric", title: str = "learning curves"):
    """Learning curves of trainer-based searches: one line per configuration.

    Args:
      curves: label (e.g. trial number) -> the metric at each step/rung.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty mapping of label -> sequence of values")
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    for label, ys in curves.items():
        ys = np.asarray(ys, float)
        if ys.ndim != 1:
            raise ValueError(f"curves[{label!r}] must be a 1-d sequence, got shape {ys.shape}")
        ax.plot(np.arange(ys.size), ys, lw=1, alpha=0.7, label=str(label) if len(curves) <= 10 else None,
                marker="." if ys.size == 1 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(curves) <= 10:
        ax.legend(fontsize=7)
    return finish(fig, path)


def plot_intermediate_values(study: Any, path: Any = None):
    """Every trial's reported intermediate values by step: complete trials as lines,
    pruned ones fainter and ended by a cross where they were stopped, failed
    ones dotted and trials still running dashed (a legend names each kind)."""
    _single(study)
    trials = [t for t in study.get_trials() if t.intermediate_values]
    if not trials:
        raise NothingToPlot(f"study {study.name!r} has no reported intermediate values to plot")
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    styles = {TrialState.COMPLETE: dict(lw=1.0, alpha=0.8, color="C0", ms=3),
              TrialState.PRUNED: dict(lw=0.8, alpha=0.35, color="C7", ms=2),
              TrialState.FAILED: dict(lw=0.8, alpha=0.6, color="C3", ms=2, ls=":")}
    labelled = set()
    for t in trials:
        steps = sorted(t.intermediate_values)
        ys = [t.intermediate_values[s] for s in steps]
        kind = t.state if t.state in styles else "running"
        style = styles.get(kind, dict(lw=1.0, alpha=0.8, color="C1", ms=3, ls="--"))
        # a marker too: a trial that reported once (or a point between nan reports) is no line
        ax.plot(steps, ys, marker=".", label=None if kind in labelled else kind, **style)
        labelled.add(kind)
        if t.state == TrialState.PRUNED:
            ax.plot(steps[-1:], ys[-1:], "x", color="C3", ms=4, alpha=0.7)
    if len(labelled) > 1:
        ax.legend(fontsize=8, loc="best")
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    ax.set_xlabel("step")
    ax.set_ylabel(f"reported value ({_direction(study)})")
    ax.set_title(f"{study.name}: intermediate values ({pruned} of {len(trials)} trials pruned)")
    return finish(fig, path)


# ----------------------------------------------------------- Pareto front
def _front_polyline(front: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """Corners of the boundary of the region a 2-D front dominates, in the user's signs.

    In minimisation signs, between consecutive front points (sorted by the
    first objective) the boundary passes the corner ``(x[i + 1], y[i])``;
    flipping an axis's sign maps corners to corners, so the same corners serve
    every combination of directions.
    """
    v = front * signs
    v = v[np.argsort(v[:, 0], kind="stable")]
    pts = [v[0]]
    for a, b in zip(v[:-1], v[1:]):
        pts += [np.array([b[0], a[1]]), b]
    return np.array(pts) * signs


def _pareto_data(source: Any, maximize: Any) -> dict:
    """Everything the Pareto plot draws, in the user's signs, from a Study or a Result."""
    if hasattr(source, "best_trials") and hasattr(source, "get_trials"):
        if getattr(source, "num_objectives", 1) < 2:
            raise ValueError(f"study {source.name!r} has one objective; a Pareto front needs several")
        done = source.get_trials((TrialState.COMPLETE,))
        if not done:
            raise NothingToPlot(f"study {source.name!r} has no complete trial to plot")
        front_ids = {t.number for t in source.best_trials}
        vals = np.array([t.values for t in done], float)
        return dict(
            values=vals, feasible=np.array([t.feasible for t in done]),
            on_front=np.array([t.number in front_ids for t in done]),
            front=vals[[t.number in front_ids for t in done]],
            maximize=tuple(source.maximize) if maximize is None else maximize,
            title=f"{source.name}: Pareto front",
        )
    front = getattr(source, "pareto_values", None)
    if front is None:
        raise TypeError("pareto_front needs a multi-objective Study or the Result of jaxhpo.minimize with a "
                        f"multi-objective strategy (NSGA2), got {type(source).__name__}")
    front = np.asarray(front, float)
    m = front.shape[1]
    trace = source.history
    if trace.values is not None and np.ndim(trace.values) == 3:
        rows = np.asarray(trace.values, float).reshape(-1, trace.values.shape[-1])
        if trace.valid is not None:
            rows = rows[np.asarray(trace.valid).reshape(-1)]
        rows = rows[np.all(np.isfinite(rows), axis=1)]
        vals, feasible = rows[:, :m], np.all(rows[:, m:] <= 0.0, axis=1)
    else:
        vals, feasible = front, np.ones(len(front), bool)
    if vals is front:
        on_front = np.ones(len(front), bool)
    else:
        # A history row is on the front when it equals one of the front's vectors.
        same = np.all(vals[:, None, :] == front[None, :, :], axis=-1)
        on_front = np.any(same, axis=1) & feasible
        # A continued search's front holds points of earlier calls, which its history lacks.
        earlier = ~np.any(same, axis=0)
        vals = np.concatenate([vals, front[earlier]])
        feasible = np.concatenate([feasible, np.ones(int(earlier.sum()), bool)])
        on_front = np.concatenate([on_front, np.ones(int(earlier.sum()), bool)])
    if maximize is None:
        maximize = getattr(source, "maximize", None) or (False,) * m
    return dict(values=vals, feasible=feasible, on_front=on_front, front=front, maximize=maximize,
                title="Pareto front")


def plot_pareto_front(source: Any, path: Any = None, *, objectives: Sequence[int] = (0, 1),
                      names: Sequence[str] | None = None, title: str | None = None,
                      maximize: Sequence[bool] | None = None):
    """Two objectives of every trial, the Pareto front highlighted.

    Args:
      source: a multi-objective ``Study`` (all complete trials; infeasible
        ones as crosses), or the ``Result`` of ``jaxhpo.minimize`` with a
        multi-objective strategy (every evaluation when run with
        ``history="all"``, else the front alone; a continued search's front
        includes the earlier calls' points, which its history lacks).
      path: write the figure there too (PNG by the suffix).
      objectives: the two objective indices drawn on x and y.
      names: the objectives' names for the axis labels (all ``m`` of them).
      title: the figure's title.
      maximize: per objective, whether it was maximised (only for the axis
        labels and the front's outline). A study knows; for a ``Result`` the
        default is ``Result.maximize``.
    Returns:
      the ``Figure``. Its axes hold three labelled scatters, ``"trials"``
      (feasible, off the front), ``"infeasible"`` and ``"Pareto front"``;
      with two objectives a line traces the front's dominated region.
    """
    objectives = tuple(objectives)
    if maximize is not None:
        if isinstance(maximize, np.ndarray) and maximize.ndim == 1:
            maximize = maximize.tolist()
        if (isinstance(maximize, (bool, np.bool_, str)) or not isinstance(maximize, Sequence)
                or not all(isinstance(f, (bool, np.bool_)) for f in maximize)):
            raise TypeError(f"maximize must be a sequence of bools, one per objective, got {maximize!r}")
        maximize = tuple(bool(f) for f in maximize)
    data = _pareto_data(source, maximize)
    if len(data["maximize"]) != data["values"].shape[1]:
        raise ValueError(f"maximize must give one flag per objective ({data['values'].shape[1]}), "
                         f"got {data['maximize']!r}")
    m = data["values"].shape[1] if data["values"].ndim == 2 else len(data["maximize"])
    if len(objectives) != 2 or len(set(objectives)) != 2 or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < m for i in objectives):
        raise ValueError(f"objectives must be two different indices in [0, {m}), got {objectives!r}")
    if names is not None and len(names) != m:
        raise ValueError(f"names must give all {m} objectives' names, got {list(names)!r}")
    i, j = objectives
    vals, feasible, on_front, front = data["values"], data["feasible"], data["on_front"], data["front"]
    fig = figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    rest = feasible & ~on_front
    ax.scatter(vals[rest, i], vals[rest, j], s=14, color="0.55", alpha=0.6, edgecolors="none", label="trials")
    bad = ~feasible
    ax.scatter(vals[bad, i], vals[bad, j], s=16, marker="x", color="0.3", alpha=0.6, label="infeasible")
    ax.scatter(vals[on_front, i], vals[on_front, j], s=30, color="C3", edgecolors="k", linewidths=0.5,
               zorder=3, label="Pareto front")
    if m == 2 and len(front):
        signs = np.array([-1.0 if data["maximize"][k] else 1.0 for k in objectives])
        line = _front_polyline(front[:, [i, j]], signs)
        ax.plot(line[:, 0], line[:, 1], color="C3", lw=1.2, alpha=0.8, zorder=2)
    label = lambda k: (names[k] if names is not None else f"objective {k}") + (
        " (maximised)" if data["maximize"][k] else " (minimised)")
    ax.set_xlabel(label(i))
    ax.set_ylabel(label(j))
    ax.set_title(title or data["title"])
    ax.legend(handles=[c for c in ax.collections if len(c.get_offsets())], loc="best", fontsize=8)
    return finish(fig, path)


pareto_front = plot_pareto_front


def save_plots(study: Any, folder: Any) -> list[Path]:
    """Write history, parallel coordinates, slices, importance and (when trials
    reported any) intermediate-value PNGs into ``folder`` (a study of several
    objectives: the Pareto front).

    Plots that cannot be drawn yet (``NothingToPlot``: e.g. importance with
    fewer than two complete trials) are skipped; one that fails otherwise
    (values beyond what matplotlib can scale) is skipped with a
    ``RuntimeWarning`` saying why. Returns the paths written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    plots = (("history", plot_history), ("parallel_coordinates", plot_parallel_coordinates),
             ("slice", plot_slice), ("importance", plot_importance),
             ("intermediate_values", plot_intermediate_values))
    if getattr(study, "num_objectives", 1) > 1:
        plots = (("pareto_front", plot_pareto_front),)
    for name, fn in plots:
        path = folder / f"{name}.png"
        try:
            fn(study, path)
        except NothingToPlot:
            continue
        except (ValueError, OverflowError) as e:
            warnings.warn(f"plot {name} skipped: {type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            continue
        out.append(path)
    return out
