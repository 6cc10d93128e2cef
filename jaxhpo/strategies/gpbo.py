"""Gaussian-process Bayesian optimisation, fixed-shape and fully jitted.

Observations live in a preallocated buffer of ``capacity`` rows with a count;
the GP (``gp.py``) masks the empty rows, so nothing recompiles as the buffer
fills and the whole search runs inside one ``lax.scan``.

Besides one objective, ``GPBO`` handles black-box constraints (constrained
expected improvement: Gardner et al. 2014, "Bayesian optimization with
inequality constraints", ICML; Gelbart, Snoek & Adams 2014, "Bayesian
optimization with unknown constraints", UAI) and several objectives (ParEGO's
random augmented Chebyshev scalarisations: Knowles 2006, "ParEGO: a hybrid
algorithm with on-line landscape approximation for expensive multiobjective
optimization problems", IEEE TEC 10(1)). See ``GPBO``.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import pareto
from ..space import Space
from . import acquisition as acqf
from . import gp
from ._buffer import buffer_capacity, kept_rows
from ._checks import check_bool, check_choice, check_int, check_real
from ._mixed import MixedCoords
from .base import Strategy, compiled, float32_values, initial_best

from .quasirandom import SOBOL_MAX_DIM, QuasiRandom  # the initial design and the acquisition candidates

__all__ = ["GPBO", "GPBOState", "ConstraintModel", "ACQUISITIONS", "augmented_chebyshev"]

ACQUISITIONS = ("logei", "ucb", "ts")
# The buffer's rows unless told (minimize fits it to a smaller search: GPBO.sized_for).
_DEFAULT_CAPACITY = 256

# Buffer row status.
_EMPTY, _OBSERVED, _FAILED = 0, 1, 2
# ParEGO's weight on the linear term of the augmented Chebyshev scalarisation (Knowles 2006).
_RHO = 0.05
# The initial design takes the first distinct configurations of this many times its size in Sobol points.
_DESIGN_POOL = 4


def first_distinct(rows: jax.Array, n: int) -> jax.Array:
    """Indices ``(n,)`` of the first ``n`` distinct rows of ``rows`` ``(k, dim)``, in order.

    Where fewer than ``n`` rows are distinct, the repeats follow, in order.
    One sort of the rows (lexicographic, then by index) finds each row's
    earlier copies: ``O(k log k)`` however many rows there are.
    """
    k, dim = rows.shape
    idx = jnp.arange(k, dtype=jnp.int32)
    # lexsort's last key is its first: coordinates 0..dim-1, then the index.
    order = jnp.lexsort((idx,) + tuple(rows[:, j] for j in reversed(range(dim))))
    srt = rows[order]
    repeat = jnp.concatenate([jnp.zeros((1,), bool), jnp.all(srt[1:] == srt[:-1], axis=1)])
    is_repeat = jnp.zeros((k,), bool).at[order].set(repeat)
    return jnp.argsort(is_repeat, stable=True)[:n].astype(jnp.int32)


class GPBOState(NamedTuple):
    """The state of ``GPBO``. With one value per point (one objective, no
    constraints) ``y`` is ``(capacity,)`` and ``kernel``'s leaves are
    ``(dim,)``, ``()``, ``()``; with ``num_values = m + c > 1`` ``y`` is
    ``(capacity, m + c)`` (objectives, then constraints) and ``kernel`` has a
    leading axis of ``1 + c``: the objective's (or the first scalarisation's)
    model, then one per constraint.
    """

    params: dict
    best_x: jax.Array  # (dim,) (feasible) point of lowest (first) objective told so far
    best_value: jax.Array  # () its (first) objective value; inf until one is told
    generation: jax.Array
    x: jax.Array  # (capacity, dim) observed cube points (bin centres for discrete coordinates)
    y: jax.Array  # (capacity,) or (capacity, num_values) their values; 0 where not a finite observation
    status: jax.Array  # (capacity,) int32: 0 empty, 1 observed, 2 failed
    count: jax.Array  # () int32, rows in use
    kernel: gp.KernelParams  # the latest fitted hyperparameters (warm start of the next fit)
    design: jax.Array  # (num_design, dim) the initial design, asked first
    gp_failures: jax.Array  # () int32, asks whose GP could not be factorised (random fallback)


class ConstraintModel(NamedTuple):
    """The constraint GPs of a ``GPBO`` (``c`` of them, stacked on a leading axis).

    Attributes:
      post: ``gp.Posterior`` with leaves of leading axis ``(c,)``, fitted to
        the standardised constraint values of the finite rows (failed rows
        join the posterior, not the fit, at the worst standardised value).
      threshold: ``(c,)`` where each constraint's bound 0 lies after
        standardising: ``-mean_j / std_j``.
      scale: ``(c,)`` the standard deviations ``std_j`` (standardised -> raw units).
    """

    post: gp.Posterior
    threshold: jax.Array
    scale: jax.Array


def augmented_chebyshev(weights: jax.Array, values: jax.Array, mask: jax.Array,
                        rho: float = _RHO) -> jax.Array:
    """ParEGO's augmented Chebyshev scalarisations of a buffer (Knowles 2006).

    Each objective is normalised to ``[0, 1]`` over the rows in ``mask``
    (a constant objective to 0), then
    ``s = max_i(w_i f_i) + rho * sum_i(w_i f_i)`` for each weight vector.

    Args:
      weights: ``(k, m)`` weight vectors (rows on the simplex).
      values: ``(n, m)`` objective values, minimised.
      mask: ``(n,)`` rows that count (finite observations).
    Returns:
      ``(k, n)`` scalarised values; 0 outside ``mask``.
    """
    lo = jnp.min(jnp.where(mask[:, None], values, jnp.inf), axis=0)
    hi = jnp.max(jnp.where(mask[:, None], values, -jnp.inf), axis=0)
    # Finite values may span more than float32's range (+-max, the worst
    # results there are): halves keep hi - lo finite, and both sides of the
    # division are scaled by the span's power of two, since XLA divides by a
    # reciprocal that flushes to 0 once the span passes ~8.5e37.
    mantissa, exponent = jnp.frexp(jnp.where(hi > lo, hi / 2 - lo / 2, 1.0))
    gap = values / 2 - jnp.where(jnp.isfinite(lo), lo, 0.0) / 2
    f = jnp.where(mask[:, None], jnp.ldexp(gap, -exponent) / mantissa, 0.0)
    wf = weights[:, None, :] * f[None, :, :]
    s = jnp.max(wf, axis=-1) + rho * jnp.sum(wf, axis=-1)
    return jnp.where(mask[None, :], s, 0.0)


def _check_beta(v):
    return check_real("beta", v, 0.0, math.inf, low_open=True)


def _check_min_noise(v):
    return check_real("min_noise", v, 0.0, 1.0, low_open=True)


class GPBO(Strategy):
    """Bayesian optimisation with a Gaussian process (Matern-5/2 ARD + Hamming).

    Each generation:

    1. While the initial design lasts (``n_init`` points, rounded up to whole
       generations) ``ask`` returns scrambled Sobol points, each a
       configuration not in the design before it (while the space has any
       left).
    2. Afterwards, values are standardised over the finite observations and
       the kernel hyperparameters are fitted by MAP (``gp.fit_kernel_params``:
       ``fit_starts`` L-BFGS runs of at most ``fit_steps`` iterations, one
       warm-started from the previous generation's fit, kept in the state).
    3. The acquisition is maximised by ``acquisition.maximize``: Sobol
       candidates plus candidates scattered around the incumbent at scales
       from 1e-3 to 0.3, the best ``restarts`` refined by ``acq_steps``
       projected gradient steps (scaled by the objective kernel's squared
       lengthscales with ``acq_precondition``); integer and categorical
       coordinates are snapped to bin centres and categories enumerated.
       ``"ts"`` instead draws one joint posterior sample over the candidates
       and takes its minimum.
    4. Batches (``popsize > 1``) use the Kriging believer: after choosing a
       point, the GP is conditioned on its posterior mean there (a fantasy row
       appended to the masked buffer), which collapses the acquisition around
       it, and the next point is chosen; hyperparameters stay fixed within a
       batch.
    5. The point chosen is none already in the buffer or the batch while
       another candidate has a finite acquisition value. In a discrete space,
       with the noise at its floor, the incumbent's small uncertainty gave it
       the highest acquisition once the optimum was found, and batches were
       four copies of it; in a continuous one only exact copies are
       excluded (a corner of the cube, most often).

    Failed (non-finite) evaluations are never part of the hyperparameter fit.
    Their points are remembered: the posterior that the acquisition sees
    treats them as observations at the worst finite value, so a failing
    region is not proposed again blindly. When the buffer is full, ``tell``
    keeps ``capacity`` of the stored and the new rows: failed ones in the
    share they make up there (the most recent), successful ones for the
    rest (``_buffer.kept_rows``), so failures stay remembered. With one
    objective, half of the successful rows kept are the newest and half the
    best of the others. A buffer of the best alone forgot each poor point
    as soon as it was told, and the acquisition, its uncertainty there
    unchanged, proposed the same point again: on Branin with a capacity of
    16, 87% of the 64 proposals after the buffer filled repeated an earlier
    one (29% with the newest half), and the median regret after 80
    evaluations over 8 seeds was 1.4 (0.07). With several objectives the
    buffer keeps the best ranks alone: its Pareto front is the search's.

    If the GP cannot be factorised even with the largest jitter, the ask
    falls back to uniform points and ``state.gp_failures`` counts it.

    **Several values** (``num_objectives + num_constraints > 1``). The
    interface is ``NSGA2``'s and ``MOTPE``'s, so ``jaxhpo.minimize`` / ``run``
    / ``Study`` work unchanged: ``tell(state, x, values)`` takes ``values``
    of shape ``(popsize, num_objectives + num_constraints)``, the objectives
    (minimised) then the constraints (feasible when ``<= 0``); a row with any
    non-finite entry is a failed evaluation and enters no GP fit.
    ``best_x`` / ``best_value`` are the feasible point with the lowest first
    objective; with ``num_objectives >= 2``, ``pareto_front(state)`` gives
    the non-dominated feasible rows of the buffer. ``num_objectives``,
    ``num_constraints``, ``num_values`` and ``pareto_front`` exist only on
    such a GPBO: a plain one keeps the scalar protocol (``(popsize,)``
    values, scalar history), so every existing caller sees it unchanged.

    * Constraints: one independent GP per constraint, fitted (MAP, as above)
      to its standardised values over the finite rows. With ``"logei"`` the
      acquisition is constrained EI (Gardner et al. 2014; Gelbart et al.
      2014): ``log EI`` over the best *feasible* value plus
      ``sum_j log P(c_j(x) <= 0)`` (``acquisition.log_feasibility``). Until a
      feasible point has been seen there is no incumbent to improve on, and
      the acquisition is the feasibility term alone (find the feasible
      region first). With ``"ts"``, constrained Thompson sampling (Eriksson
      & Poloczek 2021, SCBO): joint draws of the objective and every
      constraint over the candidates; the lowest sampled objective among the
      candidates feasible under the draw, else the lowest sampled total
      violation. ``"ucb"`` with constraints raises ``ValueError``: an
      optimistic bound and a probability do not combine without an arbitrary
      penalty weight, so use ``"logei"`` or ``"ts"``. Within a batch the
      constraint GPs also believe their posterior mean at the chosen points,
      but never better than the bound while no feasible point is known:
      conditioning on a feasible-looking mean would make the feasibility
      probability there *higher*, and the batch would not spread.
    * Several objectives: ParEGO (Knowles 2006). For every point of a batch a
      weight vector ``w`` is drawn uniformly on the simplex; each objective
      is normalised to ``[0, 1]`` over the finite observations and
      scalarised as ``s = max_i(w_i f_i) + 0.05 sum_i(w_i f_i)``
      (``augmented_chebyshev``); one GP is fitted to each point's ``s``
      (``vmap`` over the batch, each warm-started from the previous ask's
      first fit) and the point maximises the acquisition of ``s`` ("logei":
      over the best feasible ``s``; "ucb" and "ts" as for one objective),
      plus the feasibility term with constraints. The Kriging believer still
      spreads the batch: point ``j``'s GP believes its own mean at the points
      chosen before it.
    * When the buffer is full, failed rows keep their share as for one
      objective, and the best successful rows by constraint-domination rank
      (``pareto.constrained_nondominated_rank``) fill the rest, older first
      within a rank.
    * Conditional parameters: a coordinate that a point's own values make
      inactive is set to 1/2 in every point the GP sees and every point
      proposed, so configurations that differ only in values they do not
      use are one point to it (TPE gives such values the prior instead).

    Args:
      space: the ``Space``.
      popsize: points per ``ask``.
      capacity: rows of the observation buffer (``>= popsize``); the cost of
        an ask grows as ``capacity**3``, whatever the count. Default 256
        (``popsize`` where that is larger);
        ``minimize`` runs a search of fewer evaluations with a capacity of
        its evaluations instead (the buffer never holds more; see
        ``sized_for``): a short search does not pay for 256 rows.
      acquisition: ``"logei"`` (default), ``"ucb"`` or ``"ts"``.
      num_objectives: ``m >= 1`` objective columns of ``values``.
      num_constraints: ``c >= 0`` constraint columns after them.
      n_init: initial design size.
      beta: default UCB exploration weight (``params["beta"]``), on
        standardised values.
      min_noise: default noise-variance floor (``params["min_noise"]``), in
        standardised units.
      deterministic: the objective gives the same values every time for
        the same point (no evaluation noise): every GP's noise variance
        (objectives' and constraints') is held at ``min_noise`` instead of
        fitted, so the GPs interpolate the observations (Optuna's
        ``GPSampler(deterministic_objective=True)``).
        With a fitted noise the GP may explain a rugged objective's fine
        structure as noise and smooth over it; on noisy objectives keep the
        default.
      fit_steps, fit_starts: the most L-BFGS iterations of the hyperparameter
        fit (it stops earlier once converged) and its starts. One start (warm
        from the previous generation's fit, as Optuna's GPSampler) is the
        default: on Hartmann-6 over 20 seeds a second, random start changed
        the median regret at 100 evaluations within noise and tripled the time.
      num_candidates: Sobol candidates per chosen point; num_local: more
        candidates around the incumbent.
      restarts, acq_steps, acq_learning_rate: the gradient refinement.
      acq_precondition: scale the refinement's gradient steps by the
        objective kernel's squared lengthscales, a diagonal Newton step for
        an ARD kernel, so that a coordinate with a long lengthscale moves as
        readily as one with a short lengthscale (Optuna's GPSampler refines
        in lengthscale-scaled coordinates). It finds the acquisition's
        maximum more exactly, but also lets the steps roam along
        coordinates the GP believes matter little. With
        ``deterministic=True``, 8 paired seeds, 200 evaluations
        (``python -m benchmarks gpbo_acquisition``): median regret 2.25
        against 2.75 on Ackley-10 (6 seeds lower), 509 against 610 on
        Rosenbrock-10 (4 lower), 64.6 against 38.7 on Rastrigin-10 (7
        higher: every coordinate has ripples that the fitted lengthscales
        miss); off by default.
    """

    def __init__(self, space: Space, popsize: int = 1, capacity: int | None = None,
                 acquisition: str = "logei", *, num_objectives: int = 1, num_constraints: int = 0,
                 n_init: int = 10, beta: float = 4.0,
                 min_noise: float = 1e-6, deterministic: bool = False, fit_steps: int = 20, fit_starts: int = 1,
                 num_candidates: int = 512, num_local: int = 256, restarts: int = 8,
                 acq_steps: int = 40, acq_learning_rate: float = 0.05, acq_precondition: bool = False):
        super().__init__(space, popsize)
        # (private, so not a setting: GPBO(space) equals GPBO(space, capacity=256))
        self._default_capacity = capacity is None
        self.capacity = buffer_capacity(capacity, self.popsize, _DEFAULT_CAPACITY)
        self.acquisition = check_choice("acquisition", acquisition, ACQUISITIONS)
        self._m = check_int("num_objectives", num_objectives, 1)
        self._c = check_int("num_constraints", num_constraints, 0)
        if self._c and self.acquisition == "ucb":
            raise ValueError(
                f"acquisition='ucb' does not support constraints (num_constraints={self._c}): an "
                "optimistic bound and a feasibility probability do not combine without an arbitrary "
                "weight; use acquisition='logei' (constrained EI) or 'ts' (constrained Thompson sampling)")
        if self._m + self._c > 1:
            # Public settings (hashing, repr, stored specs) only when there
            # are several values: the loop and Study read these names to
            # switch to vector values, which a plain GPBO must not do.
            self.num_objectives, self.num_constraints = self._m, self._c
        self.n_init = check_int("n_init", n_init, 1)
        self.beta = _check_beta(beta)
        self.min_noise = _check_min_noise(min_noise)
        self.deterministic = check_bool("deterministic", deterministic)
        self.fit_steps = check_int("fit_steps", fit_steps, 1)
        self.fit_starts = check_int("fit_starts", fit_starts, 1)
        self.num_candidates = check_int("num_candidates", num_candidates, 1)
        self.num_local = check_int("num_local", num_local, 0)
        self.restarts = check_int("restarts", restarts, 1)
        if self.restarts > self.num_candidates + self.num_local:
            raise ValueError(
                f"restarts must be <= num_candidates + num_local "
                f"({self.num_candidates + self.num_local}), got {self.restarts}")
        self.acq_steps = check_int("acq_steps", acq_steps, 0)
        self.acq_learning_rate = check_real("acq_learning_rate", acq_learning_rate, 0.0, 1.0,
                                            low_open=True)
        self.acq_precondition = check_bool("acq_precondition", acq_precondition)
        # Static numpy tables (underscore: not settings, excluded from hashing).
        self._mixed = MixedCoords(space)
        self._conditional = space.is_conditional
        self._categorical = space.categorical_mask
        self._card = space.cardinalities
        cat_coords = [j for j in range(self.dim) if self._categorical[j]]
        if cat_coords:
            coords = np.concatenate([np.full(self._card[j], j) for j in cat_coords])
            centres = np.concatenate([(np.arange(self._card[j]) + 0.5) / self._card[j]
                                      for j in cat_coords]).astype(np.float32)
            self._cat_options = (coords, centres)
        else:
            self._cat_options = None

    def sized_for(self, num_evaluations: int) -> "GPBO":
        """With the default capacity, a copy whose buffer holds ``num_evaluations``
        rows where that is fewer than 256 (and at least ``popsize``): what the
        search needs, at a fraction of the cost. A capacity given stays."""
        capacity = max(min(_DEFAULT_CAPACITY, int(num_evaluations)), self.popsize)
        if not self._default_capacity or capacity == self.capacity:
            return self
        # The same copy for the same size: a subclass defined elsewhere compares
        # by identity, and a new copy per call would compile its search anew.
        sized = self.__dict__.setdefault("_sized", {}).get(capacity)
        if sized is None:
            sized = copy.copy(self)  # (still "default": a later search sizes it again)
            sized.__dict__.pop("_sized", None)
            sized.capacity = capacity
            self._sized[capacity] = sized
        return sized

    @property
    def _vector(self) -> bool:
        """Several values per point (objectives and constraints)."""
        return self._m + self._c > 1

    @property
    def num_values(self) -> int:
        """Columns ``tell`` expects: ``num_objectives + num_constraints``.

        Only on a GPBO with several values; a plain one takes ``(popsize,)``
        values (``AttributeError`` here, so callers keep the scalar protocol).
        """
        if not self._vector:
            raise AttributeError("num_values: this GPBO has one objective and no constraints "
                                 "(it takes (popsize,) values)")
        return self._m + self._c

    @property
    def pareto_front(self):
        """``pareto_front(state) -> (x (capacity, dim), values (capacity, m), mask (capacity,))``.

        ``mask`` marks the non-dominated feasible rows of the buffer (equal
        objective vectors once), as ``MOTPE.pareto_front``. Only with
        ``num_objectives >= 2`` (``AttributeError`` otherwise).
        """
        if self._m < 2:
            raise AttributeError("pareto_front: this GPBO has one objective")
        return functools.partial(compiled, self, "_pareto_front")

    @property
    def num_design(self) -> int:
        """Initial design points: ``n_init`` rounded up to whole generations."""
        return math.ceil(self.n_init / self.popsize) * self.popsize

    def default_params(self):
        return {"beta": jnp.float32(self.beta), "min_noise": jnp.float32(self.min_noise)}

    def param_checks(self):
        return {"beta": _check_beta, "min_noise": _check_min_noise}

    # ------------------------------------------------------------ helpers
    def _sobol(self, key: jax.Array, n: int) -> jax.Array:
        """``(n, dim)`` scrambled Sobol points (uniform ones past Sobol's dimensions)."""
        if self.dim > SOBOL_MAX_DIM:
            return self.space.sample(key, n)
        qr = QuasiRandom(self.space, n, method="sobol")
        k_init, k_ask = jax.random.split(key)
        x, _ = qr.ask(k_ask, qr.init(k_init))
        return x

    def _design(self, key: jax.Array) -> jax.Array:
        """``(num_design, dim)`` snapped Sobol points, distinct configurations first.

        Snapping to bins (and inactive coordinates to 1/2) can map several
        Sobol points to one configuration in a space with discrete
        parameters; the design takes the first distinct ones of a longer
        sequence, so a repeat is evaluated only when the space has fewer
        configurations than the design.
        """
        pool = self._snap(self._sobol(key, _DESIGN_POOL * self.num_design))
        return pool[first_distinct(pool, self.num_design)]

    def _snap(self, x: jax.Array) -> jax.Array:
        """Discrete coordinates at their bin centres, inactive ones at 1/2 (``_canonical``)."""
        return self._canonical(self._mixed.snap(x))

    def _canonical(self, x: jax.Array) -> jax.Array:
        """``x`` ``(..., dim)`` with each coordinate its own values make inactive at 1/2.

        An inactive value is never used: configurations that differ only there
        are one point to the GP (two points of one branch, whatever their
        other branches' coordinates hold), and the acquisition's gradient has
        nothing to follow there.
        """
        if not self._conditional:
            return x
        act = self.space.active(self.space.decode(x))
        on = jnp.stack([act[n] for n in self.space.names], axis=-1)
        return jnp.where(on, x, jnp.asarray(0.5, x.dtype))

    def _init(self, key, params):
        cap, dim = self.capacity, self.dim
        kernel = gp.default_kernel_params(dim)
        y_shape = (cap,)
        if self._vector:
            y_shape = (cap, self._m + self._c)
            kernel = jax.tree_util.tree_map(lambda a: jnp.stack([a] * (1 + self._c)), kernel)
        return GPBOState(
            params=params,
            x=jnp.full((cap, dim), 0.5, jnp.float32),
            y=jnp.zeros(y_shape, jnp.float32),
            status=jnp.zeros((cap,), jnp.int32),
            count=jnp.array(0, jnp.int32),
            kernel=kernel,
            design=self._design(key),
            gp_failures=jnp.array(0, jnp.int32),
            **initial_best(dim),
        )

    # ---------------------------------------------------------------- ask
    def _check_buffer(self, state) -> None:
        """A state of another capacity (``minimize``'s ``Result.state`` belongs to
        ``Result.strategy``, its capacity fitted to the search) is refused: its
        rows would be written past the buffer's end and dropped."""
        rows = jnp.shape(state.x)[0]
        if rows != self.capacity:
            raise ValueError(f"GPBO state has a buffer of {rows} rows, this GPBO a capacity of {self.capacity}: "
                             "continue a minimize result with Result.strategy, the strategy that made its state")

    def _check_own_state(self, what, state):
        if hasattr(state, "x"):
            self._check_buffer(state)  # (a minimize result's state: the message says what to do)
        return super()._check_own_state(what, state)

    def _ask(self, key, state):
        start = state.generation * self.popsize
        design = jax.lax.dynamic_slice_in_dim(
            state.design, jnp.minimum(start, self.num_design - self.popsize), self.popsize)
        observed = state.status == _OBSERVED
        use_model = (start >= self.num_design) & (jnp.sum(observed) >= 2)

        def from_design(key):
            # After the design, too few finite observations: keep exploring uniformly.
            x = jnp.where(start < self.num_design, design,
                          self._snap(self.space.sample(key, self.popsize)))
            return x, state.kernel, jnp.array(True)

        model_ask = self._vector_model_ask if self._vector else self._model_ask

        def from_model(key):
            # Under jax_enable_x64 the GP's arithmetic may widen; the state keeps its dtypes.
            x, kernel, ok = model_ask(key, state)
            kernel = jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), kernel, state.kernel)
            return x.astype(jnp.float32), kernel, ok

        x, kernel, ok = jax.lax.cond(use_model, from_model, from_design, key)
        return x, state._replace(kernel=kernel, gp_failures=state.gp_failures + (~ok).astype(jnp.int32))

    def _model_ask(self, key, state):
        """``(x (popsize, dim), fitted kernel, ok ())`` from the GP."""
        cat, card, params = self._categorical, self._card, state.params
        min_noise = params["min_noise"]
        observed = state.status == _OBSERVED
        failed = state.status == _FAILED
        z, _, _ = gp.standardize(state.y, observed)
        k_fit, k_batch, k_fallback = jax.random.split(key, 3)
        kernel = gp.fit_kernel_params(k_fit, state.x, z, observed, state.kernel, cat, card,
                                      min_noise, self.fit_steps, self.fit_starts,
                                      fixed_noise=self.deterministic)
        best_z = jnp.min(jnp.where(observed, z, jnp.inf))
        worst_z = jnp.max(jnp.where(observed, z, -jnp.inf))
        # Failed points join the posterior (not the fit) believed as bad as the worst.
        z = jnp.where(failed, worst_z, z)
        incumbent = state.x[jnp.argmin(jnp.where(observed, z, jnp.inf))]
        # The buffer plus popsize - 1 rows for the Kriging believer's fantasies.
        extra = self.popsize - 1
        xb = jnp.concatenate([state.x, jnp.full((extra, self.dim), 0.5, jnp.float32)])
        yb = jnp.concatenate([z, jnp.zeros((extra,), jnp.float32)])
        mb = jnp.concatenate([observed | failed, jnp.zeros((extra,), bool)])

        def choose(carry, inputs):
            xb, yb, mb, ok = carry
            j, key = inputs
            post = gp.factorize(kernel, xb, yb, mb, cat, card, min_noise)
            # Not a point evaluated or chosen for this batch where another will do.
            x = self._maximize(key, post, incumbent, best_z, params, xb, mb)
            mean, _ = gp.predict(post, x[None], cat, card)
            if extra > 0:
                # Fantasy row j holds the believed value at the j-th chosen point.
                row = jnp.minimum(self.capacity + j, xb.shape[0] - 1)
                write = j < extra
                xb = jnp.where(write, xb.at[row].set(x.astype(xb.dtype)), xb)
                yb = jnp.where(write, yb.at[row].set(mean[0].astype(yb.dtype)), yb)
                mb = jnp.where(write, mb.at[row].set(True), mb)
            return (xb, yb, mb, ok & post.ok), x

        keys = jax.random.split(k_batch, self.popsize)
        steps = (jnp.arange(self.popsize), keys)
        (_, _, _, ok), x = jax.lax.scan(choose, (xb, yb, mb, jnp.array(True)), steps)
        fallback = self._snap(self.space.sample(k_fallback, self.popsize))
        return jnp.where(ok, x, fallback), kernel, ok

    # ------------------------------------------- several values: the models
    # With several values an ask fits T + c GPs at once (one vmapped fit, so
    # one compiled fit): T objective models (the objective, or one ParEGO
    # scalarisation per batch point) and one per constraint.

    def _targets(self, key, state, observed):
        """``(T, capacity)`` values the objective GPs model: the objective itself
        (``T = 1``) or, with several objectives, one ParEGO scalarisation per
        batch point (``T = popsize``), each with its own weight vector."""
        obj = state.y[:, :self._m]
        if self._m == 1:
            return jnp.where(observed, obj[:, 0], 0.0)[None]
        # Normalised exponentials are uniform on the simplex (Dirichlet(1, ..., 1)).
        e = jax.random.exponential(key, (self.popsize, self._m), jnp.float32)
        weights = e / jnp.sum(e, axis=1, keepdims=True)
        return augmented_chebyshev(weights, obj, observed)

    def _fit_all(self, key, state):
        """Fit the ``T + c`` GPs of an ask.

        Returns ``(kernels, posts, z, z_post, threshold, scale)``: kernels and
        posteriors stacked on ``(T + c,)``; ``z (T + c, capacity)`` the
        standardised values the fits saw (finite rows only) and ``z_post``
        those the posteriors hold (failed rows believed as bad as the worst
        finite row, so a failing region is not proposed blindly);
        ``threshold (c,)``, ``scale (c,)`` as in ``ConstraintModel``.
        """
        cat, card, min_noise = self._categorical, self._card, state.params["min_noise"]
        observed = state.status == _OBSERVED
        failed = state.status == _FAILED
        k_w, k_fit = jax.random.split(key)
        targets = self._targets(k_w, state, observed)
        n_t = targets.shape[0]
        values = jnp.concatenate([targets.T, state.y[:, self._m:]], axis=1)  # (capacity, T + c)
        z, mean, std = jax.vmap(gp.standardize, in_axes=(1, None))(values, observed)
        worst = jnp.max(jnp.where(observed, z, -jnp.inf), axis=1, keepdims=True)
        z_post = jnp.where(failed, worst, z)
        # Warm starts: every objective model from the previous first one, each constraint from its own.
        warm = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([jnp.broadcast_to(a[0], (n_t,) + a.shape[1:]), a[1:]]), state.kernel)

        def one(k, zi, zpi, w):
            kp = gp.fit_kernel_params(k, state.x, zi, observed, w, cat, card, min_noise,
                                      self.fit_steps, self.fit_starts, fixed_noise=self.deterministic)
            return kp, gp.factorize(kp, state.x, zpi, observed | failed, cat, card, min_noise)

        keys = jax.random.split(k_fit, n_t + self._c)
        kernels, posts = jax.vmap(one)(keys, z, z_post, warm)
        return kernels, posts, z, z_post, -mean[n_t:] / std[n_t:], std[n_t:]

    def constraint_model(self, key: jax.Array, state: GPBOState) -> ConstraintModel:
        """The constraint GPs that an ``ask`` fits on ``state`` (``num_constraints >= 1``).

        ``key`` plays the part of the ask's model key (it seeds the fits'
        random starts). ``log_feasibility(model, x)`` then gives the
        acquisition's feasibility term.
        """
        if not self._c:
            raise ValueError("constraint_model: this GPBO has num_constraints=0")
        _, posts, _, _, threshold, scale = self._fit_all(key, state)
        post = jax.tree_util.tree_map(lambda a: a[-self._c:], posts)
        return ConstraintModel(post=post, threshold=threshold, scale=scale)

    def log_feasibility(self, model: ConstraintModel, x: jax.Array) -> jax.Array:
        """``sum_j log P(c_j(x) <= 0)`` under ``model``'s GPs at ``x (k, dim)``; ``(k,)``."""
        cat, card = self._categorical, self._card
        mean, var = jax.vmap(lambda post: gp.predict(post, x, cat, card))(model.post)  # (c, k)
        return acqf.log_feasibility(mean.T, var.T, model.threshold)

    def _believe(self, post0, kernel, x_f, fantasy, values, bound, believe_mean, rows, min_noise):
        """``post0`` (the buffer's rows) conditioned on the fantasy rows ``x_f (extra, dim)`` too.

        Each active fantasy row is believed at the mean of ``post0`` there:
        conditioning on a posterior mean leaves the mean unchanged, so the
        beliefs about all earlier batch points come from the real rows alone
        (the sequential Kriging believer in one step). Unless
        ``believe_mean``, a belief is raised to ``bound`` (see the class
        docstring: constraints before any feasible point).
        """
        cat, card = self._categorical, self._card
        mean, _ = gp.predict(post0, x_f, cat, card)
        belief = jnp.where(believe_mean, mean, jnp.maximum(mean, bound))
        xb = jnp.concatenate([post0.x, x_f])
        yb = jnp.concatenate([values, belief])
        return gp.factorize(kernel, xb, yb, jnp.concatenate([rows, fantasy]), cat, card, min_noise)

    def _vector_model_ask(self, key, state):
        """``(x (popsize, dim), fitted kernels (1 + c,), ok ())`` from the objective and constraint GPs."""
        m, c, p = self._m, self._c, self.popsize
        observed = state.status == _OBSERVED
        rows = observed | (state.status == _FAILED)
        k_models, k_batch, k_fallback = jax.random.split(key, 3)
        con = state.y[:, m:]
        feasible = observed & jnp.all(con <= 0.0, axis=1)
        any_feasible = jnp.any(feasible)
        kernels, posts, z, z_post, threshold, scale = self._fit_all(k_models, state)
        n_t = z.shape[0] - c
        ok = jnp.all(posts.ok)
        # EI improves on the best feasible row; before one exists the EI term
        # is off (a finite stand-in keeps its gradient finite under `where`).
        zt = z[:n_t]
        best_z = jnp.where(any_feasible, jnp.min(jnp.where(feasible, zt, jnp.inf), axis=1), 0.0)
        # Local candidates around the best feasible row, else the least violating one.
        violation = jnp.sum(jnp.maximum(con, 0.0), axis=1)
        score = jnp.where(any_feasible, jnp.where(feasible, zt, jnp.inf), jnp.where(observed, violation, jnp.inf))
        incumbents = state.x[jnp.argmin(score, axis=1)]  # (T, dim)
        # Constraint beliefs are raised to the bound while nothing feasible is known.
        bound = jnp.concatenate([jnp.full((1,), -jnp.inf), threshold])
        believe_mean = jnp.concatenate([jnp.ones((1,), bool), jnp.full((c,), any_feasible)])
        extra = p - 1  # fantasy rows of the Kriging believer

        def choose(carry, inputs):
            x_f, fantasy, ok = carry
            j, key = inputs
            t = jnp.minimum(j, n_t - 1)
            idx = jnp.concatenate([t[None], n_t + jnp.arange(c)])  # point j's objective model, then constraints
            pick = lambda a: a[idx]  # noqa: E731
            post = jax.tree_util.tree_map(pick, posts)
            if extra:
                post = jax.vmap(lambda p0, kp, zi, b, bm: self._believe(
                    p0, kp, x_f, fantasy, zi, b, bm, rows, state.params["min_noise"]))(
                    post, jax.tree_util.tree_map(pick, kernels), z_post[idx], bound, believe_mean)
                ok = ok & jnp.all(post.ok)
            x = self._maximize_vector(key, post, threshold, scale, incumbents[t], best_z[t], any_feasible,
                                      state.params, jnp.concatenate([state.x, x_f]),
                                      jnp.concatenate([rows, fantasy])).astype(jnp.float32)  # float64 under x64
            if extra:
                row = jnp.minimum(j, extra - 1)
                write = j < extra
                x_f = jnp.where(write, x_f.at[row].set(x), x_f)
                fantasy = fantasy | (write & (jnp.arange(extra) == row))
            return (x_f, fantasy, ok), x

        init = (jnp.full((extra, self.dim), 0.5, jnp.float32), jnp.zeros((extra,), bool), ok)
        (_, _, ok), x = jax.lax.scan(choose, init, (jnp.arange(p), jax.random.split(k_batch, p)))
        fallback = self._snap(self.space.sample(k_fallback, p))
        # Warm starts of the next ask: the first objective model's fit, then the constraints'.
        new_kernel = jax.tree_util.tree_map(lambda a: jnp.concatenate([a[:1], a[n_t:]]), kernels)
        return jnp.where(ok, x, fallback), new_kernel, ok

    def _candidates(self, key: jax.Array, incumbent: jax.Array) -> jax.Array:
        """``(num_candidates + num_local, dim)`` snapped candidate points."""
        k_sobol, k_dir, k_scale = jax.random.split(key, 3)
        cands = self._sobol(k_sobol, self.num_candidates)
        if self.num_local:
            # Multi-scale perturbations of the incumbent: the acquisition's
            # maximum is often within a lengthscale of the best point, at a
            # scale no global candidate set resolves.
            log_scale = jax.random.uniform(k_scale, (self.num_local, 1), jnp.float32, minval=math.log(1e-3),
                                           maxval=math.log(0.3))
            step = jax.random.normal(k_dir, (self.num_local, self.dim), jnp.float32) * jnp.exp(log_scale)
            local = jnp.clip(incumbent + step, 0.0, 1.0)
            cands = jnp.concatenate([cands, local])
        return self._snap(cands)

    def _refine(self, acq, cands, log_lengthscale, taken, taken_mask):
        """``acquisition.maximize`` of ``acq`` from ``cands`` with this GPBO's settings;
        ``log_lengthscale (dim,)`` scales the steps with ``acq_precondition``;
        not one of the ``taken`` points where another will do."""
        precondition = jnp.exp(2.0 * log_lengthscale) if self.acq_precondition else None
        x, _ = acqf.maximize(acq, cands, self._snap, ~self._categorical, self.restarts, self.acq_steps,
                             self.acq_learning_rate, self._cat_options, precondition=precondition,
                             taken=taken, taken_mask=taken_mask)
        return x

    @staticmethod
    def _thompson_pick(cands, sample, taken, taken_mask):
        """The candidate of least sampled value, not one of the ``taken`` points where another will do."""
        same = acqf.is_taken(cands, taken, taken_mask)
        fresh = jnp.where(same, jnp.inf, sample)
        return cands[jnp.where(jnp.all(same), jnp.argmin(sample), jnp.argmin(fresh))]

    def _maximize(self, key, post, incumbent, best_z, params, taken, taken_mask):
        cat, card = self._categorical, self._card
        k_cand, k_ts = jax.random.split(key)
        cands = self._candidates(k_cand, incumbent)
        if self.acquisition == "ts":
            sample = acqf.thompson_sample(k_ts, post, cands, cat, card)
            return self._thompson_pick(cands, sample, taken, taken_mask)

        def acq(x):
            mean, var = gp.predict(post, self._canonical(x), cat, card)
            if self.acquisition == "logei":
                return acqf.log_ei(mean, var, best_z)
            return acqf.ucb(mean, var, params["beta"])

        return self._refine(acq, cands, post.kernel.log_lengthscale, taken, taken_mask)

    def _maximize_vector(self, key, posts, threshold, scale, incumbent, best_z, any_feasible, params,
                         taken, taken_mask):
        """One point from ``posts``: the objective model, then the ``c`` constraint models,
        stacked on ``(1 + c,)``; see the class docstring for the acquisitions."""
        cat, card, c = self._categorical, self._card, self._c
        k_cand, k_ts = jax.random.split(key)
        cands = self._candidates(k_cand, incumbent)
        if self.acquisition == "ts":
            keys = jax.random.split(k_ts, 1 + c)
            samples = jax.vmap(lambda k, post: acqf.thompson_sample(k, post, cands, cat, card))(keys, posts)
            if not c:
                return self._thompson_pick(cands, samples[0], taken, taken_mask)
            return cands[acqf.constrained_thompson_choice(samples[0], samples[1:], threshold, scale)]

        def acq(x):
            x = self._canonical(x)
            mean, var = jax.vmap(lambda post: gp.predict(post, x, cat, card))(posts)  # (1 + c, k)
            if self.acquisition == "logei":
                value = acqf.log_ei(mean[0], var[0], best_z)
            else:
                value = acqf.ucb(mean[0], var[0], params["beta"])
            if not c:
                return value
            # Constrained EI, in logs; before any feasible point, feasibility alone.
            return jnp.where(any_feasible, value, 0.0) + acqf.log_feasibility(mean[1:].T, var[1:].T, threshold)

        # The objective model's lengthscales scale the steps (the
        # constraints' models may have others; the improvement sets where to go).
        return self._refine(acq, cands, posts.kernel.log_lengthscale[0], taken, taken_mask)

    # --------------------------------------------------------------- tell
    def tell(self, state: GPBOState, x: jax.Array, values: jax.Array) -> GPBOState:
        """Learn from evaluated points.

        Args:
          x: ``(popsize, dim)`` the points of the latest ``ask``.
          values: ``(popsize,)`` objective values for a plain GPBO (``(popsize, 1)``
            is accepted too); with several values ``(popsize, num_objectives +
            num_constraints)``, objectives then constraints. A row with a
            non-finite entry is a failed evaluation.
        """
        p = self.popsize
        values = float32_values(values, self._m if self._vector else None)
        if not self._vector:
            if values.shape == (p, 1):
                values = values[:, 0]
            return super().tell(state, x, values)
        k = self._m + self._c
        x = self._told_points(x)
        if values.shape != (p, k):
            raise ValueError(f"tell: values must have shape (popsize, num_objectives + num_constraints) = "
                             f"{(p, k)}, got {values.shape}")
        return compiled(self, "_tell_values", state, x, values)

    def _tell_values(self, state, x, values):
        """``tell`` of checked ``(popsize, num_values)`` values."""
        self._check_own_state("tell", state)
        m = self._m
        ok = jnp.all(jnp.isfinite(values), axis=1)
        x = self._snap(jnp.clip(x, 0.0, 1.0))
        new = self._store(state, x, values, ok)
        f0 = jnp.where(ok & jnp.all(values[:, m:] <= 0.0, axis=1), values[:, 0], jnp.inf)
        i = jnp.argmin(f0)
        better = f0[i] < state.best_value
        return new._replace(
            best_x=jnp.where(better, x[i], state.best_x),
            best_value=jnp.where(better, f0[i], state.best_value),
            generation=state.generation + 1,
        )

    def _store(self, state, x, values, ok):
        """The told rows (failed where not ``ok``) into the buffer: appended
        while they fit, else the full buffer's kept rows; the count updated."""
        y = jnp.where(ok.reshape(ok.shape + (1,) * (values.ndim - 1)), values, 0.0)
        status = jnp.where(ok, _OBSERVED, _FAILED).astype(jnp.int32)
        new = jax.lax.cond(state.count + self.popsize <= self.capacity, self._append, self._keep_best,
                           state, x, y, status)
        return new._replace(count=jnp.minimum(state.count + self.popsize, self.capacity))

    def _append(self, state, x, y, status):
        slots = state.count + jnp.arange(self.popsize, dtype=jnp.int32)
        return state._replace(x=state.x.at[slots].set(x), y=state.y.at[slots].set(y),
                              status=state.status.at[slots].set(status))

    # Whether a full single-objective buffer keeps its newest half (a class
    # setting, so that benchmarks/gpbo_full_buffer.py can run the rule before).
    _keep_newest = True

    def _keep_best(self, state, x, y, status):
        """Full: keep the most recent failures in their share and, of the
        successful rows, the best (by constraint-domination rank with several
        values, else by value; older first among equals), with one objective
        only for half of them and the newest for the other half
        (``_buffer.kept_rows``)."""
        m = self._m
        all_x = jnp.concatenate([state.x, x])
        all_y = jnp.concatenate([state.y, y])
        all_s = jnp.concatenate([state.status, status])
        ok = all_s == _OBSERVED
        if self._vector:
            merit = pareto.constrained_nondominated_rank(all_y[:, :m], all_y[:, m:], ok)
        else:
            merit = all_y
        # lexsort is stable: older (earlier in the buffer) first among equals.
        kept = kept_rows(jnp.lexsort((merit, ~ok)), ok, all_s == _FAILED,
                         jnp.arange(all_s.shape[0], dtype=jnp.int32), self.capacity,
                         newest_half=self._m == 1 and self._keep_newest)
        # The kept rows stay in buffer order, which is then the order they were
        # told in: the next truncation's "older first" needs it.
        keep = jnp.nonzero(kept, size=self.capacity)[0]
        return state._replace(x=all_x[keep], y=all_y[keep], status=all_s[keep])

    def _pareto_front(self, state: GPBOState) -> tuple[jax.Array, jax.Array, jax.Array]:
        m = self._m
        obj = state.y[:, :m]
        valid = (state.status == _OBSERVED) & jnp.all(state.y[:, m:] <= 0.0, axis=1)
        return state.x, obj, pareto.front_rows_once(obj, valid)

    def _tell(self, state, x, values):
        return self._store(state, self._snap(x), values, jnp.isfinite(values))
