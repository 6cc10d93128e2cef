"""Acquisition functions for GP-BO and their maximisation over the cube.

All acquisitions are written for minimisation and are *maximised*:

* ``log_ei``: the log of expected improvement below the incumbent, computed
  stably for any ``z`` (Ament et al. 2023, "Unexpected improvements to
  expected improvement"): where EI underflows in float32 (``z`` below about
  -13) its log is still finite, accurate and increasing in ``z``, so the
  optimiser keeps a useful signal far from the incumbent.
* ``ucb``: the lower confidence bound ``mean - sqrt(beta) std``, negated.
* ``thompson_sample``: one joint posterior draw over a finite candidate set.
* ``log_feasibility``: ``sum_j log P(c_j(x) <= t_j)`` under independent GP
  posteriors of the constraints, the factor that turns EI into constrained
  EI (Gardner et al. 2014; Gelbart, Snoek & Adams 2014), computed with
  ``log_ndtr`` so it stays finite and informative far inside the
  infeasible region.
* ``constrained_thompson_choice``: the pick of constrained Thompson
  sampling (Eriksson & Poloczek 2021, SCBO) from joint draws of the
  objective and the constraints.

``maximize`` is the vmapped multistart used by ``GPBO``: score many
candidates, refine the best few by projected gradient ascent inside the cube,
snap integer/categorical coordinates to bin centres, and enumerate the
categories of the winner's categorical coordinates.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfcx, log_ndtr, ndtr

from .gp import Posterior, predict_joint, safe_cholesky

__all__ = ["log_h", "log_ei", "ucb", "thompson_sample", "log_feasibility",
           "constrained_thompson_choice", "maximize"]

_C1 = 0.5 * math.log(2.0 * math.pi)  # log sqrt(2 pi)
_C2 = 0.5 * math.log(0.5 * math.pi)  # log sqrt(pi / 2)
# Below z = -_T the asymptotic series of 1 - t R(t) (R the Mills ratio) is
# used: at t = 8 its truncation error is ~1e-5 relative, while the erfcx form
# would lose digits to the cancellation 1 - t R(t) ~ 1/t^2 in float32.
_T = 8.0


def _log1mexp(x: jax.Array) -> jax.Array:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and far from it (Maechler 2012)."""
    x = jnp.minimum(x, -1e-30)
    return jnp.where(x > -math.log(2.0), jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def log_h(z: jax.Array) -> jax.Array:
    """``log(phi(z) + z Phi(z))``, finite and increasing for every ``z`` whose
    square is finite in its dtype (``-z^2/2`` is the leading term: in
    float32, ``z`` below about ``-2.6e19`` gives ``-inf``).

    Three branches (each fed a clamped ``z``, so no branch produces a NaN
    gradient that ``where`` would let through):

    * ``z > -1``: the direct formula (``h >= h(-1) ~ 0.083``, no cancellation);
    * ``-8 <= z <= -1``: ``-z^2/2 - log sqrt(2 pi) + log1mexp(log(erfcx(-z/sqrt2) |z|) + log sqrt(pi/2))``
      (Ament et al. 2023, eq. 9);
    * ``z < -8``: ``h = phi(z) (1 - t R(t))``, ``t = -z``, with the asymptotic
      series ``1 - t R(t) = t^-2 (1 - 3 t^-2 + 15 t^-4 - 105 t^-6 + 945 t^-8)``.

    Args:
      z: any shape.
    """
    z1 = jnp.maximum(z, -1.0)
    b1 = jnp.log(jnp.exp(-0.5 * z1 * z1 - _C1) + z1 * ndtr(z1))
    # (where, not clip: clip halves the gradient at its bounds, where this branch is taken)
    z2 = jnp.where((z <= -1.0) & (z >= -_T), z, -1.0)
    t2 = -z2
    b2 = -0.5 * z2 * z2 - _C1 + _log1mexp(jnp.log(erfcx(t2 / math.sqrt(2.0)) * t2) + _C2)
    t3 = -jnp.minimum(z, -_T)
    u = 1.0 / (t3 * t3)
    series = 1.0 + u * (-3.0 + u * (15.0 + u * (-105.0 + u * 945.0)))
    b3 = -0.5 * t3 * t3 - _C1 - 2.0 * jnp.log(t3) + jnp.log(series)
    return jnp.where(z > -1.0, b1, jnp.where(z >= -_T, b2, b3))


def log_ei(mean: jax.Array, var: jax.Array, best: jax.Array) -> jax.Array:
    """Log expected improvement below ``best`` (minimisation); same shape as ``mean``.

    ``EI = sigma * h((best - mean) / sigma)``, so ``log EI = log h(z) + log sigma``.
    ``var`` must be positive (``gp.predict`` floors it): at ``0`` the ratio
    is undefined and the result NaN.
    """
    sigma = jnp.sqrt(var)
    return log_h((best - mean) / sigma) + jnp.log(sigma)


def ucb(mean: jax.Array, var: jax.Array, beta: jax.Array) -> jax.Array:
    """Negated lower confidence bound ``-(mean - sqrt(beta) sigma)`` (maximised)."""
    return -mean + jnp.sqrt(beta * var)


def log_feasibility(mean: jax.Array, var: jax.Array, threshold: jax.Array) -> jax.Array:
    """``sum_j log Phi((t_j - mean_j) / sigma_j)``: the log probability that every constraint holds.

    Each constraint ``j`` has its own GP; ``P(c_j(x) <= t_j)`` under its
    Gaussian posterior is ``Phi((t_j - mean_j) / sigma_j)``, and independent
    GPs multiply, so their logs add. ``log_ndtr`` keeps the log accurate
    where ``Phi`` underflows (deep in the infeasible region), so the
    gradient still points towards feasibility there.

    Args:
      mean, var: ``(..., c)`` posterior means and variances of the constraints.
      threshold: ``(c,)`` the feasibility bound of each constraint, in the
        units of ``mean`` (0 in raw units, ``-mu_j / sd_j`` after standardising).
    Returns:
      ``(...)`` log probabilities (0 when ``c = 0``).
    """
    return jnp.sum(log_ndtr((threshold - mean) / jnp.sqrt(var)), axis=-1)


def constrained_thompson_choice(objective: jax.Array, constraints: jax.Array,
                                threshold: jax.Array, scale: jax.Array) -> jax.Array:
    """Index of the candidate chosen by constrained Thompson sampling (SCBO).

    Eriksson & Poloczek (2021): among the candidates whose sampled
    constraints all hold, the one with the lowest sampled objective; if no
    candidate is feasible under the draw, the one with the lowest sampled
    total violation.

    Args:
      objective: ``(n,)`` one draw of the objective at ``n`` candidates.
      constraints: ``(c, n)`` one draw of each constraint there.
      threshold: ``(c,)`` feasibility bounds, in the units of ``constraints``.
      scale: ``(c,)`` positive factors turning each constraint's excess over
        its bound into raw units (its standard deviation), so that
        violations of different constraints add up in the user's units.
    Returns:
      ``()`` int index.
    """
    excess = jnp.maximum(constraints - threshold[:, None], 0.0) * scale[:, None]
    violation = jnp.sum(excess, axis=0)
    feasible = violation <= 0.0
    score = jnp.where(jnp.any(feasible), jnp.where(feasible, objective, jnp.inf), violation)
    return jnp.argmin(score)


def thompson_sample(key: jax.Array, post: Posterior, xs: jax.Array, categorical: np.ndarray,
                    card: np.ndarray) -> jax.Array:
    """One joint posterior draw of the latent function at ``xs (m, dim)``, shape ``(m,)``.

    The posterior covariance gets adaptive jitter (``safe_cholesky``); if it
    still fails, the draw degrades to independent marginals rather than NaN.
    """
    mean, cov = predict_joint(post, xs, categorical, card)
    m = xs.shape[0]
    scale = jnp.maximum(jnp.max(jnp.diagonal(cov)), 1e-10)
    L, ok, _ = safe_cholesky(cov, jnp.ones((m,), bool), scale)
    diag = jnp.sqrt(jnp.maximum(jnp.diagonal(cov), 0.0))
    L = jnp.where(ok, L, jnp.diag(diag))
    return mean + L @ jax.random.normal(key, (m,), xs.dtype)


def is_taken(x: jax.Array, taken: jax.Array, taken_mask: jax.Array) -> jax.Array:
    """``(k,)`` bool: which points ``x`` ``(k, dim)`` equal, in every coordinate,
    one of the ``taken`` rows ``(t, dim)`` where ``taken_mask`` ``(t,)`` is True."""
    return jnp.any(jnp.all(x[:, None, :] == taken[None], axis=-1) & taken_mask[None], axis=1)


def maximize(acq: Callable[[jax.Array], jax.Array], candidates: jax.Array, snap: Callable,
             movable: np.ndarray, restarts: int, steps: int, learning_rate: float,
             cat_options: tuple[np.ndarray, np.ndarray] | None = None,
             precondition: jax.Array | None = None, taken: jax.Array | None = None,
             taken_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Maximise ``acq`` over the cube by a vmapped multistart.

    1. Score every candidate (already snapped); keep the ``restarts`` best.
    2. Refine them together by ``steps`` of projected gradient ascent on the
       ``movable`` coordinates, steps of length ``lr * |g| / max|g|`` with
       ``lr`` decaying 100x over the run, remembering each start's best point
       along its path; ``g`` is the gradient scaled coordinatewise by
       ``precondition`` when given.
    3. Snap, score again, and keep the best of refined and unrefined starts,
       so refinement never makes the answer worse.
    4. Enumerate every category of every categorical coordinate of the
       winner (one coordinate at a time) and keep the best.

    Args:
      acq: ``(k, dim) -> (k,)`` acquisition values (higher is better).
      candidates: ``(c, dim)`` cube points, ``c >= restarts``.
      snap: ``(..., dim) -> (..., dim)``, moves discrete coordinates to bin centres.
      movable: numpy bool ``(dim,)``, coordinates the gradient may move
        (float and integer ones; categoricals are enumerated instead).
      cat_options: ``(coords (r,), centres (r,))`` numpy arrays listing every
        (categorical coordinate, bin centre) pair, or ``None``.
      precondition: ``(dim,)`` positive factors multiplying the gradient,
        or ``None``. ``GPBO(acq_precondition=True)`` passes its kernel's
        squared lengthscales: the acquisition of an ARD kernel varies along
        coordinate ``d`` on the scale ``lengthscale_d``, so its curvature
        there goes as ``lengthscale_d^-2`` and the scaled gradient is a
        diagonal Newton step (Optuna's GPSampler runs its L-BFGS-B in
        lengthscale-scaled coordinates for the same reason).
      taken: ``(t, dim)`` points not to return (those already evaluated or
        chosen), where ``taken_mask`` ``(t,)`` is True: a point equal to one
        of them in every coordinate scores ``-inf``, unless no other point
        found has a finite score (a small discrete space all evaluated).
    Returns:
      ``(x (dim,), value ())``.
    """

    def raw(x):
        v = acq(x)
        return jnp.where(jnp.isfinite(v), v, -jnp.inf)

    def unfresh(x, v):
        if taken is None:
            return v
        return jnp.where(is_taken(x, taken, taken_mask), -jnp.inf, v)

    def score(x):
        return unfresh(x, raw(x))

    values_raw = raw(candidates)
    values = unfresh(candidates, values_raw)
    top_v, top_i = jax.lax.top_k(values, restarts)
    x0 = candidates[top_i]
    best_x, best_v = x0, top_v
    if steps > 0 and np.any(movable):
        move = jnp.asarray(movable)
        rates = learning_rate * 0.01 ** (jnp.arange(steps, dtype=jnp.float32) / max(steps - 1, 1))

        def step(carry, lr):
            x, gmax, bx, bv = carry
            v, pullback = jax.vjp(acq, x)
            (g,) = pullback(jnp.ones_like(v))
            g = jnp.where(move & jnp.isfinite(g), g, 0.0)
            if precondition is not None:
                g = g * precondition
            better = jnp.isfinite(v) & (v > bv)
            bx = jnp.where(better[:, None], x, bx)
            bv = jnp.where(better, v, bv)
            # Gradient steps of length lr * |g| / max |g| seen so far: as
            # large as lr on steep ground and vanishing where the gradient
            # does. Unlike Adam (whose steps stay ~lr even when the gradient
            # is rounding noise), the path is then a Lipschitz function of
            # the gradients, so float rounding cannot send two identical
            # searches (e.g. one vmapped) to different maxima.
            gnorm = jnp.sqrt(jnp.sum(g * g, axis=-1, keepdims=True))
            gmax = jnp.maximum(gmax, gnorm)
            x = jnp.clip(x + lr * g / jnp.maximum(gmax, 1e-30), 0.0, 1.0)
            return (x, gmax, bx, bv), None

        init = (x0, jnp.zeros((restarts, 1), x0.dtype), x0, top_v)
        (x, _, bx, bv), _ = jax.lax.scan(step, init, rates)
        refined = snap(jnp.concatenate([bx, x]))
        pool = jnp.concatenate([refined, x0])
        pool_v = score(pool)
        i = jnp.argmax(pool_v)
        best_x, best_v = pool[i], pool_v[i]
    else:
        i = jnp.argmax(best_v)
        best_x, best_v = best_x[i], best_v[i]
    if cat_options is not None:
        coords, centres = cat_options
        onehot = jnp.asarray(np.arange(candidates.shape[1])[None, :] == coords[:, None])
        # (snapped: a category of a conditional parent may change which coordinates count)
        neighbours = snap(jnp.where(onehot, jnp.asarray(centres, jnp.float32)[:, None], best_x[None, :]))
        nv = score(neighbours)
        j = jnp.argmax(nv)
        take = nv[j] > best_v
        best_x = jnp.where(take, neighbours[j], best_x)
        best_v = jnp.where(take, nv[j], best_v)
    if taken is not None:
        i = jnp.argmax(values_raw)
        fresh = jnp.isfinite(best_v)
        best_x = jnp.where(fresh, best_x, candidates[i])
        best_v = jnp.where(fresh, best_v, values_raw[i])
    return best_x, best_v
