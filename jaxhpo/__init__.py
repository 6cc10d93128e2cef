"""jaxhpo: hyperparameter optimisation for JAX.

Search spaces map to the unit cube; strategies are pure ``init`` / ``ask`` /
``tell`` functions over batched arrays; a whole search compiles to one
``lax.scan``.
"""

from .evaluate import evaluate
from .loop import Result, Trace, minimize, run
from .space import Categorical, Float, Int, Space
from .strategies import GridSearch, RandomSearch, Strategy

__version__ = "0.1.0"

__all__ = [
    "Categorical", "Float", "Int", "Space",
    "Strategy", "GridSearch", "RandomSearch",
    "evaluate", "run", "minimize", "Result", "Trace",
]
