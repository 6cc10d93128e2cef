"""Dense linear algebra that never hands LAPACK a batch on the CPU.

jaxlib 0.10's CPU LAPACK kernels (``potrf``, ``trsm``, ``syevd``, ...) split
a batched call over XLA's intra-op thread pool and block until the pieces are
done. When as many such calls run at once as the pool has threads (two
independent batched Cholesky factorisations of one program on a 2-core
machine is enough: e.g. a GP fit vmapped over starts or over seeds), every
thread waits on work queued behind it and the program hangs forever, at 0%
CPU. Later jaxlib releases drop that parallel path, but they need Python
3.12.

The functions here take the same arrays as their ``jax.numpy`` /
``jax.scipy`` namesakes. On the CPU backend, a batch (leading axes or a
``vmap``) becomes a loop of unbatched calls (``jax.custom_batching.
sequential_vmap``), which never waits on the pool; elsewhere they are the
batched library calls. ``tests/test_linalg.py`` holds the reproducer.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap

__all__ = ["cholesky", "solve_triangular", "cho_solve", "eigh", "eigvalsh"]


def _sequential_on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _over_leading_axes(fn: Callable, core_ndims: tuple[int, ...], *args):
    """``fn`` on arrays with extra leading axes, by ``vmap`` over them (the loop on the CPU)."""
    extra = args[0].ndim - core_ndims[0]
    for _ in range(extra):
        fn = jax.vmap(fn)
    return fn(*args)


def _unbatched(name: str, **static) -> Callable:
    """The library function ``name`` on one matrix; batched calls loop on the CPU."""
    return _make_unbatched(name, _sequential_on_cpu(), **static)


@functools.lru_cache(maxsize=None)
def _make_unbatched(name: str, sequential: bool, **static) -> Callable:
    if name == "cholesky":
        def fn(a):
            return jnp.linalg.cholesky(a)
    elif name == "trsm":
        def fn(a, b):
            return jax.scipy.linalg.solve_triangular(a, b, **static)
    elif name == "eigh":
        def fn(a):
            return tuple(jnp.linalg.eigh(a))
    else:  # pragma: no cover - internal names only
        raise KeyError(name)
    return sequential_vmap(fn) if sequential else fn


def cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of ``a`` ``(..., n, n)``; NaN where ``a`` is not positive definite.

    Not differentiable (the callers differentiate around it in closed form).
    """
    a = jnp.asarray(a)
    return _over_leading_axes(_unbatched("cholesky"), (2,), a)


def _trsm(a, b, lower, trans):
    return _unbatched("trsm", lower=lower, trans=int(trans))(a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _solve(a, b, lower, trans):
    return _trsm(a, b, lower, trans)


def _solve_fwd(a, b, lower, trans):
    x = _trsm(a, b, lower, trans)
    return x, (a, x)


def _solve_bwd(lower, trans, res, g):
    # op(a) x = b with op(a) = a or a^T: db = op(a)^-T g, d op(a) = -db x^T,
    # kept on the triangle that a holds.
    a, x = res
    db = _trsm(a, g, lower, not trans)
    db2, x2 = (db[:, None], x[:, None]) if x.ndim == 1 else (db, x)
    dop = -db2 @ x2.T
    da = dop.T if trans else dop
    da = jnp.tril(da) if lower else jnp.triu(da)
    return da, db


_solve.defvjp(_solve_fwd, _solve_bwd)


def solve_triangular(a: jax.Array, b: jax.Array, *, lower: bool, trans: bool = False) -> jax.Array:
    """``x`` with ``op(a) x = b``, ``op(a)`` = ``a`` or ``a^T``; ``a (..., n, n)``, ``b (..., n)`` or ``(..., n, k)``.

    Differentiable in reverse mode with respect to ``a`` and ``b``.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    lower, trans = bool(lower), bool(trans)
    def fn(a, b):
        return _solve(a, b, lower, trans)

    extra = a.ndim - 2
    if extra:
        if b.ndim - extra not in (1, 2):
            raise ValueError(f"solve_triangular: b of shape {b.shape} does not match a of shape {a.shape}")
        for _ in range(extra):
            fn = jax.vmap(fn)
    return fn(a, b)


def cho_solve(chol: jax.Array, b: jax.Array) -> jax.Array:
    """``A^-1 b`` from the lower Cholesky factor ``chol`` of ``A`` (``(n, n)``; ``b (n,)`` or ``(n, k)``)."""
    return solve_triangular(chol, solve_triangular(chol, b, lower=True), lower=True, trans=True)


def eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Eigenvalues (ascending) ``(..., n)`` and eigenvectors ``(..., n, n)`` of symmetric ``a``. Not differentiable."""
    a = jnp.asarray(a)
    return _over_leading_axes(_unbatched("eigh"), (2,), a)


def eigvalsh(a: jax.Array) -> jax.Array:
    """Eigenvalues (ascending) ``(..., n)`` of symmetric ``a``. Not differentiable."""
    return eigh(a)[0]
