"""Implicit differentiation: hypergradients of an inner solution by the implicit function theorem.

If ``w*(h)`` solves ``F(w*(h), h) = 0`` (``F`` the optimality condition, e.g.
the training loss's gradient in ``w``), then

    dw*/dh = -(dF/dw)^{-1} dF/dh,

whatever algorithm found ``w*``. ``implicit`` wraps a solver so that
``jax.jvp`` and ``jax.grad`` use that formula: the solver is run but never
differentiated, and the linear system in ``dF/dw`` is solved matrix-free
(Jacobian-vector products only) by conjugate gradients or a truncated Neumann
series. The linear solve is a ``lax.custom_linear_solve``, so reverse mode
solves the transposed system with the same method.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from ..strategies._checks import scalar_item
from ._checks import check_callable, check_choice, check_positive_int, check_real

__all__ = ["implicit", "conjugate_gradient", "neumann", "METHODS"]

METHODS = ("cg", "neumann")


def _check_solver_arg(name: str, value: Any, check: Callable, **bounds: Any) -> Any:
    """``check(name, value, **bounds)`` for a concrete value (a number or a 0-d
    array); a traced one is passed through."""
    if isinstance(value, jax.core.Tracer):
        return value
    return check(name, scalar_item(value), **bounds)


def _checked_matvec(matvec: Callable, b: jax.Array) -> Callable:
    """``matvec`` returning ``b``'s dtype, or a ``ValueError`` (at trace time)
    naming it when it maps ``b``'s shape to another."""
    if not callable(matvec):
        raise TypeError(f"matvec must be callable v -> A v, got {type(matvec).__name__}")
    out = jax.eval_shape(matvec, b)
    if not hasattr(out, "shape") or out.shape != b.shape:
        raise ValueError(f"matvec must map a vector of b's shape {b.shape} to one of the same shape, got "
                         f"{getattr(out, 'shape', type(out).__name__)}")

    def checked(v):
        return matvec(v).astype(b.dtype)

    return checked


def _check_rhs(b: Any) -> jax.Array:
    """``b`` as a floating-point ``(m,)`` array, or a ``TypeError`` naming it."""
    try:
        b = jnp.asarray(b)
    except TypeError:
        raise TypeError(f"b must be a floating-point (m,) array, got {type(b).__name__}") from None
    if not jnp.issubdtype(b.dtype, jnp.inexact) or b.ndim != 1:
        raise TypeError(f"b must be a floating-point (m,) array, got shape {b.shape} of dtype {b.dtype}")
    return b


def conjugate_gradient(matvec: Callable, b: jax.Array, *, maxiter: int, tol: float | None = None) -> jax.Array:
    """Solve ``A x = b`` for symmetric definite ``A`` by conjugate gradients.

    Positive definite ``A`` is CG's case; a negative definite one gives the
    same iterates as ``-A`` does for ``-b`` (a residual written as the
    negative gradient of a training loss, say).

    Args:
      matvec: ``v -> A v`` on vectors of shape ``(m,)``, in ``b``'s dtype.
      b: ``(m,)`` right-hand side.
      maxiter: most iterations (``m`` suffice in exact arithmetic).
      tol: stop once ``||A x - b|| <= tol * ||b||``; ``None`` means
        ``100 * eps`` of ``b``'s dtype, or of float32 for a narrower one.
    Returns:
      ``x`` of shape ``(m,)`` and ``b``'s dtype, starting from ``0``; all
      ``nan`` where ``b`` or a product ``A v`` is not finite (a failed
      solve, not a zero one). The iterates and their dot products are kept
      in at least float32: ``matvec`` alone computes in ``b``'s dtype (in
      bfloat16, ``100 eps`` is a relative residual of 0.8, and a bfloat16
      recurrence stopped there, a third of the way to the solution).
    """
    maxiter = _check_solver_arg("maxiter", maxiter, check_positive_int)
    b = _check_rhs(b)
    in_dtype = _checked_matvec(matvec, b)
    dtype = b.dtype
    wide = jnp.promote_types(dtype, jnp.float32)
    if tol is None:
        tol = 100.0 * float(jnp.finfo(wide).eps)
    tol = _check_solver_arg("tol", tol, check_real, low=0.0)
    b = b.astype(wide)

    def matvec(v):  # the product in b's dtype, the recurrence in ``wide``
        return in_dtype(v.astype(dtype)).astype(wide)

    bnorm2 = jnp.vdot(b, b)
    stop2 = (tol ** 2) * bnorm2

    def cond(carry):
        _, r, _, rr, i, finite = carry
        return (i < maxiter) & (rr > stop2) & finite

    def body(carry):
        x, r, p, rr, i, finite = carry
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        finite = finite & jnp.isfinite(pap)
        # A is definite on exact inputs (p A p of one sign, zero only for
        # p = 0); the guard only keeps a round-off zero from turning the
        # iterate into nan.
        alpha = jnp.where(pap != 0, rr / jnp.where(pap != 0, pap, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = jnp.vdot(r, r)
        p = r + (rr_new / jnp.where(rr > 0, rr, 1)) * p
        return x, r, p, rr_new, i + 1, finite

    x0 = jnp.zeros_like(b)
    # A non-finite b stops the loop at once (rr > stop2 is false for nan):
    # without the flag that would return the zero start as a solution.
    x, *_, finite = lax.while_loop(cond, body, (x0, b, b, bnorm2, jnp.int32(0), jnp.isfinite(bnorm2)))
    return jnp.where(finite, x, jnp.nan).astype(dtype)


def neumann(matvec: Callable, b: jax.Array, *, maxiter: int, alpha: float) -> jax.Array:
    """Approximate ``A^{-1} b`` by the truncated Neumann series ``alpha sum_{k<K} (I - alpha A)^k b``.

    Converges when every eigenvalue of ``I - alpha A`` lies inside the unit
    circle (for symmetric positive-definite ``A``: ``0 < alpha < 2 / lambda_max``);
    the error after ``K = maxiter`` terms is ``(I - alpha A)^K A^{-1} b``.
    ``A`` need not be symmetric.

    Args:
      matvec: ``v -> A v`` on ``(m,)`` vectors (its result is cast to
        ``b``'s dtype).
      b: ``(m,)``.
    Returns:
      ``(m,)`` in ``b``'s dtype.
    """
    maxiter = _check_solver_arg("maxiter", maxiter, check_positive_int)
    alpha = _check_solver_arg("alpha", alpha, check_real, low=0.0, low_open=True)
    b = _check_rhs(b)
    matvec = _checked_matvec(matvec, b)

    def body(_, carry):
        term, total = carry
        term = term - alpha * matvec(term)
        return term, total + term

    _, total = lax.fori_loop(0, maxiter - 1, body, (b, b))
    return alpha * total


def _lists_as_tuples(tree: Any) -> Any:
    """``tree`` with its lists (and tuples, named or not) as plain tuples."""
    if isinstance(tree, (list, tuple)):
        return tuple(_lists_as_tuples(x) for x in tree)
    if isinstance(tree, dict):
        return {k: _lists_as_tuples(v) for k, v in tree.items()}
    return tree


def implicit(solve: Callable, optimality: Callable, *, method: str = "cg", maxiter: int = 100,
             tol: float | None = None, alpha: float = 1.0, damping: float = 0.0) -> Callable:
    """Make an inner solver differentiable by the implicit function theorem.

    Args:
      solve: ``solve(hparams) -> w``, any jax-traceable inner solver (it may
        iterate, stop early, use ``lax.while_loop``); it is never
        differentiated through, so its cost in a hypergradient is one run.
      optimality: ``optimality(w, hparams) -> residual`` with ``w``'s pytree
        structure, zero at the solution (for a minimisation: the gradient of
        the training loss in ``w``).
      method: ``"cg"``: conjugate gradients; needs ``dF/dw`` symmetric
        definite (a strictly convex training loss near ``w*``, its residual
        the gradient or minus the gradient), and
        is exact after ``dim(w)`` iterations in exact arithmetic. ``"neumann"``:
        the truncated Neumann series ``alpha sum_k (I - alpha dF/dw)^k``; any
        ``dF/dw`` with the spectrum of ``alpha dF/dw`` in the disc of radius 1
        around 1 (``0 < alpha < 2 / lambda_max`` for a Hessian).
      maxiter: CG iterations at most / Neumann terms (>= 1).
      tol: CG relative residual tolerance (``None``: ``100 eps`` of the
        dtype; ``0``: always ``maxiter`` iterations).
      alpha: Neumann step (> 0); ignored by CG.
      damping: solve with ``dF/dw + damping I`` instead (>= 0): a
        regularised (biased) hypergradient for ill-conditioned problems.

    Returns:
      ``w_star(hparams) -> w``, the solver's output, whose derivatives under
      ``jax.jvp``, ``jax.grad`` (and ``jax.jacfwd`` / ``jacrev``) are
      ``-(dF/dw + damping I)^{-1} dF/dh`` at ``(w, hparams)``: a
      Jacobian-vector product costs one linear solve, a vector-Jacobian
      product one transposed solve. ``hparams`` is any pytree of float arrays;
      ``w`` any pytree of float arrays (flattened for the solve). ``w_star``
      is jit- and vmap-able.

    The hypergradient is exact to the extent that ``w`` is a stationary
    point: an inner solve stopped early gives the IFT formula evaluated at
    the point it reached. So is the linear solve: CG stopped by ``maxiter``
    before ``tol``, CG on a ``dF/dw`` that is indefinite, or a
    Neumann series outside its disc returns an inexact hypergradient, with
    no flag raised (raise ``maxiter``, add ``damping``, or compare
    ``method``s where in doubt). Derivatives of every order take the formula
    (``jax.hessian`` of an outer loss never differentiates ``solve``).

    Everything to be differentiated goes in through ``hparams``: ``solve``
    and ``optimality`` may close over constants (the training data), not over
    a value a surrounding ``jax.grad`` / ``jax.jvp`` traces (put data whose
    hypergradient you want, or an outer model's parameters, into
    ``hparams``; JAX reports the closed-over tracer as an
    ``UnexpectedTracerError``).
    """
    check_callable("solve", solve)
    check_callable("optimality", optimality)
    method = check_choice("method", method, METHODS)
    maxiter = check_positive_int("maxiter", maxiter)
    if tol is not None:
        tol = check_real("tol", tol, low=0.0)  # as conjugate_gradient: 0 runs maxiter iterations
    alpha = check_real("alpha", alpha, low=0.0, low_open=True)
    damping = check_real("damping", damping, low=0.0)

    if method == "cg":
        def linear_solve(matvec, b):
            return conjugate_gradient(matvec, b, maxiter=maxiter, tol=tol)
    else:
        def linear_solve(matvec, b):
            return neumann(matvec, b, maxiter=maxiter, alpha=alpha)

    @jax.custom_jvp
    def w_star(hparams):
        return solve(hparams)

    @w_star.defjvp
    def w_star_jvp(primals, tangents):
        (hparams,), (dhparams,) = primals, tangents
        # w_star, not solve: a derivative of this rule (a Hessian) then takes
        # the implicit formula again instead of differentiating the solver.
        w = w_star(hparams)
        for path, leaf in jax.tree_util.tree_leaves_with_path(w):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise TypeError(f"solve must return floating-point arrays only (the solution w is "
                                f"differentiated); w{jax.tree_util.keystr(path)} has dtype {jnp.result_type(leaf)}: "
                                "return iteration counts and such apart, outside implicit")
        flat_w, unravel = ravel_pytree(w)

        # The system dF/dw must be square, its rows in w's order: the residual
        # has w's structure and shapes (as many entries in other shapes or
        # another order would pair each equation with the wrong unknown); a
        # list where w has a tuple is the same structure.
        residual = jax.eval_shape(optimality, w, hparams)
        r_shapes = [r.shape for r in jax.tree_util.tree_leaves(residual)]
        w_shapes = [jnp.shape(a) for a in jax.tree_util.tree_leaves(w)]
        r_tree, w_tree = (jax.tree_util.tree_structure(_lists_as_tuples(t)) for t in (residual, w))
        if r_tree != w_tree or r_shapes != w_shapes:
            raise ValueError(
                "optimality(w, hparams) must return a residual with w's structure and shapes; got "
                f"{r_tree} of shapes {r_shapes} for w's {w_tree} of shapes {w_shapes}"
            )

        def residual_flat(fw):
            return ravel_pytree(optimality(unravel(fw), hparams))[0]

        def matvec(v):
            # in w's dtype: a wider hyperparameter (float64 beside a float32
            # w) promotes the residual, and the solvers' loops keep one dtype
            out = jax.jvp(residual_flat, (flat_w,), (v,))[1].astype(flat_w.dtype)
            return out + damping * v if damping else out

        # dF/dh . dh, linear in dh (so reverse mode can transpose it).
        def rhs_of(h):
            return ravel_pytree(optimality(w, h))[0]
        _, b = jax.jvp(rhs_of, (hparams,), (dhparams,))
        b = b.astype(flat_w.dtype)
        dflat = lax.custom_linear_solve(
            matvec, -b, solve=linear_solve, transpose_solve=linear_solve,
            symmetric=(method == "cg"))
        return w, unravel(dflat)

    return w_star
