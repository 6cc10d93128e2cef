"""Implicit hypergradients: closed-form ridge derivatives in float64, CG and Neumann."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy.optimize import brentq

from jaxhpo.hypergrad import conjugate_gradient, implicit, neumann

# Ridge regression with more noise than signal per sample, so the validation
# loss has an interior optimum in lambda (checked in test_data_has_interior_optimum).
_rng = np.random.default_rng(0)
N, D, NV = 20, 8, 40
X_NP = _rng.normal(size=(N, D))
W_TRUE = _rng.normal(size=D)
Y_NP = X_NP @ W_TRUE + 1.5 * _rng.normal(size=N)
XV_NP = _rng.normal(size=(NV, D))
YV_NP = XV_NP @ W_TRUE + 1.5 * _rng.normal(size=NV)
A_NP = X_NP.T @ X_NP / N
B_NP = X_NP.T @ Y_NP / N
EIG = np.linalg.eigvalsh(A_NP)


def closed_form(lam):
    """(w*, d val / d lam) for scalar lam: w* = (A + lam I)^-1 b, dw*/dlam = -(A + lam I)^-1 w*."""
    H = A_NP + lam * np.eye(D)
    w = np.linalg.solve(H, B_NP)
    dval_dw = XV_NP.T @ (XV_NP @ w - YV_NP) / NV
    return w, dval_dw @ -np.linalg.solve(H, w)


LAM_STAR = brentq(lambda lam: closed_form(lam)[1], 1e-3, 1e2, xtol=1e-15, rtol=1e-15)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _ridge():
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    Xv, yv = jnp.asarray(XV_NP), jnp.asarray(YV_NP)

    def solve(lam):
        return jnp.linalg.solve(A + lam * jnp.eye(D), b)

    def optimality(w, lam):
        # gradient in w of 0.5 mean (Xw - y)^2 + 0.5 lam |w|^2 (lam scalar or (D,))
        return A @ w - b + lam * w

    def val_loss(w):
        return 0.5 * jnp.mean((Xv @ w - yv) ** 2)

    return solve, optimality, val_loss


def _methods():
    lam_max = EIG.max() + 1.0
    # Neumann: alpha = 1 / lambda_max gives contraction 1 - lambda_min / lambda_max
    # <= 1 - 0.13 / 3.2 ~ 0.96 (lam >= 0); 1000 terms leave < 1e-16 of the answer.
    return {"cg": dict(method="cg"), "neumann": dict(method="neumann", maxiter=1000, alpha=1.0 / lam_max)}


def test_data_has_interior_optimum():
    assert closed_form(0.1)[1] < 0 < closed_form(1.0)[1]
    assert 0.1 < LAM_STAR < 1.0


@pytest.mark.parametrize("method", ["cg", "neumann"])
def test_matches_closed_form_derivative(x64, method):
    solve, optimality, val_loss = _ridge()
    w_star = implicit(solve, optimality, **_methods()[method])
    outer = jax.jit(lambda lam: val_loss(w_star(lam)))
    for lam in (0.05, LAM_STAR, 0.7):
        _, exact = closed_form(lam)
        g = float(jax.jit(jax.grad(outer))(jnp.float64(lam)))
        assert g == pytest.approx(exact, rel=1e-10)
        _, t = jax.jvp(outer, (jnp.float64(lam),), (jnp.float64(1.0),))
        assert float(t) == pytest.approx(exact, rel=1e-10)


def test_per_feature_lambda_jacobians(x64):
    """lam of shape (D,): dw*/dlam = -(A + diag lam)^-1 diag(w*), both modes."""
    solve, optimality, _ = _ridge()
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    w_star = implicit(lambda lam: jnp.linalg.solve(A + jnp.diag(lam), b), optimality)
    lam = jnp.linspace(0.1, 1.0, D)
    H = A_NP + np.diag(np.asarray(lam))
    exact = -np.linalg.solve(H, np.diag(np.linalg.solve(H, B_NP)))
    np.testing.assert_allclose(np.asarray(jax.jacrev(w_star)(lam)), exact, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(w_star)(lam)), exact, rtol=1e-10, atol=1e-13)


def test_solver_is_not_differentiated_through(x64):
    """An inner GD solver in a while_loop (which reverse mode cannot differentiate)."""
    _, optimality, val_loss = _ridge()

    def gd_solve(lam):
        step = 1.0 / (EIG.max() + 1.0)

        def cond(c):
            return jnp.linalg.norm(optimality(c[0], lam)) > 1e-13

        def body(c):
            return c[0] - step * optimality(c[0], lam), c[1] + 1

        return lax.while_loop(cond, body, (jnp.zeros(D), 0))[0]

    with pytest.raises(ValueError, match="[Rr]everse-mode"):
        jax.grad(lambda lam: val_loss(gd_solve(lam)))(0.3)
    w_star = implicit(gd_solve, optimality)
    g = jax.jit(jax.grad(lambda lam: val_loss(w_star(lam))))(jnp.float64(0.3))
    # w* is only 1e-13-stationary, so the hypergradient is that accurate too
    assert float(g) == pytest.approx(closed_form(0.3)[1], rel=1e-9)
    # second order takes the implicit formula again: the while_loop is never
    # differentiated (jacrev(grad)), and the curvature equals central
    # differences of the closed-form derivative
    h = 1e-5
    curvature = (closed_form(0.3 + h)[1] - closed_form(0.3 - h)[1]) / (2 * h)
    outer = lambda lam: val_loss(w_star(lam))  # noqa: E731
    for second in (jax.hessian(outer), jax.jacrev(jax.grad(outer))):
        assert float(second(jnp.float64(0.3))) == pytest.approx(curvature, rel=1e-7)


def test_vmap_over_64_lambdas_equals_scalar_results(x64):
    solve, optimality, val_loss = _ridge()
    w_star = implicit(solve, optimality)
    vg = jax.jit(jax.value_and_grad(lambda lam: val_loss(w_star(lam))))
    lams = jnp.geomspace(1e-3, 1e2, 64)
    values, grads = jax.jit(jax.vmap(vg))(lams)
    for i in range(64):
        v, g = vg(lams[i])
        assert float(values[i]) == pytest.approx(float(v), rel=1e-12)
        assert float(grads[i]) == pytest.approx(float(g), rel=1e-9, abs=1e-15)
    exact = np.array([closed_form(float(lam))[1] for lam in lams])
    np.testing.assert_allclose(np.asarray(grads), exact, rtol=1e-8, atol=1e-15)


def test_gradient_descent_on_log_lambda_reaches_closed_form_optimum(x64):
    solve, optimality, val_loss = _ridge()
    w_star = implicit(solve, optimality)

    def outer(s):
        return val_loss(w_star(jnp.exp(s)))

    # Curvature of the outer loss in s = log lam near s*: ~1.3 (from the
    # closed form); step 0.5 contracts the error by ~0.35 per step.
    @jax.jit
    def descend(s0):
        def body(s, _):
            return s - 0.5 * jax.grad(outer)(s), None
        return lax.scan(body, s0, None, length=100)[0]

    for lam0 in (1e-2, 5.0):
        lam = float(jnp.exp(descend(jnp.log(jnp.float64(lam0)))))
        assert lam == pytest.approx(LAM_STAR, rel=1e-8)


def test_neumann_on_a_nonsymmetric_fixed_point(x64):
    """F(w, h) = w - (M w + h c), M non-symmetric with |M| < 1: dw*/dh = (I - M)^-1 c."""
    rng = np.random.default_rng(3)
    M_np = rng.normal(size=(6, 6))
    M_np *= 0.5 / np.linalg.norm(M_np, 2)
    c_np = rng.normal(size=6)
    M, c = jnp.asarray(M_np), jnp.asarray(c_np)

    def solve(h):  # fixed-point iteration, 0.5^120 ~ 1e-36
        return lax.fori_loop(0, 120, lambda _, w: M @ w + h * c, jnp.zeros(6))

    w_star = implicit(solve, lambda w, h: w - (M @ w + h * c), method="neumann", maxiter=80, alpha=1.0)
    exact = np.linalg.solve(np.eye(6) - M_np, c_np)
    np.testing.assert_allclose(np.asarray(jax.jacfwd(w_star)(jnp.float64(2.0))), exact, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.jacrev(w_star)(jnp.float64(2.0))), exact, rtol=1e-12)


def test_pytree_w_and_hparams(x64):
    """w = {"coef": (D,), "bias": ()}, hparams = {"l2": ()}: bias unpenalised."""
    Xc, yc = jnp.asarray(X_NP), jnp.asarray(Y_NP)
    Xv, yv = jnp.asarray(XV_NP), jnp.asarray(YV_NP)

    def train_grad(w, h):
        r = Xc @ w["coef"] + w["bias"] - yc
        return {"coef": Xc.T @ r / N + h["l2"] * w["coef"], "bias": jnp.mean(r)}

    def solve(h):
        Xa = jnp.concatenate([Xc, jnp.ones((N, 1))], axis=1)
        reg = jnp.diag(jnp.concatenate([jnp.full(D, h["l2"]), jnp.zeros(1)]))
        sol = jnp.linalg.solve(Xa.T @ Xa / N + reg, Xa.T @ yc / N)
        return {"coef": sol[:D], "bias": sol[D]}

    w_star = implicit(solve, train_grad)

    def outer(h, fn):
        w = fn(h)
        return 0.5 * jnp.mean((Xv @ w["coef"] + w["bias"] - yv) ** 2)

    h = {"l2": jnp.float64(0.4)}
    g = jax.grad(outer)(h, w_star)["l2"]
    e = 1e-6
    fd = (outer({"l2": h["l2"] + e}, solve) - outer({"l2": h["l2"] - e}, solve)) / (2 * e)
    assert float(g) == pytest.approx(float(fd), rel=1e-8)


def test_linear_solvers_directly(x64):
    rng = np.random.default_rng(5)
    Q = rng.normal(size=(7, 7))
    S = jnp.asarray(Q @ Q.T + 0.5 * np.eye(7))
    b = jnp.asarray(rng.normal(size=7))
    exact = np.linalg.solve(np.asarray(S), np.asarray(b))
    x = conjugate_gradient(lambda v: S @ v, b, maxiter=50)
    np.testing.assert_allclose(np.asarray(x), exact, rtol=1e-9)
    lmax = float(np.linalg.eigvalsh(np.asarray(S)).max())
    x = neumann(lambda v: S @ v, b, maxiter=5000, alpha=1.0 / lmax)
    np.testing.assert_allclose(np.asarray(x), exact, rtol=1e-9)
    # a non-finite system is a failed solve, never the zero start returned as a solution
    nan_b = b.at[3].set(jnp.nan)
    for matvec, rhs in ((lambda v: S @ v, nan_b), (lambda v: S @ v, b.at[0].set(jnp.inf)),
                        (lambda v: jnp.nan * v, b), (lambda v: S @ v + (v[0] > 1e9) * jnp.inf, b * 1e12)):
        assert np.all(np.isnan(np.asarray(conjugate_gradient(matvec, rhs, maxiter=50))))
        assert not np.all(np.isfinite(np.asarray(neumann(matvec, rhs, maxiter=50, alpha=1.0 / lmax))))


def test_bad_arguments():
    solve, optimality = (lambda h: h), (lambda w, h: w - h)
    with pytest.raises(ValueError, match="method"):
        implicit(solve, optimality, method="lu")
    with pytest.raises(ValueError, match="maxiter"):
        implicit(solve, optimality, maxiter=0)
    with pytest.raises(ValueError, match="alpha"):
        implicit(solve, optimality, method="neumann", alpha=0.0)
    with pytest.raises(ValueError, match="damping"):
        implicit(solve, optimality, damping=-1.0)
    with pytest.raises(ValueError, match="tol must be >= 0"):
        implicit(solve, optimality, tol=-1e-6)
    with pytest.raises(TypeError, match="solve"):
        implicit(None, optimality)
    with pytest.raises(TypeError, match="optimality"):
        implicit(solve, "x")
    bad = implicit(lambda h: jnp.zeros(3), lambda w, h: jnp.zeros(2) * h)
    with pytest.raises(ValueError, match="residual"):
        jax.grad(lambda h: bad(h).sum())(1.0)
    # As many entries as w, in other shapes: each equation would meet the wrong unknown.
    swapped = implicit(lambda h: (jnp.ones(2) * h, jnp.ones(3) * h), lambda w, h: (w[1] - h, w[0] - h))
    with pytest.raises(ValueError, match="residual with w's structure and shapes"):
        jax.grad(lambda h: sum(a.sum() for a in swapped(h)))(1.0)
    # the same leaves in another container (a list for a tuple) are w's equations in w's order
    listed = implicit(lambda h: (jnp.ones(2) * h, jnp.ones(3) * h), lambda w, h: [w[0] - h, w[1] - h])
    assert float(jax.grad(lambda h: sum(a.sum() for a in listed(h)))(1.0)) == pytest.approx(5.0)
    # ... but not the same shapes in another order (a dict w flattens by key)
    reordered = implicit(lambda h: {"w": jnp.ones(2) * h, "b": jnp.ones(2) * 2 * h},
                         lambda w, h: (w["w"] - h, 3 * (w["b"] - 2 * h)))
    with pytest.raises(ValueError, match="residual with w's structure and shapes"):
        jax.grad(lambda h: sum(a.sum() for a in reordered(h).values()))(1.0)
    counted = implicit(lambda h: {"w": jnp.ones(2) * h, "iters": jnp.int32(3)},
                       lambda w, h: {"w": w["w"] - h, "iters": jnp.float32(0.0)})
    with pytest.raises(TypeError, match=r"solve must return floating-point arrays only .*w\['iters'\] has dtype int32"):
        jax.grad(lambda h: counted(h)["w"].sum())(1.0)


@pytest.mark.parametrize("method", ["cg", "neumann"])
def test_float32_solution_with_a_float64_hyperparameter(x64, method):
    # The float64 lambda promotes the residual; the solve stays in w's float32.
    solve, optimality, val_loss = _ridge()
    A32, b32 = jnp.asarray(A_NP, jnp.float32), jnp.asarray(B_NP, jnp.float32)
    w_star = implicit(lambda lam: jnp.linalg.solve(A32 + jnp.float32(lam) * jnp.eye(D, dtype=jnp.float32), b32),
                      optimality, **_methods()[method])
    got = jax.grad(lambda lam: val_loss(w_star(lam)))(jnp.float64(0.7))
    np.testing.assert_allclose(float(got), closed_form(0.7)[1], rtol=1e-4)


def test_solver_arguments_given_as_arrays_are_checked(x64):
    S, b = jnp.eye(2) * 2.0, jnp.array([1.0, 2.0])
    for kwargs, word in [(dict(maxiter=np.asarray(0)), "maxiter"), (dict(maxiter=5, tol=np.asarray(-1.0)), "tol")]:
        with pytest.raises(ValueError, match=word):
            conjugate_gradient(lambda v: S @ v, b, **kwargs)
    for kwargs, word in [(dict(maxiter=jnp.asarray(0), alpha=0.5), "maxiter"),
                         (dict(maxiter=5, alpha=jnp.asarray(-1.0)), "alpha")]:
        with pytest.raises(ValueError, match=word):
            neumann(lambda v: S @ v, b, **kwargs)
    np.testing.assert_allclose(conjugate_gradient(lambda v: S @ v, b, maxiter=np.asarray(5)), [0.5, 1.0])


def test_cg_solves_a_negative_definite_system_and_implicit_takes_minus_the_gradient(x64):
    # A residual written as minus the training loss's gradient makes dF/dw
    # negative definite: the same root and the same implicit derivative.
    rng = np.random.default_rng(6)
    Q = rng.normal(size=(5, 5))
    S = jnp.asarray(Q @ Q.T + 0.5 * np.eye(5))
    b = jnp.asarray(rng.normal(size=5))
    x = conjugate_gradient(lambda v: -S @ v, b, maxiter=50)
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(-np.asarray(S), np.asarray(b)), rtol=1e-9)
    solve = lambda lam: jnp.linalg.solve(S + lam * jnp.eye(5), b)  # noqa: E731
    minus_grad = implicit(solve, lambda w, lam: -(S @ w + lam * w - b))
    exact = jax.grad(lambda lam: jnp.sum(solve(lam)))(0.3)
    assert float(jax.grad(lambda lam: jnp.sum(minus_grad(lam)))(0.3)) == pytest.approx(float(exact), rel=1e-8)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_cg_in_half_precision_stops_near_the_solution_by_default(dtype):
    # "100 eps" of bfloat16 is a relative residual of 0.8: a recurrence
    # stopped there lay a third of the way off. The iterates are float32.
    rng = np.random.default_rng(7)
    Q = rng.normal(size=(3, 3))
    S = np.asarray(Q @ Q.T + 0.5 * np.eye(3), np.float32)
    b = rng.normal(size=3).astype(np.float32)
    exact = np.linalg.solve(S, b)
    S_low = jnp.asarray(S, dtype)
    x = conjugate_gradient(lambda v: S_low @ v, jnp.asarray(b, dtype), maxiter=20)
    assert x.dtype == dtype
    np.testing.assert_allclose(np.asarray(x, np.float32), exact, rtol=0.05, atol=0.05 * np.abs(exact).max())


def test_a_matvec_of_another_shape_or_dtype():
    b = jnp.ones(3, jnp.float32)
    for solver in (lambda mv: conjugate_gradient(mv, b, maxiter=5), lambda mv: neumann(mv, b, maxiter=5, alpha=0.5)):
        with pytest.raises(ValueError, match=r"matvec must map a vector of b's shape \(3,\) to one of the same"):
            solver(lambda v: jnp.concatenate([v, v]))
        with pytest.raises(TypeError, match="matvec must be callable"):
            solver("A")
        # a float64 product of a float32 vector (x64 on) is taken in b's dtype
        with jax.enable_x64(True):
            x = solver(lambda v: 2.0 * v.astype(jnp.float64))
        assert x.dtype == jnp.float32
