"""Gaussian-process regression on a masked, fixed-size buffer of observations.

Every function works on a buffer ``x`` of shape ``(n, dim)`` (cube points),
``y`` of shape ``(n,)`` and a boolean ``mask`` of shape ``(n,)`` saying which
rows are observations. Masked rows never influence the model: their block of
the covariance is replaced by the identity and their residual by zero, so the
Cholesky factor, the log marginal likelihood and the posterior are exactly
those of the unmasked rows alone. Shapes never depend on how many rows are
valid, so a buffer that fills up never recompiles anything.

The kernel is Matern-5/2 with one lengthscale per coordinate (ARD):

    k(a, b) = s * m(r2),   m(r2) = (1 + sqrt(5 r2) + 5 r2 / 3) exp(-sqrt(5 r2)),
    r2 = sum_i (a_i - b_i)^2 / l_i^2          over float and integer coordinates
       + sum_j [a_j != b_j] / l_j^2           over categorical coordinates,

i.e. categorical coordinates enter through a Hamming distance (a category is
compared by its bin of the cube), as in Optuna's GPSampler. Kernel
hyperparameters are fitted by maximising the log marginal likelihood plus log
priors, by L-BFGS from several starts at once (``vmap``), warm-started from
the previous fit; the best start wins.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import _linalg as linalg
from . import _lbfgs

__all__ = [
    "KernelParams", "Posterior", "default_kernel_params", "kernel_matrix", "masked_gram",
    "log_marginal_likelihood", "log_prior", "fit_kernel_params", "factorize", "predict",
    "predict_joint", "standardize", "safe_cholesky", "JITTERS",
]

# Bounds on the fitted hyperparameters (log space). Lengthscales are in cube
# units: below ~1e-3 a kernel sees no two observations as related, above ~1e2
# a coordinate is irrelevant either way. They keep the optimiser away from the flat
# ends of the likelihood where float32 loses all resolution.
_LOG_LENGTHSCALE = (math.log(1e-3), math.log(1e2))
_LOG_SIGNAL = (math.log(1e-3), math.log(1e2))
_LOG_NOISE = (math.log(1e-9), math.log(2.0))
# Relative jitters tried, in order, until the Cholesky factor is finite
# (multiplied by the signal variance). The first is none at all: the noise
# floor usually suffices.
JITTERS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class KernelParams(NamedTuple):
    """Kernel hyperparameters (a pytree; leading axes allowed for batches of starts).

    Attributes:
      log_lengthscale: ``(dim,)`` log of the ARD lengthscales (cube units).
      log_signal: ``()`` log signal variance ``s``.
      log_noise: ``()`` log of the noise variance above the floor: the
        noise variance is ``min_noise + exp(log_noise)``.
    """

    log_lengthscale: jax.Array
    log_signal: jax.Array
    log_noise: jax.Array


class Posterior(NamedTuple):
    """A GP conditioned on a buffer: everything ``predict`` needs.

    Attributes:
      x: ``(n, dim)`` buffer.
      mask: ``(n,)`` bool, rows that are observations.
      chol: ``(n, n)`` lower Cholesky factor of the masked covariance.
      alpha: ``(n,)`` ``K^-1 y`` (zero on masked rows).
      kernel: the ``KernelParams``.
      ok: ``()`` bool, the factorisation is finite (at some jitter).
      jitter: ``()`` the jitter (absolute variance) that was needed.
    """

    x: jax.Array
    mask: jax.Array
    chol: jax.Array
    alpha: jax.Array
    kernel: KernelParams
    ok: jax.Array
    jitter: jax.Array


def default_kernel_params(dim: int) -> KernelParams:
    """Lengthscales 1 (the cube's size), unit signal variance, noise ``1e-2`` (standardised units)."""
    return KernelParams(
        log_lengthscale=jnp.zeros((dim,), jnp.float32),
        log_signal=jnp.zeros((), jnp.float32),
        log_noise=jnp.full((), math.log(1e-2), jnp.float32),
    )


def clip_kernel_params(p: KernelParams, fixed_noise: bool = False) -> KernelParams:
    """``p`` inside the fit's bounds; ``fixed_noise`` (static) collapses the
    noise's range to its lower bound, so the noise is held at its floor."""
    return KernelParams(
        jnp.clip(p.log_lengthscale, *_LOG_LENGTHSCALE),
        jnp.clip(p.log_signal, *_LOG_SIGNAL),
        jnp.clip(p.log_noise, _LOG_NOISE[0], _LOG_NOISE[0] if fixed_noise else _LOG_NOISE[1]),
    )


# ------------------------------------------------------------------ kernel
@jax.custom_jvp
def matern52(r2: jax.Array) -> jax.Array:
    """Matern-5/2 correlation as a function of the squared scaled distance ``r2``."""
    r = jnp.sqrt(5.0 * r2)
    return (1.0 + r + (5.0 / 3.0) * r2) * jnp.exp(-r)


@matern52.defjvp
def _matern52_jvp(primals, tangents):
    # d m / d r2 = -5/6 (1 + r) exp(-r) is finite at r2 = 0, while autodiff
    # through sqrt would give 0 * inf = nan exactly at an observed point.
    (r2,), (dr2,) = primals, tangents
    r = jnp.sqrt(5.0 * r2)
    e = jnp.exp(-r)
    return (1.0 + r + (5.0 / 3.0) * r2) * e, (-5.0 / 6.0) * (1.0 + r) * e * dr2


def _scaled_sq_dist(p: KernelParams, a: jax.Array, b: jax.Array, categorical: np.ndarray,
                    card: np.ndarray) -> jax.Array:
    """``r2`` between every row of ``a (m, dim)`` and ``b (n, dim)``, shape ``(m, n)``."""
    inv_sq = jnp.exp(-2.0 * p.log_lengthscale)
    diff = a[:, None, :] - b[None, :, :]
    sq = diff * diff
    if np.any(categorical):
        # Categories are compared by bin, so any point inside a bin is that category.
        k = jnp.asarray(np.maximum(card, 1).astype(np.float32))
        ia = jnp.floor(a * k)
        ib = jnp.floor(b * k)
        neq = (ia[:, None, :] != ib[None, :, :]).astype(a.dtype)
        sq = jnp.where(jnp.asarray(categorical), neq, sq)
    # An elementwise product and a sum over the last axis (not einsum): XLA
    # then reduces in the same order with or without vmap batch axes, so a
    # vmapped search reproduces single runs.
    return jnp.sum(sq * inv_sq, axis=-1)


def kernel_matrix(p: KernelParams, a: jax.Array, b: jax.Array, categorical: np.ndarray,
                  card: np.ndarray) -> jax.Array:
    """Covariance ``k(a_i, b_j)``, shape ``(m, n)`` for ``a (m, dim)``, ``b (n, dim)``.

    Args:
      categorical: numpy bool ``(dim,)``, coordinates compared by Hamming distance.
      card: numpy int ``(dim,)`` number of categories per coordinate (used
        where ``categorical``).
    """
    return jnp.exp(p.log_signal) * matern52(_scaled_sq_dist(p, a, b, categorical, card))


def noise_variance(p: KernelParams, min_noise: jax.Array) -> jax.Array:
    return min_noise + jnp.exp(p.log_noise)


def _valid_rows_only(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``x`` with masked rows moved to the cube's centre: padding may hold
    anything (NaN, 1e30), and ``where`` on the kernel alone would still pass
    its gradient (NaN) into the kernel parameters' fit."""
    return jnp.where(mask[:, None], x, jnp.asarray(0.5, x.dtype))


def masked_gram(p: KernelParams, x: jax.Array, mask: jax.Array, categorical: np.ndarray,
                card: np.ndarray, min_noise: jax.Array, jitter: jax.Array = 0.0) -> jax.Array:
    """``K + (noise + jitter) I`` on valid rows, the identity on masked rows; ``(n, n)``."""
    n = x.shape[0]
    x = _valid_rows_only(x, mask)
    K = kernel_matrix(p, x, x, categorical, card)
    both = mask[:, None] & mask[None, :]
    diag = jnp.where(mask, noise_variance(p, min_noise) + jitter, 1.0)
    return jnp.where(both, K, 0.0) + jnp.diag(diag) * jnp.eye(n, dtype=x.dtype)


def safe_cholesky(A: jax.Array, mask: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Cholesky factor of ``A``, adding jitter to valid rows until it is finite.

    Tries ``JITTERS`` (times ``scale``) in order and stops at the first finite
    factor. Never fails silently: the returned flag says whether any jitter
    worked.

    Args:
      A: ``(n, n)`` symmetric matrix (from ``masked_gram``).
      mask: ``(n,)`` rows that get jitter.
      scale: ``()`` variance scale of the jitter (the signal variance).
    Returns:
      ``(L (n, n), ok (), jitter ())``.
    """
    jit_rel = jnp.asarray(JITTERS, A.dtype)
    eye = jnp.where(mask, 1.0, 0.0)

    def attempt(i):
        j = jit_rel[i] * scale
        L = linalg.cholesky(A + jnp.diag(eye * j))
        return L, jnp.all(jnp.isfinite(L)), j

    def cond(c):
        i, _, ok, _ = c
        return (~ok) & (i < len(JITTERS))

    def body(c):
        i, _, _, _ = c
        L, ok, j = attempt(i)
        return i + 1, L, ok, j

    L0, ok0, j0 = attempt(0)
    _, L, ok, j = jax.lax.while_loop(cond, body, (jnp.int32(1), L0, ok0, j0))
    return L, ok, j


# ------------------------------------------------------------ likelihood
@jax.custom_vjp
def _lml_of_gram(A: jax.Array, r: jax.Array) -> jax.Array:
    """``-r^T A^-1 r / 2 - log det(A) / 2`` for an SPD ``A (n, n)``; non-finite when the Cholesky fails."""
    value, _ = _lml_of_gram_fwd(A, r)
    return value


def _lml_of_gram_fwd(A, r):
    L = linalg.cholesky(A)
    v = linalg.solve_triangular(L, r, lower=True)
    alpha = linalg.solve_triangular(L, v, lower=True, trans=True)
    value = -0.5 * jnp.dot(v, v) - jnp.sum(jnp.log(jnp.diagonal(L)))
    return value, (L, alpha)


def _lml_of_gram_bwd(res, g):
    # d/dA = (alpha alpha^T - A^-1) / 2 and d/dr = -alpha: one triangular
    # inverse and one matmul, where reverse-mode through the Cholesky factor
    # costs several n-by-n triangular solves.
    L, alpha = res
    n = L.shape[0]
    Linv = linalg.solve_triangular(L, jnp.eye(n, dtype=L.dtype), lower=True)
    Ainv = Linv.T @ Linv
    dA = 0.5 * g * (alpha[:, None] * alpha[None, :] - Ainv)
    return dA, -g * alpha


_lml_of_gram.defvjp(_lml_of_gram_fwd, _lml_of_gram_bwd)


def log_marginal_likelihood(p: KernelParams, x: jax.Array, y: jax.Array, mask: jax.Array,
                            categorical: np.ndarray, card: np.ndarray,
                            min_noise: jax.Array, jitter: jax.Array = 0.0) -> jax.Array:
    """``log N(y | 0, K + noise I)`` over the valid rows only; ``()``.

    Masked rows contribute nothing: their block is the identity (log-det 0)
    and their residual is zero. Non-finite when the Cholesky fails. The
    gradient is the closed form ``((a a^T - K^-1) / 2) : dK`` (``a = K^-1 y``),
    one Cholesky and one triangular inverse per evaluation.
    """
    A = masked_gram(p, x, mask, categorical, card, min_noise, jitter)
    r = jnp.where(mask, y, 0.0)
    n_valid = jnp.sum(mask)
    return _lml_of_gram(A, r) - 0.5 * n_valid * math.log(2.0 * math.pi)


def log_prior(p: KernelParams, min_noise: jax.Array) -> jax.Array:
    """Log prior density of the hyperparameters (up to a constant), as in Optuna's GPSampler.

    With ``t = 1 / l^2`` the inverse squared lengthscale: ``-(0.1 / t + 0.1 t)``
    per coordinate (peaks at ``l = 1``, penalises both very short and very long
    lengthscales), a Gamma(2, 1) prior on the signal variance and a
    Gamma(1.1, 30) prior on the noise variance (most mass below 0.1 in
    standardised units: the objectives we tune are nearly deterministic).
    """

    def gamma(v, a, b):
        return (a - 1.0) * jnp.log(v) - b * v

    t = jnp.exp(-2.0 * p.log_lengthscale)
    return (-jnp.sum(0.1 / t + 0.1 * t) + gamma(jnp.exp(p.log_signal), 2.0, 1.0)
            + gamma(noise_variance(p, min_noise), 1.1, 30.0))


def fit_kernel_params(key: jax.Array, x: jax.Array, y: jax.Array, mask: jax.Array,
                      warm: KernelParams, categorical: np.ndarray, card: np.ndarray,
                      min_noise: jax.Array, steps: int = 20, starts: int = 2, tol: float = 1e-6,
                      fixed_noise: bool = False) -> KernelParams:
    """Maximum a posteriori hyperparameters by L-BFGS from several starts at once.

    Starts: ``warm`` (the previous fit: between generations the optimum
    moves little, so a few quasi-Newton steps from there suffice) and
    ``starts - 1`` random draws (lengthscales log-uniform over ``[0.05, 5]``,
    noise log-uniform over ``[1e-6, 1e-1]``, unit signal), which guard
    against the warm start sitting in a stale local optimum. Every start runs
    at most ``steps`` L-BFGS iterations with a backtracking line search
    (``_lbfgs.minimize``; ``vmap`` over starts), stopping early once an
    iteration improves the objective by less than ``tol`` relative or the
    gradient's largest entry is below Optuna's ``gtol`` (1e-2 on the
    unscaled objective). The hyperparameters are clipped
    to their bounds inside the objective; a non-finite objective (a failed
    Cholesky) is never accepted by the line search. The start with the best final
    objective wins; if none is finite, ``warm``.

    Args:
      x: ``(n, dim)``; y: ``(n,)`` standardised; mask: ``(n,)`` valid rows.
      steps: the most L-BFGS iterations per start.
      starts: number of starts, ``>= 1``.
      tol: relative decrease per iteration below which a start stops.
      fixed_noise: static; the noise variance is not fitted but held at its
        floor, ``min_noise`` (plus ``exp`` of the lowest ``log_noise``,
        1e-9): for a deterministic objective, whose GP should interpolate
        the observations rather than explain part of them as noise.
    Returns:
      ``KernelParams`` with leaves of shape ``(dim,)``, ``()``, ``()``.
    """
    warm = clip_kernel_params(warm, fixed_noise)

    def objective(p):
        # Scaled by the number of observations, so the line search's first
        # trial step means the same with 5 points as with 500.
        p = clip_kernel_params(p, fixed_noise)
        n = jnp.maximum(jnp.sum(mask), 1)
        lml = log_marginal_likelihood(p, x, y, mask, categorical, card, min_noise)
        return -(lml + log_prior(p, min_noise)) / n

    _, unravel = ravel_pytree(warm)

    def value_and_grad(flat):
        v, g = jax.value_and_grad(lambda f: objective(unravel(f)))(flat)
        return v, jnp.where(jnp.isfinite(g), g, 0.0)

    def run(p0):
        # Optuna's GPSampler stops at scipy's gtol = 1e-2 on the unscaled
        # negative log posterior; the same criterion on this scaled one.
        gtol = 1e-2 / jnp.maximum(jnp.sum(mask), 1).astype(jnp.float32)
        res = _lbfgs.minimize(value_and_grad, ravel_pytree(p0)[0], steps, tol, gtol)
        # The objective clips, so res.value is the clipped point's value.
        return clip_kernel_params(unravel(res.x), fixed_noise), res.value

    if starts == 1:
        # Not vmapped: a batch of one still pays for batched linear algebra.
        final, losses = jax.tree_util.tree_map(lambda a: a[None], run(warm))
    else:
        dim, n_rand = x.shape[1], starts - 1
        k_ls, k_noise = jax.random.split(key)
        rand = KernelParams(
            log_lengthscale=jax.random.uniform(k_ls, (n_rand, dim), jnp.float32, minval=math.log(0.05),
                                               maxval=math.log(5.0)),
            log_signal=jnp.zeros((n_rand,), jnp.float32),
            log_noise=jax.random.uniform(k_noise, (n_rand,), jnp.float32, minval=math.log(1e-6),
                                         maxval=math.log(1e-1)),
        )
        init = jax.tree_util.tree_map(lambda w, r: jnp.concatenate([w[None], r]), warm, rand)
        final, losses = jax.vmap(run)(init)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    i = jnp.argmin(losses)
    best = jax.tree_util.tree_map(lambda a: a[i], final)
    any_ok = jnp.isfinite(losses[i])
    return jax.tree_util.tree_map(lambda b, w: jnp.where(any_ok, b, w), best, warm)


# --------------------------------------------------------------- posterior
def standardize(y: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(y - mean) / std`` over the valid rows; masked rows become 0.

    Returns ``(z (n,), mean (), std ())``. With fewer than two distinct valid
    values the std is the power of two the values are first scaled by
    (``2**floor(log2(max |y|))``; 1 when the largest magnitude is in
    ``[1, 2)`` or all are 0), so nothing divides by zero and
    ``z = (y - mean) / std`` still holds.
    """
    n = jnp.sum(mask)

    def row_sum(a):
        # A sequential sum: XLA reduces a lone vector and a vmapped batch of
        # vectors in different orders, which would make vmapped searches
        # drift from single runs; n scalar adds cost nothing here.
        return jax.lax.fori_loop(0, a.shape[0], lambda i, acc: acc + a[i], jnp.zeros((), a.dtype))

    # The values are scaled by a power of two first, exactly, to a largest
    # magnitude near 1: the squares of values beyond 2**60 (up to float32's
    # largest, a finite value's worst) would overflow, and those of values
    # below 1e-10 fall under the constant-values threshold (or underflow).
    # The powers are built from their exponent bits (exp2 rounds, and a result
    # just below 2**-126, float32's smallest normal, is flushed to 0).
    top = jnp.max(jnp.where(mask, jnp.abs(y), 0.0)).astype(jnp.float32)
    power = jnp.where(top > 0.0, jnp.clip(jnp.floor(jnp.log2(top)), -126.0, 126.0), 0.0).astype(jnp.int32)
    scale = jax.lax.bitcast_convert_type((127 + power) << 23, jnp.float32).astype(y.dtype)
    y = y * jax.lax.bitcast_convert_type((127 - power) << 23, jnp.float32).astype(y.dtype)
    # Times reciprocals, not divided by the count and the std: XLA rewrites a
    # division by a broadcast scalar as this product in some compilations and
    # not others (a vmapped batch of columns, a replicated multi-device
    # program), which then round apart from a single-device, single-column one.
    inv_n = 1.0 / jnp.maximum(n, 1).astype(y.dtype)
    mean = row_sum(jnp.where(mask, y, 0.0)) * inv_n
    var = row_sum(jnp.where(mask, (y - mean) ** 2, 0.0)) * inv_n
    std = jnp.where(var > 1e-20, jnp.sqrt(var), 1.0)
    return jnp.where(mask, (y - mean) * (1.0 / std), 0.0), mean * scale, std * scale


def factorize(p: KernelParams, x: jax.Array, y: jax.Array, mask: jax.Array,
              categorical: np.ndarray, card: np.ndarray, min_noise: jax.Array) -> Posterior:
    """Condition the GP on the valid rows of ``(x (n, dim), y (n,))``.

    Uses ``safe_cholesky``; if even the largest jitter fails, or the weights
    come out non-finite (a non-finite ``y``), the returned posterior is the
    prior (``ok`` is False, so callers count the fallback) rather than NaN.
    """
    A = masked_gram(p, x, mask, categorical, card, min_noise)
    L, ok, jitter = safe_cholesky(A, mask, jnp.exp(p.log_signal))
    n = x.shape[0]
    eye = jnp.eye(n, dtype=x.dtype)
    L = jnp.where(ok, L, eye)
    mask = mask & ok
    r = jnp.where(mask, y, 0.0)
    alpha = linalg.cho_solve(L, r)
    finite = jnp.all(jnp.isfinite(alpha))
    ok, mask = ok & finite, mask & finite
    L, alpha = jnp.where(finite, L, eye), jnp.where(finite, alpha, 0.0)
    return Posterior(x=_valid_rows_only(x, mask), mask=mask, chol=L, alpha=alpha, kernel=p, ok=ok, jitter=jitter)


def predict(post: Posterior, xs: jax.Array, categorical: np.ndarray, card: np.ndarray,
            min_var: float = 1e-10) -> tuple[jax.Array, jax.Array]:
    """Posterior mean and variance of the latent function at ``xs (m, dim)``.

    Returns ``(mean (m,), var (m,))``; the variance is floored at
    ``min_var`` so its square root has a finite gradient.
    """
    kx = kernel_matrix(post.kernel, xs, post.x, categorical, card)
    kx = jnp.where(post.mask[None, :], kx, 0.0)
    # Products summed over the last axis rather than matmuls, here and in
    # the kernel: the reduction order then does not depend on vmap batch
    # axes, so vmapped searches reproduce single runs bit for bit.
    mean = jnp.sum(kx * post.alpha, axis=-1)
    v = linalg.solve_triangular(post.chol, kx.T, lower=True).T
    var = jnp.exp(post.kernel.log_signal) - jnp.sum(v * v, axis=-1)
    return mean, jnp.maximum(var, min_var)


def predict_joint(post: Posterior, xs: jax.Array, categorical: np.ndarray,
                  card: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """Posterior mean ``(m,)`` and covariance ``(m, m)`` of the latent function at ``xs``."""
    kx = kernel_matrix(post.kernel, xs, post.x, categorical, card)
    kx = jnp.where(post.mask[None, :], kx, 0.0)
    mean = kx @ post.alpha
    v = linalg.solve_triangular(post.chol, kx.T, lower=True)
    cov = kernel_matrix(post.kernel, xs, xs, categorical, card) - v.T @ v
    return mean, 0.5 * (cov + cov.T)
