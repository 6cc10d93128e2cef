"""The population gradient-tuning driver over a Space."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo import Categorical, Float, Int, Space
from jaxhpo.hypergrad import float_mask, gradient_tune, implicit

SPACE = Space(lr=Float(1e-4, 1.0, log=True), wd=Float(0.0, 1.0), act=Categorical(["relu", "tanh", "gelu"]),
              layers=Int(1, 4))


def bowl(c):
    """Minimum 0 + act index + layers - 1 at lr = 0.01, wd = 0.3."""
    return ((jnp.log(c["lr"]) - math.log(0.01)) ** 2 + (c["wd"] - 0.3) ** 2
            + c["act"].astype(jnp.float32) + (c["layers"] - 1).astype(jnp.float32))


def test_population_converges_and_holds_discrete_dims_fixed():
    res = gradient_tune(bowl, SPACE, key=1, popsize=8, num_steps=300, optimizer=optax.adam(0.05))
    x = res.history.x  # (steps, popsize, dim)
    assert x.shape == (300, 8, 4) and res.history.values.shape == (300, 8)
    assert not float_mask(SPACE)[2:].any()
    # discrete coordinates never move
    np.testing.assert_array_equal(x[-1][:, 2:], x[0][:, 2:])
    final = SPACE.decode(jnp.asarray(res.state["final_x"]))
    np.testing.assert_allclose(np.asarray(final["lr"]), 0.01, rtol=1e-2)
    np.testing.assert_allclose(np.asarray(final["wd"]), 0.3, atol=1e-2)
    offsets = np.asarray(final["act"] + final["layers"] - 1, np.float32)
    np.testing.assert_allclose(res.state["final_values"], offsets, atol=1e-3)
    # the best member is the one with the smallest discrete offset
    assert res.best_value == pytest.approx(float(offsets.min()), abs=1e-3)
    assert res.best_params["lr"] == pytest.approx(0.01, rel=1e-2)
    assert np.all(np.diff(res.history.best_value) <= 0)
    assert res.num_evaluations == 8 * 300 and res.num_failed == 0


def test_maximize_and_given_init():
    space = Space(x=Float(-2.0, 2.0))
    init = np.array([[0.1], [0.5], [0.95]], np.float32)
    res = gradient_tune(lambda c: -(c["x"] - 1.0) ** 2, space, init=init, num_steps=200, maximize=True)
    assert res.best_value == pytest.approx(0.0, abs=1e-4)
    assert res.best_params["x"] == pytest.approx(1.0, abs=1e-2)
    assert res.history.values.shape == (200, 3)


def test_a_member_failing_from_its_start_stays_put_and_is_counted():
    space = Space(x=Float(0.0, 1.0))
    init = np.array([[0.2], [0.9]], np.float32)

    def f(c):  # nan right of 0.8
        return jnp.where(c["x"] > 0.8, jnp.nan, (c["x"] - 0.5) ** 2)

    res = gradient_tune(f, space, init=init, num_steps=50)
    assert res.num_failed == 50
    assert res.history.x[-1, 1, 0] == pytest.approx(0.9, abs=1e-6)
    assert res.best_params["x"] == pytest.approx(0.5, abs=2e-2)
    assert np.isnan(res.history.values[:, 1]).all()  # kept as the objective returned them
    assert np.all(res.history.num_failed == 1)


def test_a_member_stepping_into_failure_backtracks_to_its_last_good_point():
    # A full SGD step from x = 0.5 lands on the bound, where the objective
    # fails; the member goes back and retries half of it (x = 0.9, the optimum).
    space = Space(x=Float(0.0, 1.0))

    def f(c):
        return jnp.where(c["x"] > 0.95, jnp.nan, (c["x"] - 0.9) ** 2)

    res = gradient_tune(f, space, init=np.array([[0.5]], np.float32), num_steps=6, optimizer=optax.sgd(1.0),
                        transform="clip")
    np.testing.assert_allclose(res.history.x[:3, 0, 0], [0.5, 1.0, 0.9], atol=1e-6)
    assert np.isnan(res.history.values[1, 0]) and res.num_failed == 1
    assert res.best_value == pytest.approx(0.0, abs=1e-10)


def test_a_member_failing_for_long_whatever_its_step_moves_once_it_succeeds():
    # A stateful objective that fails for its first 200 steps: 200 halvings
    # would take the retried fraction of the step below float32's range (to
    # exactly 0, so it never doubled back). Floored at 2**-10, it is whole
    # again 10 successes later, and SGD then goes from 0.2 to 0.9.
    space = Space(x=Float(0.0, 1.0))

    def f(c, t):
        return jnp.where(t < 200, jnp.nan, (c["x"] - 0.9) ** 2), t + 1

    res = gradient_tune(f, space, init=np.array([[0.2]], np.float32), num_steps=260, optimizer=optax.sgd(0.5),
                        transform="clip", carry=jnp.zeros(1, jnp.int32))
    assert res.num_failed == 200
    assert res.best_params["x"] == pytest.approx(0.9, abs=1e-3)


def test_a_member_pushed_to_an_upper_bound_comes_back_like_one_at_the_lower():
    # sigmoid(z) is exactly 1 in float32 from z ~ 17 on, with a zero slope;
    # z stays where the slope is positive, so both mirror images return.
    space = Space(x=Float(0.0, 1.0))
    sign_descent = optax.chain(optax.scale_by_sign(), optax.scale(-1.0))

    def f(c, t):
        target = jnp.where(t < 40, jnp.where(c["x"] > 0.5, 2.0, -1.0), 0.5)
        return (c["x"] - target) ** 2, t + 1

    res = gradient_tune(f, space, init=np.array([[0.6], [0.4]], np.float32), num_steps=100,
                        optimizer=sign_descent, carry=jnp.zeros(2, jnp.int32))
    x = res.history.x[:, :, 0]
    assert x[39, 0] > 1 - 2e-6 and x[39, 1] < 2e-6
    np.testing.assert_allclose(x[-1, 0], 1.0 - x[-1, 1], atol=1e-5)
    assert abs(x[-1, 0] - 0.5) < 0.3


def test_an_optimiser_that_needs_the_objective_in_update_is_refused_by_name():
    with pytest.raises(TypeError, match="optimizer: gradient_tune calls optimizer.update.*value_fn"):
        gradient_tune(bowl, SPACE, key=0, popsize=2, num_steps=2, optimizer=optax.lbfgs())
    # (its AttributeError from inside optax came out bare)
    with pytest.raises(TypeError, match="optimizer: .*params of its own type"):
        gradient_tune(bowl, SPACE, key=0, popsize=2, num_steps=2,
                      optimizer=optax.lookahead(optax.sgd(0.1), sync_period=2, slow_step_size=0.5))


def test_carry_is_threaded_per_member():
    space = Space(x=Float(0.0, 1.0))

    def f(c, carry):
        return (c["x"] - 0.25) ** 2 + 0.0 * carry, carry + c["x"]

    init = np.array([[0.1], [0.6]], np.float32)
    res = gradient_tune(f, space, init=init, num_steps=20, carry=jnp.zeros(2))
    xs = res.history.x[:, :, 0]
    np.testing.assert_allclose(np.asarray(res.state["carry"]), xs.sum(axis=0), rtol=1e-5)


def test_tunes_ridge_lambda_to_closed_form_optimum_with_implicit_gradients():
    """The driver on a real hypergradient: ridge lambda (log-scaled), implicit gradients."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 8))
    wt = rng.normal(size=8)
    y = X @ wt + 1.5 * rng.normal(size=20)
    Xv = rng.normal(size=(40, 8))
    yv = Xv @ wt + 1.5 * rng.normal(size=40)
    A, b = X.T @ X / 20, X.T @ y / 20

    def val(lam):
        w = np.linalg.solve(A + lam * np.eye(8), b)
        return 0.5 * np.mean((Xv @ w - yv) ** 2)

    grid = np.geomspace(1e-3, 1e2, 20001)
    lam_best = grid[np.argmin([val(g) for g in grid])]
    Aj, bj, Xvj, yvj = (jnp.asarray(v, jnp.float32) for v in (A, b, Xv, yv))
    w_star = implicit(lambda lam: jnp.linalg.solve(Aj + lam * jnp.eye(8), bj), lambda w, lam: Aj @ w - bj + lam * w)

    def objective(c):
        w = w_star(c["lam"])
        return 0.5 * jnp.mean((Xvj @ w - yvj) ** 2)

    space = Space(lam=Float(1e-3, 1e2, log=True))
    res = gradient_tune(objective, space, key=0, popsize=4, num_steps=150)
    assert res.best_params["lam"] == pytest.approx(lam_best, rel=2e-2)
    assert res.best_value == pytest.approx(val(lam_best), rel=1e-4)


def test_bad_arguments():
    with pytest.raises(TypeError, match="space"):
        gradient_tune(bowl, {"lr": Float(0.1, 1.0)})
    with pytest.raises(ValueError, match="num_steps"):
        gradient_tune(bowl, SPACE, num_steps=0)
    with pytest.raises(ValueError, match="popsize"):
        gradient_tune(bowl, SPACE, popsize=0)
    with pytest.raises(ValueError, match="no Float"):
        gradient_tune(lambda c: 0.0, Space(n=Int(1, 3)))
    with pytest.raises(ValueError, match="init"):
        gradient_tune(bowl, SPACE, init=np.zeros((3, 2)))
    with pytest.raises(TypeError, match="init must be .* cube points or configurations"):
        gradient_tune(bowl, SPACE, init=[{"lr": 0.1}, "adam"])
    with pytest.raises(ValueError, match="unknown parameter"):
        gradient_tune(bowl, SPACE, init={"learning_rate": 0.1})
    with pytest.raises(TypeError, match="optimizer"):
        gradient_tune(bowl, SPACE, optimizer="adam")
    with pytest.raises(ValueError, match="carry"):
        gradient_tune(lambda c, s: (0.0, s), SPACE, popsize=4, carry=jnp.zeros(3))
    with pytest.raises(TypeError, match="objective"):
        gradient_tune(None, SPACE)
    with pytest.raises(ValueError, match="transform"):
        gradient_tune(bowl, SPACE, transform="tanh")
    with pytest.raises(TypeError, match="floating-point value to be differentiated, got int32"):
        gradient_tune(lambda c: jnp.round(10 * c["wd"]).astype(jnp.int32), SPACE, popsize=2, num_steps=2)


def test_plain_sgd_steps_by_the_chain_rules_gradient():
    """A scale-sensitive optimiser sees d value / d z by the chain rule, inside the cube and
    on its faces alike: one SGD step of 0.01 on w over Float(-1, 2) moves u by 0.01 * 3."""
    space = Space(w=Float(-1.0, 2.0), lam=Float(1e-4, 1e2, log=True))
    init = np.array([[0.5, 0.3], [1.0, 0.3]], np.float32)
    res = gradient_tune(lambda c: c["w"] + c["lam"], space, init=init, num_steps=2, optimizer=optax.sgd(0.01),
                        transform="clip")
    step = res.history.x[1] - res.history.x[0]
    lam = 1e-4 * 1e6 ** 0.3
    np.testing.assert_allclose(step[:, 0], [-0.03, -0.03], rtol=1e-4)
    np.testing.assert_allclose(step[:, 1], -0.01 * lam * math.log(1e6), rtol=1e-3)


def test_has_grad_with_unrolled_forward_mode_matches_autodiff_driver():
    """The driver fed an ``unrolled`` forward-mode hypergradient takes the same path
    as the driver differentiating the training run itself."""
    from jaxhpo.hypergrad import rollout, unrolled

    rng = np.random.default_rng(2)
    A = jnp.asarray(np.cov(rng.normal(size=(5, 30))) + 0.1 * np.eye(5), jnp.float32)
    b = jnp.asarray(rng.normal(size=5), jnp.float32)
    target = jnp.asarray(rng.normal(size=5), jnp.float32)

    def step(w, h, t):
        return w - h["lr"] * (A @ w - b + h["lam"] * w)

    def val_loss(w, h):
        return jnp.sum((w - target) ** 2)

    space = Space(lr=Float(1e-3, 0.5, log=True), lam=Float(1e-3, 10.0, log=True))
    w0 = jnp.zeros(5)
    hg = unrolled(step, val_loss, 30, mode="forward")
    init = np.array([[0.2, 0.3], [0.7, 0.8]], np.float32)
    r1 = gradient_tune(lambda c: hg(c, w0), space, init=init, num_steps=15, has_grad=True)
    r2 = gradient_tune(lambda c: val_loss(rollout(step, c, w0, 30), c), space, init=init, num_steps=15)
    np.testing.assert_allclose(r1.history.x, r2.history.x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(r1.history.values, r2.history.values, rtol=1e-4)
    assert r1.best_value < r1.history.values[0].min()
    with pytest.raises(ValueError, match="has_grad"):
        gradient_tune(lambda c: (hg(c, w0)[0], {"lr": 0.0}), space, init=init, num_steps=2, has_grad=True)


def test_clip_transform_reaches_a_bound_that_logit_only_approaches():
    """Optimum past the upper bound: projected steps sit exactly on it, the logit stays inside."""
    space = Space(lr=Float(1e-4, 1.0, log=True), n=Int(1, 3))

    def f(c):  # decreasing in lr over the whole range; the integer coordinate is ignored
        return (jnp.log(c["lr"]) - math.log(10.0)) ** 2

    init = np.array([[0.2, 0.1], [0.6, 0.9]], np.float32)
    opt = optax.adam(0.05)
    clip = gradient_tune(f, space, init=init, num_steps=40, optimizer=opt, transform="clip")
    logit = gradient_tune(f, space, init=init, num_steps=40, optimizer=opt)
    np.testing.assert_array_equal(clip.state["final_x"][:, 0], 1.0)
    np.testing.assert_array_equal(clip.history.x[:, :, 1], init[None, :, 1].repeat(40, 0))  # Int held
    assert clip.best_params["lr"] == pytest.approx(1.0, rel=1e-5)
    assert np.all(logit.state["final_x"][:, 0] < 1.0)
    assert np.all(clip.history.x[..., 0] <= 1.0) and np.all(clip.history.x[..., 0] >= 0.0)
    # while the gradient points past the bound, the point stays there
    first = np.argmax(clip.history.x[:, 0, 0] == 1.0)
    np.testing.assert_array_equal(clip.history.x[first:, 0, 0], 1.0)


def test_clip_transform_steps_are_additive_in_the_cube():
    """With sign steps (SGD on the sign), "clip" moves the cube coordinate by a fixed amount a step,
    i.e. the value of a log float by a fixed factor, and converges to an interior optimum."""
    space = Space(lr=Float(1e-4, 1.0, log=True))
    opt = optax.chain(optax.scale_by_sign(), optax.scale(-0.01))
    init = np.array([[0.05]], np.float32)
    res = gradient_tune(lambda c: (jnp.log(c["lr"]) - math.log(0.01)) ** 2, space, init=init, num_steps=60,
                        optimizer=opt, transform="clip")
    u = res.history.x[:, 0, 0]
    np.testing.assert_allclose(np.diff(u[:40]), 0.01, atol=1e-6)  # 0.05 -> 0.45 in 40 steps
    assert res.best_params["lr"] == pytest.approx(0.01, rel=0.05)  # cube 0.5, reached and held within a step


def test_clip_transform_with_given_gradients_matches_autodiff():
    """has_grad chains the objective's gradient through the identity transform too."""
    space = Space(x=Float(-1.0, 3.0), y=Float(1e-2, 1e2, log=True))

    def f(c):
        return (c["x"] - 2.5) ** 2 + (jnp.log(c["y"]) - 1.0) ** 2

    def f_grad(c):
        return f(c), jax.grad(f)(c)

    init = np.array([[0.1, 0.2], [0.9, 0.95]], np.float32)
    r1 = gradient_tune(f_grad, space, init=init, num_steps=30, has_grad=True, transform="clip",
                       optimizer=optax.adam(0.02))
    r2 = gradient_tune(f, space, init=init, num_steps=30, transform="clip", optimizer=optax.adam(0.02))
    np.testing.assert_allclose(r1.history.x, r2.history.x, rtol=1e-5, atol=1e-6)
    assert r1.best_value < r1.history.values[0].min()


def test_clip_transform_leaves_a_bound_when_the_gradient_points_back_inside():
    """Adam overshoots onto the upper bound; the optimum lies inside. The decoded
    value's derivative on the bound is the interior one (float32 rounding puts
    decode(1) just past 0.7, where a plain clip's derivative is 0), so the
    member comes back and reaches the optimum as the logit transform does."""
    space = Space(x=Float(0.1, 0.7))
    f = lambda c: (c["x"] - 0.65) ** 2  # noqa: E731
    init = np.array([[0.5]], np.float32)
    clip = gradient_tune(f, space, init=init, num_steps=60, optimizer=optax.adam(0.1), transform="clip")
    assert np.any(clip.history.x[:, 0, 0] == 1.0)  # it did reach the bound
    assert clip.state["final_x"][0, 0] < 1.0
    assert clip.best_params["x"] == pytest.approx(0.65, abs=2e-3)
    g = jax.grad(lambda u: space.decode(u)["x"])(jnp.array([1.0]))
    assert float(g[0]) == pytest.approx(0.6, rel=1e-5)


def test_a_finite_value_with_a_non_finite_gradient_counts():
    """sqrt at 0: value 1.0, gradient inf. The member stays put, its value is no failure."""
    space = Space(x=Float(0.0, 1.0))
    res = gradient_tune(lambda c: jnp.sqrt(c["x"]) + 1.0, space, init=np.array([[0.0], [0.5]], np.float32),
                        num_steps=3, transform="clip")
    assert res.num_failed == 0 and res.best_value == 1.0 and res.best_params == {"x": 0.0}
    np.testing.assert_array_equal(res.history.x[:, 0, 0], 0.0)


def test_a_second_call_with_the_default_optimizer_does_not_compile_again():
    from jaxhpo.hypergrad.tuning import _tune

    space = Space(x=Float(0.0, 1.0))
    f = lambda c: (c["x"] - 0.3) ** 2  # noqa: E731
    gradient_tune(f, space, key=0, popsize=2, num_steps=3)
    before = _tune._cache_size()
    gradient_tune(f, space, key=1, popsize=2, num_steps=3)
    assert _tune._cache_size() == before


def test_a_carry_returned_in_another_shape_is_refused_by_name():
    carry = {"w": jnp.zeros((4, 3))}
    bad = [lambda c, s: (c["wd"] ** 2, {"w": (s["w"] + 1).astype(jnp.int32)}),
           lambda c, s: (c["wd"] ** 2, {"w": s["w"][:2]}),
           lambda c, s: (c["wd"] ** 2, s["w"])]
    for f, says in zip(bad, [r"carry\['w'\] went from shape \(3,\) float32 to \(3,\) int32",
                             r"carry\['w'\] went from shape \(3,\) float32 to \(2,\) float32",
                             "the same pytree"]):
        with pytest.raises(TypeError, match=r"objective must return a carry of the structure it was given .*" + says):
            gradient_tune(f, SPACE, popsize=4, num_steps=1, carry=carry)


def test_init_takes_configurations_and_draws_what_they_leave_out():
    # the same start as cube points, the wd left out of the second drawn with the key
    configs = [{"lr": 0.1, "wd": 0.5, "act": "tanh", "layers": 2}, {"lr": 0.001, "act": "gelu", "layers": 4}]
    kw = dict(num_steps=3, key=7)
    got = gradient_tune(bowl, SPACE, init=configs, **kw)
    cube = SPACE.fixed_coordinates(configs)
    cube[1, list(SPACE.names).index("wd")] = np.asarray(SPACE.sample(jax.random.key(7), 2))[1, 1]
    want = gradient_tune(bowl, SPACE, init=cube, **kw)
    np.testing.assert_array_equal(got.history.x, want.history.x)
    assert got.history.x.shape[1] == 2 and 0.0 <= got.history.x[0, 1, 1] <= 1.0
    single = gradient_tune(bowl, SPACE, init=configs[0], **kw)
    np.testing.assert_array_equal(single.history.x, want.history.x[:, :1])


def test_members_held_by_a_nan_gradient_are_reported():
    # Finite everywhere; the gradient is nan left of 0.5 (the where-of-a-sqrt
    # trap): the member starting there never moves, its values compete (as
    # any finite value), and the result says which evaluations it was.
    space = Space(x=Float(0.0, 1.0))

    def f(c):
        x = c["x"]
        return jnp.where(x < 0.5, (x - 0.8) ** 2, (x - 0.8) ** 2 + 0.0 * jnp.sqrt(x - 0.5))

    res = gradient_tune(f, space, init=np.array([[0.2], [0.6]], np.float32), num_steps=20)
    held = res.state["nonfinite_gradients"]
    assert held.shape == (20, 2) and held[:, 0].all() and not held[:, 1].any()
    np.testing.assert_allclose(res.history.x[:, 0, 0], 0.2, rtol=1e-6)
    assert res.num_failed == 0 and res.best_params["x"] == pytest.approx(0.8, abs=2e-2)
