"""A lean L-BFGS for small smooth problems (a GP's kernel hyperparameters).

Why not ``optax.lbfgs``: its zoom line search is a nest of while loops and
conditionals over many tiny arrays, and on the CPU each of those costs about
ten times the objective it searches (a GP log-likelihood with 200
observations: ~1.5 ms per value and gradient, ~16 ms per optax iteration).
Here an iteration is the two-loop recursion over at most ``memory`` pairs
(unrolled: the loop is static and short) and a backtracking Armijo search
that evaluates the value and gradient together, which almost always accepts
the first trial step, so an iteration costs about one evaluation.

Everything is fixed-shape and traceable; under ``vmap`` the starts iterate in
lockstep until every one has stopped.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["minimize", "LBFGSResult"]

# Armijo's sufficient-decrease constant and the step's shrink factor.
_C1 = 1e-4
_SHRINK = 0.5


class LBFGSResult(NamedTuple):
    x: jax.Array  # (n,) the last accepted point
    value: jax.Array  # () its value
    iterations: jax.Array  # () int32 iterations run


def _direction(g, S, Y, rho, stored, memory):
    """``-H g`` by the two-loop recursion; pairs live in rows ``memory - stored ..``, newest last.

    Both loops are scans over the ``memory`` rows (unrolled, they made the
    program ``4 memory`` dot products longer at every use).
    """
    used = jnp.arange(memory) >= memory - stored

    def first(q, row):
        s, y, r, u = row
        a = jnp.where(u, r * jnp.dot(s, q), 0.0)
        return q - a * y, a

    q, alphas = jax.lax.scan(first, g, (S, Y, rho, used), reverse=True)
    yy = jnp.dot(Y[-1], Y[-1])
    # Initial scaling s^T y / y^T y from the newest pair; before any pair,
    # a first step no longer than 1 (as scipy's L-BFGS-B).
    gamma = jnp.where(stored > 0, jnp.dot(S[-1], Y[-1]) / jnp.where(yy > 0, yy, 1.0),
                      1.0 / jnp.maximum(jnp.sqrt(jnp.dot(g, g)), 1.0))

    def second(r, row):
        s, y, rh, u, a = row
        b = rh * jnp.dot(y, r)
        return r + jnp.where(u, a - b, 0.0) * s, None

    r, _ = jax.lax.scan(second, gamma * q, (S, Y, rho, used, alphas))
    return -r


def minimize(value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]], x0: jax.Array,
             max_iter: int, tol: float = 1e-6, gtol: float | jax.Array = 1e-6, memory: int = 10,
             max_backtrack: int = 12) -> LBFGSResult:
    """Minimise a smooth function of a vector by L-BFGS with backtracking.

    Stops after ``max_iter`` iterations, when the gradient's largest entry
    is at most ``gtol`` (scipy's ``gtol``; checked before each iteration, so
    a converged warm start costs one evaluation), when an iteration lowers
    the value by at most ``tol`` relative (``tol * max(|f|, 1)``), or when
    no step along the direction decreases the value. The backtracking gives
    up once the decrease it asks for is below the value's float resolution
    (at a minimum, rounding noise would otherwise spend every trial step). A
    non-finite value counts as no decrease, so a point where the objective
    fails is never accepted.

    Args:
      value_and_grad: ``x (n,) -> (f (), g (n,))``.
      x0: ``(n,)`` start; its value must be finite for progress.
      max_iter: the most iterations (static).
      tol: relative decrease per iteration below which it stops.
      gtol: gradient max-norm below which it stops (may be traced).
      memory: stored curvature pairs (static).
      max_backtrack: the most step halvings per iteration (static).
    Returns:
      ``LBFGSResult``.
    """
    n = x0.shape[0]
    dt = x0.dtype
    f0, g0 = value_and_grad(x0)

    def search(x, f, g, d):
        """Backtracking from step 1 along ``d``: ``(x_new, f_new, g_new, accepted)``."""
        slope = jnp.dot(g, d)

        resolution = 8.0 * jnp.finfo(dt).eps * jnp.maximum(jnp.abs(f), jnp.finfo(dt).tiny)

        def cond(c):
            t, _, fn, _, k = c
            ok = jnp.isfinite(fn) & (fn <= f + _C1 * t * slope)
            return ~ok & (k < max_backtrack) & (-t * slope > resolution)

        def body(c):
            t, _, _, _, k = c
            t = t * _SHRINK
            xn = x + t * d
            fn, gn = value_and_grad(xn)
            return t, xn, fn, gn, k + 1

        xn = x + d
        fn, gn = value_and_grad(xn)
        _, xn, fn, gn, _ = jax.lax.while_loop(cond, body, (jnp.asarray(1.0, dt), xn, fn, gn, jnp.int32(0)))
        accepted = jnp.isfinite(fn) & (fn < f) & jnp.all(jnp.isfinite(gn))
        return xn, fn, gn, accepted

    def cond(c):
        _, _, g, *_, i, done = c
        return (i < max_iter) & ~done & (jnp.max(jnp.abs(g)) > gtol)

    def body(c):
        x, f, g, S, Y, rho, stored, i, _ = c
        d = _direction(g, S, Y, rho, stored, memory)
        # A direction that does not descend (stale curvature) falls back to
        # the scaled steepest descent.
        steepest = -g / jnp.maximum(jnp.sqrt(jnp.dot(g, g)), 1.0)
        d = jnp.where(jnp.dot(g, d) < 0, d, steepest)
        xn, fn, gn, accepted = search(x, f, g, d)
        s, y = xn - x, gn - g
        sy = jnp.dot(s, y)
        push = accepted & (sy > 1e-10 * jnp.sqrt(jnp.dot(s, s) * jnp.dot(y, y)))
        S = jnp.where(push, jnp.roll(S, -1, axis=0).at[-1].set(s), S)
        Y = jnp.where(push, jnp.roll(Y, -1, axis=0).at[-1].set(y), Y)
        rho = jnp.where(push, jnp.roll(rho, -1).at[-1].set(1.0 / jnp.where(sy != 0, sy, 1.0)), rho)
        stored = jnp.where(push, jnp.minimum(stored + 1, memory), stored)
        small = f - fn <= tol * jnp.maximum(jnp.abs(f), 1.0)
        x = jnp.where(accepted, xn, x)
        g = jnp.where(accepted, gn, g)
        f = jnp.where(accepted, fn, f)
        return x, f, g, S, Y, rho, stored, i + 1, ~accepted | small

    init = (x0, f0, g0, jnp.zeros((memory, n), dt), jnp.zeros((memory, n), dt), jnp.zeros((memory,), dt),
            jnp.int32(0), jnp.int32(0), ~jnp.isfinite(f0))
    x, f, _, _, _, _, _, i, _ = jax.lax.while_loop(cond, body, init)
    return LBFGSResult(x=x, value=f, iterations=i)
