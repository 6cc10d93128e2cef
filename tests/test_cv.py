"""k-fold masks and the vmapped cross-validation of jaxhpo.cv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold, StratifiedKFold

import jaxhpo
from jaxhpo.cv import cross_validate, fold_scores, kfold_masks, masks_from_splits


def _check_partition(masks, n, k):
    masks = np.asarray(masks)
    assert masks.shape == (k, n) and masks.dtype == bool
    # Every sample is validated exactly once ...
    np.testing.assert_array_equal(masks.sum(axis=0), np.ones(n))
    # ... and fold sizes differ by at most one.
    sizes = masks.sum(axis=1)
    assert sizes.max() - sizes.min() <= 1


# ------------------------------------------------------------------ kfold_masks
@settings(max_examples=25)
@given(n=st.integers(2, 40), data=st.data(), shuffle=st.booleans(), stratify=st.booleans())
def test_masks_partition_the_samples(n, data, shuffle, stratify):
    k = data.draw(st.integers(2, n))
    labels = None
    if stratify:
        labels = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int32)
    key = jax.random.key(data.draw(st.integers(0, 2**16))) if shuffle else None
    masks = kfold_masks(n, k, key=key, labels=labels)
    _check_partition(masks, n, k)
    if labels is not None:
        # Stratified: a class of c members has floor(c/k) or ceil(c/k) in every fold.
        for c in np.unique(labels):
            per_fold = (np.asarray(masks) & (labels == c)).sum(axis=1)
            total = (labels == c).sum()
            assert per_fold.min() >= total // k and per_fold.max() <= -(-total // k), (c, per_fold)


def test_stratification_balances_unbalanced_classes():
    # 60 / 30 / 10 samples, interleaved in an order that plain blocks would skew.
    labels = np.repeat(np.array([0, 1, 2], np.int32), [60, 30, 10])
    masks = np.asarray(kfold_masks(100, 5, key=jax.random.key(3), labels=labels))
    counts = np.stack([np.bincount(labels[m], minlength=3) for m in masks])
    np.testing.assert_array_equal(counts, np.tile([12, 6, 2], (5, 1)))
    # Unstratified contiguous folds of the sorted labels are maximally unbalanced.
    plain = np.asarray(kfold_masks(100, 5))
    assert np.bincount(labels[plain[0]], minlength=3)[0] == 20


def test_unshuffled_folds_match_sklearn_kfold():
    for n, k in [(10, 3), (150, 5), (7, 7)]:
        expected = np.zeros((k, n), bool)
        for f, (_, val) in enumerate(KFold(k).split(np.zeros(n))):
            expected[f, val] = True
        np.testing.assert_array_equal(np.asarray(kfold_masks(n, k)), expected)


def test_key_shuffles_deterministically():
    a = np.asarray(kfold_masks(50, 5, key=jax.random.key(0)))
    b = np.asarray(kfold_masks(50, 5, key=jax.random.key(0)))
    c = np.asarray(kfold_masks(50, 5, key=jax.random.key(1)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.asarray(kfold_masks(50, 5)))


def test_kfold_masks_jits_with_traced_key_and_labels():
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 3, 40), jnp.int32)
    jitted = jax.jit(lambda key, lab: kfold_masks(40, 4, key=key, labels=lab))
    key = jax.random.key(7)
    np.testing.assert_array_equal(np.asarray(jitted(key, labels)),
                                  np.asarray(kfold_masks(40, 4, key=key, labels=labels)))
    # Many splits at once: vmap over keys.
    many = jax.vmap(lambda k: kfold_masks(40, 4, key=k, labels=labels))(jax.random.split(key, 3))
    assert many.shape == (3, 4, 40)
    for m in np.asarray(many):
        _check_partition(m, 40, 4)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=1, k=2), ValueError, "n must be >= 2"),
    (dict(n=10, k=1), ValueError, "k must be >= 2"),
    (dict(n=5, k=6), ValueError, "k must be <= n"),
    (dict(n=10.0, k=2), TypeError, "n must be an integer"),
    (dict(n=10, k=True), TypeError, "k must be an integer"),
    (dict(n=10, k=2, labels=np.zeros(9, np.int32)), ValueError, "labels must have shape"),
    (dict(n=10, k=2, labels=np.zeros(10, np.float32)), TypeError, "labels must be class labels"),
    (dict(n=10, k=2, key="0"), TypeError, "key must be a jax.random key or an integer seed"),
])
def test_kfold_masks_rejects_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        kfold_masks(**kwargs)


# ------------------------------------------------------------ masks_from_splits
def test_masks_from_splits_matches_sklearn_indices():
    y = np.repeat([0, 1, 2], 10)
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(30), y))
    train, val = masks_from_splits(splits, 30)
    assert train.shape == val.shape == (5, 30)
    for f, (tr, va) in enumerate(splits):
        np.testing.assert_array_equal(np.flatnonzero(train[f]), np.sort(tr))
        np.testing.assert_array_equal(np.flatnonzero(val[f]), np.sort(va))
    with pytest.raises(ValueError, match="indices must be integers in"):
        masks_from_splits([(np.array([0, 30]), np.array([1]))], 30)
    with pytest.raises(ValueError, match="at least one"):
        masks_from_splits([], 30)


def test_overlapping_train_and_validation_samples_are_refused():
    # A fold scored on samples it was fitted on leaks: its score is biased.
    splits = [(np.arange(0, 20), np.arange(20, 30)), (np.arange(5, 30), np.arange(0, 7))]
    with pytest.raises(ValueError, match=r"splits: fold\(s\) \[1\] put samples in both.*fold 1: 5, 6\)"):
        masks_from_splits(splits, 30)
    val = np.zeros((2, 30), bool)
    val[0, :10], val[1, 10:20] = True, True
    train = ~val
    train[1, 12] = True
    with pytest.raises(ValueError, match=r"masks: fold\(s\) \[1\].*fold 1: 12\)"):
        fold_scores(lambda hp, tr, va: jnp.sum(va), {}, (train, val))
    assert fold_scores(lambda hp, tr, va: jnp.sum(va), {}, (~val, val)).tolist() == [10.0, 10.0]


# --------------------------------------------------------------- cross_validate
N, D = 60, 3
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, D)).astype(np.float32)
Y = (X @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3 * RNG.normal(size=N)).astype(np.float32)


def ridge_masked(hp, train_w, val_w):
    """Weighted ridge regression: fit on train_w, validation MSE on val_w."""
    A = (X * train_w[:, None]).T @ X + hp["lam"] * jnp.eye(D)
    w = jnp.linalg.solve(A, (X * train_w[:, None]).T @ Y)
    return jnp.sum(val_w * (X @ w - Y) ** 2) / jnp.sum(val_w)


def ridge_gathered(lam, train_idx, val_idx):
    """The same fit on explicit index subsets, in numpy float64."""
    Xt, Yt = X[train_idx].astype(np.float64), Y[train_idx].astype(np.float64)
    w = np.linalg.solve(Xt.T @ Xt + lam * np.eye(D), Xt.T @ Yt)
    return np.mean((X[val_idx] @ w - Y[val_idx]) ** 2)


def test_cross_validate_equals_a_python_loop_over_folds():
    masks = np.asarray(kfold_masks(N, 4, key=jax.random.key(0)))
    hp = {"lam": jnp.float32(3.0)}
    per_fold = [ridge_gathered(3.0, np.flatnonzero(~m), np.flatnonzero(m)) for m in masks]
    np.testing.assert_allclose(np.asarray(fold_scores(ridge_masked, hp, masks)), per_fold, rtol=1e-4)
    got = jax.jit(cross_validate, static_argnums=0)(ridge_masked, hp, masks)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), np.mean(per_fold), rtol=1e-4)


def test_cross_validate_with_explicit_train_and_val_masks():
    # Train on a subset only (not the complement of the validation fold).
    val = np.asarray(kfold_masks(N, 3))
    train = ~val & (np.arange(N) % 2 == 0)
    per_fold = [ridge_gathered(0.5, np.flatnonzero(t), np.flatnonzero(v)) for t, v in zip(train, val)]
    got = cross_validate(ridge_masked, {"lam": jnp.float32(0.5)}, (train, val))
    np.testing.assert_allclose(float(got), np.mean(per_fold), rtol=1e-4)


def test_cross_validate_nests_under_evaluate():
    masks = kfold_masks(N, 5, key=jax.random.key(1))
    lams = np.array([0.01, 1.0, 30.0, 1000.0], np.float32)
    batched = jax.jit(lambda p: jaxhpo.evaluate(lambda hp: cross_validate(ridge_masked, hp, masks), p))
    got = np.asarray(batched({"lam": jnp.asarray(lams)}))
    assert got.shape == (4,)
    m = np.asarray(masks)
    expected = [np.mean([ridge_gathered(float(l), np.flatnonzero(~f), np.flatnonzero(f)) for f in m])
                for l in lams]
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Heavier regularisation of a well-determined linear model validates worse.
    assert got[-1] > got[0]


def test_cross_validate_inside_a_search():
    space = jaxhpo.Space(lam=jaxhpo.Float(1e-3, 1e3, log=True))
    masks = kfold_masks(N, 5, key=jax.random.key(2))
    result = jaxhpo.minimize(lambda hp: cross_validate(ridge_masked, hp, masks), space,
                             jaxhpo.GridSearch(space, num=7))
    assert result.num_evaluations == 7
    assert result.best_params["lam"] < 10.0


def test_cross_validate_rejects_bad_masks_and_scores():
    hp = {"lam": jnp.float32(1.0)}
    with pytest.raises(TypeError, match="masks must be boolean"):
        cross_validate(ridge_masked, hp, np.ones((3, N), np.float32))
    with pytest.raises(ValueError, match=r"shape \(k, n\)"):
        cross_validate(ridge_masked, hp, np.ones((N,), bool))
    with pytest.raises(ValueError, match="pair"):
        cross_validate(ridge_masked, hp, (np.ones((3, N), bool),) * 3)
    with pytest.raises(ValueError, match="got an empty sequence"):
        cross_validate(ridge_masked, hp, [])
    with pytest.raises(ValueError, match="share one shape"):
        cross_validate(ridge_masked, hp, (np.ones((3, N), bool), np.ones((2, N), bool)))
    with pytest.raises(TypeError, match="fit_and_score must be callable"):
        cross_validate(None, hp, np.ones((3, N), bool))
    with pytest.raises(ValueError, match="one scalar per fold"):
        cross_validate(lambda hp, t, v: t, hp, np.asarray(kfold_masks(N, 3)))
    with pytest.raises(ValueError, match="got a tuple of 2 arrays"):
        cross_validate(lambda hp, t, v: (t.sum(), v.sum()), hp, np.asarray(kfold_masks(N, 3)))


def test_failed_fold_fails_the_configuration():
    masks = kfold_masks(N, 3)
    score = cross_validate(lambda hp, t, v: jnp.where(v[0] > 0, jnp.nan, 1.0), {}, masks)
    assert np.isnan(float(score))


def test_stratified_folds_take_wide_integer_and_string_labels():
    """Classes that agree in their low 32 bits stay apart; strings are classes too."""
    wide = np.array([7, 7 + 2**32] * 6, np.int64)
    named = np.where(wide == 7, "cat", "dog")
    for labels in (wide, named, named.astype(object)):  # object: text as pandas holds it
        masks = np.asarray(kfold_masks(12, 3, labels=labels))
        for c in np.unique(labels):
            assert (masks[:, labels == c].sum(axis=1) == 2).all()  # 6 members: 2 per fold
    with pytest.raises(TypeError, match="holding other objects than strings"):
        kfold_masks(4, 2, labels=np.array([1.5, "a", None, "b"], object))
