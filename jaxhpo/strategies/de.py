"""Differential evolution over the unit cube (Storn & Price, 1997)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..space import Space
from ._checks import check_choice, check_real
from ._variation import uniform
from .base import Strategy, check_popsize, first_argmin, initial_best

__all__ = ["DifferentialEvolution", "DEState", "DE_VARIANTS"]

DE_VARIANTS = ("rand/1/bin", "current-to-best/1/bin")
# Members a mutant needs besides the target itself: r1, r2, r3 for rand/1,
# r1, r2 for current-to-best/1 (the best member may coincide with anyone).
_NUM_DONORS = {"rand/1/bin": 3, "current-to-best/1/bin": 2}


class DEState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    population: jax.Array  # (popsize, dim) current members (cube points)
    fitness: jax.Array  # (popsize,) their values; +inf for failed or not yet told


def _check_F(v):
    return check_real("F", v, 0.0, 2.0, low_open=True)


def _check_CR(v):
    return check_real("CR", v, 0.0, 1.0)


class DifferentialEvolution(Strategy):
    """Differential evolution with binomial crossover and greedy one-to-one selection.

    The population of ``popsize`` members starts uniform in the cube; the
    first ``ask`` returns it for evaluation. Every later ``ask`` returns one
    trial per member ``i`` (shape ``(popsize, dim)``):

    * ``"rand/1/bin"``: ``v = x[r1] + F * (x[r2] - x[r3])``,
    * ``"current-to-best/1/bin"``: ``v = x[i] + F * (x[best] - x[i]) + F * (x[r1] - x[r2])``,

    with ``r1, r2, r3`` distinct and different from ``i``, then binomial
    crossover: each coordinate comes from ``v`` with probability ``CR`` (and
    one random coordinate always does), the rest from ``x[i]``.

    Bounds: a mutant coordinate outside ``[0, 1]`` is repaired to the
    midpoint between the parent's coordinate and the violated face
    (``x[i] / 2`` below 0, ``(x[i] + 1) / 2`` above 1). Unlike clipping, this
    keeps members off the faces while still approaching them geometrically.

    Selection: the trial replaces its parent when its value is not worse
    (``<=``), so a member's value never increases; a failed trial (``+inf``)
    never replaces a finite member.

    Integer and categorical coordinates are searched as continuous cube
    coordinates; ``Space.decode`` bins them, and the ``<=`` rule lets members
    drift inside a bin for free.

    Args:
      space: the ``Space``.
      popsize: members (and trials per ``ask``); at least 4 for
        ``"rand/1/bin"``, 3 for ``"current-to-best/1/bin"``.
      variant: one of ``DE_VARIANTS``.
      F: default differential weight, in ``(0, 2]`` (``params["F"]``).
      CR: default crossover rate, in ``[0, 1]`` (``params["CR"]``).
    """

    def __init__(self, space: Space, popsize: int = 32, variant: str = "rand/1/bin",
                 F: float = 0.8, CR: float = 0.9):
        self.variant = check_choice("variant", variant, DE_VARIANTS)
        check_popsize(popsize, minimum=_NUM_DONORS[variant] + 1)
        super().__init__(space, popsize)
        self.F = _check_F(F)
        self.CR = _check_CR(CR)

    def default_params(self):
        return {"F": jnp.float32(self.F), "CR": jnp.float32(self.CR)}

    def param_checks(self):
        return {"F": _check_F, "CR": _check_CR}

    def _init(self, key, params):
        return DEState(
            params=params,
            population=self.space.sample(key, self.popsize),
            fitness=jnp.full((self.popsize,), jnp.inf, jnp.float32),
            **initial_best(self.dim),
        )

    def _donors(self, u: jax.Array) -> jax.Array:
        """``(popsize, m)`` int32 indices, distinct per row and different from the row.

        ``u``: ``(popsize, m)`` uniform ``[0, 1)`` draws.

        Drawn by sequential skipping: the ``k``-th index is uniform over the
        ``n - 1 - k`` slots left once the row and the earlier picks are
        removed, which gives a uniform draw without replacement in O(m^2)
        per row (no ``(popsize, popsize)`` probability table).
        """
        n, m = self.popsize, _NUM_DONORS[self.variant]
        picks = []
        for k in range(m):  # m <= 3: a static unroll over donors, not over members
            r = jnp.minimum(jnp.floor(u[:, k] * (n - 1 - k)), n - 2 - k).astype(jnp.int32)
            # Skip the earlier picks in ascending order so each skip is exact.
            for p in _sorted_columns(picks):
                r = r + (r >= p)
            picks.append(r)
        own = jnp.arange(n, dtype=jnp.int32)
        return jnp.stack([r + (r >= own) for r in picks], axis=1)

    def _ask(self, key, state):
        n, d = self.popsize, self.dim
        m = _NUM_DONORS[self.variant]
        # One draw for everything (the same numbers as _mixed.uniforms gives).
        flat = uniform(key, (n * (m + d + 1),))
        u_donor = flat[: n * m].reshape(n, m)
        u_cross = flat[n * m: n * (m + d)].reshape(n, d)
        u_force = flat[n * (m + d):]
        pop, F, CR = state.population, state.params["F"], state.params["CR"]
        r = self._donors(u_donor)
        if self.variant == "rand/1/bin":
            mutant = pop[r[:, 0]] + F * (pop[r[:, 1]] - pop[r[:, 2]])
        else:
            best = pop[first_argmin(state.fitness)]
            mutant = pop + F * (best - pop) + F * (pop[r[:, 0]] - pop[r[:, 1]])
        cross = u_cross < CR
        forced = jnp.minimum(jnp.floor(u_force * d), d - 1).astype(jnp.int32)
        cross = cross | (jnp.arange(d) == forced[:, None])
        trial = jnp.where(cross, mutant, pop)
        trial = jnp.where(trial < 0.0, 0.5 * pop, jnp.where(trial > 1.0, 0.5 * (pop + 1.0), trial))
        # The first generation evaluates the initial population itself.
        x = jnp.where(state.generation == 0, pop, trial)
        return x, state

    def _tell(self, state, x, values):
        first = state.generation == 0
        replace = first | (values <= state.fitness)
        return state._replace(
            population=jnp.where(replace[:, None], x, state.population),
            fitness=jnp.where(replace, values, state.fitness),
        )


def _sorted_columns(cols: list) -> list:
    """Elementwise ascending order of up to two index columns (for skipping)."""
    if len(cols) < 2:
        return list(cols)
    a, b = cols
    return [jnp.minimum(a, b), jnp.maximum(a, b)]
