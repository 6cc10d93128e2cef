"""Search strategies: pure ``init`` / ``ask`` / ``tell`` / ``best`` over the unit cube."""

from .base import Strategy
from .grid import GridSearch
from .random import RandomSearch

__all__ = ["Strategy", "GridSearch", "RandomSearch"]
