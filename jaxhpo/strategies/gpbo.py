"""Gaussian-process Bayesian optimisation, fixed-shape and fully jitted.

Observations live in a preallocated buffer of ``capacity`` rows with a count;
the GP (``gp.py``) masks the empty rows, so nothing recompiles as the buffer
fills and the whole search runs inside one ``lax.scan``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..space import Space
from . import acquisition as acqf
from . import gp
from ._checks import check_choice, check_concrete_params, check_int, check_real
from ._mixed import MixedCoords
from .base import Strategy, check_popsize, initial_best

try:  # Sobol points for the initial design and the acquisition candidates.
    from .quasirandom import QuasiRandom
except ImportError:  # pragma: no cover - quasirandom ships with jaxhpo
    QuasiRandom = None

__all__ = ["GPBO", "GPBOState", "ACQUISITIONS"]

ACQUISITIONS = ("logei", "ucb", "ts")

# Buffer row status.
_EMPTY, _OBSERVED, _FAILED = 0, 1, 2


class GPBOState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    x: jax.Array  # (capacity, dim) observed cube points (bin centres for discrete coordinates)
    y: jax.Array  # (capacity,) their values; 0 where not a finite observation
    status: jax.Array  # (capacity,) int32: 0 empty, 1 observed, 2 failed
    count: jax.Array  # () int32, rows in use
    kernel: gp.KernelParams  # the latest fitted hyperparameters (warm start of the next fit)
    design: jax.Array  # (num_design, dim) the initial design, asked first
    gp_failures: jax.Array  # () int32, asks whose GP could not be factorised (random fallback)


def _check_beta(v):
    return check_real("beta", v, 0.0, math.inf, low_open=True)


def _check_min_noise(v):
    return check_real("min_noise", v, 0.0, 1.0, low_open=True)


class GPBO(Strategy):
    """Bayesian optimisation with a Gaussian process (Matern-5/2 ARD + Hamming).

    Each generation:

    1. While the initial design lasts (``n_init`` points, rounded up to whole
       generations) ``ask`` returns scrambled Sobol points.
    2. Afterwards, values are standardised over the finite observations and
       the kernel hyperparameters are fitted by MAP (``gp.fit_kernel_params``:
       ``fit_starts`` L-BFGS runs of ``fit_steps`` iterations, vmapped, one
       warm-started from the previous generation's fit, kept in the state).
    3. The acquisition is maximised by ``acquisition.maximize``: Sobol
       candidates plus candidates scattered around the incumbent at scales
       from 1e-3 to 0.3, the best ``restarts`` refined by ``acq_steps``
       projected gradient steps; integer and categorical coordinates are snapped
       to bin centres and categories enumerated. ``"ts"`` instead draws one
       joint posterior sample over the candidates and takes its minimum.
    4. Batches (``popsize > 1``) use the Kriging believer: after choosing a
       point, the GP is conditioned on its posterior mean there (a fantasy row
       appended to the masked buffer), which collapses the acquisition around
       it, and the next point is chosen; hyperparameters stay fixed within a
       batch.

    Failed (non-finite) evaluations are never part of the hyperparameter fit.
    Their points are remembered: the posterior that the acquisition sees
    treats them as observations at the worst finite value, so a failing
    region is not proposed again blindly. When the buffer is full a new
    observation replaces a failed row first, else the worst row if it is
    better; the buffer thus keeps the best ``capacity`` observations.

    If the GP cannot be factorised even with the largest jitter, the ask
    falls back to uniform points and ``state.gp_failures`` counts it.

    Args:
      space: the ``Space``.
      popsize: points per ``ask``.
      capacity: rows of the observation buffer (``>= popsize``); the cost of
        an ask grows as ``capacity**3``, whatever the count.
      acquisition: ``"logei"`` (default), ``"ucb"`` or ``"ts"``.
      n_init: initial design size.
      beta: default UCB exploration weight (``params["beta"]``), on
        standardised values.
      min_noise: default noise-variance floor (``params["min_noise"]``), in
        standardised units.
      fit_steps, fit_starts: L-BFGS iterations and starts of the hyperparameter fit.
      num_candidates: Sobol candidates per chosen point; num_local: more
        candidates around the incumbent.
      restarts, acq_steps, acq_learning_rate: the gradient refinement.
    """

    def __init__(self, space: Space, popsize: int = 1, capacity: int = 256,
                 acquisition: str = "logei", *, n_init: int = 10, beta: float = 4.0,
                 min_noise: float = 1e-6, fit_steps: int = 20, fit_starts: int = 2,
                 num_candidates: int = 512, num_local: int = 256, restarts: int = 8,
                 acq_steps: int = 40, acq_learning_rate: float = 0.05):
        super().__init__(space, popsize)
        self.capacity = check_int("capacity", capacity, 1)
        if self.capacity < self.popsize:
            raise ValueError(f"capacity must be >= popsize ({self.popsize}), got {self.capacity}")
        self.acquisition = check_choice("acquisition", acquisition, ACQUISITIONS)
        self.n_init = check_int("n_init", n_init, 1)
        self.beta = _check_beta(beta)
        self.min_noise = _check_min_noise(min_noise)
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
        # Static numpy tables (underscore: not settings, excluded from hashing).
        self._mixed = MixedCoords(space)
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

    @property
    def num_design(self) -> int:
        """Initial design points: ``n_init`` rounded up to whole generations."""
        return math.ceil(self.n_init / self.popsize) * self.popsize

    def default_params(self):
        return {"beta": jnp.float32(self.beta), "min_noise": jnp.float32(self.min_noise)}

    def init(self, key, params=None):
        check_concrete_params(params, {"beta": _check_beta, "min_noise": _check_min_noise})
        return super().init(key, params)

    # ------------------------------------------------------------ helpers
    def _sobol(self, key: jax.Array, n: int) -> jax.Array:
        """``(n, dim)`` scrambled Sobol points (uniform ones without quasirandom)."""
        if QuasiRandom is None:
            return self.space.sample(key, n)
        qr = QuasiRandom(self.space, n, method="sobol")
        k_init, k_ask = jax.random.split(key)
        x, _ = qr.ask(k_ask, qr.init(k_init))
        return x

    def _snap(self, x: jax.Array) -> jax.Array:
        return self._mixed.snap(x)

    def _init(self, key, params):
        cap, dim = self.capacity, self.dim
        return GPBOState(
            params=params,
            x=jnp.full((cap, dim), 0.5, jnp.float32),
            y=jnp.zeros((cap,), jnp.float32),
            status=jnp.zeros((cap,), jnp.int32),
            count=jnp.array(0, jnp.int32),
            kernel=gp.default_kernel_params(dim),
            design=self._snap(self._sobol(key, self.num_design)),
            gp_failures=jnp.array(0, jnp.int32),
            **initial_best(dim),
        )

    # ---------------------------------------------------------------- ask
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

        x, kernel, ok = jax.lax.cond(use_model, lambda k: self._model_ask(k, state), from_design, key)
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
                                      min_noise, self.fit_steps, self.fit_starts)
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
            x = self._maximize(key, post, incumbent, best_z, params)
            mean, _ = gp.predict(post, x[None], cat, card)
            if extra > 0:
                # Fantasy row j holds the believed value at the j-th chosen point.
                row = jnp.minimum(self.capacity + j, xb.shape[0] - 1)
                write = j < extra
                xb = jnp.where(write, xb.at[row].set(x), xb)
                yb = jnp.where(write, yb.at[row].set(mean[0]), yb)
                mb = jnp.where(write, mb.at[row].set(True), mb)
            return (xb, yb, mb, ok & post.ok), x

        keys = jax.random.split(k_batch, self.popsize)
        steps = (jnp.arange(self.popsize), keys)
        (_, _, _, ok), x = jax.lax.scan(choose, (xb, yb, mb, jnp.array(True)), steps)
        fallback = self._snap(self.space.sample(k_fallback, self.popsize))
        return jnp.where(ok, x, fallback), kernel, ok

    def _candidates(self, key: jax.Array, incumbent: jax.Array) -> jax.Array:
        """``(num_candidates + num_local, dim)`` snapped candidate points."""
        k_sobol, k_dir, k_scale = jax.random.split(key, 3)
        cands = self._sobol(k_sobol, self.num_candidates)
        if self.num_local:
            # Multi-scale perturbations of the incumbent: the acquisition's
            # maximum is often within a lengthscale of the best point, at a
            # scale no global candidate set resolves.
            log_scale = jax.random.uniform(k_scale, (self.num_local, 1), minval=math.log(1e-3),
                                           maxval=math.log(0.3))
            step = jax.random.normal(k_dir, (self.num_local, self.dim)) * jnp.exp(log_scale)
            local = jnp.clip(incumbent + step, 0.0, 1.0)
            cands = jnp.concatenate([cands, local])
        return self._snap(cands)

    def _maximize(self, key, post, incumbent, best_z, params):
        cat, card = self._categorical, self._card
        k_cand, k_ts = jax.random.split(key)
        cands = self._candidates(k_cand, incumbent)
        if self.acquisition == "ts":
            sample = acqf.thompson_sample(k_ts, post, cands, cat, card)
            return cands[jnp.argmin(sample)]

        def acq(x):
            mean, var = gp.predict(post, x, cat, card)
            if self.acquisition == "logei":
                return acqf.log_ei(mean, var, best_z)
            return acqf.ucb(mean, var, params["beta"])

        x, _ = acqf.maximize(acq, cands, self._snap, ~self._categorical, self.restarts,
                             self.acq_steps, self.acq_learning_rate, self._cat_options)
        return x

    # --------------------------------------------------------------- tell
    def _tell(self, state, x, values):
        x = self._snap(x)

        def insert(i, s):
            xs, ys, status, count = s
            v = values[i]
            full = count >= self.capacity
            # Replacement order when full: failed rows first, then the worst value.
            score = jnp.where(status == _FAILED, jnp.inf, jnp.where(status == _OBSERVED, ys, -jnp.inf))
            worst = jnp.argmax(score)
            slot = jnp.where(full, worst, jnp.minimum(count, self.capacity - 1))
            finite = jnp.isfinite(v)
            accept = ~full | (finite & (v < score[worst]))
            xs = jnp.where(accept, xs.at[slot].set(x[i]), xs)
            ys = jnp.where(accept, ys.at[slot].set(jnp.where(finite, v, 0.0)), ys)
            status = jnp.where(accept, status.at[slot].set(jnp.where(finite, _OBSERVED, _FAILED)), status)
            count = jnp.minimum(count + 1, self.capacity)
            return xs, ys, status, count

        xs, ys, status, count = jax.lax.fori_loop(
            0, self.popsize, insert, (state.x, state.y, state.status, state.count))
        return state._replace(x=xs, y=ys, status=status, count=count)
