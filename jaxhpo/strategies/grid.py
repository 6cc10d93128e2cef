"""Grid search: walk every point of ``Space.grid`` once, in batches."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..space import Space
from .base import Strategy, initial_best

__all__ = ["GridSearch", "GridState"]


class GridState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    grid: jax.Array  # (N, dim) every grid point, in order
    cursor: jax.Array  # () index of the next unasked point
    batch_valid: jax.Array  # (popsize,) rows of the latest ask that are grid points


class GridSearch(Strategy):
    """Exhaustive grid search.

    The grid is ``space.grid(num, sizes)``; ``num_points`` points are asked
    ``popsize`` at a time, in order. The last batch is padded with repeats
    that ``valid`` marks as padding, so ``tell`` ignores them and no point is
    counted twice. After ``num_generations`` batches the grid is exhausted
    and every further row is padding.

    Args:
      space: the ``Space``.
      popsize: points per ``ask``; ``None`` asks the whole grid at once.
      num: points per float dimension (see ``Space.grid``).
      sizes: per-parameter numbers of points (see ``Space.grid``).
    """

    accepts_points = False  # every grid point is to be evaluated

    def __init__(self, space: Space, popsize: int | None = None, num: int = 10,
                 sizes: Mapping[str, int] | None = None):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
        points = space.grid(num, sizes)
        super().__init__(space, len(points) if popsize is None else popsize)
        # Python ints (space.grid checked them): NumPy ones would change the
        # strategy's repr, by which a stored study recognises it.
        self.num = None if num is None else int(num)
        self.sizes = {k: None if v is None else int(v) for k, v in dict(sizes or {}).items()}
        self._points = points

    @property
    def num_points(self) -> int:
        """Size of the grid."""
        return len(self._points)

    @property
    def num_generations(self) -> int:
        """Batches needed to cover the grid."""
        return math.ceil(self.num_points / self.popsize)

    def _init(self, key, params):
        return GridState(
            params=params,
            grid=jnp.asarray(self._points),
            cursor=jnp.array(0, jnp.int32),
            batch_valid=jnp.ones((self.popsize,), bool),
            **initial_best(self.dim),
        )

    def _ask(self, key, state):
        idx = state.cursor + jnp.arange(self.popsize, dtype=jnp.int32)
        valid = idx < self.num_points
        x = state.grid[idx % self.num_points]
        cursor = jnp.minimum(state.cursor + self.popsize, self.num_points)
        return x, state._replace(cursor=cursor, batch_valid=valid)

    def valid(self, state):
        return state.batch_valid
