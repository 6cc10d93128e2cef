"""Multi-objective TPE (MOTPE), fixed-shape and fully jitted.

MOTPE (Ozaki et al., 2020, 2022) is TPE with a good set chosen by Pareto
dominance instead of by one value. It follows Optuna's ``TPESampler`` for
several objectives (version 5):

* ``n_good = ceil(gamma * n)`` (``gamma = 0.1``, no cap), ``n`` the number
  of observations that did not fail;
* feasible observations first (Optuna's constrained TPE): whole
  non-dominated fronts of the feasible rows go to the good set while they
  fit; the front that does not fit is cut by greedy hypervolume subset
  selection (each step adds the row that adds the most hypervolume to the
  rows already chosen from that front, the reference point being
  ``max(1.1 w, 0.9 w)`` for the front's worst values ``w``; Optuna's
  ``_solve_hssp``). With four or more objectives the cut keeps the rows of
  largest crowding distance instead (no exact hypervolume). The
  hypervolumes are computed in float32 on values divided per objective by a
  power of two near their largest magnitude, which leaves every choice and
  weight as it is and keeps them finite and nonzero at any scale (a worst
  value of exactly 0 takes Optuna's reference 1e-12 in those units, not in
  the raw ones; the weights' floor of 1e-12 stays in raw units);
* if the feasible rows do not fill the good set, the least violating
  infeasible rows complete it;
* weights: good rows weigh 1 (``below_weights="uniform"``, Optuna 5) or, with
  ``below_weights="hypervolume"`` (Ozaki et al., 2020; Optuna before 4), by
  their hypervolume contribution within the good set, relative to the
  largest; the bad set weighs by age (Optuna's ``default_weights``);
* the Parzen estimators, candidate draws and ``log l - log g`` scoring are
  ``TPE``'s (``jaxhpo.strategies.tpe``), independent per coordinate by
  default (``multivariate=False``, Optuna's default for several objectives).

Failed evaluations (a non-finite objective or constraint) never enter the
good set and do not count in ``n``; they stay in the bad set.

Fixed shapes: observations live in a buffer of ``capacity`` rows. When it is
full, failed rows keep the share they make up among the stored and the new
rows (the most recent; ``_buffer.kept_rows``), and the best successful rows
fill the rest: by constraint-domination rank, newer first within a rank. Each ``ask`` costs ``O(capacity^2)`` for the fronts and
the subset selection plus TPE's ``O(capacity * n_ei_candidates * dim)``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from .. import pareto
from ..space import Space
from ._buffer import buffer_capacity, kept_rows
from ._checks import check_choice, check_int, check_real
from .base import Strategy, compiled, float32_values, initial_best
from .tpe import TPE, Parzen, fit_parzen, num_good

__all__ = ["MOTPE", "MOTPEState", "split_multiobjective", "hssp_greedy", "BELOW_WEIGHTS"]

BELOW_WEIGHTS = ("uniform", "hypervolume")
_EPS = 1e-12


class MOTPEState(NamedTuple):
    params: dict
    best_x: jax.Array  # (dim,) feasible point with the lowest first objective told so far
    best_value: jax.Array  # () its first objective; inf until a feasible finite point is told
    generation: jax.Array
    x: jax.Array  # (capacity, dim) observed cube points, int/categorical at bin centres
    obj: jax.Array  # (capacity, m) objective values; inf rows are failed or padding
    violation: jax.Array  # (capacity,) total constraint violation; 0 feasible, inf failed / padding
    number: jax.Array  # (capacity,) int32 trial number of each row (its age)
    count: jax.Array  # () int32 rows in use
    told: jax.Array  # () int32 observations told so far
    startup: Any  # the startup design's state (see TPE)


def _reference_point(obj: jax.Array, rows: jax.Array) -> jax.Array:
    """Optuna's reference point for ``rows`` of ``obj``: ``max(1.1 w, 0.9 w)``, 0 -> 1e-12. ``(m,)``."""
    w = jnp.max(jnp.where(rows[:, None], obj, -jnp.inf), axis=0)
    w = jnp.where(jnp.isfinite(w), w, 0.0)
    ref = jnp.maximum(1.1 * w, 0.9 * w)
    return jnp.where(ref == 0.0, _EPS, ref)


def _unit_scaled(obj: jax.Array, rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``obj`` with each column divided by the power of two at or above its
    largest magnitude over ``rows``, and the base-2 logarithm of the factor
    that divides a hypervolume then (``()`` int32). Exact, and a hypervolume
    changes by that one positive factor for all subsets: choices and ratios
    stay those of the raw values, which overflow float32 (or flush to 0) from
    about 1e13 (1e-13) in 3 objectives."""
    big = jnp.max(jnp.where(rows[:, None], jnp.abs(obj), 0.0), axis=0)
    big = jnp.where(jnp.isfinite(big) & (big > 0.0), big, 1.0)
    _, exponent = jnp.frexp(big)
    return obj * jnp.ldexp(jnp.ones_like(big), -exponent), jnp.sum(exponent)


def hssp_greedy(obj: jax.Array, cand: jax.Array, need: jax.Array) -> jax.Array:
    """Greedy hypervolume subset selection: ``need`` rows of ``cand``.

    Each step adds the candidate that adds the most hypervolume to the rows
    chosen so far (ties: the lowest row), against Optuna's reference point of
    the candidates. Exact for 2 and 3 objectives; with more, the candidates
    of largest crowding distance.

    Args:
      obj: ``(C, m)`` objective values (minimised).
      cand: ``(C,)`` the rows to choose from (in practice one front).
      need: ``()`` int, how many to choose (at most ``cand.sum()``).
    Returns:
      ``(C,)`` boolean, the chosen rows.
    """
    c, m = obj.shape
    if m > 3:
        crowd = pareto.crowding_distance(obj, jnp.where(cand, 0, c))
        order = jnp.argsort(jnp.where(cand, -crowd, jnp.inf), stable=True)
        rank = jnp.zeros((c,), jnp.int32).at[order].set(jnp.arange(c, dtype=jnp.int32))
        return cand & (rank < need)
    obj, _ = _unit_scaled(obj, cand)
    ref = _reference_point(obj, cand)
    obj = jnp.where(cand[:, None], obj, ref)  # rows outside cand: harmless finite values
    eye = jnp.eye(c, dtype=bool)

    def body(carry):
        sel, i = carry
        hv = jax.vmap(lambda one: pareto.hypervolume(obj, ref, sel | one))(eye)
        j = jnp.argmax(jnp.where(cand & ~sel, hv, -jnp.inf))
        return sel.at[j].set(True), i + 1

    sel, _ = jax.lax.while_loop(lambda carry: carry[1] < need, body, (jnp.zeros((c,), bool), jnp.int32(0)))
    return sel


def split_multiobjective(obj: jax.Array, violation: jax.Array, valid: jax.Array, number: jax.Array,
                         gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Good and bad rows of a multi-objective buffer (Optuna's MOTPE split).

    Args:
      obj: ``(C, m)`` objective values (minimised).
      violation: ``(C,)`` total constraint violation (0: feasible).
      valid: ``(C,)`` which rows hold observations.
      number: ``(C,)`` trial numbers (ties among infeasible rows: older first).
      gamma: ``()`` fraction of the non-failed observations in the good set.
    Returns:
      ``(good, bad)``, boolean ``(C,)``: ``ceil(gamma * n)`` rows chosen by
      feasibility, fronts and hypervolume subset selection (module
      docstring); every other valid row (failures included) is bad.
    """
    c = obj.shape[0]
    ok = valid & jnp.all(jnp.isfinite(obj), axis=1) & jnp.isfinite(violation)
    feasible = ok & (violation <= 0.0)
    infeasible = ok & (violation > 0.0)
    k = num_good(ok.sum(dtype=jnp.int32), gamma, c)
    k_feas = jnp.minimum(k, feasible.sum(dtype=jnp.int32))

    rank = pareto.nondominated_rank(obj, feasible)  # c outside `feasible`
    at_most = jnp.sum(rank[None, :] <= rank[:, None], axis=1, dtype=jnp.int32)  # rows of rank <= own
    whole = feasible & (at_most <= k_feas)
    cut_rank = jnp.min(jnp.where(feasible & ~whole, rank, c))
    cut = feasible & (rank == cut_rank)
    need = k_feas - whole.sum(dtype=jnp.int32)
    chosen = hssp_greedy(obj, cut, need)

    k_inf = k - k_feas
    order = jnp.lexsort((number, jnp.where(infeasible, violation, jnp.inf)))
    pos = jnp.zeros((c,), jnp.int32).at[order].set(jnp.arange(c, dtype=jnp.int32))
    least = infeasible & (pos < k_inf)

    good = whole | chosen | least
    return good, valid & ~good


def _check_gamma(v):
    return check_real("gamma", v, 0.0, 1.0, low_open=True)


def _check_prior_weight(v):
    return check_real("prior_weight", v, 0.0, math.inf, low_open=True)


class MOTPE(Strategy):
    """Multi-objective TPE with Optuna's defaults (see the module docstring).

    **Interface** (as ``NSGA2``): ``tell(state, x, values)`` takes ``values``
    of shape ``(popsize, num_objectives + num_constraints)``, the objective
    values (minimised) then the constraint values (feasible when ``<= 0``);
    ``(popsize,)`` is accepted when that is one column. A row with a
    non-finite entry is a failed evaluation.

    **Best.** ``best_x`` / ``best_value`` are the feasible point with the
    lowest *first* objective told so far; ``pareto_front(state)`` gives the
    non-dominated feasible rows of the buffer.

    Args:
      space: the ``Space``.
      popsize: points per ``ask`` (a batch uses the constant liar).
      capacity: rows of the observation buffer, ``>= popsize``; default 256
        (``popsize`` where that is larger).
      num_objectives: ``m >= 1``.
      num_constraints: constraint columns after the objectives, ``>= 0``.
      below_weights: ``"uniform"`` (Optuna 5) or ``"hypervolume"``
        (contribution weights; at most 3 objectives).
      multivariate, n_startup, n_ei_candidates, gamma, prior_weight,
      consider_endpoints, consider_magic_clip, constant_liar, startup:
        as for ``TPE`` (``gamma`` is uncapped here).
    """

    independent_asks = True  # before a tell, each ask draws afresh from the same model

    def __init__(self, space: Space, popsize: int = 1, capacity: int | None = None, num_objectives: int = 2,
                 num_constraints: int = 0, *, below_weights: str = "uniform", multivariate: bool = False,
                 n_startup: int = 10, n_ei_candidates: int = 24, gamma: float = 0.1,
                 prior_weight: float = 1.0, consider_endpoints: bool = False,
                 consider_magic_clip: bool = True, constant_liar: bool = True, startup: str = "sobol"):
        super().__init__(space, popsize)
        self.num_objectives = check_int("num_objectives", num_objectives, 1)
        self.num_constraints = check_int("num_constraints", num_constraints, 0)
        self.below_weights = check_choice("below_weights", below_weights, BELOW_WEIGHTS)
        if self.below_weights == "hypervolume" and self.num_objectives > 3:
            raise ValueError(f"below_weights='hypervolume' needs at most 3 objectives (exact hypervolume), "
                             f"got num_objectives={self.num_objectives}")
        # The estimators, draws and scoring are TPE's; it also checks the
        # shared settings.
        capacity = buffer_capacity(capacity, self.popsize, 256)
        self._tpe = TPE(space, popsize, capacity, multivariate=multivariate, n_startup=n_startup,
                        n_ei_candidates=n_ei_candidates, gamma=gamma, max_good=capacity,
                        prior_weight=prior_weight, consider_endpoints=consider_endpoints,
                        consider_magic_clip=consider_magic_clip, constant_liar=constant_liar,
                        startup=startup)
        t = self._tpe
        self.capacity, self.multivariate, self.n_startup = t.capacity, t.multivariate, t.n_startup
        self.n_ei_candidates, self.gamma, self.prior_weight = t.n_ei_candidates, t.gamma, t.prior_weight
        self.consider_endpoints, self.consider_magic_clip = t.consider_endpoints, t.consider_magic_clip
        self.constant_liar, self.startup = t.constant_liar, t.startup

    @property
    def num_values(self) -> int:
        """Columns ``tell`` expects: ``num_objectives + num_constraints``."""
        return self.num_objectives + self.num_constraints

    def default_params(self):
        return {"gamma": jnp.float32(self.gamma), "prior_weight": jnp.float32(self.prior_weight)}

    def param_checks(self):
        return {"gamma": _check_gamma, "prior_weight": _check_prior_weight}

    def _init(self, key, params):
        c, d, m = self.capacity, self.dim, self.num_objectives
        return MOTPEState(
            params=params,
            x=jnp.full((c, d), 0.5, jnp.float32),
            obj=jnp.full((c, m), jnp.inf, jnp.float32),
            violation=jnp.full((c,), jnp.inf, jnp.float32),
            number=jnp.zeros((c,), jnp.int32),
            count=jnp.array(0, jnp.int32),
            told=jnp.array(0, jnp.int32),
            startup=self._tpe._sobol.init(key) if self.startup == "sobol" else (),
            **initial_best(d),
        )

    # --------------------------------------------------------------- model
    def split(self, state: MOTPEState) -> tuple[jax.Array, jax.Array]:
        """``(good, bad)`` boolean ``(capacity,)`` rows of ``state``'s buffer."""
        valid = jnp.arange(self.capacity) < state.count
        return split_multiobjective(state.obj, state.violation, valid, state.number, state.params["gamma"])

    def below_weight_values(self, state: MOTPEState, good: jax.Array) -> jax.Array:
        """Weights ``(capacity,)`` of the good rows (0 elsewhere)."""
        if self.below_weights == "uniform":
            return good.astype(jnp.float32)
        feasible = good & (state.violation <= 0.0)
        obj, log2_factor = _unit_scaled(state.obj, feasible)
        ref = _reference_point(obj, feasible)
        contrib = pareto.hypervolume_contributions(jnp.where(feasible[:, None], obj, ref), ref, feasible)
        # Optuna's floor of 1e-12 on the raw contributions, in the scaled units
        # (capped: a floor past every contribution weighs all rows alike).
        eps = jnp.minimum(jnp.ldexp(jnp.float32(_EPS), -log2_factor), jnp.float32(1e30))
        contrib = jnp.where(feasible, contrib + eps, 0.0)
        w = contrib / jnp.maximum(jnp.max(contrib), eps)
        # Infeasible good rows (the feasible ones did not fill the set) weigh the least.
        return jnp.where(feasible, w, jnp.where(good, _EPS, 0.0))

    def estimators(self, state: MOTPEState) -> tuple[Parzen, Parzen]:
        """``(l, g)``: the Parzen estimators of the good and bad rows (``capacity + 1`` kernels each)."""
        coords, pw = self._tpe._coords, state.params["prior_weight"]
        kw = dict(consider_endpoints=self.consider_endpoints, magic_clip=self.consider_magic_clip)
        good, bad = self.split(state)
        l_est = fit_parzen(coords, state.x, good, state.number, pw, weights=self.below_weight_values(state, good),
                           **kw)
        return l_est, fit_parzen(coords, state.x, bad, state.number, pw, **kw)

    # ------------------------------------------------------------ protocol
    def _ask(self, key, state):
        # As split_multiobjective reads rows: an infeasible one succeeded.
        succeeded = jnp.all(jnp.isfinite(state.obj), axis=1) & jnp.isfinite(state.violation)
        return self._tpe.ask_with(key, state, lambda k, s: self._tpe.propose_from(k, *self.estimators(s)),
                                  succeeded)

    def tell(self, state: MOTPEState, x: jax.Array, values: jax.Array) -> MOTPEState:
        """Learn from evaluated points.

        Args:
          x: ``(popsize, dim)`` the points of the latest ``ask``.
          values: ``(popsize, num_objectives + num_constraints)``; ``(popsize,)``
            when that is one column. Rows with a non-finite entry failed.
        """
        p, k, m = self.popsize, self.num_values, self.num_objectives
        x = self._told_points(x)
        values = float32_values(values, m)
        if k == 1 and values.shape == (p,):
            values = values[:, None]
        if values.shape != (p, k):
            raise ValueError(f"tell: values must have shape (popsize, num_objectives + num_constraints) = "
                             f"{(p, k)}, got {values.shape}")
        return compiled(self, "_tell_values", state, x, values)

    def _tell_values(self, state, x, values):
        """``tell`` of checked ``(popsize, num_values)`` values."""
        self._check_own_state("tell", state)
        p, m = self.popsize, self.num_objectives
        ok = jnp.all(jnp.isfinite(values), axis=1)
        obj = jnp.where(ok[:, None], values[:, :m], jnp.inf)
        viol = pareto.total_violation(values[:, m:]) if self.num_constraints else jnp.zeros((p,), jnp.float32)
        viol = jnp.where(ok, viol, jnp.inf)
        x = self._tpe._coords.snap(jnp.clip(x, 0.0, 1.0))
        numbers = state.told + jnp.arange(p, dtype=jnp.int32)
        new = jax.lax.cond(state.count + p <= self.capacity, self._append, self._keep_best,
                           state, x, obj, viol, numbers)
        f0 = jnp.where(viol == 0.0, obj[:, 0], jnp.inf)
        i = jnp.argmin(f0)
        better = f0[i] < state.best_value
        return new._replace(
            count=jnp.minimum(state.count + p, self.capacity), told=state.told + p,
            best_x=jnp.where(better, x[i], state.best_x), best_value=jnp.where(better, f0[i], state.best_value),
            generation=state.generation + 1,
        )

    def _append(self, state, x, obj, viol, numbers):
        slots = state.count + jnp.arange(self.popsize, dtype=jnp.int32)
        return state._replace(x=state.x.at[slots].set(x), obj=state.obj.at[slots].set(obj),
                              violation=state.violation.at[slots].set(viol),
                              number=state.number.at[slots].set(numbers))

    def _keep_best(self, state, x, obj, viol, numbers):
        """Full: keep the ``capacity`` best rows by constraint-domination rank
        (newer first within a rank) and the most recent failures in their share."""
        c = self.capacity
        all_x = jnp.concatenate([state.x, x])
        all_o = jnp.concatenate([state.obj, obj])
        all_v = jnp.concatenate([state.violation, viol])
        all_n = jnp.concatenate([state.number, numbers])
        real = jnp.concatenate([jnp.arange(c) < state.count, jnp.ones((self.popsize,), bool)])
        ok = real & jnp.all(jnp.isfinite(all_o), axis=1) & jnp.isfinite(all_v)
        rank = pareto.constrained_nondominated_rank(all_o, all_v[:, None], ok)
        # The best rows and the most recent failures in their share (_buffer.kept_rows).
        kept = kept_rows(jnp.lexsort((-all_n, rank, ~ok)), ok, real & ~ok, all_n, c)
        keep = jnp.lexsort((-all_n, rank, ~kept))[:c]
        return state._replace(x=all_x[keep], obj=all_o[keep], violation=all_v[keep], number=all_n[keep])

    def pareto_front(self, state: MOTPEState) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(x (capacity, dim), values (capacity, m), mask (capacity,))``: ``mask`` marks the
        non-dominated feasible rows of the buffer (equal objective vectors once)."""
        return compiled(self, "_pareto_front", state)

    def _pareto_front(self, state: MOTPEState) -> tuple[jax.Array, jax.Array, jax.Array]:
        valid = (jnp.arange(self.capacity) < state.count) & (state.violation == 0.0)
        return state.x, state.obj, pareto.front_rows_once(state.obj, valid)
