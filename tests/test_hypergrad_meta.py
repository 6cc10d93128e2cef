"""Meta-learning gradients against the closed form of inner gradient descent on quadratics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhpo.hypergrad import meta_gradient


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_meta_sgd_gradients_match_closed_form(x64):
    """Task i: loss 0.5 |w - c_i|^2; K inner steps w <- w - alpha * (w - c_i) with a
    per-coordinate rate alpha (Meta-SGD) from a shared init w0 (MAML) give
    w_K - c_i = (1 - alpha)^K (w0 - c_i), so the query loss is
    0.5 sum_j (1 - alpha_j)^(2K) (w0_j - c_ij)^2 with gradients
    d/dw0_j = (1 - alpha_j)^(2K) (w0_j - c_ij), d/dalpha_j = -K (1 - alpha_j)^(2K-1) (w0_j - c_ij)^2."""
    rng = np.random.default_rng(0)
    C = rng.normal(size=(16, 3))
    K = 5
    meta = {"w0": jnp.asarray(rng.normal(size=3)), "lr": jnp.asarray([0.1, 0.3, 0.5])}
    mg = meta_gradient(
        init=lambda m, task: m["w0"],
        step=lambda w, m, task, t: w - m["lr"] * (w - task["c"]),
        query_loss=lambda w, m, task: 0.5 * jnp.sum((w - task["c"]) ** 2),
        num_steps=K, checkpoint_every=2)
    value, grads = jax.jit(mg)(meta, {"c": jnp.asarray(C)})
    w0, a = np.asarray(meta["w0"]), np.asarray(meta["lr"])
    diff = w0 - C
    assert float(value) == pytest.approx(np.mean(0.5 * np.sum((1 - a) ** (2 * K) * diff ** 2, axis=1)), rel=1e-12)
    np.testing.assert_allclose(np.asarray(grads["w0"]), np.mean((1 - a) ** (2 * K) * diff, axis=0), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads["lr"]),
                               np.mean(-K * (1 - a) ** (2 * K - 1) * diff ** 2, axis=0), rtol=1e-12)


def test_bad_arguments():
    f = lambda *a: 0.0
    with pytest.raises(ValueError, match="num_steps"):
        meta_gradient(f, f, f, 0)
    with pytest.raises(TypeError, match="init"):
        meta_gradient(None, f, f, 3)
    with pytest.raises(ValueError, match="checkpoint_every"):
        meta_gradient(f, f, f, 3, checkpoint_every=-1)
    step = lambda s, m, task, t: s - m * s
    int_loss = meta_gradient(lambda m, task: jnp.ones(2), step, lambda s, m, task: jnp.sum(s > 0), 2)
    with pytest.raises(TypeError, match="query_loss must return a real floating-point value"):
        int_loss(jnp.float32(0.1), jnp.zeros(3))


def test_a_meta_training_loop_in_python_compiles_once():
    from helpers import compiles_during

    C = jnp.asarray(np.random.default_rng(1).normal(size=(4, 2)), jnp.float32)
    mg = meta_gradient(init=lambda m, task: m["w0"],
                       step=lambda w, m, task, t: w - m["lr"] * (w - task["c"]),
                       query_loss=lambda w, m, task: 0.5 * jnp.sum((w - task["c"]) ** 2), num_steps=3)
    meta = {"w0": jnp.zeros(2, jnp.float32), "lr": jnp.full(2, 0.1, jnp.float32)}
    values = []
    for i in range(4):
        with compiles_during() as compiles:
            value, grads = mg(meta, {"c": C})
        if i:
            assert compiles == [], f"call {i} compiled {len(compiles)} programs"
        values.append(float(value))
        meta = jax.tree_util.tree_map(lambda m, g: m - 0.5 * g, meta, grads)
    assert values[-1] < values[0]
