"""Search strategies: pure ``init`` / ``ask`` / ``tell`` / ``best`` over the unit cube."""

from .base import Strategy
from .grid import GridSearch
from .quasirandom import QuasiRandom
from .random import RandomSearch
from .tpe import TPE

__all__ = ["Strategy", "GridSearch", "QuasiRandom", "RandomSearch", "TPE"]
