"""The GP pieces of GP-BO against direct numpy/scipy computations (float64 references)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg as sla
from scipy import special as ssp

from jaxhpo.strategies import acquisition as acqf
from jaxhpo.strategies import gp

# Coordinates: float, float, categorical with 3 choices.
CAT = np.array([False, False, True])
CARD = np.array([0, 0, 3])
MIN_NOISE = 1e-6


def np_kernel(params, a, b):
    """Matern-5/2 ARD with Hamming on categorical coordinates, in float64."""
    ls = np.exp(np.asarray(params.log_lengthscale, np.float64))
    s = math.exp(float(params.log_signal))
    d = (a[:, None, :] - b[None, :, :]) ** 2
    ia, ib = np.floor(a * np.maximum(CARD, 1)), np.floor(b * np.maximum(CARD, 1))
    d = np.where(CAT, (ia[:, None, :] != ib[None, :, :]).astype(float), d)
    r2 = (d / ls**2).sum(-1)
    r = np.sqrt(5 * r2)
    return s * (1 + r + 5 * r2 / 3) * np.exp(-r)


def np_noise(params):
    return MIN_NOISE + math.exp(float(params.log_noise))


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 3)).astype(np.float32)
    x[:, 2] = (np.floor(x[:, 2] * 3) + 0.5) / 3
    y = (np.sin(6 * x[:, 0]) + x[:, 1] ** 2 + (x[:, 2] > 0.5)).astype(np.float32)
    y = (y - y.mean()) / y.std()
    return x, y


PARAMS = gp.KernelParams(
    log_lengthscale=jnp.log(jnp.array([0.3, 0.7, 1.2], jnp.float32)),
    log_signal=jnp.float32(math.log(1.3)),
    log_noise=jnp.float32(math.log(2e-2)),
)


def padded(x, y, pad, seed=1):
    """The buffer with ``pad`` garbage rows interleaved, and its mask."""
    rng = np.random.default_rng(seed)
    n = len(x)
    order = rng.permutation(n + pad)
    xb = rng.uniform(size=(n + pad, 3)).astype(np.float32) * 7 - 3  # garbage, even outside the cube
    yb = rng.normal(size=n + pad).astype(np.float32) * 100
    mask = np.zeros(n + pad, bool)
    xb[order[:n]], yb[order[:n]], mask[order[:n]] = x, y, True
    return xb, yb, mask


def test_kernel_matrix_matches_numpy():
    x, _ = make_data(12)
    b, _ = make_data(5, seed=3)
    K = gp.kernel_matrix(PARAMS, jnp.asarray(x), jnp.asarray(b), CAT, CARD)
    np.testing.assert_allclose(np.asarray(K), np_kernel(PARAMS, x.astype(float), b.astype(float)),
                               rtol=2e-5, atol=2e-6)
    # Same category -> Hamming 0 -> correlation 1 along that coordinate only.
    same = gp.kernel_matrix(PARAMS, jnp.asarray(x[:1]), jnp.asarray(x[:1]), CAT, CARD)
    assert float(same[0, 0]) == pytest.approx(1.3, rel=1e-6)


def test_matern_gradient_is_finite_at_zero_distance():
    g = jax.grad(lambda r2: gp.matern52(r2))(jnp.float32(0.0))
    assert float(g) == pytest.approx(-5.0 / 6.0)


def test_log_marginal_likelihood_matches_numpy_and_ignores_padding():
    x, y = make_data(20)
    K = np_kernel(PARAMS, x.astype(float), x.astype(float)) + np_noise(PARAMS) * np.eye(20)
    L = np.linalg.cholesky(K)
    a = sla.cho_solve((L, True), y.astype(float))
    expect = -0.5 * y @ a - np.log(np.diag(L)).sum() - 10 * math.log(2 * math.pi)
    lml = gp.log_marginal_likelihood(PARAMS, jnp.asarray(x), jnp.asarray(y), jnp.ones(20, bool),
                                     CAT, CARD, MIN_NOISE)
    assert float(lml) == pytest.approx(expect, rel=1e-4, abs=1e-3)
    xb, yb, mask = padded(x, y, 13)
    lml_pad = gp.log_marginal_likelihood(PARAMS, jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(mask),
                                         CAT, CARD, MIN_NOISE)
    assert float(lml_pad) == pytest.approx(expect, rel=1e-4, abs=1e-3)


def test_padding_holding_nan_or_huge_values_leaves_the_likelihoods_gradient():
    # where() on the kernel hid padding's values but not their gradient (NaN),
    # which the kernel fit then zeroed: the lengthscales never moved.
    x, y = make_data(12)
    xb, yb, mask = padded(x, y, 4)
    args = (jnp.asarray(yb), jnp.asarray(mask), CAT, CARD, MIN_NOISE)
    grad = jax.grad(gp.log_marginal_likelihood)
    clean = grad(PARAMS, jnp.asarray(xb), *args)
    for fill in (np.nan, 1e30, -np.inf):
        xf = xb.copy()
        xf[~mask] = fill
        got = grad(PARAMS, jnp.asarray(xf), *args)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(clean)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_posterior_matches_numpy_gp_and_padding_never_changes_it():
    x, y = make_data(25)
    xs, _ = make_data(40, seed=7)
    K = np_kernel(PARAMS, x.astype(float), x.astype(float)) + np_noise(PARAMS) * np.eye(25)
    ks = np_kernel(PARAMS, xs.astype(float), x.astype(float))
    c = sla.cho_factor(K, lower=True)
    mean = ks @ sla.cho_solve(c, y.astype(float))
    var = math.exp(float(PARAMS.log_signal)) - np.einsum("ij,ji->i", ks, sla.cho_solve(c, ks.T))

    factorize = jax.jit(lambda x, y, mask: gp.factorize(PARAMS, x, y, mask, CAT, CARD, MIN_NOISE))
    predict = jax.jit(lambda post, xs: gp.predict(post, xs, CAT, CARD))
    post = factorize(jnp.asarray(x), jnp.asarray(y), jnp.ones(25, bool))
    m, v = predict(post, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(m), mean, atol=2e-4)
    np.testing.assert_allclose(np.asarray(v), var, atol=2e-4)

    xb, yb, mask = padded(x, y, 31)
    post_pad = factorize(jnp.asarray(xb), jnp.asarray(yb), jnp.asarray(mask))
    mp, vp = predict(post_pad, jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(mp), np.asarray(m), atol=2e-5)
    np.testing.assert_allclose(np.asarray(vp), np.asarray(v), atol=2e-5)
    # The joint covariance agrees with the marginal variances.
    jm, jc = gp.predict_joint(post_pad, jnp.asarray(xs), CAT, CARD)
    np.testing.assert_allclose(np.diag(np.asarray(jc)), np.asarray(v), atol=2e-5)


def test_standardize_matches_numpy_and_survives_values_near_float32s_largest():
    # Finite values up to float32's largest (a finite value's worst, see float32_values)
    # are scaled first: their squares overflowed to a NaN model, and 1e20 alone made the rest flat.
    standardize = jax.jit(gp.standardize)
    mask = jnp.array([True, True, True, True, False])
    y = np.array([0.3, -1.2, 5.0, 2.0, 7.0], np.float32)
    z, mean, std = (np.asarray(a) for a in standardize(jnp.asarray(y), mask))
    np.testing.assert_allclose(z[:4], (y[:4] - y[:4].mean()) / y[:4].std(), rtol=1e-6)
    assert z[4] == 0.0 and mean == pytest.approx(y[:4].mean()) and std == pytest.approx(y[:4].std())
    for big in ([3e38, 3e38, 1.0, 2.0, 0.0], [1e20, 1.0, 2.0, 3.0, 0.0], [-3.4e38, 3.4e38, 0.0, 1.0, 0.0]):
        z, mean, std = (np.asarray(a) for a in standardize(jnp.asarray(big, jnp.float32), mask))
        ref = np.asarray(big[:4], np.float64)
        assert np.all(np.isfinite(z)) and np.isfinite(mean) and np.isfinite(std)
        np.testing.assert_allclose(z[:4], (ref - ref.mean()) / ref.std(), atol=1e-6)
    # and values of any small scale, down to float32's smallest normals: distinct values are not constant
    for c in (1e-11, 1e-20, 1e-36):
        small = np.array([1.0, 2.0, 3.0, 4.0, 9.0], np.float32) * np.float32(c)
        z, mean, std = (np.asarray(a) for a in standardize(jnp.asarray(small), mask))
        ref = small[:4].astype(np.float64)
        np.testing.assert_allclose(z[:4], (ref - ref.mean()) / ref.std(), rtol=1e-5)
        assert std == pytest.approx(ref.std(), rel=1e-5) and mean == pytest.approx(ref.mean(), rel=1e-5)
    z, _, std = (np.asarray(a) for a in standardize(jnp.zeros(5), mask))
    assert std == 1.0 and np.all(z == 0.0)


def test_cholesky_adds_jitter_when_needed_and_reports_failure():
    # Duplicate points with no noise: singular in exact arithmetic.
    x = jnp.asarray(np.repeat(make_data(4)[0], 3, axis=0))
    mask = jnp.ones(12, bool)
    p = PARAMS._replace(log_noise=jnp.float32(math.log(1e-9)))
    A = gp.masked_gram(p, x, mask, CAT, CARD, jnp.float32(0.0))
    L, ok, jitter = gp.safe_cholesky(A, mask, jnp.float32(1.3))
    assert bool(ok) and np.isfinite(np.asarray(L)).all()
    np.testing.assert_allclose(np.asarray(L @ L.T), np.asarray(A) + float(jitter) * np.eye(12), atol=1e-4)
    # A matrix no jitter can save: reported, and the posterior is the prior (no NaN).
    bad = A.at[0, 1].set(jnp.nan)
    _, ok_bad, _ = gp.safe_cholesky(bad, mask, jnp.float32(1.3))
    assert not bool(ok_bad)
    post = gp.factorize(p._replace(log_signal=jnp.float32(jnp.nan)), x, jnp.ones(12), mask, CAT, CARD,
                        jnp.float32(0.0))
    assert not bool(post.ok)
    assert np.isfinite(np.asarray(post.alpha)).all()
    # A good matrix but a non-finite target: the prior too, and reported.
    y = jnp.ones(12).at[3].set(jnp.inf)
    post = gp.factorize(p, x, y, mask, CAT, CARD, jnp.float32(0.0))
    assert not bool(post.ok) and not np.asarray(post.mask).any() and (np.asarray(post.alpha) == 0).all()


@functools.partial(jax.jit, static_argnames=("fixed_noise",))
def fit(key, x, y, mask, warm, min_noise, fixed_noise=False):
    """``gp.fit_kernel_params`` on this file's categorical layout, compiled once per shape."""
    return gp.fit_kernel_params(key, x, y, mask, warm, CAT, CARD, min_noise, fixed_noise=fixed_noise)


def test_fit_improves_the_objective_and_finds_the_irrelevant_coordinate():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 3)).astype(np.float32)
    x[:, 2] = 0.5 / 3  # one category throughout
    y = np.sin(8 * x[:, 0]).astype(np.float32)  # depends on coordinate 0 only
    z, _, _ = gp.standardize(jnp.asarray(y), jnp.ones(40, bool))
    xb, zb, mask = padded(x, np.asarray(z), 24)
    args = (jnp.asarray(xb), jnp.asarray(zb), jnp.asarray(mask))

    def objective(p):
        return gp.log_marginal_likelihood(p, *args, CAT, CARD, MIN_NOISE) + gp.log_prior(p, MIN_NOISE)

    fitted = fit(jax.random.key(0), *args, gp.default_kernel_params(3), jnp.float32(MIN_NOISE))
    assert float(objective(fitted)) > float(objective(gp.default_kernel_params(3))) + 10.0
    ls = np.exp(np.asarray(fitted.log_lengthscale))
    assert ls[1] > 2 * ls[0], ls


def test_fixed_noise_interpolates_what_a_fitted_noise_smooths():
    # A smooth trend plus fine structure no 40 points resolve: a fitted noise
    # takes the fine structure for noise; with the noise fixed at its floor
    # (a deterministic objective) the posterior mean goes through every point.
    rng = np.random.default_rng(3)
    x = rng.uniform(size=(40, 3)).astype(np.float32)
    x[:, 2] = 0.5 / 3
    y = (np.sin(6 * x[:, 0]) + 0.3 * np.sin(90 * x[:, 0] + 40 * x[:, 1])).astype(np.float32)
    z, _, _ = gp.standardize(jnp.asarray(y), jnp.ones(40, bool))
    xb, zb, mask = padded(x, np.asarray(z), 8)
    args = (jnp.asarray(xb), jnp.asarray(zb), jnp.asarray(mask))
    warm, floor = gp.default_kernel_params(3), jnp.float32(MIN_NOISE)
    fitted = fit(jax.random.key(0), *args, warm, floor)
    fixed = fit(jax.random.key(0), *args, warm, floor, fixed_noise=True)
    assert float(gp.noise_variance(fitted, floor)) > 0.01
    assert float(gp.noise_variance(fixed, floor)) == pytest.approx(MIN_NOISE + 1e-9, rel=1e-3)
    # The lengthscales are still fitted.
    assert not np.allclose(np.asarray(fixed.log_lengthscale), np.asarray(warm.log_lengthscale), atol=0.1)

    @jax.jit  # one program for both fits (op by op, each operation compiled on its own)
    def posterior_mean(p):
        post = gp.factorize(p, *args, CAT, CARD, floor)
        return gp.predict(post, jnp.asarray(x), CAT, CARD)[0]

    def residual(p):
        return float(np.max(np.abs(np.asarray(posterior_mean(p)) - np.asarray(z))))

    assert residual(fixed) < 0.02
    assert residual(fitted) > 0.1


def test_log_ei_matches_closed_form_where_ei_is_large():
    mean = np.linspace(-2.0, 3.0, 41)
    var = np.linspace(0.05, 2.0, 41) ** 2
    best = 0.3
    s = np.sqrt(var)
    z = (best - mean) / s
    ei = s * (np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi) + z * ssp.ndtr(z))
    got = acqf.log_ei(jnp.asarray(mean, jnp.float32), jnp.asarray(var, jnp.float32), jnp.float32(best))
    np.testing.assert_allclose(np.asarray(got), np.log(ei), rtol=1e-4, atol=1e-4)


def test_log_h_is_accurate_finite_and_monotone_where_ei_underflows():
    # float64 reference on its accurate range: h = phi(z) (1 - t R(t)) for z = -t < 0.
    z = np.linspace(-30.0, -1.0, 300)
    t = -z
    one_minus = 1.0 - t * math.sqrt(math.pi / 2) * ssp.erfcx(t / math.sqrt(2))
    ref = -0.5 * z * z - 0.5 * math.log(2 * math.pi) + np.log(one_minus)
    log_h = jax.jit(acqf.log_h)  # one program per shape, not one per operation
    got = np.asarray(log_h(jnp.asarray(z, jnp.float32)))
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)
    # Far below, where EI itself is 0 in float32: finite, increasing, with a finite gradient.
    zz = -np.logspace(0, 4, 500)[::-1].astype(np.float32)  # -1e4 .. -1, ascending
    h = np.asarray(log_h(jnp.asarray(zz)))
    assert np.isfinite(h).all()
    assert (np.diff(h) > 0).all()
    # The naive float32 formula gives no signal there (0 or negative).
    z20 = jnp.float32(-20.0)
    naive = jnp.exp(-0.5 * z20 * z20) / math.sqrt(2 * math.pi) + z20 * jax.scipy.special.ndtr(z20)
    assert float(naive) <= 0.0 and np.isfinite(float(log_h(z20)))
    g = jax.jit(jax.vmap(jax.grad(acqf.log_h)))(jnp.asarray(zz))
    assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) > 0).all()
    # Continuous across the branch switches at z = -1 and z = -8, and differentiable on them:
    # d/dz log h = Phi(z) / h(z), also exactly at the switch
    for zb in (-1.0, -8.0):
        lo, hi = log_h(jnp.float32(zb - 1e-3)), log_h(jnp.float32(zb + 1e-3))
        assert abs(float(hi) - float(lo)) < 2e-2
        exact = ssp.ndtr(zb) / (math.exp(-0.5 * zb * zb) / math.sqrt(2 * math.pi) + zb * ssp.ndtr(zb))
        assert float(jax.grad(acqf.log_h)(jnp.float32(zb))) == pytest.approx(exact, rel=1e-4)


def test_lengthscale_preconditioning_reaches_an_anisotropic_maximum():
    # An acquisition that varies on the scale 0.05 along x0 and 0.5 along x1,
    # as under an ARD kernel with those lengthscales. Normalised gradient
    # steps follow the steep coordinate and barely move the other; scaled by
    # the squared lengthscales the steps head straight for the maximum.
    scale = np.array([0.05, 0.5])
    peak = np.array([0.3, 0.7])

    def acq(x):
        return -jnp.sum(((x - peak) / scale) ** 2, axis=-1)

    start = jnp.array([[0.9, 0.1]])
    kw = dict(snap=lambda x: x, movable=np.array([True, True]), restarts=1, steps=60, learning_rate=0.5)
    plain, _ = acqf.maximize(acq, start, **kw)
    scaled, _ = acqf.maximize(acq, start, precondition=jnp.asarray(scale**2, jnp.float32), **kw)
    np.testing.assert_allclose(np.asarray(scaled), peak, atol=1e-3)
    assert abs(float(plain[0]) - peak[0]) < 1e-3
    assert abs(float(plain[1]) - peak[1]) > 0.3
