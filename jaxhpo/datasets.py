"""Small data sets shipped with jaxhpo, for demos and tests (no downloads)."""

from __future__ import annotations

import io
from importlib import resources

import numpy as np

__all__ = ["load_iris", "IRIS_FEATURES", "IRIS_CLASSES"]

IRIS_FEATURES = ("sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)")
IRIS_CLASSES = ("setosa", "versicolor", "virginica")


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    """Fisher's iris data: 150 flowers, 4 measurements, 3 species (50 each).

    Read from ``jaxhpo/data/iris.csv`` (the copy scikit-learn ships).

    Returns:
      ``X`` float32 ``(150, 4)`` in the order of ``IRIS_FEATURES``, and ``y``
      int32 ``(150,)`` class indices into ``IRIS_CLASSES``.
    """
    text = resources.files("jaxhpo").joinpath("data", "iris.csv").read_text(encoding="utf-8")
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64)
    return table[:, :4].astype(np.float32), table[:, 4].astype(np.int32)
