"""Masked width/depth networks, magnitude pruning, and the optimiser switch."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhpo.training import (OPTIMIZERS, MaskedMLP, SwitchOptimizer, dense_mlp_apply, magnitude_mask,
                             slice_params)
from jaxhpo.training.optimizers import optimizer_factory

MODEL = MaskedMLP(in_dim=5, out_dim=3, max_width=12, max_depth=3)
X = jax.random.normal(jax.random.key(0), (7, 5), jnp.float32)
ARCHS = [(1, 1), (4, 1), (12, 1), (3, 2), (7, 3), (12, 3), (5, 2)]


def _numpy_mlp(layers, x):
    for w, b in layers[:-1]:
        x = np.maximum(x @ w + b, 0.0)
    return x @ layers[-1][0] + layers[-1][1]


@jax.jit
def _masked_outputs(params, widths, depths):
    # Different architectures in one vmapped program.
    return jax.vmap(lambda p, w, d: MODEL.apply(p, X, w, d))(params, widths, depths)


def test_masked_population_equals_small_networks():
    keys = jax.random.split(jax.random.key(1), len(ARCHS))
    widths = jnp.array([w for w, _ in ARCHS], jnp.int32)
    depths = jnp.array([d for _, d in ARCHS], jnp.int32)
    params = jax.vmap(MODEL.init)(keys, widths)
    # Non-zero biases, so the masks (not zero biases) make the units vanish.
    params = jax.tree_util.tree_map(lambda a: a + 0.1, params)
    out = np.asarray(_masked_outputs(params, widths, depths))
    params = jax.tree_util.tree_map(np.asarray, params)
    x = np.asarray(X)
    for i, (w, d) in enumerate(ARCHS):
        p = jax.tree_util.tree_map(lambda a: a[i], params)
        small = _numpy_mlp(slice_params(p, w, d), x)  # true shapes, in NumPy
        assert small.shape == (7, 3) and slice_params(p, w, d)[0][0].shape == (5, w)
        np.testing.assert_allclose(out[i], small, rtol=1e-5, atol=1e-5)
    p = jax.tree_util.tree_map(lambda a: a[4], params)
    np.testing.assert_allclose(np.asarray(dense_mlp_apply(slice_params(p, 7, 3), X)), out[4], rtol=1e-5, atol=1e-5)
    # Two architectures really differ (the masks are not a no-op).
    assert not np.allclose(out[0], out[-2])


def test_masked_units_get_no_gradient():
    params = MODEL.init(jax.random.key(2), 4)
    grads = jax.grad(lambda p: jnp.sum(MODEL.apply(p, X, 4, 2) ** 2))(params)
    assert np.all(np.asarray(grads["w_in"][:, 4:]) == 0)
    assert np.all(np.asarray(grads["w_out"][4:]) == 0)
    assert np.all(np.asarray(grads["w_hidden"][1]) == 0)  # layer 2 is beyond depth 2
    assert np.any(np.asarray(grads["w_hidden"][0, :4, :4]) != 0)


def test_magnitude_mask_prunes_the_smallest_active_weights():
    w = jax.random.normal(jax.random.key(3), (6, 8))
    active = jnp.zeros((6, 8), bool).at[:, :5].set(True)  # 30 active weights
    for s, kept in ((0.0, 30), (0.5, 15), (0.9, 3), (1.0, 0)):
        m = np.asarray(magnitude_mask(w, jnp.float32(s), active))
        assert m.sum() == kept and not m[:, 5:].any()
        if 0 < kept < 30:
            a = np.abs(np.asarray(w))[:, :5]
            assert a[m[:, :5]].min() > a[~m[:, :5]].max()
        # a mask that broadcasts to w's shape counts every weight it covers
        np.testing.assert_array_equal(np.asarray(magnitude_mask(w, jnp.float32(s), active[0])), m)


def test_magnitude_mask_prunes_the_count_the_written_sparsity_gives():
    # floor(sparsity * n) of the decimal as written, not of its float32
    # rounding: 0.7 of 10 pruned 7 or 6 by where the roundings fell.
    from fractions import Fraction

    for n in (10, 30, 300, 1000):
        w = jnp.arange(1, n + 1, dtype=jnp.float32)  # distinct magnitudes: no ties
        sparsities = [i / 100 for i in range(101)] + [0.2099, 0.333, 0.999]
        kept = _kept_counts(w, jnp.asarray(sparsities, jnp.float32))
        expected = [n - int(Fraction(repr(s)) * n) for s in sparsities]
        assert list(np.asarray(kept)) == expected, n
    # a large layer: 0.05 of 2**20 is 52428.8, whose floor is 52428 (a tolerance
    # growing with n had rounded it up)
    n = 2**20
    sparsities = [0.05, 0.3, 0.21, 0.5]
    kept = _kept_counts(jnp.arange(1, n + 1, dtype=jnp.float32), jnp.asarray(sparsities, jnp.float32))
    assert list(np.asarray(kept)) == [n - int(Fraction(repr(s)) * n) for s in sparsities]


@jax.jit
def _kept_counts(w, sparsities):
    return jax.vmap(lambda s: magnitude_mask(w, s).sum())(sparsities)


def test_pruned_network_equals_small_network_with_pruned_weights():
    params = MODEL.init(jax.random.key(4), 6)
    out = MODEL.apply(params, X, 6, 2, jnp.float32(0.5))
    masks = MODEL.prune_masks(params, 6, 2, jnp.float32(0.5))
    pruned = {**params, **{k: params[k] * masks[k] for k in masks}}
    small = slice_params(pruned, 6, 2)
    np.testing.assert_allclose(np.asarray(out), np.asarray(dense_mlp_apply(small, X)), rtol=1e-5, atol=1e-5)
    # Half of each active matrix is gone.
    assert int(masks["w_in"][:, :6].sum()) == 15 and int(masks["w_hidden"][0, :6, :6].sum()) == 18


def test_model_rejects_bad_sizes():
    with pytest.raises(ValueError, match="max_width"):
        MaskedMLP(5, 3, 0)
    with pytest.raises(ValueError, match="max_depth"):
        MaskedMLP(5, 3, 8, max_depth=1.5)


# ------------------------------------------------------------------ optimisers
SWITCH = SwitchOptimizer()
HP = {"learning_rate": 0.05, "weight_decay": 0.01, "momentum": 0.8}
A = jnp.diag(jnp.array([1.0, 3.0, 0.5], jnp.float32))


def _grad(p):
    return jax.grad(lambda p: 0.5 * p["w"] @ A @ p["w"] + jnp.sum(p["b"] ** 2))(p)


P0 = {"w": jnp.array([1.0, -1.0, 2.0], jnp.float32), "b": jnp.array([0.5, -0.3], jnp.float32)}


@jax.jit
def _run_switch(index, lr, wd, m):
    hp = {"optimizer": index, "learning_rate": lr, "weight_decay": wd, "momentum": m}

    def body(_, c):
        p, s = c
        u, s = SWITCH.update(_grad(p), s, p, hp)
        return optax.apply_updates(p, u), s

    return jax.lax.fori_loop(0, 20, body, (P0, SWITCH.init(P0)))[0]


def _run_tx(tx):
    """20 steps of a plain optax optimiser (floats baked in), jitted."""
    def body(_, c):
        p, s = c
        u, s = tx.update(_grad(p), s, p)
        return optax.apply_updates(p, u), s

    return jax.jit(lambda: jax.lax.fori_loop(0, 20, body, (P0, tx.init(P0)))[0])()


def _run_alone(name):
    return _run_tx(optimizer_factory(name)(**HP))


def test_switch_equals_each_optimizer_alone_and_vmaps():
    idx = jnp.arange(len(OPTIMIZERS), dtype=jnp.int32)
    full = lambda v: jnp.full(idx.shape, v, jnp.float32)  # noqa: E731
    batched = jax.vmap(_run_switch)(idx, full(HP["learning_rate"]), full(HP["weight_decay"]),
                                    full(HP["momentum"]))
    results = {}
    for i, name in enumerate(OPTIMIZERS):
        alone = _run_alone(name)
        results[name] = np.asarray(alone["w"])
        for k in ("w", "b"):
            np.testing.assert_allclose(np.asarray(batched[k][i]), np.asarray(alone[k]), rtol=1e-5, atol=1e-6)
    # The choices really differ.
    assert len({tuple(np.round(v, 5)) for v in results.values()}) == len(OPTIMIZERS)


def test_switch_keeps_mixed_precision_state_types_in_a_loop():
    """A bfloat16 leaf beside a float32 one: every branch returns the state's
    and the gradients' dtypes, so the switch runs as a loop carry (optax alone
    promotes the bfloat16 moments to float32 under injected rates)."""
    p0 = {"w": P0["w"], "b": P0["b"].astype(jnp.bfloat16)}

    @jax.jit
    def run(index):
        hp = {**HP, "optimizer": index}

        def body(_, c):
            p, s = c
            g = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), _grad(p))
            g = {"w": g["w"], "b": g["b"].astype(jnp.bfloat16)}
            u, s = SWITCH.update(g, s, p, hp)
            assert u["b"].dtype == jnp.bfloat16 and u["w"].dtype == jnp.float32
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 20, body, (p0, SWITCH.init(p0)))[0]

    for i, name in enumerate(OPTIMIZERS):
        out, alone = run(jnp.int32(i)), _run_alone(name)
        assert out["b"].dtype == jnp.bfloat16
        # The float32 leaf follows the optimiser alone; the bfloat16 one to its precision.
        np.testing.assert_allclose(np.asarray(out["w"]), np.asarray(alone["w"]), rtol=2e-2, atol=2e-2)
        np.testing.assert_allclose(np.asarray(out["b"], np.float32), np.asarray(alone["b"]), rtol=5e-2, atol=2e-2)


def test_switch_hyperparameters_are_traced_per_member():
    lrs = jnp.array([0.01, 0.1], jnp.float32)
    out = jax.vmap(lambda lr: _run_switch(jnp.int32(2), lr, jnp.float32(0.0), jnp.float32(0.9)))(lrs)
    p = _run_tx(optax.adam(0.1, b1=0.9))
    np.testing.assert_allclose(np.asarray(out["w"][1]), np.asarray(p["w"]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(out["w"][0]), np.asarray(out["w"][1]))


def test_switch_state_shares_slots_between_branches():
    # Every branch's state fits in Adam's: per parameter leaf two moments,
    # not the 0 + 1 + 2 + 2 + 1 = 6 copies of keeping each branch's own.
    state = SWITCH.init(P0)
    param_sized = [a for a in state.slots if a.shape in {(3,), (2,)}]
    assert len(param_sized) == 2 * len(P0)
    adam = optax.inject_hyperparams(optimizer_factory("adam"))(learning_rate=0.1, weight_decay=0.0, momentum=0.9)
    assert len(state.slots) == len(jax.tree_util.tree_leaves(adam.init(P0)))
    assert int(state.active) == -1


@jax.jit
def _run_switching(first, second):
    """10 steps with optimiser ``first``, then 10 with ``second``."""
    def body(t, c):
        p, s = c
        hp = {"optimizer": jnp.where(t < 10, first, second), "learning_rate": HP["learning_rate"],
              "weight_decay": HP["weight_decay"], "momentum": HP["momentum"]}
        u, s = SWITCH.update(_grad(p), s, p, hp)
        return optax.apply_updates(p, u), s

    return jax.lax.fori_loop(0, 20, body, (P0, SWITCH.init(P0)))


def _run_tx_from(tx, p, steps):
    def body(_, c):
        p, s = c
        u, s = tx.update(_grad(p), s, p)
        return optax.apply_updates(p, u), s

    return jax.lax.fori_loop(0, steps, body, (p, tx.init(p)))[0]


def test_switch_changing_optimizer_restarts_its_state():
    # Adam for 10 steps, then momentum: momentum starts from its own fresh
    # state at the parameters Adam reached (not from Adam's moments), and
    # the state then belongs to momentum; vmapped over members that switch
    # and members that do not.
    names = list(OPTIMIZERS)
    first = jnp.array([names.index("adam"), names.index("adam"), names.index("momentum")], jnp.int32)
    second = jnp.array([names.index("momentum"), names.index("adam"), names.index("rmsprop")], jnp.int32)
    params, state = jax.vmap(_run_switching)(first, second)
    for m in range(3):
        a, b = names[int(first[m])], names[int(second[m])]
        mid = _run_tx_from(optimizer_factory(a)(**HP), P0, 10)
        ref = _run_tx_from(optimizer_factory(b)(**HP), mid, 10) if a != b else \
            _run_tx_from(optimizer_factory(a)(**HP), P0, 20)
        for k in ("w", "b"):
            np.testing.assert_allclose(np.asarray(params[k][m]), np.asarray(ref[k]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(state.active), np.asarray(second))
    # The switch matters: momentum after Adam differs from Adam throughout.
    assert not np.allclose(np.asarray(params["w"][0]), np.asarray(params["w"][1]))


def test_switch_rejects_bad_names():
    with pytest.raises(ValueError, match="optimizer name"):
        SwitchOptimizer(["adam", "lion?"])
    with pytest.raises(TypeError, match="names"):
        SwitchOptimizer("adam")
    with pytest.raises(ValueError, match="optimizer"):
        SWITCH.update(P0, SWITCH.init(P0), P0, {"learning_rate": 0.1})
    # one member's hyperparameters are scalars; an array failed in optax's broadcasting
    with pytest.raises(ValueError, match=r"hparams\['learning_rate'\] must be a scalar for one member"):
        SWITCH.update(P0, SWITCH.init(P0), P0, {"learning_rate": jnp.ones(3), "optimizer": 0})


def _lion(learning_rate, weight_decay, momentum):
    return optax.lion(learning_rate, b1=momentum, weight_decay=weight_decay)


def _adagrad(learning_rate, weight_decay, momentum):
    del weight_decay, momentum
    return optax.adagrad(learning_rate)


def test_switch_takes_optimizers_of_ones_own():
    # Lion (one moment) and Adagrad (its own accumulator) beside a built-in
    # choice: each member's branch equals that optimiser run alone.
    switch = SwitchOptimizer(["sgd", ("lion", _lion), ("adagrad", _adagrad)])
    assert switch.names == ("sgd", "lion", "adagrad")

    @jax.jit
    def run(index):
        def body(_, c):
            p, s = c
            u, s = switch.update(_grad(p), s, p, {**HP, "optimizer": index})
            return optax.apply_updates(p, u), s

        return jax.lax.fori_loop(0, 20, body, (P0, switch.init(P0)))[0]

    batched = jax.vmap(run)(jnp.arange(3, dtype=jnp.int32))
    for i, factory in enumerate([optimizer_factory("sgd"), _lion, _adagrad]):
        alone = _run_tx(factory(**HP))
        for k in ("w", "b"):
            np.testing.assert_allclose(np.asarray(batched[k][i]), np.asarray(alone[k]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(batched["w"][1]), np.asarray(batched["w"][2]))
    # Equal choices make equal optimisers (so programs are shared); another
    # factory under the same name does not.
    assert switch == SwitchOptimizer(["sgd", ("lion", _lion), ("adagrad", _adagrad)])
    assert hash(switch) == hash(SwitchOptimizer(["sgd", ("lion", _lion), ("adagrad", _adagrad)]))
    assert switch != SwitchOptimizer(["sgd", ("lion", _lion), ("adagrad", _lion)])
    # A built-in factory given as a pair is the built-in choice.
    assert SwitchOptimizer([("adam", optimizer_factory("adam"))]) == SwitchOptimizer(["adam"])


def test_switch_rejects_bad_optimizers_of_ones_own():
    with pytest.raises(TypeError, match="'lion': factory must be callable"):
        SwitchOptimizer([("lion", "optax.lion")])
    with pytest.raises(TypeError, match="'lion': factory must accept the keyword arguments learning_rate"):
        SwitchOptimizer([("lion", lambda lr, wd, m: optax.lion(lr))])
    with pytest.raises(TypeError, match="'lion': factory must return an optax.GradientTransformation"):
        SwitchOptimizer([("lion", lambda **kw: kw)])
    with pytest.raises(TypeError, match="name from .* or a \\(name, factory\\) pair"):
        SwitchOptimizer([("lion",)])
    with pytest.raises(ValueError, match="distinct"):
        SwitchOptimizer(["adam", ("adam", _lion)])


def test_trainer_keeps_optimizers_of_ones_own_across_bucket_widths():
    from jaxhpo.training import MLPClassifierTrainer
    X, y = np.zeros((4, 3), np.float32), np.array([0, 1, 0, 1])
    trainer = MLPClassifierTrainer(X, y, X, y, max_width=8, optimizers=["adam", ("lion", _lion)])
    narrow = trainer.with_max_width(4)
    assert narrow.optimizer == trainer.optimizer and narrow.optimizer.choices == ("adam", ("lion", _lion))
    with pytest.raises(ValueError, match=r"hparams\['optimizer'\] must lie in \[0, 1\]"):
        trainer.check_hparams({"optimizer": np.array([0, 2])})
