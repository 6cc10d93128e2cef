"""NSGA-II: multi-objective evolution by non-dominated sorting and crowding, with constraints."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import pareto
from ..space import Space
from ._checks import check_choice, check_int
from ._mixed import MixedCoords, index_from_bits
from ._variation import CROSSOVERS, VARIATION_CHECKS, random_bits, variation_params, vary, words_per_gene
from .base import Strategy, check_popsize, compiled, float32_values, initial_best

__all__ = ["NSGA2", "NSGA2State"]


class NSGA2State(NamedTuple):
    params: dict
    best_x: jax.Array  # (dim,) feasible point with the lowest first objective told so far
    best_value: jax.Array  # () its first objective; inf until a feasible finite point is told
    generation: jax.Array
    population: jax.Array  # (popsize, dim) parents of the next ask
    objectives: jax.Array  # (popsize, m) their objective values; inf rows are failed / not yet told
    violation: jax.Array  # (popsize,) their total constraint violation (0 = feasible)
    rank: jax.Array  # (popsize,) int32 constraint-domination rank within the last selection
    crowding: jax.Array  # (popsize,) crowding distance within the last selection
    front_x: jax.Array  # (archive_size, dim) non-dominated feasible points told so far
    front_values: jax.Array  # (archive_size, m) their objective values
    front_mask: jax.Array  # (archive_size,) which archive rows are filled


class NSGA2(Strategy):
    """NSGA-II (Deb et al., 2002) for float, integer and categorical parameters.

    Minimises ``num_objectives`` objectives at once, subject to
    ``num_constraints`` constraints ``g(x) <= 0``.

    **Interface.** ``tell(state, x, values)`` takes ``values`` of shape
    ``(popsize, num_objectives + num_constraints)``: the objective values
    first, then the constraint values (a configuration is feasible when every
    constraint value is ``<= 0``). With one objective and no constraints,
    shape ``(popsize,)`` is accepted too. A row with any non-finite objective
    or constraint value is a failed evaluation: it ranks after every
    infeasible row, never enters the Pareto archive and never becomes best.

    **Generations.** The population of ``popsize`` members starts uniform in
    the cube (integer and categorical genes on bin centres); the first
    ``ask`` returns it for evaluation. Every later ``ask`` breeds
    ``popsize`` children, each from two parents chosen by binary tournaments
    on the crowded comparison (lower constraint-domination rank wins, then
    larger crowding distance), by the genetic algorithm's operators
    (``GeneticAlgorithm``: SBX or uniform crossover on continuous genes,
    uniform crossover on integer and categorical genes, typed mutation that
    keeps discrete genes on bin centres). ``tell`` merges parents and
    children (``2 * popsize`` rows), ranks them by constraint domination
    (``pareto.constrained_nondominated_rank``: feasible rows by Pareto
    fronts, then infeasible rows by total violation), and keeps the
    ``popsize`` best by rank, ties broken by larger crowding distance.

    **Archive.** The state keeps up to ``archive_size`` non-dominated feasible
    points among everything told (``front_x``, ``front_values``,
    ``front_mask``; read them with ``pareto_front``). Rows with equal
    objective vectors are kept once; when the front outgrows the archive, the
    rows with the largest crowding distance stay. ``archive_size=0``
    disables it.

    **Best.** ``best_x`` / ``best_value`` (and ``best``) are the feasible
    point with the lowest *first* objective told so far, so single-objective
    code (``Trace.best_value``) keeps a meaningful number; the Pareto front
    is in the archive.

    Args:
      space: the ``Space``.
      popsize: members and children per ``ask``, at least 2.
      num_objectives: number of objectives ``m >= 1``.
      num_constraints: number of constraint columns ``c >= 0`` after them.
      archive_size: capacity of the Pareto archive, ``>= 0``; ``None`` means
        ``popsize``.
      crossover: ``"sbx"`` or ``"uniform"`` for continuous genes.
      crossover_rate, mutation_rate: defaults of those params, in ``[0, 1]``;
        ``mutation_rate=None`` means ``1 / dim``.
      mutation_sigma: default Gaussian mutation step in cube units, ``(0, 1]``.
      sbx_eta: default SBX distribution index, in ``[0, 1000]``.
    """

    def __init__(self, space: Space, popsize: int = 50, num_objectives: int = 2, num_constraints: int = 0, *,
                 archive_size: int | None = None, crossover: str = "sbx", crossover_rate: float = 0.9,
                 mutation_rate: float | None = None, mutation_sigma: float = 0.1, sbx_eta: float = 10.0):
        check_popsize(popsize, minimum=2)  # (before the base class's check, whose minimum is 1)
        super().__init__(space, popsize)
        self.num_objectives = check_int("num_objectives", num_objectives, 1)
        self.num_constraints = check_int("num_constraints", num_constraints, 0)
        if archive_size is None:
            archive_size = self.popsize
        self.archive_size = check_int("archive_size", archive_size, 0)
        self.crossover = check_choice("crossover", crossover, CROSSOVERS)
        self.crossover_rate = VARIATION_CHECKS["crossover_rate"](crossover_rate)
        if mutation_rate is None:
            mutation_rate = 1.0 / space.dim
        self.mutation_rate = VARIATION_CHECKS["mutation_rate"](mutation_rate)
        self.mutation_sigma = VARIATION_CHECKS["mutation_sigma"](mutation_sigma)
        self.sbx_eta = VARIATION_CHECKS["sbx_eta"](sbx_eta)
        # The variation operators are the genetic algorithm's (_variation), so
        # mixed spaces are handled the same way in both; only selection differs.
        self._mixed = MixedCoords(space)

    @property
    def num_values(self) -> int:
        """Columns ``tell`` expects: ``num_objectives + num_constraints``."""
        return self.num_objectives + self.num_constraints

    def default_params(self):
        return variation_params(self)

    def param_checks(self):
        return VARIATION_CHECKS

    def _init(self, key, params):
        n, m, a = self.popsize, self.num_objectives, self.archive_size
        return NSGA2State(
            params=params,
            population=self._mixed.snap(self.space.sample(key, n)),
            objectives=jnp.full((n, m), jnp.inf, jnp.float32),
            violation=jnp.full((n,), jnp.inf, jnp.float32),
            rank=jnp.full((n,), n, jnp.int32),
            crowding=jnp.zeros((n,), jnp.float32),
            front_x=jnp.full((a, self.dim), 0.5, jnp.float32),
            front_values=jnp.full((a, m), jnp.inf, jnp.float32),
            front_mask=jnp.zeros((a,), bool),
            **initial_best(self.dim),
        )

    # ------------------------------------------------------------ selection
    def _tournament(self, w, rank, crowding):
        """Binary tournament winners from words ``w`` of shape ``(..., 2)``: the crowded comparison."""
        n = self.popsize
        i = index_from_bits(w, n)
        a, b = i[..., 0], i[..., 1]
        b_wins = (rank[b] < rank[a]) | ((rank[b] == rank[a]) & (crowding[b] > crowding[a]))
        return jnp.where(b_wins, b, a)

    def _ask(self, key, state):
        n, d = self.popsize, self.dim
        # Random words per child: 4 for two binary tournaments, 1 for the
        # crossover decision, then the variation operators' words per gene
        # (see _variation.vary), laid out as in GeneticAlgorithm._ask.
        per_gene = words_per_gene(self._mixed)
        words = random_bits(key, (n, 5 + per_gene * d))
        parents = self._tournament(words[:, :4].reshape(n, 2, 2), state.rank, state.crowding)  # (n, 2)
        a, b = state.population[parents[:, 0]], state.population[parents[:, 1]]
        children = vary(self._mixed, self.crossover, words[:, 4:5], words[:, 5:].reshape(n, per_gene, d),
                        a, b, state.params)
        # The first generation evaluates the initial population itself.
        x = jnp.where(state.generation == 0, state.population, children)
        return x, state

    def _split(self, values):
        """``(popsize, m + c)`` -> objectives ``(popsize, m)`` (inf rows failed), violation ``(popsize,)``."""
        m = self.num_objectives
        obj, g = values[:, :m], values[:, m:]
        ok = jnp.all(jnp.isfinite(values), axis=1)
        if self.num_constraints:
            viol = pareto.total_violation(g)
        else:
            viol = jnp.zeros((values.shape[0],), values.dtype)
        # A failed row gets inf objectives and inf violation: it ranks last.
        return jnp.where(ok[:, None], obj, jnp.inf), jnp.where(ok, viol, jnp.inf)

    @staticmethod
    def _rank(obj, viol):
        """Constraint-domination ranks of rows with finite objectives and violation; ``n`` for failed ones."""
        ok = jnp.all(jnp.isfinite(obj), axis=1) & jnp.isfinite(viol)
        # Total violation as the single constraint column gives the same
        # ranks as the original constraints (only feasibility and the
        # violation total matter).
        return pareto.constrained_nondominated_rank(obj, viol[:, None], ok)

    def _archive(self, state, x, obj, viol):
        """Merge the told feasible rows into the Pareto archive (fixed capacity)."""
        a = self.archive_size
        if a == 0:
            return state.front_x, state.front_values, state.front_mask
        all_x = jnp.concatenate([state.front_x, x])
        all_v = jnp.concatenate([state.front_values, obj])
        ok = jnp.concatenate([state.front_mask, (viol == 0.0) & jnp.all(jnp.isfinite(obj), axis=1)])
        # Equal objective vectors are kept once (the earliest), so repeated
        # evaluations of one point cannot fill the archive.
        same = jnp.all(all_v[:, None, :] == all_v[None, :, :], axis=-1)
        earlier = jnp.tril(jnp.ones(same.shape, bool), k=-1)
        dup = jnp.any(same & earlier & ok[None, :], axis=1)
        on_front = pareto.pareto_front_mask(all_v, ok & ~dup)
        n_all = all_v.shape[0]
        crowd = pareto.crowding_distance(all_v, jnp.where(on_front, 0, n_all))
        # Front rows first, the loneliest first; the first ``a`` rows stay.
        keep = jnp.lexsort((-crowd, (~on_front).astype(jnp.int32)))[:a]
        return all_x[keep], all_v[keep], on_front[keep]

    def tell(self, state: NSGA2State, x: jax.Array, values: jax.Array) -> NSGA2State:
        """Learn from evaluated points.

        Args:
          state: the state returned by the latest ``ask``.
          x: ``(popsize, dim)`` the points of the latest ``ask``.
          values: ``(popsize, num_objectives + num_constraints)``: objective
            values (minimised), then constraint values (feasible when
            ``<= 0``). ``(popsize,)`` is accepted when that is one column.
            Rows with a non-finite entry are failed evaluations.
        Returns:
          the new state.
        """
        n, k = self.popsize, self.num_values
        x = self._told_points(x)
        values = float32_values(values, self.num_objectives)
        if k == 1 and values.shape == (n,):
            values = values[:, None]
        if values.shape != (n, k):
            raise ValueError(
                f"tell: values must have shape (popsize, num_objectives + num_constraints) = {(n, k)}, "
                f"got {values.shape}"
            )
        return compiled(self, "_tell_values", state, x, values)

    def _tell_values(self, state, x, values):
        """``tell`` of checked ``(popsize, num_values)`` values."""
        self._check_own_state("tell", state)
        n = self.popsize
        obj, viol = self._split(values)

        # Environmental selection over parents + children. In generation 0
        # the "parents" are placeholders (rank n, inf values) and lose.
        merged_x = jnp.concatenate([state.population, x])
        merged_obj = jnp.concatenate([state.objectives, obj])
        merged_viol = jnp.concatenate([state.violation, viol])
        rank = self._rank(merged_obj, merged_viol)
        crowd = pareto.crowding_distance(merged_obj, rank)
        keep = jnp.lexsort((-crowd, rank))[:n]
        front_x, front_values, front_mask = self._archive(state, x, obj, viol)

        feasible = viol == 0.0  # also excludes failed rows (inf)
        f0 = jnp.where(feasible, obj[:, 0], jnp.inf)
        i = jnp.argmin(f0)
        better = f0[i] < state.best_value
        return state._replace(
            population=merged_x[keep],
            objectives=merged_obj[keep],
            violation=merged_viol[keep],
            rank=rank[keep],
            crowding=crowd[keep],
            front_x=front_x,
            front_values=front_values,
            front_mask=front_mask,
            best_x=jnp.where(better, x[i], state.best_x),
            best_value=jnp.where(better, f0[i], state.best_value),
            generation=state.generation + 1,
        )

    def pareto_front(self, state: NSGA2State) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The archive: ``(x (A, dim), values (A, m), mask (A,))``; rows where ``mask`` is set are the front.

        ``A = archive_size``. Unfilled rows hold ``x = 0.5`` and ``inf``
        values. Empty (all ``False``) until a feasible finite point is told.
        """
        return state.front_x, state.front_values, state.front_mask
