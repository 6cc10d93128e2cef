"""jaxhpo._linalg: the same numbers as numpy/scipy, gradients, and no hang when
many batched factorisations run at once on the CPU."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxhpo import _linalg as linalg


def spd(rng, *batch, n=6):
    a = rng.standard_normal((*batch, n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def test_cholesky_and_eigh_match_numpy_with_leading_axes_and_vmap():
    rng = np.random.default_rng(0)
    a = spd(rng, 2, 3).astype(np.float32)
    expect = np.linalg.cholesky(a.astype(np.float64))
    np.testing.assert_allclose(linalg.cholesky(a), expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.vmap(linalg.cholesky))(a), expect, rtol=1e-4, atol=1e-5)
    w, v = jax.jit(jax.vmap(linalg.eigh))(a)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a.astype(np.float64)), rtol=1e-4, atol=1e-4)
    # Eigenvectors up to sign: v diag(w) v^T reproduces a.
    np.testing.assert_allclose(np.einsum("...ij,...j,...kj->...ik", v, w, v), a, rtol=1e-4, atol=1e-3)
    assert np.isnan(np.asarray(linalg.cholesky(-np.eye(3, dtype=np.float32)))).any()


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("trans", [False, True])
def test_solve_triangular_matches_scipy_and_its_gradient_matches_jax(lower, trans):
    rng = np.random.default_rng(1)
    a = np.linalg.cholesky(spd(rng, 4))
    a = a if lower else np.swapaxes(a, -1, -2)
    b = rng.standard_normal((4, 6, 2))
    with jax.enable_x64(True):
        x = jax.jit(jax.vmap(lambda a, b: linalg.solve_triangular(a, b, lower=lower, trans=trans)))(a, b)
        for i in range(4):
            np.testing.assert_allclose(x[i], scipy.linalg.solve_triangular(a[i], b[i], lower=lower, trans=trans),
                                       rtol=1e-10)
        np.testing.assert_allclose(linalg.solve_triangular(a, b[..., 0], lower=lower, trans=trans), x[..., 0],
                                   rtol=1e-12)

        # Reverse mode in both arguments against jax's own differentiation.
        w = rng.standard_normal((4, 6, 2))

        def loss(solve):
            return lambda a, b: jnp.sum(w * jnp.sin(solve(a, b)))

        ours = loss(lambda a, b: linalg.solve_triangular(a, b, lower=lower, trans=trans))
        ref = loss(lambda a, b: jax.vmap(
            lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=lower, trans=int(trans)))(a, b))
        ga, gb = jax.grad(ours, argnums=(0, 1))(a, b)
        ra, rb = jax.grad(ref, argnums=(0, 1))(a, b)
        tri = np.tril if lower else np.triu
        np.testing.assert_allclose(gb, rb, rtol=1e-10)
        np.testing.assert_allclose(ga, tri(ra), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(linalg.cho_solve(np.tril(a[0]) if lower else a[0].T, b[0]),
                                   scipy.linalg.cho_solve((np.tril(a[0]) if lower else a[0].T, True), b[0]),
                                   rtol=1e-10)


REPRO = textwrap.dedent("""
    import os, sys
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp
    from jaxhpo import _linalg as linalg

    def f(x):
        # Sixteen independent batched factorisations and solves: more than
        # any CPU's intra-op pool has threads to spare.
        total = 0.0
        for i in range(16):
            a = x * (i + 1.0)
            a = a @ jnp.swapaxes(a, -1, -2) + 64 * jnp.eye(64)
            L = linalg.cholesky(a)
            total = total + linalg.solve_triangular(L, a[..., 0], lower=True).sum() + linalg.eigvalsh(a).sum()
        return total

    g = jax.jit(f)
    x = jax.random.normal(jax.random.key(0), (8, 64, 64))
    for r in range(50):
        g(x * (1.0 + r)).block_until_ready()
    print("done")
""")


def test_many_concurrent_batched_factorisations_finish():
    # jaxlib 0.10 deadlocks on this program with jnp.linalg (every pool
    # thread blocks in a batched LAPACK call); ours loops and finishes.
    proc = subprocess.run([sys.executable, "-c", REPRO], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("done")
