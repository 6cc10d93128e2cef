"""Random search: every point uniform in the cube."""

from __future__ import annotations

from typing import NamedTuple

import jax

from .base import Strategy, initial_best

__all__ = ["RandomSearch", "RandomState"]


class RandomState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array


class RandomSearch(Strategy):
    """Uniform random search (Bergstra & Bengio, 2012).

    Args:
      space: the ``Space``.
      popsize: points per ``ask``.
    """

    adaptive = False  # tell never changes the points asked for
    independent_asks = True

    def _init(self, key, params):
        return RandomState(params=params, **initial_best(self.dim))

    def _ask(self, key, state):
        return self.space.sample(key, self.popsize), state
