"""The GP fit's L-BFGS: known minima, scipy's answer, failures never accepted, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from jaxhpo.strategies._lbfgs import minimize


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


VG = jax.value_and_grad(rosenbrock)
SOLVE = jax.jit(jax.vmap(lambda x0: minimize(VG, x0, 200, tol=0.0)))


def test_rosenbrock_minimum_from_several_starts_vmapped():
    # 4 starts in 4-D, one vmapped program; float32, so 1e-3 of the optimum.
    starts = jnp.asarray(np.random.default_rng(0).uniform(-2, 2, (4, 4)), jnp.float32)
    res = SOLVE(starts)
    np.testing.assert_allclose(res.x, np.ones((4, 4)), atol=2e-3)
    assert (np.asarray(res.value) < 1e-5).all()
    # Each start alone gives the same answer as in the batch.
    one = jax.jit(lambda x0: minimize(VG, x0, 200, tol=0.0))(starts[2])
    np.testing.assert_allclose(one.x, res.x[2], atol=1e-5)


def test_quadratic_matches_scipy_and_stops_early():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((6, 6))
    h = a @ a.T + 6 * np.eye(6)
    b = rng.standard_normal(6)

    def f(x):
        return 0.5 * x @ jnp.asarray(h, jnp.float32) @ x - jnp.asarray(b, jnp.float32) @ x

    res = jax.jit(lambda x0: minimize(jax.value_and_grad(f), x0, 100, tol=1e-6))(jnp.zeros(6))
    ref = scipy.optimize.minimize(lambda x: 0.5 * x @ h @ x - b @ x, np.zeros(6), jac=lambda x: h @ x - b,
                                  method="L-BFGS-B").x
    np.testing.assert_allclose(res.x, np.linalg.solve(h, b), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(res.x, ref, rtol=1e-3, atol=1e-4)
    # A 6-D quadratic needs few iterations, far fewer than allowed.
    assert int(res.iterations) < 30


def test_points_where_the_objective_fails_are_never_accepted():
    # NaN beyond x = 0.5 (like a failed Cholesky); the minimum of (x - 2)^2
    # on the finite side is at the border.
    def f(x):
        v = jnp.sum((x - 2.0) ** 2)
        return jnp.where(jnp.all(x < 0.5), v, jnp.nan)

    res = jax.jit(lambda x0: minimize(jax.value_and_grad(f), x0, 100))(jnp.zeros(2))
    assert np.isfinite(float(res.value))
    assert (np.asarray(res.x) < 0.5).all() and (np.asarray(res.x) > 0.3).all()
    # A start where the value is not finite stays put.
    bad = jax.jit(lambda x0: minimize(jax.value_and_grad(f), x0, 100))(jnp.ones(2))
    np.testing.assert_array_equal(bad.x, np.ones(2))
    assert int(bad.iterations) == 0
