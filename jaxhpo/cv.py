"""k-fold cross-validation with fixed shapes: folds as masks, folds as a vmap.

A fold is a pair of boolean masks over all ``n`` samples, not a gather of the
samples it holds: every fold then has the same shapes, so one compiled
``fit_and_score`` serves all ``k`` folds at once (a ``vmap``), and it nests
under ``jaxhpo.evaluate``'s ``vmap`` over configurations. An objective fits on
``train_mask`` as sample weights and scores on ``val_mask``.

    masks = kfold_masks(150, 5, key=jax.random.key(0), labels=y)   # (5, 150)

    def objective(config):            # one configuration -> its mean fold score
        return cross_validate(fit_and_score, config, masks)
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ._keys import check_key

__all__ = ["kfold_masks", "masks_from_splits", "fold_scores", "cross_validate"]


def _mask_array(m: Any) -> jax.Array:
    try:
        return jnp.asarray(m)
    except (TypeError, ValueError):
        raise TypeError(f"masks must be a (k, n) boolean array or a pair (train_masks, val_masks), "
                        f"got {type(m).__name__}") from None


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def kfold_masks(n: int, k: int, *, key: jax.Array | None = None,
                labels: Any = None) -> jax.Array:
    """Validation masks of a k-fold split (jit-able; ``n`` and ``k`` static).

    Every sample lies in exactly one validation fold; fold sizes differ by at
    most one. Without ``key`` and ``labels`` the folds are contiguous blocks
    in sample order, the first ``n % k`` folds one sample larger (the same
    folds as scikit-learn's unshuffled ``KFold``).

    Args:
      n: number of samples, ``>= 2``.
      k: number of folds, ``2 <= k <= n``.
      key: a ``jax.random`` key or an integer seed; shuffles the samples before they are dealt
        to folds. ``None`` keeps the sample order.
      labels: ``(n,)`` class labels (integers of any size, or strings;
        under ``jit`` integers) for stratified
        folds: samples are sorted by label and dealt to the folds in turn, so
        each class with ``c`` members has ``floor(c / k)`` or ``ceil(c / k)``
        of them in every fold. A class with fewer than ``k`` members leaves
        some folds without it.
    Returns:
      ``(k, n)`` bool; row ``f`` marks the validation samples of fold ``f``,
      and ``~row`` its training samples.
    """
    n = _check_int("n", n, 2)
    k = _check_int("k", k, 2)
    if k > n:
        raise ValueError(f"k must be <= n (each fold needs a sample), got k={k}, n={n}")
    if key is not None:
        key = check_key(key, allow_seed=True)
    if labels is not None and not isinstance(labels, jax.core.Tracer):
        # Concrete labels become class codes on the host: int64 labels keep
        # apart, and any values NumPy can sort (strings) are classes.
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape (n,) = ({n},), got {labels.shape}")
        if labels.dtype.kind == "O" and all(isinstance(v, str) for v in labels):
            labels = labels.astype(str)  # text as pandas holds it
        if labels.dtype.kind not in "biuUS":
            raise TypeError(f"labels must be class labels (integers or strings), got dtype {labels.dtype}"
                            + (" holding other objects than strings" if labels.dtype.kind == "O" else ""))
        labels = np.unique(labels, return_inverse=True)[1].astype(np.int32).reshape(n)
    elif labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape (n,) = ({n},), got {labels.shape}")
        if not (jnp.issubdtype(labels.dtype, jnp.integer) or labels.dtype == jnp.bool_):
            raise TypeError(f"labels must be integer class labels, got dtype {labels.dtype}")
    return _kfold_masks(n, k, key, None if labels is None else jnp.asarray(labels))


# One compiled program per (n, k), rather than one per operation when called eagerly.
@partial(jax.jit, static_argnums=(0, 1))
def _kfold_masks(n: int, k: int, key: jax.Array | None, labels: jax.Array | None) -> jax.Array:
    order = jnp.arange(n, dtype=jnp.int32)
    if key is not None:
        order = jax.random.permutation(key, n).astype(jnp.int32)
    if labels is None:
        # Contiguous blocks of the (shuffled) order; sizes fixed at trace time.
        sizes = np.full(k, n // k)
        sizes[: n % k] += 1
        fold_at = jnp.asarray(np.repeat(np.arange(k, dtype=np.int32), sizes))
    else:
        # A stable sort by label keeps the shuffle within each class; dealing
        # the sorted samples round-robin spreads every class evenly and keeps
        # fold sizes within one of each other.
        order = order[jnp.argsort(labels[order], stable=True)]
        fold_at = jnp.arange(n, dtype=jnp.int32) % k
    fold_of = jnp.zeros((n,), jnp.int32).at[order].set(fold_at)  # (n,) fold of each sample
    return fold_of[None, :] == jnp.arange(k, dtype=jnp.int32)[:, None]


def masks_from_splits(splits: Sequence[tuple[Any, Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index splits (e.g. ``list(StratifiedKFold(5).split(X, y))``) -> masks.

    Args:
      splits: ``k`` pairs ``(train_indices, val_indices)`` of integer arrays.
      n: number of samples.
    Returns:
      ``(train_masks, val_masks)``, each ``(k, n)`` bool (numpy), ready for
      ``cross_validate``.
    Raises:
      ValueError: an index outside ``[0, n)``, or a fold whose training and
        validation indices share a sample (its score would be biased).
    """
    n = _check_int("n", n, 1)
    if not isinstance(splits, Iterable):
        raise TypeError(f"splits must be an iterable of (train_indices, val_indices) pairs, got {splits!r}")
    splits = list(splits)
    if not splits:
        raise ValueError("splits must hold at least one (train, val) pair")
    train = np.zeros((len(splits), n), bool)
    val = np.zeros((len(splits), n), bool)
    for f, split in enumerate(splits):
        if not hasattr(split, "__len__") or len(split) != 2:
            raise ValueError(f"splits[{f}] must be a (train_indices, val_indices) pair")
        for name, idx, out in (("train", split[0], train), ("val", split[1], val)):
            idx = np.asarray(idx)
            if idx.ndim != 1:
                raise ValueError(f"splits[{f}] {name} indices must be a 1-d sequence, got shape {idx.shape}")
            if not idx.size:
                continue
            if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"splits[{f}] {name} indices must be integers in [0, {n})")
            out[f, idx] = True
    _refuse_overlap(train, val, "splits")
    return train, val


def _refuse_overlap(train: np.ndarray, val: np.ndarray, what: str) -> None:
    """A fold that scores samples it was fitted on gives a biased score (leakage)."""
    both = train & val
    folds = np.flatnonzero(both.any(axis=1))
    if folds.size:
        f = int(folds[0])
        shared = np.flatnonzero(both[f])
        listed = ", ".join(map(str, shared[:5])) + (", ..." if shared.size > 5 else "")
        raise ValueError(f"{what}: fold(s) {folds.tolist()} put samples in both the training and the validation "
                         f"set (fold {f}: {listed}); a fold's training and validation samples must be disjoint")


def _check_masks(masks: Any, n: int | None = None) -> tuple[jax.Array, jax.Array]:
    """``(train, val)`` ``(k, n)`` bool masks from validation masks or a pair, checked
    (``n``: the number of samples they must cover, where the caller knows it)."""
    if isinstance(masks, (tuple, list)) and not masks:
        raise ValueError("masks must be a (k, n) array of validation masks or a pair (train_masks, val_masks), "
                         "got an empty sequence")
    # A list of k rows of booleans is a (k, n) array of validation masks, not a pair.
    if isinstance(masks, (tuple, list)) and np.ndim(masks[0] if masks else None) < 2 and not any(
            isinstance(m, jax.core.Tracer) for m in masks):
        try:
            masks = np.asarray(masks)
        except ValueError:  # rows of different lengths
            raise TypeError("masks must be a (k, n) boolean array or a pair (train_masks, val_masks), got rows "
                            f"of lengths {[np.size(m) for m in masks]}") from None
    if isinstance(masks, (tuple, list)):
        if len(masks) != 2:
            raise ValueError("masks must be a (k, n) array of validation masks or a pair "
                             f"(train_masks, val_masks), got a sequence of length {len(masks)}")
        train, val = (_mask_array(m) for m in masks)
    else:
        val = _mask_array(masks)
        train = None
    for name, m in (("masks", val), ("train masks", train)):
        if m is None:
            continue
        if m.dtype != jnp.bool_:
            raise TypeError(f"{name} must be boolean, got dtype {m.dtype}")
        if m.ndim != 2 or 0 in m.shape:
            raise ValueError(f"{name} must have shape (k, n) with k, n >= 1, got {m.shape}")
        if n is not None and m.shape[1] != n:
            raise ValueError(f"{name} must be bool of shape (k, {n}), got {m.dtype} {m.shape}")
    if train is None:
        train = ~val
    elif train.shape != val.shape:
        raise ValueError(f"train and validation masks must share one shape, got {train.shape} and {val.shape}")
    if not isinstance(val, jax.core.Tracer) and not isinstance(train, jax.core.Tracer):
        # A fold with nothing to fit on or nothing to score would only give nan.
        # On the host: inside a trace, indexing even a concrete array is traced.
        v, tr = np.asarray(val), np.asarray(train)
        empty = np.flatnonzero(~v.any(axis=1) | ~tr.any(axis=1)).tolist()
        if empty:
            raise ValueError(f"masks: fold(s) {empty} have no validation or no training sample")
        _refuse_overlap(tr, v, "masks")
    return train, val


def fold_scores(fit_and_score: Callable[[Any, jax.Array, jax.Array], Any], hparams: Any,
                masks: Any) -> jax.Array:
    """The score of every fold, as one ``vmap`` over the folds (jit-able).

    Args:
      fit_and_score: ``f(hparams, train_weights, val_weights) -> scalar`` for
        one fold; the weights are ``(n,)`` float32 arrays of 0 and 1, to be
        used as sample weights (fit on ``train_weights``, score on
        ``val_weights``). jax-traceable.
      hparams: any pytree, passed unchanged to every fold (not vmapped).
      masks: ``(k, n)`` bool validation masks (training = the complement), as
        from ``kfold_masks``; or a pair ``(train_masks, val_masks)`` of
        ``(k, n)`` bool arrays, as from ``masks_from_splits``, disjoint in
        every fold (concrete masks are checked).
    Returns:
      ``(k,)`` the fold scores.
    """
    if not callable(fit_and_score):
        raise TypeError("fit_and_score must be callable")
    train, val = _check_masks(masks)
    scores = jax.vmap(fit_and_score, in_axes=(None, 0, 0))(
        hparams, train.astype(jnp.float32), val.astype(jnp.float32))
    if not isinstance(scores, jax.Array):
        raise ValueError(f"fit_and_score must return one scalar per fold; got a {type(scores).__name__} "
                         f"of {len(jax.tree_util.tree_leaves(scores))} arrays")
    if scores.shape != train.shape[:1]:
        raise ValueError(
            f"fit_and_score must return one scalar per fold; got shape {scores.shape[1:]} per fold")
    return scores


def cross_validate(fit_and_score: Callable[[Any, jax.Array, jax.Array], Any], hparams: Any,
                   masks: Any) -> jax.Array:
    """Mean fold score of one configuration (jit-able, vmap-able over ``hparams``).

    All ``k`` folds run as one ``vmap`` (see ``fold_scores``), so inside a
    search every configuration and every fold is one array program. A
    non-finite fold score makes the mean non-finite: a failed trial.

    Args:
      fit_and_score: ``f(hparams, train_weights, val_weights) -> scalar``.
      hparams: one configuration (a pytree of arrays of shape ``()``).
      masks: ``(k, n)`` bool validation masks, or ``(train_masks, val_masks)``.
    Returns:
      ``()`` the mean of the ``k`` fold scores.
    """
    return jnp.mean(fold_scores(fit_and_score, hparams, masks))
