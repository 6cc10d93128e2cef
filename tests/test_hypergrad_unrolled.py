"""Unrolled hypergradients: known answers on ridge regression in float64, memory in float32."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.hypergrad import AUTO_FORWARD_MAX, rollout, unrolled

# Ridge regression, small enough that a 1000-step unroll compiles and runs fast.
_rng = np.random.default_rng(0)
N, D, NV = 30, 5, 20
X_NP = _rng.normal(size=(N, D))
Y_NP = X_NP @ _rng.normal(size=D) + 0.5 * _rng.normal(size=N)
XV_NP = _rng.normal(size=(NV, D))
YV_NP = XV_NP @ _rng.normal(size=D) + 0.5 * _rng.normal(size=NV)
A_NP = X_NP.T @ X_NP / N
B_NP = X_NP.T @ Y_NP / N
# Step size half of 2 / L (L the largest curvature at lambda = 0.3): stable,
# and the iterates converge within ~1000 steps (checked below).
LAM0 = 0.3
LR0 = 1.0 / (np.linalg.eigvalsh(A_NP).max() + LAM0)


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _problem():
    """Arrays in the current dtype regime, plus step and validation loss."""
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    Xv, yv = jnp.asarray(XV_NP), jnp.asarray(YV_NP)

    def step(w, h, t):
        # gradient descent on 0.5 mean (Xw - y)^2 + 0.5 lam |w|^2
        return w - h["lr"] * (A @ w - b + h["lam"] * w)

    def val_loss(w, h):
        return 0.5 * jnp.mean((Xv @ w - yv) ** 2)

    return step, val_loss


def _hp(lam=LAM0, lr=LR0):
    return {"lam": jnp.asarray(lam, jnp.float64), "lr": jnp.asarray(lr, jnp.float64)}


def _closed_form_hypergrad(lam):
    """d val_loss(w*(lam)) / d lam with w* = (A + lam I)^-1 b, dw*/dlam = -(A + lam I)^-1 w*."""
    H = A_NP + lam * np.eye(D)
    w = np.linalg.solve(H, B_NP)
    dval_dw = XV_NP.T @ (XV_NP @ w - YV_NP) / NV
    return dval_dw @ -np.linalg.solve(H, w)


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_reverse_matches_central_finite_differences(x64, T):
    step, val_loss = _problem()
    hg = jax.jit(unrolled(step, val_loss, T, mode="reverse"))
    w0 = jnp.zeros(D)
    value, grads = hg(_hp(), w0)

    def loss(lam, lr):
        return float(val_loss(rollout(step, _hp(lam, lr), w0, T), None))

    assert float(value) == pytest.approx(loss(LAM0, LR0), rel=1e-12)
    # Central differences: truncation O(eps^2 f''') ~ 1e-12, round-off
    # O(1e-16 / eps) ~ 1e-11 relative at eps = 1e-5 (relative).
    e_lam, e_lr = 1e-5 * LAM0, 1e-5 * LR0
    fd_lam = (loss(LAM0 + e_lam, LR0) - loss(LAM0 - e_lam, LR0)) / (2 * e_lam)
    fd_lr = (loss(LAM0, LR0 + e_lr) - loss(LAM0, LR0 - e_lr)) / (2 * e_lr)
    assert float(grads["lam"]) == pytest.approx(fd_lam, rel=1e-6)
    # d/d lr vanishes as the iterates converge; compare against the scale of
    # the lambda derivative rather than its own (tiny) size at T = 1000.
    assert abs(float(grads["lr"]) - fd_lr) <= 1e-6 * max(abs(fd_lr), abs(fd_lam))


@pytest.mark.parametrize("T", [10, 100, 1000])
def test_forward_equals_reverse_and_checkpointing_changes_nothing(x64, T):
    step, val_loss = _problem()
    w0 = jnp.asarray(_rng.normal(size=D))
    v_rev, g_rev = jax.jit(unrolled(step, val_loss, T, mode="reverse"))(_hp(), w0)
    v_fwd, g_fwd = jax.jit(unrolled(step, val_loss, T, mode="forward"))(_hp(), w0)
    # k = 7 does not divide 10, 100 or 1000: exercises the remainder segment.
    v_ck, g_ck = jax.jit(unrolled(step, val_loss, T, mode="reverse", checkpoint_every=7))(_hp(), w0)
    v_auto, g_auto = jax.jit(unrolled(step, val_loss, T, mode="auto"))(_hp(), w0)
    # What each step keeps for the backward pass changes nothing either.
    v_all, g_all = jax.jit(unrolled(step, val_loss, T, step_policy="all"))(_hp(), w0)
    v_carry, g_carry = jax.jit(unrolled(step, val_loss, T, step_policy="carry"))(_hp(), w0)
    v_dots, g_dots = jax.jit(unrolled(step, val_loss, T, checkpoint_every=7,
                                      step_policy=jax.checkpoint_policies.dots_saveable))(_hp(), w0)
    for name in ("lam", "lr"):
        ref = float(g_rev[name])
        for other in (g_fwd, g_ck, g_auto, g_all, g_carry, g_dots):
            assert float(other[name]) == pytest.approx(ref, rel=1e-8, abs=1e-14)
    for v in (v_fwd, v_ck, v_auto, v_all, v_carry, v_dots):
        assert float(v) == pytest.approx(float(v_rev), rel=1e-12)


def test_unrolled_tends_to_implicit_as_T_grows(x64):
    step, val_loss = _problem()
    exact = _closed_form_hypergrad(LAM0)
    # A small step (a tenth of LR0) so that convergence is visible over T.
    lr = 0.1 * LR0
    errors, lr_grads = [], []
    for T in (10, 100, 1000):
        _, g = jax.jit(unrolled(step, val_loss, T, checkpoint_every=int(math.isqrt(T))))(_hp(LAM0, lr), jnp.zeros(D))
        errors.append(abs(float(g["lam"]) - exact) / abs(exact))
        lr_grads.append(abs(float(g["lr"])))
    assert errors[0] > errors[1] > errors[2]
    # GD contracts by 1 - lr * lambda_min(A + lam I) ~ 0.966 per step: the
    # iterate's error (and its derivative's, ~T c^T) is ~1e-12 after 1000 steps.
    contraction = 1 - lr * (np.linalg.eigvalsh(A_NP).min() + LAM0)
    assert contraction ** 10 > 0.5 and 1000 * contraction ** 1000 < 1e-11
    assert errors[2] < 1e-8
    # at convergence the solution no longer depends on the step size
    assert lr_grads[2] < 1e-8 * abs(exact)


def test_array_hparams_per_coordinate_rates_and_return_state(x64):
    """Per-coordinate learning rates (a (D,) array) and per-coordinate L2: 2D scalars."""
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    _, val_loss = _problem()

    def step(w, h, t):
        return w - h["lr"] * (A @ w - b + jnp.exp(h["log_lam"]) * w)

    hp = {"lr": jnp.full(D, LR0) * jnp.linspace(0.5, 1.0, D), "log_lam": jnp.log(jnp.full(D, LAM0))}
    w0 = jnp.zeros(D)
    T = 20  # short, so d/d lr is far from zero and differences resolve it
    v_rev, g_rev, s_rev = jax.jit(unrolled(step, val_loss, T, return_state=True))(hp, w0)
    v_fwd, g_fwd, s_fwd = jax.jit(unrolled(step, val_loss, T, mode="forward", return_state=True))(hp, w0)
    assert 2 * D > AUTO_FORWARD_MAX  # "auto" takes the reverse path here
    v_auto, g_auto = jax.jit(unrolled(step, val_loss, T, mode="auto"))(hp, w0)
    np.testing.assert_allclose(np.asarray(s_rev), np.asarray(rollout(step, hp, w0, T)), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(s_fwd), np.asarray(s_rev), rtol=1e-14)
    for name in hp:
        assert g_rev[name].shape == (D,)
        np.testing.assert_allclose(np.asarray(g_fwd[name]), np.asarray(g_rev[name]), rtol=1e-8, atol=1e-14)
        np.testing.assert_allclose(np.asarray(g_auto[name]), np.asarray(g_rev[name]), rtol=1e-12, atol=1e-16)
    # one coordinate against central differences
    e = 1e-5 * float(hp["lr"][2])
    bump = jnp.zeros(D).at[2].set(e)
    f = lambda h: float(val_loss(rollout(step, h, w0, T), None))
    fd = (f({**hp, "lr": hp["lr"] + bump}) - f({**hp, "lr": hp["lr"] - bump})) / (2 * e)
    assert float(g_rev["lr"][2]) == pytest.approx(fd, rel=1e-6)


@pytest.mark.parametrize("n_lr", [1, 12])  # the linearised path (few scalars) and the vmapped one
def test_forward_mode_carries_integer_state_leaves(x64, n_lr):
    """A step counter (int32) in the state: no tangent, the same gradient as reverse mode."""
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    _, val_loss = _problem()

    def step(state, h, t):
        w, count = state
        decay = 1.0 / (1.0 + 0.05 * count.astype(w.dtype))  # uses the counter
        return w - jnp.mean(h["lr"]) * decay * (A @ w - b + jnp.exp(h["log_lam"]) * w), count + 1

    hp = {"lr": jnp.full(n_lr, LR0), "log_lam": jnp.log(jnp.asarray(LAM0))}
    state0 = (jnp.zeros(D), jnp.int32(0))
    loss = lambda s, h: val_loss(s[0], h)  # noqa: E731
    v_rev, g_rev, s_rev = jax.jit(unrolled(step, loss, 15, return_state=True))(hp, state0)
    v_fwd, g_fwd, s_fwd = jax.jit(unrolled(step, loss, 15, mode="forward", return_state=True))(hp, state0)
    assert int(s_fwd[1]) == 15 and s_fwd[1].dtype == jnp.int32
    np.testing.assert_allclose(float(v_fwd), float(v_rev), rtol=1e-14)
    for name in hp:
        np.testing.assert_allclose(np.asarray(g_fwd[name]), np.asarray(g_rev[name]), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("mode", ["forward", "auto"])
def test_a_python_number_in_the_state_that_the_step_makes_float_carries_a_tangent(x64, mode):
    """``init_state`` leaves given as Python ints (``0``), promoted to floats by
    ``lax.scan`` as in reverse mode: forward mode must differentiate them too."""
    A, b = jnp.asarray(A_NP), jnp.asarray(B_NP)
    _, val_loss = _problem()

    def step(state, h, t):
        w = state["w"] - h["lr"] * (A @ state["w"] - b + jnp.exp(h["log_lam"]) * state["w"])
        return {"w": w, "ema": 0.9 * state["ema"] + 0.1 * jnp.sum(w ** 2)}

    loss = lambda s, h: val_loss(s["w"], h) + s["ema"]  # noqa: E731
    hp = {"lr": jnp.asarray(LR0), "log_lam": jnp.log(jnp.asarray(LAM0))}
    _, g_rev = unrolled(step, loss, 12)(hp, {"w": jnp.zeros(D), "ema": 0})
    _, g_fwd = unrolled(step, loss, 12, mode=mode)(hp, {"w": jnp.zeros(D), "ema": 0})
    _, g_ref = unrolled(step, loss, 12, mode=mode)(hp, {"w": jnp.zeros(D), "ema": 0.0})
    for name in hp:
        np.testing.assert_allclose(float(g_fwd[name]), float(g_rev[name]), rtol=1e-10)
        np.testing.assert_allclose(float(g_fwd[name]), float(g_ref[name]), rtol=1e-12)
        assert float(g_fwd[name]) != 0.0


@pytest.mark.parametrize("n_extra", [0, 9])  # the linearised path (2 scalars) and the vmapped one (11)
def test_forward_grads_take_each_hyperparameter_dtype(x64, n_extra):
    """A float32 model with float64 and float32 hyperparameters: every mode
    returns grads in the hyperparameters' own dtypes, and they agree."""
    A, b = jnp.asarray(A_NP, jnp.float32), jnp.asarray(B_NP, jnp.float32)
    Xv, yv = jnp.asarray(XV_NP, jnp.float32), jnp.asarray(YV_NP, jnp.float32)

    def step(w, h, t):
        return w - h["lr"].astype(w.dtype) * (A @ w - b + h["lam"].astype(w.dtype) * w + jnp.sum(h["pad"]))

    def val_loss(w, h):
        return 0.5 * jnp.mean((Xv @ w - yv) ** 2)  # float32

    hp = {"lr": jnp.float64(LR0), "lam": jnp.float32(LAM0), "pad": jnp.zeros(n_extra, jnp.float32)}
    grads = {mode: unrolled(step, val_loss, 6, mode=mode)(hp, jnp.zeros(D, jnp.float32))[1]
             for mode in ("reverse", "forward", "auto")}
    for g in grads.values():
        assert {k: v.dtype for k, v in g.items()} == {k: v.dtype for k, v in hp.items()}
        for name in hp:
            np.testing.assert_allclose(np.asarray(g[name]), np.asarray(grads["reverse"][name]), rtol=1e-5)
    # hyperparameters of no entries: nothing to differentiate, in either mode
    w0 = jnp.zeros(D, jnp.float32)
    value = unrolled(step, val_loss, 3)(hp, w0)[0]
    for mode in ("reverse", "forward"):
        v0, g0 = unrolled(lambda w, h, t: step(w, hp, t), val_loss, 3, mode=mode)({"e": jnp.zeros(0)}, w0)
        assert g0["e"].shape == (0,) and float(v0) == float(value)


def test_step_index_and_minibatches(x64):
    """``t`` runs 0..T-1 in order, across checkpoint segments and the remainder."""
    def step(s, h, t):
        return s * h["a"] + t.astype(s.dtype)

    def val_loss(s, h):
        return s

    T = 10
    a = 0.9
    expected = sum(t * a ** (T - 1 - t) for t in range(T))
    dexpected = sum(t * (T - 1 - t) * a ** (T - 2 - t) for t in range(T - 1))
    for k in (None, 3, 5, 10, 11):
        v, g = unrolled(step, val_loss, T, checkpoint_every=k)({"a": jnp.float64(a)}, jnp.float64(0.0))
        assert float(v) == pytest.approx(expected, rel=1e-13)
        assert float(g["a"]) == pytest.approx(dexpected, rel=1e-13)


def test_vmap_over_hparams_equals_scalar_results(x64):
    step, val_loss = _problem()
    hg = jax.jit(unrolled(step, val_loss, 100))
    lams = jnp.geomspace(1e-3, 10.0, 64)
    w0 = jnp.zeros(D)
    v, g = jax.jit(jax.vmap(hg, in_axes=({"lam": 0, "lr": None}, None)))({"lam": lams, "lr": jnp.float64(LR0)}, w0)
    for i in (0, 17, 40, 63):
        vi, gi = hg(_hp(lams[i], LR0), w0)
        assert float(v[i]) == pytest.approx(float(vi), rel=1e-12)
        assert float(g["lam"][i]) == pytest.approx(float(gi["lam"]), rel=1e-10, abs=1e-15)


def test_memory_checkpointed_reverse_sublinear_forward_flat():
    """Compiled temp memory: reverse O(T), checkpointed O(sqrt T), forward O(1) in T."""
    d = 256
    M = jnp.asarray(np.random.default_rng(1).normal(size=(d, d)) / d ** 0.5, jnp.float32)

    def step(w, h, t):
        return w - h["lr"] * (jnp.tanh(M @ w) + h["lam"] * w)

    def val_loss(w, h):
        return jnp.sum(w ** 2)

    hp = {"lam": jnp.float32(0.1), "lr": jnp.float32(0.1)}
    w0 = jnp.ones(d, jnp.float32)

    def temp_bytes(T, **kw):
        compiled = jax.jit(unrolled(step, val_loss, T, **kw)).lower(hp, w0).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    Ts = (64, 1024)  # 16x longer
    plain = [temp_bytes(T, mode="reverse") for T in Ts]
    keep_all = temp_bytes(Ts[1], mode="reverse", step_policy="all")
    ckpt = [temp_bytes(T, mode="reverse", checkpoint_every=math.isqrt(T)) for T in Ts]
    fwd = [temp_bytes(T, mode="forward") for T in Ts]
    state_bytes = d * 4
    # plain reverse keeps at least one state per step
    assert plain[1] >= 1024 * state_bytes
    assert plain[1] / plain[0] > 10
    # the default keeps only each step's input state; "all" keeps the
    # step's residuals too (here tanh's input and output, 3 states a step)
    assert plain[1] < 2 * 1024 * state_bytes < keep_all
    # sqrt(16) = 4: checkpointed memory grows about 4x, far from 16x
    assert ckpt[1] / ckpt[0] < 6
    assert ckpt[1] < plain[1] / 10
    assert fwd[1] == fwd[0]
    # a state of 3 numbers: nothing else may grow with T (a scanned-over
    # arange of step indices took 4 bytes a step)
    def small_step(w, h, t):  # (uses t, as a minibatch pick would)
        return w - h["lr"] * (w - jnp.sin(t.astype(w.dtype)))

    tiny = unrolled(small_step, lambda w, h: jnp.sum(w ** 2), 16, mode="forward")
    long = unrolled(small_step, lambda w, h: jnp.sum(w ** 2), 65536, mode="forward")
    w3 = jnp.ones(3, jnp.float32)
    sizes = [jax.jit(f).lower({"lr": jnp.float32(0.1)}, w3).compile().memory_analysis().temp_size_in_bytes
             for f in (tiny, long)]
    assert sizes[0] == sizes[1]


def test_a_val_loss_returning_a_pair_is_named():
    # (a (loss, aux) pair failed inside jnp.asarray: "entry not a 2- or 3- tuple")
    for mode in ("reverse", "forward"):
        hg = unrolled(lambda w, h, t: w - h["lr"] * w, lambda w, h: (jnp.sum(w ** 2), {"aux": w}), 3, mode=mode)
        with pytest.raises(TypeError, match="val_loss must return a scalar: one real number, got tuple"):
            hg({"lr": jnp.float32(0.1)}, jnp.ones(3))


def test_contractions_policy_keeps_weight_gradients_only():
    from jaxhpo.hypergrad import contractions_saveable

    dot = jax.lax.dot_general_p
    f32 = lambda *shape: jax.core.ShapedArray(shape, jnp.float32)  # noqa: E731
    plain = (((1,), (0,)), ((), ()))  # (B, d) @ (d, k)
    over_batch = (((0,), (0,)), ((), ()))  # (B, d)^T (B, k)
    # A weight gradient contracts the batch: parameter-sized, saved.
    assert contractions_saveable(dot, f32(512, 32), f32(512, 64), dimension_numbers=over_batch)
    # Activations are batch-sized: recomputed.
    assert not contractions_saveable(dot, f32(512, 32), f32(32, 64), dimension_numbers=plain)
    assert not contractions_saveable(dot, f32(512, 10), f32(10, 64), dimension_numbers=(((1,), (1,)), ((), ())))
    # A matrix-vector product's output is as large as the vector: recomputed.
    assert not contractions_saveable(dot, f32(256, 256), f32(256), dimension_numbers=(((1,), (0,)), ((), ())))
    # Batched products: (b, B, d) x (b, B, k) over B -> (b, d, k), saved.
    assert contractions_saveable(dot, f32(4, 512, 8), f32(4, 512, 16), dimension_numbers=(((1,), (1,)), ((0,), (0,))))
    assert not contractions_saveable(jax.lax.mul_p, f32(512, 64), f32(512, 64))


def test_contractions_policy_memory_sits_between_carry_and_all():
    X = jnp.asarray(np.random.default_rng(2).normal(size=(128, 16)), jnp.float32)
    y = jnp.asarray(np.random.default_rng(3).normal(size=(128,)), jnp.float32)

    def loss(p):
        return jnp.mean((jnp.tanh(X @ p["w1"]) @ p["w2"] - y) ** 2)

    def step(p, h, t):
        g = jax.grad(loss)(p)
        return jax.tree_util.tree_map(lambda a, b: a - h["lr"] * b, p, g)

    k1, k2 = jax.random.split(jax.random.key(0))
    p0 = {"w1": jax.random.normal(k1, (16, 32)) / 4, "w2": jax.random.normal(k2, (32,)) / 6}
    hp = {"lr": jnp.float32(0.05)}
    T = 256
    out, temp = {}, {}
    for policy in ("contractions", "carry", "all"):
        fn = jax.jit(unrolled(step, lambda p, h: loss(p), T, step_policy=policy))
        temp[policy] = fn.lower(hp, p0).compile().memory_analysis().temp_size_in_bytes
        out[policy] = fn(hp, p0)
    params = 16 * 32 + 32
    # Each step keeps its input state, plus its two weight gradients (one more
    # state's worth) -- far less than every residual (batch-sized activations).
    assert temp["carry"] + T * params * 4 * 0.9 <= temp["contractions"] < temp["all"] / 2
    for policy in ("carry", "all"):
        np.testing.assert_allclose(out[policy][1]["lr"], out["contractions"][1]["lr"], rtol=1e-5)


def test_bad_arguments():
    step = lambda s, h, t: s
    val = lambda s, h: jnp.sum(s)
    with pytest.raises(ValueError, match="mode"):
        unrolled(step, val, 10, mode="sideways")
    with pytest.raises(ValueError, match="num_steps"):
        unrolled(step, val, 0)
    with pytest.raises(TypeError, match="num_steps"):
        unrolled(step, val, 2.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        unrolled(step, val, 10, checkpoint_every=0)
    with pytest.raises(TypeError, match="checkpoint_every"):
        unrolled(step, val, 10, checkpoint_every=True)
    with pytest.raises(ValueError, match="step_policy"):
        unrolled(step, val, 10, step_policy="some")
    with pytest.raises(TypeError, match="step_policy"):
        unrolled(step, val, 10, step_policy=3)
    with pytest.raises(TypeError, match="step"):
        unrolled(None, val, 10)
    with pytest.raises(TypeError, match="val_loss"):
        unrolled(step, 3, 10)
    from jaxhpo.hypergrad import rollout
    with pytest.raises(TypeError, match="step must be callable"):
        rollout(None, {}, jnp.zeros(2), 3)
    with pytest.raises(TypeError, match="return_state must be a bool"):
        unrolled(step, val, 3, return_state="False")
    hg = unrolled(step, val, 3)
    with pytest.raises(TypeError, match=r"hparams\['n'\] has dtype int32"):
        hg({"lr": jnp.float32(0.1), "n": jnp.int32(3)}, jnp.zeros(2))
    with pytest.raises(TypeError, match=r"real floating-point.*hparams\['c'\] has dtype complex64"):
        hg({"c": jnp.complex64(1.0)}, jnp.zeros(2))
    with pytest.raises(ValueError, match="scalar"):
        unrolled(step, lambda s, h: s, 3)({"a": jnp.float32(1.0)}, jnp.zeros(2))
    # An integer or complex validation loss has no real gradient, in either
    # mode (forward mode cast a complex one's tangent to its real part).
    for mode in ("reverse", "forward"):
        for loss in (lambda s, h: jnp.sum(s > 0.5), lambda s, h: jnp.sum(s) * (1 + 1j)):
            with pytest.raises(TypeError, match="val_loss must return a real floating-point value"):
                unrolled(step, loss, 3, mode=mode)({"a": jnp.float32(1.0)}, jnp.ones(2))


def test_forward_mode_keeps_a_python_float_hyperparameter_weak_under_x64():
    # A Python float beside a float32 array, a float32 state, x64 on: the
    # primal went through ravel/unravel and came back a strong float64, which
    # promoted the state (a scan carry type error). Both forward paths (the
    # linearised one for a few scalars, vmapped jvp for more) equal reverse.
    def step(w, hp, t):
        return w - hp["lr"] * (w - 1.0) - hp["wd"] * w

    def val(w, hp):
        return jnp.sum(w**2)

    w0 = jnp.full(3, 3.0, jnp.float32)
    with jax.enable_x64(True):
        for hp in ({"lr": 0.1, "wd": jnp.zeros(1, jnp.float32)},
                   {"lr": 0.1, "wd": jnp.zeros(1, jnp.float32), **{f"e{i}": 0.0 for i in range(9)}}):
            v_r, g_r = unrolled(step, val, 4, mode="reverse")(hp, w0)
            v_f, g_f = unrolled(step, val, 4, mode="forward")(hp, w0)
            assert float(v_f) == float(v_r)
            for k in hp:
                np.testing.assert_allclose(np.asarray(g_f[k]), np.asarray(g_r[k]), rtol=1e-5)
            assert float(g_f["lr"]) == pytest.approx(-80.90849, rel=1e-5)


@pytest.mark.parametrize("mode", ["reverse", "forward"])
def test_an_outer_loop_in_python_compiles_once(mode):
    """hg called from a Python loop (no jax.jit of one's own): the first call
    compiles, later calls with new values of the same shapes compile nothing,
    and the loop descends the validation loss."""
    from helpers import compiles_during

    step, val_loss = _problem()
    hg = unrolled(step, val_loss, 20, mode=mode)
    h, w0 = {"lam": jnp.float32(2.0), "lr": jnp.float32(LR0)}, jnp.zeros(D, jnp.float32)
    values = []
    for i in range(4):
        with compiles_during() as compiles:
            value, grads = hg(h, w0)
        if i:
            assert compiles == [], f"call {i} compiled {len(compiles)} programs"
        values.append(float(value))
        h = {"lam": h["lam"] - 0.5 * grads["lam"], "lr": h["lr"]}
    assert values[-1] < values[0]
