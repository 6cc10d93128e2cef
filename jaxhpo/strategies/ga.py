"""A genetic algorithm for mixed spaces: tournaments, elitism, SBX, typed mutation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..space import Space
from ._checks import check_choice, check_int
from ._mixed import MixedCoords, index_from_bits
from ._variation import CROSSOVERS, VARIATION_CHECKS, random_bits, variation_params, vary, words_per_gene
from .base import Strategy, check_popsize, first_argmin, initial_best

__all__ = ["GeneticAlgorithm", "GAState", "GA_CROSSOVERS"]

GA_CROSSOVERS = CROSSOVERS


class GAState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    population: jax.Array  # (popsize, dim) parents of the next ask
    fitness: jax.Array  # (popsize,) their values; +inf for failed or not yet told


class GeneticAlgorithm(Strategy):
    """Generational genetic algorithm with elitism, for float, integer and categorical genes.

    The population of ``popsize`` members starts uniform in the cube, with
    integer and categorical genes on bin centres; the first ``ask`` returns it
    for evaluation. Every later ``ask`` breeds ``popsize`` children
    (shape ``(popsize, dim)``):

    1. Selection: each parent is the best of ``tournament_size`` members drawn
       uniformly with replacement.
    2. Crossover, with probability ``crossover_rate`` per child: continuous
       genes by simulated binary crossover (SBX, distribution index
       ``sbx_eta``; each gene crosses with probability 1/2) or uniform
       crossover; integer and categorical genes always uniformly (each gene
       from either parent), so they stay on bin centres.
    3. Mutation, per gene with probability ``mutation_rate``: a continuous
       gene moves by ``N(0, mutation_sigma^2)`` (reflected into ``[0, 1]``);
       an integer gene moves by ``max(1, round(|N(0, 1)| * mutation_sigma *
       cardinality))`` values up or down (always to a different value when
       there are two or more); a categorical gene switches to one of the
       *other* categories, uniformly, at that category's bin centre.

    ``tell`` replaces the population generationally: child ``i`` takes slot
    ``i``, except that a failed child (``+inf``) never takes a slot (the old
    member stays), and the ``num_elites`` best old members replace the
    ``num_elites`` worst new members where they are better, so the best
    member is never lost. No step sorts the population.

    Args:
      space: the ``Space``.
      popsize: members and children per ``ask``, at least 2.
      num_elites: best members carried over unchanged, in ``[0, popsize)``.
      tournament_size: members per tournament, in ``[1, popsize]``; default
        ``min(3, popsize)``.
      crossover: ``"sbx"`` or ``"uniform"`` for continuous genes.
      crossover_rate, mutation_rate: defaults of those params, in ``[0, 1]``;
        ``mutation_rate=None`` means ``1 / dim``.
      mutation_sigma: default Gaussian step in cube units, in ``(0, 1]``.
      sbx_eta: default SBX distribution index, in ``[0, 1000]`` (larger:
        children nearer their parents).
    """

    def __init__(self, space: Space, popsize: int = 32, *, num_elites: int = 1,
                 tournament_size: int | None = None, crossover: str = "sbx", crossover_rate: float = 0.9,
                 mutation_rate: float | None = None, mutation_sigma: float = 0.1,
                 sbx_eta: float = 10.0):
        check_popsize(popsize, minimum=2)  # (before the base class's check, whose minimum is 1)
        super().__init__(space, popsize)
        self.num_elites = check_int("num_elites", num_elites, 0, self.popsize - 1)
        if tournament_size is None:
            tournament_size = min(3, self.popsize)
        self.tournament_size = check_int("tournament_size", tournament_size, 1, self.popsize)
        self.crossover = check_choice("crossover", crossover, CROSSOVERS)
        self.crossover_rate = VARIATION_CHECKS["crossover_rate"](crossover_rate)
        if mutation_rate is None:
            mutation_rate = 1.0 / space.dim
        self.mutation_rate = VARIATION_CHECKS["mutation_rate"](mutation_rate)
        self.mutation_sigma = VARIATION_CHECKS["mutation_sigma"](mutation_sigma)
        self.sbx_eta = VARIATION_CHECKS["sbx_eta"](sbx_eta)
        self._mixed = MixedCoords(space)

    def default_params(self):
        return variation_params(self)

    def param_checks(self):
        return VARIATION_CHECKS

    def _init(self, key, params):
        return GAState(
            params=params,
            population=self._mixed.snap(self.space.sample(key, self.popsize)),
            fitness=jnp.full((self.popsize,), jnp.inf, jnp.float32),
            **initial_best(self.dim),
        )

    # ------------------------------------------------------------ operators
    def _select(self, w, fitness):
        """``(2, popsize)`` tournament winners (two parents per child) from words ``(2, popsize, t)``."""
        n = self.popsize
        entrants = index_from_bits(w, n)
        winner = jnp.argmin(fitness[entrants], axis=-1)
        return jnp.take_along_axis(entrants, winner[..., None], axis=-1)[..., 0]

    # ------------------------------------------------------------ protocol
    def _ask(self, key, state):
        n, d, t = self.popsize, self.dim, self.tournament_size
        # Random words per child: 2t for the tournaments, 1 for the crossover
        # decision, then the variation operators' words per gene (see vary).
        per_gene = words_per_gene(self._mixed)
        words = random_bits(key, (n, 2 * t + 1 + per_gene * d))
        w_sel = words[:, : 2 * t].reshape(n, 2, t).transpose(1, 0, 2)
        parents = self._select(w_sel, state.fitness)
        a, b = state.population[parents[0]], state.population[parents[1]]
        children = vary(self._mixed, self.crossover, words[:, 2 * t: 2 * t + 1],
                        words[:, 2 * t + 1:].reshape(n, per_gene, d), a, b, state.params)
        # The first generation evaluates the initial population itself.
        x = jnp.where(state.generation == 0, state.population, children)
        return x, state

    def _tell(self, state, x, values):
        e = self.num_elites
        # Generational replacement without sorting: child i takes slot i,
        # unless it failed, in which case the old member stays (a failed
        # value never replaces a member).
        ok = jnp.isfinite(values)
        pop = jnp.where(ok[:, None], x, state.population)
        fit = jnp.where(ok, values, state.fitness)
        if e > 0:
            # Elitism: the e best old members replace the e worst new ones
            # when better. An elite whose child failed is still in place and
            # is not inserted twice. A full sort of the population would cost
            # more than the whole generation on a CPU.
            if e == 1:  # argmin/argmax: cheaper than top_k on the CPU
                elite_i = first_argmin(state.fitness)[None]
                worst_i = first_argmin(-fit)[None]
                elite_f = jnp.where(ok[elite_i], state.fitness[elite_i], jnp.inf)
            else:
                elite_i = jax.lax.top_k(-state.fitness, e)[1]
                # Elites still in place sort last and never move; their slots
                # are no worst new members (counted there too, they took the
                # slot another elite should have had).
                in_place = ~ok[elite_i]
                elite_f = jnp.where(in_place, jnp.inf, state.fitness[elite_i])
                order = jnp.argsort(elite_f, stable=True)
                elite_i, elite_f = elite_i[order], elite_f[order]
                held = jnp.zeros(fit.shape, bool).at[elite_i].set(in_place[order])
                worst_i = jax.lax.top_k(jnp.where(held, -jnp.inf, fit), e)[1]
            insert = elite_f < fit[worst_i]
            pop = pop.at[worst_i].set(jnp.where(insert[:, None], state.population[elite_i], pop[worst_i]))
            fit = fit.at[worst_i].set(jnp.where(insert, elite_f, fit[worst_i]))
        first = state.generation == 0
        return state._replace(
            population=jnp.where(first, x, pop),
            fitness=jnp.where(first, values, fit),
        )
