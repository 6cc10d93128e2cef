"""Width buckets: a member trains to the same model in a bucket as masked to the largest network."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxhpo.training import MaskedMLP, MLPClassifierTrainer, bucket_count, train_bucketed, width_buckets
from jaxhpo.training.trainer import fresh_rung

from helpers import compiles_during


@given(st.integers(1, 600), st.integers(1, 12), st.integers(1, 16))
def test_width_buckets_are_increasing_multiples_ending_at_max_width(max_width, num, multiple):
    buckets = width_buckets(max_width, num, multiple)
    assert buckets[-1] == max_width
    assert list(buckets) == sorted(set(buckets)) and len(buckets) <= num + 1
    assert all(b % multiple == 0 and b >= multiple for b in buckets[:-1])
    # Every width up to max_width has a bucket no more than one spacing above it.
    spacing = -(-max_width // num) + multiple
    for w in range(1, max_width + 1):
        b = next(b for b in buckets if b >= w)
        assert b - w < spacing


@given(st.integers(1, 10**6), st.floats(0.01, 1e4), st.integers(1, 40))
def test_bucket_count_minimises_compiles_plus_wasted_training(population, compile_cost, most):
    k = bucket_count(population, compile_cost, most)
    assert 1 <= k <= most

    def cost(k):  # k programs compiled, about population / (2k) widest trainings wasted
        return k * compile_cost + population / (2 * k)

    best = min(cost(j) for j in range(1, most + 1))
    assert cost(k) <= best * (1 + 1e-12)
    # More members or cheaper compiles never call for fewer buckets.
    assert bucket_count(population + 1, compile_cost, most) >= k
    assert bucket_count(population, compile_cost * 2, most) <= k


def test_bucket_count_known_values():
    # sqrt(n / (2 * 8)): 64 -> 2, 256 -> 4, 1024 -> 8; capped at most.
    assert [bucket_count(n) for n in (1, 16, 64, 256, 1024, 10**6)] == [1, 1, 2, 4, 8, 8]
    assert bucket_count(10**6, most=100) == 100 and bucket_count(800, compile_cost=0.5) == 8


@pytest.mark.parametrize("kwargs,match", [(dict(population=0), "population must be an integer >= 1"),
                                          (dict(population=2.5), "population must be an integer"),
                                          (dict(population=8, compile_cost=0.0), "compile_cost must be a finite"),
                                          (dict(population=8, compile_cost=float("nan")), "compile_cost must be"),
                                          (dict(population=8, most=0), "most must be an integer >= 1")])
def test_bucket_count_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bucket_count(**kwargs)


# Widths on and across the draw's tiles of 8 columns; every shape compiles
# its own init, so the cases are few.
@pytest.mark.parametrize("width,extra,depth,extra_depth", [(1, 7, 1, 0), (8, 0, 2, 1), (9, 23, 3, 0), (13, 3, 1, 2)])
def test_init_active_block_does_not_depend_on_max_width_or_depth(width, extra, depth, extra_depth):
    key = jax.random.key(width)
    small = MaskedMLP(4, 3, width, depth).init(key, width)
    large = MaskedMLP(4, 3, width + extra, depth + extra_depth).init(key, width)
    np.testing.assert_array_equal(large["w_in"][:, :width], small["w_in"])
    np.testing.assert_array_equal(large["w_hidden"][:depth - 1, :width, :width], small["w_hidden"])
    np.testing.assert_array_equal(large["w_out"][:width], small["w_out"])
    # The draws are standard normals scaled by the true fan-in.
    assert abs(float(jnp.std(large["w_in"])) - (2.0 / 4) ** 0.5) < 0.35


# 11 members, widths 1..24, in chunks of 4 over buckets (8, 16, 24): the
# chunks land in different buckets, and the last chunk is padded.
_rng = np.random.default_rng(0)
_X, _Xv = _rng.normal(size=(48, 6)).astype(np.float32), _rng.normal(size=(16, 6)).astype(np.float32)
_W = _rng.normal(size=(6, 3))
_y, _yv = np.argmax(_X @ _W, axis=1), np.argmax(_Xv @ _W, axis=1)
TRAINER = MLPClassifierTrainer(_X, _y, _Xv, _yv, max_width=24, max_depth=2, optimizers=("sgd", "adam"),
                               steps_per_unit=3)
WIDTHS = np.array([24, 3, 9, 1, 16, 17, 8, 5, 12, 24, 2], np.int32)
HPARAMS = {
    "width": WIDTHS,
    "depth": np.array([1, 2] * 5 + [1], np.int32),
    "optimizer": np.array([0, 1, 1] * 3 + [0, 1], np.int32),
    "learning_rate": np.geomspace(1e-2, 1e-1, len(WIDTHS)).astype(np.float32),
}
KEYS = jax.random.split(jax.random.key(3), len(WIDTHS))


def test_train_bucketed_equals_masked_training_at_max_width():
    res = train_bucketed(TRAINER.with_max_width, KEYS, HPARAMS, 2, buckets=(8, 16, 24), chunk=4)
    states, losses = fresh_rung(TRAINER, KEYS, {k: jnp.asarray(v) for k, v in HPARAMS.items()}, np.int32(2))
    params = jax.tree_util.tree_map(np.asarray, states[0])
    np.testing.assert_allclose(res.losses, np.asarray(losses), rtol=2e-5, atol=1e-6)
    assert np.all(np.isfinite(res.losses))

    seen = []
    for idx, bucket, trainer, (bucket_params, _) in res.groups:
        assert trainer.model.max_width == bucket and bucket >= WIDTHS[idx].max()
        assert bucket_params["w_in"].shape == (len(idx), 6, bucket)
        # The smallest bucket that holds the chunk's widest member.
        assert bucket == min(b for b in (8, 16, 24) if b >= WIDTHS[idx].max())
        for row, i in enumerate(idx):
            w = int(WIDTHS[i])
            np.testing.assert_allclose(bucket_params["w_in"][row][:, :w], params["w_in"][i][:, :w], atol=2e-6)
            np.testing.assert_allclose(bucket_params["w_out"][row][:w], params["w_out"][i][:w], atol=2e-6)
        seen.extend(idx.tolist())
    # Every member exactly once, narrow members in narrow buckets.
    assert sorted(seen) == list(range(len(WIDTHS)))
    assert {b for _, b, _, _ in res.groups} == {8, 16, 24}
    # a bucket's trainer narrower than the bucket would train its members narrower: refused
    with pytest.raises(ValueError, match=r"make_trainer\(16\) gives a network of max_width 8"):
        train_bucketed(lambda b: TRAINER.with_max_width(min(b, 8)), KEYS, HPARAMS, 2, buckets=(8, 16, 24), chunk=4)


def test_train_bucketed_second_population_compiles_nothing():
    train_bucketed(TRAINER.with_max_width, KEYS, HPARAMS, 2, buckets=(8, 16, 24), chunk=4)
    # Another population of the same size: other widths, settings and keys.
    perm = np.random.default_rng(1).permutation(len(WIDTHS))
    other = {k: v[perm] for k, v in HPARAMS.items()}
    other["width"] = np.minimum(other["width"] + 3, 24).astype(np.int32)
    other["learning_rate"] = other["learning_rate"] * np.float32(0.5)
    with compiles_during() as compiles:
        res = train_bucketed(TRAINER.with_max_width, jax.random.split(jax.random.key(9), len(WIDTHS)), other, 2,
                             buckets=(8, 16, 24), chunk=4)
    assert compiles == [] and np.all(np.isfinite(res.losses))
