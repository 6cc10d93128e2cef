"""Online hypergradient descent: reference algorithms, beta = 0 identity, quadratic behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo.hypergrad import HypergradientState, hypergradient_descent

# A non-isotropic quadratic over a two-leaf parameter pytree (7 coordinates).
_rng = np.random.default_rng(0)
_Q = _rng.normal(size=(7, 7))
H_NP = _Q @ _Q.T / 7 + 0.3 * np.eye(7)
C_NP = _rng.normal(size=7)
P0 = {"a": _rng.normal(size=3), "b": _rng.normal(size=(2, 2))}


def _flat(p):
    return np.concatenate([np.ravel(p["a"]), np.ravel(p["b"])])


def _tree(x, like=np.asarray):
    return {"a": like(x[:3]), "b": like(x[3:].reshape(2, 2))}


def _grad_np(x):
    return H_NP @ x - C_NP


def _run_optax(opt, steps, dtype):
    """(final params, per-step learning rates or None) of ``opt`` on the quadratic."""
    H, c = jnp.asarray(H_NP, dtype), jnp.asarray(C_NP, dtype)

    def grad(p):
        x = jnp.concatenate([p["a"].ravel(), p["b"].ravel()])
        return _tree(H @ x - c, jnp.asarray)

    @jax.jit
    def go(p):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(grad(p), s, p)
            p = optax.apply_updates(p, u)
            lr = s.learning_rate if isinstance(s, HypergradientState) else jnp.zeros((), dtype)
            return (p, s), lr
        (p, _), lrs = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
        return p, lrs

    return go(jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), P0))


# ----------------------------------------------------- reference algorithms
def ref_hd(base, alpha, beta, steps, mu=0.9, b1=0.9, b2=0.999, eps=1e-8):
    """Baydin et al. (2018), Algorithms 1-3 (SGD-HD, SGDN-HD, Adam-HD) plus heavy ball,
    written from the paper in float64 numpy. Returns (theta, alphas)."""
    theta = _flat(P0).astype(np.float64)
    du_prev = np.zeros_like(theta)  # d u_{t-1} / d alpha
    v = np.zeros_like(theta)
    m = np.zeros_like(theta)
    alphas = []
    for t in range(1, steps + 1):
        g = _grad_np(theta)
        alpha = alpha - beta * (g @ du_prev)
        if base == "sgd":
            d = -g
        elif base == "momentum":
            v = mu * v + g
            d = -v
        elif base == "nesterov":
            v = mu * v + g
            d = -(g + mu * v)
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            d = -(m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        theta = theta + alpha * d
        du_prev = d
        alphas.append(alpha)
    return theta, np.array(alphas)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("base,beta", [("sgd", 0.01), ("momentum", 0.002), ("nesterov", 0.002), ("adam", 1e-4)])
def test_matches_reference_algorithm(x64, base, beta):
    alpha0 = 0.02 if base != "adam" else 0.01
    theta_ref, alphas_ref = ref_hd(base, alpha0, beta, 60)
    p, lrs = _run_optax(hypergradient_descent(alpha0, beta, base=base), 60, jnp.float64)
    np.testing.assert_allclose(np.asarray(lrs), alphas_ref, rtol=1e-12)
    np.testing.assert_allclose(_flat(jax.tree_util.tree_map(np.asarray, p)), theta_ref, rtol=1e-11, atol=1e-13)
    # the rate really moved: the test would catch a dropped hypergradient term
    assert abs(alphas_ref[-1] - alpha0) > 1e-3 * alpha0


@pytest.mark.parametrize("base", ["sgd", "momentum", "nesterov", "adam"])
def test_beta_zero_is_the_base_optimiser_bit_for_bit(base):
    ref = {
        "sgd": optax.sgd(0.05),
        "momentum": optax.sgd(0.05, momentum=0.9),
        "nesterov": optax.sgd(0.05, momentum=0.9, nesterov=True),
        "adam": optax.adam(0.05),
    }[base]
    p_ref, _ = _run_optax(ref, 40, jnp.float32)
    p_hd, lrs = _run_optax(hypergradient_descent(0.05, 0.0, base=base), 40, jnp.float32)
    for k in p_ref:
        np.testing.assert_array_equal(np.asarray(p_hd[k]), np.asarray(p_ref[k]))
    assert np.all(np.asarray(lrs) == np.float32(0.05))


@pytest.mark.parametrize("base", ["momentum", "adam"])
@pytest.mark.parametrize("lr", [0.0123, 0.05, 3e-4])
def test_beta_zero_keeps_each_leaf_in_its_own_dtype(base, lr):
    """A bfloat16 leaf beside a float32 one, one shared rate: the updates and
    parameters equal optax's bit for bit, each leaf in its own dtype."""
    ref = optax.sgd(lr, momentum=0.9) if base == "momentum" else optax.adam(lr)
    tx = hypergradient_descent(lr, 0.0, base=base)
    params = {"a": jnp.linspace(-1, 1, 64).astype(jnp.bfloat16), "b": jnp.linspace(-1, 1, 64)}

    def run(opt):
        p, s = params, opt.init(params)
        for _ in range(8):
            g = jax.tree_util.tree_map(lambda x: (0.37 * x + 0.011).astype(x.dtype), p)
            u, s = opt.update(g, s, p)
            p = optax.apply_updates(p, u)
        return p, u

    (p_hd, u_hd), (p_ref, u_ref) = run(tx), run(ref)
    for k in params:
        assert u_hd[k].dtype == u_ref[k].dtype == params[k].dtype
        np.testing.assert_array_equal(np.asarray(p_hd[k], np.float32), np.asarray(p_ref[k], np.float32))


def test_per_leaf_rates_follow_their_own_leaf(x64):
    beta, alpha0, steps = 0.01, 0.02, 30
    opt = hypergradient_descent(alpha0, beta, per_leaf=True)
    H, c = jnp.asarray(H_NP), jnp.asarray(C_NP)
    p = jax.tree_util.tree_map(jnp.asarray, P0)
    s = opt.init(p)
    # reference: SGD-HD with alpha per leaf, dot products per leaf
    theta, gprev, al = _flat(P0), np.zeros(7), {"a": alpha0, "b": alpha0}
    sl = {"a": slice(0, 3), "b": slice(3, 7)}
    for _ in range(steps):
        g = _grad_np(theta)
        for k in al:
            al[k] = al[k] + beta * g[sl[k]] @ gprev[sl[k]]
        for k in al:
            theta[sl[k]] = theta[sl[k]] - al[k] * g[sl[k]]
        gprev = g
        x = jnp.concatenate([p["a"].ravel(), p["b"].ravel()])
        u, s = opt.update(_tree(H @ x - c, jnp.asarray), s, p)
        p = optax.apply_updates(p, u)
    for k in al:
        assert float(s.learning_rate[k]) == pytest.approx(al[k], rel=1e-12)
    assert al["a"] != pytest.approx(al["b"], rel=1e-3)
    np.testing.assert_allclose(_flat(jax.tree_util.tree_map(np.asarray, p)), theta, rtol=1e-12)


# ----------------------------------------------------- isotropic quadratic
# f(theta) = a/2 |theta|^2, gradient a theta; the curvature-optimal step is
# alpha* = 1/a (it reaches the minimum in one step). SGD-HD gives, with
# e_t = 1 - a alpha_t and theta_t = e_t theta_{t-1}:
#   alpha_t = alpha_{t-1} + beta g_t . g_{t-1} = alpha_{t-1} + beta a^2 e_{t-1} |theta_{t-2}|^2,
# and since e = a (alpha* - alpha):
#   alpha_t - alpha* = (alpha_{t-1} - alpha*) (1 - beta a^3 |theta_{t-2}|^2).
# With beta a^3 |theta_0|^2 <= 1 and |theta| non-increasing (alpha in (0, 2/a)),
# every factor is in [0, 1): alpha moves monotonically toward alpha* from either
# side and never crosses it. Numbers: a = 2, |theta_0|^2 = 1, beta = 0.1 (factor
# >= 0.2). The recursion then gives a final gap of 0.069 (from alpha_0 = 0.05),
# 0.096 (from 0.9) and 0.042 (from 0.005) of the initial gap: below 0.1 each.
A_CURV, BETA, T = 2.0, 0.1, 100
ALPHA_STAR = 1.0 / A_CURV
THETA0 = np.full(4, 0.5)


def _quadratic_run(opt):
    @jax.jit
    def go(theta):
        def body(carry, _):
            th, s = carry
            u, s = opt.update(A_CURV * th, s)
            th_new = optax.apply_updates(th, u)
            lr = s.learning_rate if isinstance(s, HypergradientState) else jnp.zeros(())
            return (th_new, s), (lr, th)
        (th, _), (lrs, ths) = jax.lax.scan(body, (theta, opt.init(theta)), None, length=T)
        return th, lrs, ths
    return go(jnp.asarray(THETA0))


@pytest.mark.parametrize("alpha0", [0.05, 0.9, 0.005])
def test_sgd_hd_moves_rate_to_curvature_optimum(x64, alpha0):
    theta, lrs, thetas = (np.asarray(v) for v in _quadratic_run(hypergradient_descent(alpha0, BETA)))
    assert BETA * A_CURV ** 3 * THETA0 @ THETA0 <= 1
    gaps = np.concatenate([[alpha0], lrs]) - ALPHA_STAR
    # lrs[t] is the rate used at step t (alpha_{t+1} in the paper's numbering);
    # thetas[t] the iterate it was applied to.
    assert np.all(np.sign(gaps) == np.sign(alpha0 - ALPHA_STAR))
    assert np.all(np.abs(np.diff(gaps)) <= np.abs(gaps[:-1]) + 1e-15)
    assert np.all(np.diff(np.abs(gaps)) <= 1e-15)
    # the exact contraction identity, step by step (the first step has no previous gradient)
    sq = np.sum(thetas ** 2, axis=1)
    np.testing.assert_allclose(gaps[2:], gaps[1:-1] * (1 - BETA * A_CURV ** 3 * sq[:-1]), rtol=1e-9, atol=1e-15)
    assert abs(gaps[-1]) < 0.1 * abs(gaps[0])


def test_sgd_hd_beats_sgd_from_a_poor_rate(x64):
    """From alpha_0 = 0.005 (a hundredth of alpha*), plain SGD's loss after T
    steps is a/2 (1 - a alpha_0)^(2T) |theta_0|^2 = 0.99^200 ~ 0.134. SGD-HD
    reaches |alpha - alpha*| < 0.1 |alpha_0 - alpha*| (test above), after which
    |e_t| = a |alpha_t - alpha*| < 0.1: its loss falls by 100x per such step."""
    alpha0 = 0.005
    th_sgd, _, _ = _quadratic_run(optax.sgd(alpha0))
    th_hd, lrs, _ = _quadratic_run(hypergradient_descent(alpha0, BETA))
    loss_sgd = 0.5 * A_CURV * float(np.sum(np.asarray(th_sgd) ** 2))
    loss_hd = 0.5 * A_CURV * float(np.sum(np.asarray(th_hd) ** 2))
    closed = 0.5 * A_CURV * (1 - A_CURV * alpha0) ** (2 * T) * float(THETA0 @ THETA0)
    assert loss_sgd == pytest.approx(closed, rel=1e-10)
    steps_close = int(np.argmax(np.abs(np.asarray(lrs) - ALPHA_STAR) < 0.1 * (ALPHA_STAR - alpha0)))
    assert steps_close < T // 2
    # |e_t| <= 1 - a alpha_0 throughout (monotone), and < a 0.1 (alpha* - alpha_0)
    # from step steps_close on (one step of slack for the indexing).
    s = steps_close + 2
    e_late = A_CURV * 0.1 * (ALPHA_STAR - alpha0)
    bound = 0.5 * A_CURV * float(THETA0 @ THETA0) * (1 - A_CURV * alpha0) ** (2 * s) * e_late ** (2 * (T - s))
    assert loss_hd <= bound
    assert loss_hd < 1e-6 * loss_sgd


def test_float32_default_and_jit_state():
    opt = hypergradient_descent(0.1, 1e-3, base="adam")
    s = opt.init({"w": jnp.zeros(3, jnp.float32)})
    assert s.learning_rate.dtype == jnp.float32 and s.learning_rate.shape == ()
    u, s2 = jax.jit(opt.update)({"w": jnp.ones(3)}, s)
    assert u["w"].dtype == jnp.float32


def test_bad_arguments():
    with pytest.raises(ValueError, match="base"):
        hypergradient_descent(0.1, 0.01, base="rmsprop")
    with pytest.raises(ValueError, match="learning_rate"):
        hypergradient_descent(0.0, 0.01)
    with pytest.raises(ValueError, match="beta"):
        hypergradient_descent(0.1, -1.0)
    with pytest.raises(TypeError, match="beta"):
        hypergradient_descent(0.1, "big")
    with pytest.raises(ValueError, match="momentum"):
        hypergradient_descent(0.1, 0.01, base="momentum", momentum=1.0)
    with pytest.raises(TypeError, match="learning_rate"):
        hypergradient_descent(optax.constant_schedule(0.1), 0.01)
    with pytest.raises(TypeError, match="per_leaf must be a bool"):
        hypergradient_descent(0.1, 0.01, per_leaf="False")


@pytest.mark.parametrize("base, beta", [("sgd", 0.0), ("sgd", 0.01), ("adam", 0.01)])
def test_a_python_number_leaf_as_optax_takes_it(base, beta):
    params = {"scale": 1.0, "w": jnp.ones(2)}
    grads = {"scale": 0.5, "w": jnp.ones(2)}
    opt = hypergradient_descent(0.1, beta, base=base)
    state = opt.init(params)
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
    if beta == 0.0:
        ref, _ = optax.sgd(0.1).update(grads, optax.sgd(0.1).init(params), params)
        assert float(updates["scale"]) == np.float32(ref["scale"])
    assert np.all(np.isfinite(np.asarray(state.learning_rate)))


@pytest.mark.parametrize("per_leaf", [False, True])
def test_an_integer_leaf_steps_as_optax_steps_it(per_leaf):
    # (the rate was cast to the leaf's int dtype: 0.5 became 0, and the leaf never moved)
    params, grads = {"n": jnp.array([30, 30], jnp.int32)}, {"n": jnp.array([10, -10], jnp.int32)}
    opt = hypergradient_descent(0.5, 0.0, per_leaf=per_leaf)
    updates, _ = opt.update(grads, opt.init(params), params)
    ref, _ = optax.sgd(0.5).update(grads, optax.sgd(0.5).init(params), params)
    np.testing.assert_array_equal(updates["n"], ref["n"])
    np.testing.assert_array_equal(optax.apply_updates(params, updates)["n"], [25, 35])


@pytest.mark.parametrize("per_leaf", [False, True])
def test_a_bfloat16_model_adapts_its_rate_in_float32(per_leaf):
    """Steps of beta * h far below bfloat16's resolution near the rate still add up:
    the rate and its hypergradient are kept in float32 (float32 params give the reference)."""
    def run(dtype):
        tx = hypergradient_descent(0.01, 1e-6, per_leaf=per_leaf)
        p = {"w": jnp.linspace(-1, 1, 32).astype(dtype)}
        s = tx.init(p)
        for _ in range(40):
            g = jax.tree_util.tree_map(lambda x: (x + 0.5).astype(dtype), p)  # positive dot products
            u, s = tx.update(g, s, p)
            p = optax.apply_updates(p, u)
        lr = s.learning_rate["w"] if per_leaf else s.learning_rate
        return float(lr), lr.dtype, u["w"].dtype

    lr16, dt16, u16 = run(jnp.bfloat16)
    lr32, _, _ = run(jnp.float32)
    assert dt16 == jnp.float32 and u16 == jnp.bfloat16
    assert lr32 > 0.0101  # it moved ...
    assert lr16 == pytest.approx(lr32, rel=2e-3)  # ... and the bfloat16 model's rate moved alike


def test_a_concrete_0d_array_is_a_learning_rate():
    a, b = hypergradient_descent(jnp.float32(0.05), 0.0), hypergradient_descent(0.05, 0.0)
    p = {"w": jnp.ones(3)}
    assert float(a.init(p).learning_rate) == float(b.init(p).learning_rate)
    with pytest.raises(TypeError, match="learning_rate must be a real number"):
        hypergradient_descent(jnp.ones(2), 0.0)


def test_inject_hyperparams_traces_beta_and_narrow_gradients_keep_the_state_types():
    """Wrapped by optax.inject_hyperparams (beta a traced array in a compiled
    scan), with bfloat16 gradients of float32 parameters: the same run as the
    plain transformation's, and the state's types never change."""
    injected = optax.inject_hyperparams(hypergradient_descent, static_args=("base",))(learning_rate=0.1, beta=0.01)
    p0 = {"w": jnp.linspace(-1.0, 1.0, 8)}

    def run(opt_state, opt_update):
        def body(carry, _):
            p, s = carry
            g = jax.tree_util.tree_map(lambda x: (x + 0.5).astype(jnp.bfloat16), p)
            u, s = opt_update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (p0, opt_state), None, length=6)[0]

    plain = hypergradient_descent(0.1, 0.01)
    p_inj, s_inj = jax.jit(lambda s: run(s, injected.update))(injected.init(p0))
    p_plain, s_plain = jax.jit(lambda s: run(s, plain.update))(plain.init(p0))
    np.testing.assert_array_equal(np.asarray(p_inj["w"]), np.asarray(p_plain["w"]))
    assert float(s_plain.learning_rate) > 0.1 and s_plain.direction["w"].dtype == jnp.float32
    assert float(s_inj.inner_state.learning_rate) == float(s_plain.learning_rate)
    # a NumPy beta is the same rate as a Python float: three updates alike, the rate moved
    runs = []
    for beta in (np.array(0.01), 0.01):
        opt, p = hypergradient_descent(0.1, beta), {"w": jnp.linspace(-1.0, 1.0, 8)}
        state = opt.init(p)
        for _ in range(3):
            u, state = opt.update(jax.tree_util.tree_map(lambda x: x + 0.5, p), state, p)
            p = optax.apply_updates(p, u)
        runs.append((np.asarray(p["w"]), float(state.learning_rate)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] > 0.1
    with pytest.raises(ValueError, match="beta must be >= 0"):
        hypergradient_descent(0.1, jnp.float32(-0.01))


def test_a_label_no_parameter_carries_and_a_float16_rate_under_x64():
    """Under optax.multi_transform a label with no leaves updates nothing; with
    x64 on, beta = 0 rounds the rate once into a float16 leaf, as optax does
    (a rate just above a float16 rounding midpoint tells the two apart)."""
    params = {"w": jnp.ones(3)}
    tx = optax.multi_transform({"body": optax.sgd(0.1), "head": hypergradient_descent(0.1, 1e-3)},
                               {"w": "body"})
    u, _ = tx.update({"w": jnp.full(3, 0.5)}, tx.init(params), params)
    np.testing.assert_array_equal(np.asarray(u["w"]), np.full(3, -0.05, np.float32))
    lr = float(np.ldexp(1 + 2**-11 + 2**-30, -4))
    with jax.enable_x64(True):
        p = {"w": jnp.asarray([1.0, -2.0, 3.0], jnp.float16)}
        g = {"w": jnp.ones(3, jnp.float16)}
        for base, ref in [("sgd", optax.sgd(lr)), ("adam", optax.adam(lr))]:
            hd = hypergradient_descent(lr, 0.0, base=base)
            u_hd, _ = hd.update(g, hd.init(p), p)
            u_ref, _ = ref.update(g, ref.init(p), p)
            np.testing.assert_array_equal(np.asarray(u_hd["w"]), np.asarray(u_ref["w"]))


@pytest.mark.parametrize("per_leaf", [False, True])
def test_a_complex_leaf_adapts_a_real_rate_by_the_real_inner_product(per_leaf):
    # SGD-HD on f(w) = |w|^2 / 2 (gradient w): alpha += beta Re <g_t, g_{t-1}>,
    # written out in NumPy (complex128); the rate stays a real float32.
    opt = hypergradient_descent(0.1, 0.05, per_leaf=per_leaf)
    w0 = np.array([1 + 2j, -0.5 + 1j, 0.25 - 0.75j])
    params = {"w": jnp.asarray(w0, jnp.complex64)}
    state = opt.init(params)
    lr, w, prev = 0.1, w0, np.zeros_like(w0)
    for _ in range(4):
        updates, state = opt.update({"w": params["w"]}, state, params)
        params = optax.apply_updates(params, updates)
        lr += 0.05 * np.real(np.vdot(w, prev))
        w, prev = w - lr * w, w
    rate = state.learning_rate["w"] if per_leaf else state.learning_rate
    assert rate.dtype == jnp.float32
    assert float(rate) == pytest.approx(lr, rel=1e-6)
    np.testing.assert_allclose(np.asarray(params["w"]), w, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.0, 1e-3])
def test_a_weakly_typed_parameter_compiles_the_update_once(beta):
    """``jnp.asarray(1.0)`` is weakly typed; the state keeps one type from
    init on, so a jitted update traces once, as optax.sgd's does."""
    params = {"w": jnp.ones(3), "scale": jnp.asarray(1.0)}
    opt = hypergradient_descent(0.1, beta)
    traces = []

    @jax.jit
    def update(g, s):
        traces.append(1)
        return opt.update(g, s)

    state = opt.init(params)
    for _ in range(3):
        _, state = update(params, state)
    assert len(traces) == 1


@pytest.mark.parametrize("per_leaf", [False, True])
def test_the_rate_stays_at_or_above_its_floor(per_leaf):
    # Gradients that alternate in sign with a beta too large for them: the
    # paper's rule takes the rate below zero (the optimiser then climbs);
    # the default floor keeps it at 0, and min_learning_rate=None is the
    # paper's rule.
    grads = [jnp.array([1.0]), jnp.array([-1.0]), jnp.array([1.0])]

    def rates(**kw):
        opt = hypergradient_descent(0.1, 10.0, per_leaf=per_leaf, **kw)
        s, out = opt.init(jnp.array([1.0])), []
        for g in grads:
            _, s = opt.update(g, s)
            out.append(float(jax.tree_util.tree_leaves(s.learning_rate)[0]))
        return out

    assert rates() == pytest.approx([0.1, 0.0, 0.0])
    assert rates(min_learning_rate=0.05) == pytest.approx([0.1, 0.05, 0.05])
    assert rates(min_learning_rate=None) == pytest.approx([0.1, -9.9, -19.9])
    with pytest.raises(ValueError, match="min_learning_rate"):
        hypergradient_descent(0.1, 0.01, min_learning_rate=-1.0)
