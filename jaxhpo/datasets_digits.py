"""The handwritten-digits data shipped with jaxhpo (no download), and a fixed split.

``jaxhpo/data/digits.npz`` holds the copy scikit-learn ships (UCI optical
recognition of handwritten digits, test part): 1797 images of 8x8 pixels with
intensities 0..16, ten classes, stored compressed as ``uint8``.
"""

from __future__ import annotations

import io
import math
import numbers
from importlib import resources

import numpy as np

from ._scalars import scalar_item

__all__ = ["load_digits", "digits_split", "DIGITS_CLASSES"]

DIGITS_CLASSES = tuple(range(10))


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits data as scikit-learn's ``load_digits`` returns it.

    Returns:
      ``X`` float32 ``(1797, 64)``: pixel intensities in ``[0, 16]``, row-major
      8x8 images; ``y`` int32 ``(1797,)``: the digit, ``0..9``.
    """
    raw = resources.files("jaxhpo").joinpath("data", "digits.npz").read_bytes()
    with np.load(io.BytesIO(raw)) as data:
        return data["images"].astype(np.float32), data["labels"].astype(np.int32)


def digits_split(seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> dict[str, np.ndarray]:
    """A stratified train / validation / test split, features scaled to ``[0, 1]``.

    Args:
      seed: seeds the shuffle within each class.
      fractions: ``(train, validation, test)`` shares, positive, summing to 1.
    Returns:
      dict with ``X_train (n_tr, 64)``, ``y_train (n_tr,)``, ``X_val``,
      ``y_val``, ``X_test``, ``y_test``; float32 features (intensity / 16),
      int32 labels.
    """
    seed = scalar_item(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a nonnegative integer, got {seed!r}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or not all(math.isfinite(f) and f > 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive shares summing to 1, got {fractions!r}")
    X, y = load_digits()
    X = X / np.float32(16.0)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    # Stratified: every class is split in the same proportions.
    for c in DIGITS_CLASSES:
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(fr[0] * len(idx)))
        b = a + int(round(fr[1] * len(idx)))
        for p, sl in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            p.append(sl)
    out = {}
    for name, p in zip(("train", "val", "test"), parts):
        idx = np.sort(np.concatenate(p))
        if not idx.size:
            raise ValueError(f"fractions {fractions!r} leave the {name} part empty (each class's share is "
                             f"rounded: give every part at least about 1 / {min(np.bincount(y))} of the data)")
        out[f"X_{name}"], out[f"y_{name}"] = X[idx], y[idx]
    return out
