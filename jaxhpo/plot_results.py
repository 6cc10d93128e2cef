"""Pictures of compiled searches' results: ``minimize``'s history, the rungs of
successive halving and Hyperband, and population-based training's schedules.

Drawn as ``jaxhpo.plot`` draws a study's (matplotlib's object API, nothing
global; the ``Figure`` returned and, given ``path``, written). ``jaxhpo.plot``
exports these too, and its ``plot_history`` takes a ``Result`` as well as a
``Study``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ._plot_figure import NothingToPlot, figure, finish
from .space import Categorical

__all__ = ["plot_result_history", "plot_rungs", "plot_pbt"]


def plot_result_history(result: Any, path: Any = None):
    """A ``minimize`` result's best value so far by evaluations, over every value
    the search kept (history ``"values"`` or ``"all"``; failed ones marked at the
    worst, infeasible ones of a search with constraints apart).

    Args:
      result: a ``jaxhpo.Result`` of one objective (with or without constraints).
    """
    trace = getattr(result, "history", None)
    if trace is None or not hasattr(trace, "best_value") or not hasattr(result, "num_evaluations"):
        hint = {"MultiFidelityResult": ": use plot_rungs", "PBTResult": ": use plot_pbt"}.get(type(result).__name__, "")
        raise TypeError(f"result must be the Result of jaxhpo.minimize, got {type(result).__name__}{hint}")
    num_objectives = getattr(result.strategy, "num_objectives", None) or 1
    if num_objectives > 1:
        raise ValueError(f"this result has {num_objectives} objectives: use plot_pareto_front")
    best = np.asarray(trace.best_value, float)
    evaluations = np.cumsum(np.asarray(trace.num_valid))
    if not np.isfinite(best).any():
        raise NothingToPlot("every evaluation of this search failed: nothing to plot")
    maximized = bool(result.maximize)  # one objective: a bool
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    if trace.values is not None:
        # Each generation's valid rows numbered on from the evaluations before it;
        # with constraints, rows (objective, constraints...), feasible when all <= 0.
        valid = np.asarray(trace.valid, bool).reshape(-1)
        rows = np.asarray(trace.values, float)
        rows = rows.reshape(valid.size, -1)[valid]
        values, number = rows[:, 0], np.arange(1, rows.shape[0] + 1)
        ok = np.all(np.isfinite(rows), axis=1)
        feasible = ok & np.all(rows[:, 1:] <= 0.0, axis=1)
        ax.scatter(number[feasible], values[feasible], s=10, alpha=0.5, label="evaluation")
        if (ok & ~feasible).any():
            ax.scatter(number[ok & ~feasible], values[ok & ~feasible], s=12, marker="^", color="C1", alpha=0.5,
                       label="infeasible")
        if (~ok).any() and ok.any():
            worst = values[ok].min() if maximized else values[ok].max()
            ax.scatter(number[~ok], np.full((~ok).sum(), worst), marker="x", color="k", s=14,
                       label="failed (at worst)")
        # The best so far at each evaluation: the running best of the rows,
        # and of the search's best after the generation before (a continued
        # search's best may predate its rows). The trace's best alone moves
        # once per generation, which drew the line above points evaluated
        # earlier in it.
        sign = -1.0 if maximized else 1.0
        generation = np.repeat(np.arange(best.size), np.asarray(trace.num_valid))
        running = np.minimum.accumulate(np.where(feasible, sign * values, np.inf))
        before = np.concatenate([[np.inf], np.where(np.isfinite(best), sign * best, np.inf)[:-1]])[generation]
        line = np.minimum(before, running)
        found = np.isfinite(line)
        ax.step(number[found], sign * line[found], where="post", color="C3", lw=2, label="best so far")
    else:
        found = np.isfinite(best)
        ax.step(evaluations[found], best[found], where="post", color="C3", lw=2, label="best so far")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"objective ({'maximised' if maximized else 'minimised'})")
    ax.set_title(f"search history ({result.num_evaluations} evaluations, {result.num_failed} failed)")
    ax.legend(loc="best", fontsize=8)
    return finish(fig, path)


def plot_rungs(result: Any, path: Any = None):
    """Successive halving / Hyperband: every configuration's loss at each budget it
    reached, joined rung to rung (the survivors' paths), one colour per bracket,
    the best configuration's path bold. Failed evaluations are left out; with
    several objectives, the first.

    Args:
      result: a ``jaxhpo.training.MultiFidelityResult``.
    """
    rungs = getattr(result, "rungs", None)
    if rungs is None or not hasattr(result, "bracket"):
        raise TypeError(f"result must be a MultiFidelityResult (successive_halving, hyperband), "
                        f"got {type(result).__name__}")
    paths: dict[int, list] = {}
    for r in rungs:
        loss = np.asarray(r["loss"], float)
        loss = loss if loss.ndim == 1 else loss[:, 0]
        for i, v in zip(np.asarray(r["index"]).tolist(), loss.tolist()):
            paths.setdefault(i, []).append((r["budget"], v))
    if not any(np.isfinite(v) for p in paths.values() for _, v in p):
        raise NothingToPlot("every evaluation of this search failed: nothing to plot")
    fig = figure(figsize=(7, 4))
    ax = fig.add_subplot()
    brackets = np.asarray(result.bracket)
    for i, p in sorted(paths.items()):
        b, v = np.array(p, float).T
        ok = np.isfinite(v)
        if ok.any():
            ax.plot(b[ok], v[ok], lw=0.8, alpha=0.5, marker=".", ms=3, color=f"C{int(brackets[i]) % 10}")
    if result.best_index >= 0:
        b, v = np.array(paths[result.best_index], float).T
        ax.plot(b, v, lw=2.5, color="k", marker="o", ms=4, label=f"best (configuration {result.best_index})")
        ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("budget (units trained)")
    ax.set_ylabel("loss" if not result.num_objectives else "first objective")
    ax.set_title(f"{len(paths)} configurations, {len(set(brackets.tolist()))} bracket(s), "
                 f"{result.total_budget} units in all")
    return finish(fig, path)


def plot_pbt(result: Any, path: Any = None, params: Sequence[str] | None = None):
    """Population-based training: each member's loss and hyperparameters round by
    round (faint), and along the best member's lineage (bold): the schedule that
    trained its final weights.

    Args:
      result: a ``jaxhpo.training.PBTResult``.
      params: the hyperparameters to draw (all by default), one panel each
        under the loss's.
    """
    if not hasattr(result, "lineage") or not hasattr(result, "losses"):
        raise TypeError(f"result must be a PBTResult, got {type(result).__name__}")
    names = list(result.hparams) if params is None else [params] if isinstance(params, str) else params
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"params must be a hyperparameter name or a list of names, got {params!r}")
    unknown = [n for n in names if n not in result.hparams]
    if unknown:
        raise ValueError(f"params {unknown} are not hyperparameters of this search ({list(result.hparams)})")
    losses = np.asarray(result.losses, float)
    if not np.isfinite(losses).any():
        raise NothingToPlot("every member failed in every round: nothing to plot")
    rounds = np.arange(1, losses.shape[0] + 1)
    marker = "." if rounds.size == 1 else None  # one round: points, not lines
    best = result.best_index >= 0
    lineage = result.lineage() if best else None
    fig = figure(figsize=(7, 2.2 * (1 + len(names))))
    axes = [fig.add_subplot(1 + len(names), 1, k + 1) for k in range(1 + len(names))]
    shown = np.where(np.isfinite(losses), losses, np.nan)
    axes[0].plot(rounds, shown, lw=0.6, alpha=0.35, color="C0", marker=marker)
    if best:
        axes[0].plot(rounds, losses[rounds - 1, lineage], lw=2.5, color="k", marker=marker,
                     label="best member's lineage")
        axes[0].legend(loc="best", fontsize=8)
    axes[0].set_ylabel("loss")
    axes[0].set_title(f"PBT: {losses.shape[1]} members, {losses.shape[0]} rounds")
    schedule = result.schedule() if best else None
    for ax, name in zip(axes[1:], names):
        values = np.asarray(result.hparams[name], float)
        ax.plot(rounds, values, lw=0.6, alpha=0.35, color="C1", drawstyle="steps-mid", marker=marker)
        if best:
            ax.plot(rounds, np.asarray(schedule[name], float), lw=2.5, color="k", drawstyle="steps-mid",
                    marker=marker)
        dim = None if getattr(result, "space", None) is None else result.space[name]
        if getattr(dim, "log", False):
            ax.set_yscale("log")
        elif isinstance(dim, Categorical):  # drawn at their indices, labelled by their choices
            ax.set_yticks(range(dim.cardinality), [str(c) for c in dim.choices])
        ax.set_ylabel(name)
    axes[-1].set_xlabel("round")
    return finish(fig, path)
