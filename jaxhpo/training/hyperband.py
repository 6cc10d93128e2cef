"""Successive halving and Hyperband over a trainer (Li et al., 2018; Jamieson & Talwalkar, 2016).

Budget is counted in the trainer's units (one ``step`` = one unit). A bracket
is a list of rungs ``(n_i, r_i)``: ``n_i`` configurations trained to ``r_i``
units. After each rung the best ``n_{i+1} = floor(n_i / eta)`` by loss go on:
their training states are gathered and trained ``r_{i+1} - r_i`` more units,
never from scratch. A level's training is one compiled program whose trip
counts (the extra budget, the number of members) are traced; the first
level's program also initialises the members. With a ``block_size`` (on a
CPU by default: the size that pads least, see ``successive_halving``) a
level's member-units are a queue taken a block at a time, unit by unit
(``jaxhpo.training.trainer.train_blocks``), and every level of every
bracket runs in one population buffer of fixed size, so a whole search
compiles one training program, one gather of survivors and one small
program that copies out a bracket's best state, and a second search with
the same trainer and schedule compiles nothing. With ``block_size=None``
(the default on accelerators, where members train in parallel) each level
is one vmapped block of its own size: one program per distinct level size,
no padding.

Configurations come from any jaxhpo ``Strategy`` (``RandomSearch`` by
default); a model-based strategy (TPE, GP-BO) is told every configuration's
loss at the largest budget it reached after each bracket, so later brackets
sample from a model of earlier ones (the BOHB pattern). Hyperband's brackets
are counted over the whole search, iteration after iteration (bracket ``b``
runs the schedule's bracket ``b mod (s_max + 1)``, with a key folded from the
run's key and ``b``), so ``resume=`` continues a search as one longer call
would.

Multi-objective: where ``trainer.evaluate`` returns a vector of ``m``
objectives (all minimised, e.g. validation loss and parameter count), each
rung's survivors are chosen as NSGA-II chooses (Deb et al., 2002): by
non-dominated rank, then by crowding distance within the front (larger
first), then by position. The result then holds every configuration's
objective vector and the Pareto front of the configurations trained to the
largest budget (the final rungs). The number of objectives is read from
``evaluate``'s output shape; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from fractions import Fraction
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from .. import pareto
from ..evaluate import check_chunk_size, check_mesh, host_local
from .._keys import check_batchable_keys, check_key, key_bits
from ..loop import check_state
from ..space import Space
from ..strategies.base import Strategy
from ..strategies.random import RandomSearch
from ._compile import small_program_jit
from .trainer import (MAX_COUNT, check_carried, check_trainer, continue_rung, empty_states, put_population, take,
                      take_one, take_row, trainer_has_aux)

__all__ = ["hyperband_schedule", "successive_halving_schedule", "level_sizes", "padded_work", "successive_halving",
           "hyperband", "MultiFidelityResult", "survivor_order"]


def _check_eta(eta: Any) -> int:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Integral) or eta < 2:
        raise ValueError(f"eta must be an integer >= 2, got {eta!r}")
    return int(eta)


def _check_budget(value: Any, name: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1 budget unit, got {value!r}")
    if float(value) > MAX_COUNT:  # a budget becomes an int32 count of trainer steps
        raise ValueError(f"{name} must be at most 2**31 - 1 budget units, got {value!r}")
    return Fraction(float(value)).limit_denominator(10**9)


def _plain(f: Fraction) -> int | float:
    return int(f) if f.denominator == 1 else float(f)


def _floor_log(ratio: Fraction, eta: int) -> int:
    """``floor(log_eta(ratio))`` in exact arithmetic (no float rounding at powers of eta)."""
    s = 0
    while eta ** (s + 1) <= ratio:
        s += 1
    return s


def hyperband_schedule(max_budget: float, eta: int = 3) -> list[list[tuple[int, int | float]]]:
    """Hyperband's brackets as plain Python data (Li et al., 2018, Algorithm 1).

    With ``R = max_budget`` and ``s_max = floor(log_eta R)``, bracket
    ``s = s_max, ..., 0`` starts ``n = ceil((s_max + 1) / (s + 1) * eta^s)``
    configurations at ``r = R eta^-s`` units; rung ``i = 0..s`` holds
    ``n_i = floor(n eta^-i)`` configurations at ``r_i = r eta^i`` units.

    Args:
      max_budget: ``R``, the most units one configuration is trained (>= 1).
      eta: the halving rate, an integer >= 2.
    Returns:
      a list (one entry per bracket, largest ``s`` first) of lists of rungs
      ``(num_configs, budget_per_config)``; budgets are ints where exact,
      floats otherwise. For ``R = 81, eta = 3`` the first bracket is
      ``[(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]``.
    """
    eta = _check_eta(eta)
    R = _check_budget(max_budget, "max_budget")
    s_max = _floor_log(R, eta)
    brackets = []
    for s in range(s_max, -1, -1):
        # Exact rational arithmetic: ceil((s_max+1)/(s+1) * eta^s) with no float error.
        n = math.ceil(Fraction(s_max + 1, s + 1) * eta**s)
        r = R / eta**s
        brackets.append([(n // eta**i, _plain(r * eta**i)) for i in range(s + 1)])
    return brackets


def successive_halving_schedule(num_configs: int, min_budget: float, max_budget: float,
                                eta: int = 3) -> list[tuple[int, int | float]]:
    """One successive-halving bracket: rungs ``(floor(n eta^-i), r eta^i)``, ``i = 0..s``.

    ``s = floor(log_eta(max_budget / min_budget))``; the last rung trains to
    ``min_budget * eta^s <= max_budget`` units. Rungs that would hold no
    configuration are dropped.
    """
    eta = _check_eta(eta)
    if isinstance(num_configs, bool) or not isinstance(num_configs, numbers.Integral) or num_configs < 1:
        raise ValueError(f"num_configs must be a positive integer, got {num_configs!r}")
    r = _check_budget(min_budget, "min_budget")
    R = _check_budget(max_budget, "max_budget")
    if R < r:
        raise ValueError(f"max_budget ({max_budget}) must be >= min_budget ({min_budget})")
    s = _floor_log(R / r, eta)
    rungs = [(int(num_configs) // eta**i, _plain(r * eta**i)) for i in range(s + 1)]
    return [(n, b) for n, b in rungs if n >= 1]


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class MultiFidelityResult:
    """The outcome of ``successive_halving`` or ``hyperband``; ``N`` configurations in all.

    Attributes:
      x: ``(N, dim)`` cube points of every configuration, bracket by bracket.
      hparams: dict name -> ``(N,)`` decoded configurations.
      bracket: ``(N,)`` int, the bracket each configuration ran in.
      budget: ``(N,)`` int, units each configuration was trained.
      loss: ``(N,)`` float32, its loss at that budget (``inf``: failed);
        ``(N, m)`` objective vectors for a multi-objective trainer.
      init_keys: ``(N,)`` the key each configuration's ``init`` received.
      rungs: one dict per rung run: ``bracket``, ``rung``, ``budget``, ``index``
        (``(n_i,)`` positions into the ``N`` configurations), ``loss``
        ``(n_i,)`` (``(n_i, m)``) and ``aux`` (its rows, or ``None``).
      best_index: position of the best configuration: the lowest loss among
        those trained to the largest budget of the search (multi-objective:
        the Pareto-front member lowest in the first objective, ties by the
        next ones).
      best_params: it as Python values (labels restored); ``None`` if every
        configuration trained to the largest budget failed (then no trained
        state to return is left: lower rungs' states were trained on).
      best_loss, best_budget: its loss (multi-objective: its first
        objective) and budget.
      best_state: its trained state (the train-state pytree, no population axis).
      total_budget: units trained in all (sum over rungs of ``n_i`` times the
        extra units of that rung).
      num_objectives: ``m``; 0 for a scalar loss.
      pareto_index: ``(k,)`` positions of the non-dominated configurations
        among those trained to the largest budget, sorted by the first
        objective (a scalar loss: ``[best_index]``).
      pareto_params: their configurations as Python dicts.
      pareto_loss: ``(k, m)`` their objective vectors (``(k,)`` losses).
      pareto_state: their trained states, leading axis ``(k,)``.
      aux: for a trainer with ``has_aux``, each configuration's auxiliary
        output at its ``budget`` (the pytree ``evaluate`` returns, with a
        leading ``(N,)`` axis, as numpy arrays); ``None`` otherwise.
      best_aux: the best configuration's (no leading axis; ``None`` without
        ``has_aux`` or a best configuration).
      pareto_aux: the front's, leading axis ``(k,)`` (``None`` likewise).
      sampler_state: the strategy's state after it was told the last bracket.
      schedule: ``hyperband_schedule(max_budget, eta)`` of a ``hyperband``
        run (bracket ``b`` ran ``schedule[b % len(schedule)]``), which
        ``resume=`` continues; ``None`` for ``successive_halving``.
      space: the ``Space`` searched.
    """

    x: np.ndarray
    hparams: dict
    bracket: np.ndarray
    budget: np.ndarray
    loss: np.ndarray
    init_keys: Any
    rungs: list
    best_index: int
    best_params: dict | None
    best_loss: float
    best_budget: int
    best_state: Any
    total_budget: int
    num_objectives: int = 0
    pareto_index: np.ndarray | None = None
    pareto_params: list | None = None
    pareto_loss: np.ndarray | None = None
    pareto_state: Any = None
    aux: Any = None
    best_aux: Any = None
    pareto_aux: Any = None
    sampler_state: Any = None
    schedule: list | None = None
    space: Space | None = dataclasses.field(repr=False, default=None)

    @property
    def best_value(self) -> float:
        """``best_loss``, under the name ``jaxhpo.Result`` and ``Study`` use."""
        return self.best_loss

    def __repr__(self) -> str:
        front = f", pareto_size={len(self.pareto_index)}" if self.num_objectives else ""
        return (f"MultiFidelityResult(best_loss={self.best_loss!r}, best_params={self.best_params!r}, "
                f"best_budget={self.best_budget}, num_configs={len(self.loss)}, "
                f"total_budget={self.total_budget}{front})")


# ------------------------------------------------------------------------- internals
def _steps(budget: int | float) -> int:
    """Budget units -> whole trainer steps: floored (never past ``max_budget``), at least 1.

    The tolerance keeps a budget that a float rounding left just below a
    whole number (``2.9999999999999996``) at that number."""
    return max(1, math.floor(budget + 1e-9))


@jax.jit
def _mo_order(values):
    n = values.shape[0]
    rank = pareto.nondominated_rank(values)
    crowd = pareto.crowding_distance(values, rank)
    # Primary key last: rank, then crowding (larger first), then position.
    return jnp.lexsort((jnp.arange(n), -crowd, rank))


def survivor_order(losses: Any) -> np.ndarray:
    """The order in which a rung's members go on: the first ``n_{i+1}`` survive.

    Args:
      losses: ``(n,)`` scalar losses, or ``(n, m)`` objective vectors (all
        minimised; non-finite rows are failures and come last).
    Returns:
      ``(n,)`` int positions. Scalar losses: ascending, ties by position.
      Vectors: by non-dominated rank (``jaxhpo.pareto.nondominated_rank``),
      then by crowding distance within the front, larger first
      (``jaxhpo.pareto.crowding_distance``), then by position.
    """
    losses = np.asarray(losses)
    if losses.ndim == 1:
        return np.argsort(np.where(np.isfinite(losses), losses, np.inf), kind="stable")
    if losses.ndim != 2 or losses.shape[1] < 1:
        raise ValueError(f"losses must have shape (n,) or (n, m) with m >= 1, got {losses.shape}")
    failed = ~np.isfinite(losses).all(axis=1, keepdims=True)
    return np.asarray(_mo_order(jnp.asarray(np.where(failed, np.inf, losses), jnp.float32)))


@jax.jit
def _front_mask(values):
    return pareto.pareto_front_mask(values)


def _check_sampler(strategy: Any, space: Space, popsize: int, groups: list) -> Strategy:
    """The sampler, checked against the brackets it proposes for (``groups``:
    lists of brackets run side by side).

    A bracket of ``n`` asks ``ceil(n / popsize)`` times in a row and trains
    the first ``n`` points; brackets side by side all ask before any is
    told. A sampler that learns (``adaptive``) is told every point it
    proposed, so ``n`` must be a multiple of its ``popsize`` (a point never
    trained would be told as a failure); and asking it again before telling
    must give new points (``independent_asks``: TPE draws afresh from its
    model; CMA-ES would overwrite its samples, GP-BO repeat its batch, DE,
    GA and local search breed from the same parents). It is told one loss
    per configuration, so a sampler of several values (MOTPE, NSGA2) cannot
    serve.
    """
    if strategy is None:
        return RandomSearch(space, popsize)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo Strategy or None, got {type(strategy).__name__}")
    if strategy.space != space:
        raise ValueError("strategy was built for a different space than the one given")
    name, p = type(strategy).__name__, strategy.popsize
    if not strategy.accepts_points:
        raise ValueError(f"strategy: {name}'s points must all be evaluated, and a bracket trains only "
                         "the first configurations it is given")
    if getattr(strategy, "num_values", None) not in (None, 1):
        raise ValueError(f"strategy: {name} learns from {strategy.num_values} values per configuration, and "
                         "a bracket tells its sampler one (each configuration's rank); use a single-objective "
                         "sampler (a multi-objective trainer is ranked by NSGA-II's order either way)")
    first_rungs = [bracket[0][0] for group in groups for bracket in group]
    asked_before_a_tell = max(sum(bracket[0][0] for bracket in group) for group in groups)
    if strategy.adaptive:
        if any(n % p for n in first_rungs):
            raise ValueError(
                f"strategy: {name} learns from every point it proposes, so each bracket's first rung "
                f"(here {sorted(set(first_rungs), reverse=True)}) must be a multiple of its popsize ({p}); "
                f"give it a popsize that divides {math.gcd(*first_rungs)}, if it takes one (popsize 1 for "
                "TPE or GPBO; CMA-ES, DE and GA need larger populations, so with this schedule use another "
                "sampler or other brackets)")
        if asked_before_a_tell > p and not strategy.independent_asks:
            if max(first_rungs) > p:  # one bracket alone asks more than once
                raise ValueError(
                    f"strategy: {name} must be told between asks, and a bracket of {max(first_rungs)} "
                    f"configurations asks it {max(first_rungs) // p} times first; give it popsize "
                    f">= {max(first_rungs)} (successive_halving: popsize = num_configs), or use TPE, "
                    "which draws each ask afresh from its model")
            raise ValueError(
                f"strategy: {name} must be told between asks, and brackets side by side ask it for "
                f"{asked_before_a_tell} configurations before any is told; run them one after another "
                "(concurrent_brackets=False), or use TPE, which draws each ask afresh from its model")
    return strategy


@partial(small_program_jit, static_argnames=("strategy",))
def _start(strategy, key):
    """The sampler's initial state and the run key the brackets' keys come
    from (``_bracket_keys``), in one program rather than a few small
    compiled operations."""
    k_strat, k_run = jax.random.split(key)
    return strategy.init(k_strat), k_run


def _bracket_keys(k_run, index, single):
    """Bracket ``index``'s ask and init keys: from ``fold_in(k_run, index)``,
    so that a search continued for more brackets draws what one longer
    search draws (for the default threefry keys, ``fold_in(k, i)`` is
    ``split(k, n)[i]``); ``single`` (successive halving's one bracket):
    from ``k_run`` itself."""
    return jax.random.split(k_run if single else jax.random.fold_in(k_run, index))


@partial(small_program_jit, static_argnames=("strategy", "num_batches", "size", "single"))
def _propose(strategy, k_run, index, state, num_batches, size, num_configs, single):
    """Ask ``num_batches`` times in a row with bracket ``index``'s key (see
    ``_bracket_keys``); keep the first ``num_configs`` points.

    Returns ``xs (num_batches, popsize, dim)`` (for ``tell``), and ``x (size,
    dim)``, its decoded hyperparameters and one init key per row, where rows
    from ``num_configs`` on (a traced count, so brackets of every size share
    this program) repeat the last configuration; then the strategy's new
    state. The keys do not depend on ``size``: row ``i`` gets the ``i``-th
    key of ``jax.random.split(k, num_configs)`` (threefry splits are
    partitionable).
    """
    k_ask, k_init = _bracket_keys(k_run, index, single)

    def one(state, k):
        x, state = strategy.ask(k, state)
        return state, x

    state, xs = jax.lax.scan(one, state, jax.random.split(k_ask, num_batches))
    rows = jnp.minimum(jnp.arange(size), num_configs - 1)
    x = xs.reshape(-1, strategy.space.dim)[rows]
    return xs, x, strategy.space.decode(x), jax.random.split(k_init, size)[rows], state


@partial(small_program_jit, static_argnames=("strategy",))
def _tell_batches(strategy, state, xs, values):
    def one(state, xv):
        return strategy.tell(state, *xv), None

    return jax.lax.scan(one, state, (xs, values))[0]


def _rows_of(aux: Any, rows: Any) -> Any:
    """Rows ``rows`` of every leaf of a numpy ``aux`` pytree, copied (``None`` stays ``None``)."""
    return None if aux is None else jax.tree_util.tree_map(lambda a: np.array(a[rows]), aux)


def _padded(idx: np.ndarray, m: int) -> np.ndarray:
    """``idx`` with its last entry repeated up to ``m`` entries."""
    return np.concatenate([idx, np.repeat(idx[-1:], m - len(idx))])


@jax.jit
def _concat(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *trees)


def _rounded_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _levels(group: list) -> list[int]:
    """The budget levels (in trainer steps, ascending) of brackets run side by side:
    the union of their rungs' budgets."""
    return sorted({_steps(r) for bracket in group for _, r in bracket})


def level_sizes(group: list) -> list[int]:
    """Population of each budget level when the brackets of ``group`` run side by side.

    ``group`` is a list of brackets (lists of rungs ``(n_i, r_i)``); a
    bracket's members count at every level up to its last rung, ``n_i`` of
    them from its rung ``i - 1`` (exclusive) to its rung ``i`` (inclusive).
    """
    sizes = []
    for level in _levels(group):
        total = 0
        for bracket in group:
            for n, r in bracket:
                if _steps(r) >= level:
                    total += n
                    break
        sizes.append(total)
    return sizes


# On a 2-core CPU a member-unit of the digits MLP costs more in blocks
# narrower than about 8 (the cores' vector units and threads idle): R = 27,
# eta = 3 in blocks of whole members took the same time in blocks of 4 (380
# member-units) as of 8 (408). ``block_size="auto"`` goes no narrower unless
# a level is smaller.
_MIN_CPU_BLOCK = 8


def padded_work(groups: list, block_size: int) -> int:
    """Member-units a search trains in blocks of ``block_size``, padding included.

    ``groups``: lists of brackets run side by side, one group after another.
    A level of ``n`` members and ``u`` more units is a queue of ``n u``
    member-units taken ``w = min(block_size, n)`` at a time, each pass a
    block of ``block_size`` slots (``train_blocks``): ``ceil(n u / w)``
    passes.
    """
    total = 0
    for group in groups:
        done = 0
        for level, n in zip(_levels(group), level_sizes(group)):
            width = min(block_size, n)
            total += -(-n * (level - done) // width) * block_size
            done = level
    return total


def _check_block_size(block_size: Any, groups: list, mesh: Mesh | None) -> int | None:
    """The block size a search runs with: an int, ``None``, or ``"auto"`` resolved (see ``hyperband``).

    ``groups``: the brackets run side by side, group after group.
    """
    if isinstance(block_size, str):
        if block_size != "auto":
            raise ValueError(f"block_size must be a positive integer, None or 'auto', got {block_size!r}")
        platform = (mesh.devices.flat[0] if mesh is not None else jax.devices()[0]).platform
        if platform != "cpu":
            return None
        # On a CPU compiling a training program costs seconds, more than a
        # short search trains: one program for every level, in blocks no
        # larger than the smallest level's population (so no level is
        # mostly padding), of the size that pads the least training.
        smallest = min(min(level_sizes(group)) for group in groups)
        step = 1 if mesh is None else mesh.size
        smallest = _rounded_up(smallest, step)
        lowest = min(_rounded_up(_MIN_CPU_BLOCK, step), smallest)
        candidates = range(lowest, smallest + 1, step)
        # Larger blocks win ties: fewer passes, each paying the loop's fixed
        # costs once. (Per member-unit the width matters little near 8: the
        # digits MLP costs 3.07 ms in blocks of 8, 3.31 ms in one of 13.)
        return min(candidates, key=lambda b: (padded_work(groups, b), -b))
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer, None or 'auto', got {block_size!r}")
    block_size = int(block_size)
    if mesh is not None and block_size % mesh.size:
        raise ValueError(f"block_size ({block_size}) must be a multiple of the mesh's {mesh.size} devices")
    # A block wider than the largest level would only train padding.
    largest = max(max(level_sizes(group)) for group in groups)
    return min(block_size, _rounded_up(largest, 1 if mesh is None else mesh.size))


class _Search:
    """Host-side driver shared by ``successive_halving`` and ``hyperband``.

    A level's members live in a population buffer of ``capacity`` rows: with
    a ``block_size``, one buffer size for the whole search (the largest
    level, rounded up to whole blocks), so that every level of every bracket
    runs the same compiled training and gather programs; without, each
    level's own size (rounded up to the mesh), one program per distinct
    size. Rows past a level's members repeat its last member.
    """

    def __init__(self, trainer, space, strategy, chunk_size, mesh, popsize, groups, block_size, schedule=None):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
        self.trainer = check_trainer(trainer, space=space)
        self.mesh = check_mesh(mesh)
        self.block_size = _check_block_size(block_size, groups, self.mesh)
        self.space = space
        self.strategy = _check_sampler(strategy, space, popsize, groups)
        self.chunk_size = check_chunk_size(chunk_size)
        largest = max(max(level_sizes(group)) for group in groups)
        self.fixed_capacity = None if self.block_size is None else _rounded_up(largest, self.block_size)
        self.xs, self.brackets, self.budgets, self.losses, self.keys, self.rungs, self.hps = [], [], [], [], [], [], []
        self.has_aux = trainer_has_aux(self.trainer)
        self.auxes = []  # with has_aux: per bracket, each configuration's aux (numpy, leading (n0,))
        self.best = None  # (loss, budget, global index, state, aux)
        self.total = 0
        self.num_objectives = None  # read from the first rung's losses
        self.finals = []  # multi-objective: (budget, global indices, losses, states, aux) of final rungs
        self.schedule = schedule  # Hyperband's; None: successive halving's one bracket
        self.sampler_state = None  # after the last tell

    def resume(self, earlier: "MultiFidelityResult", k_run: jax.Array) -> None:
        """Start from the records of an earlier ``hyperband`` call (checked
        against this search: schedule, space, key, trainer and sampler)."""
        if earlier.schedule is None:
            raise ValueError("resume: the earlier result has no Hyperband schedule: successive halving's (which "
                             "cannot be continued), or a hyperband result from a version before resume=")
        if earlier.schedule != self.schedule:
            raise ValueError(f"resume: the earlier run's brackets {earlier.schedule} are not this call's "
                             f"{self.schedule}: give the same max_budget and eta")
        if earlier.space != self.space:
            raise ValueError("resume: the earlier run searched another space")
        if (earlier.aux is not None) != self.has_aux:
            raise ValueError("resume: the earlier run's trainer and this one differ in has_aux")
        # bracket 0's init keys as _propose draws them: the earlier run's if the key is the same
        n0, p = int(np.sum(earlier.bracket == 0)), self.strategy.popsize
        drawn = jax.random.split(_bracket_keys(k_run, 0, False)[1], -(-n0 // p) * p)[:n0]
        # (sliced on the host: a slice of a device key array of each new length compiles)
        if not np.array_equal(key_bits(drawn), key_bits(earlier.init_keys)[:n0]):
            raise ValueError("resume: the earlier run was made with another key; resume with the same key")
        if earlier.pareto_state is not None:
            check_carried(self.trainer, self.space,
                          jax.ShapeDtypeStruct((len(earlier.pareto_index),), earlier.init_keys.dtype),
                          earlier.pareto_state, earlier.pareto_aux, "resume")
        try:
            self.sampler_state = check_state(self.strategy, earlier.sampler_state)
        except (TypeError, ValueError) as e:
            raise ValueError(f"resume: the earlier run's sampler state is not this strategy's: {e}") from None
        self.xs, self.hps = [np.asarray(earlier.x)], [dict(earlier.hparams)]
        self.keys, self.key_impl = [np.asarray(jax.random.key_data(earlier.init_keys))], \
            jax.random.key_impl(earlier.init_keys)
        self.brackets, self.budgets, self.losses = [earlier.bracket], [earlier.budget], [earlier.loss]
        self.auxes = [earlier.aux] if self.has_aux else []
        self.rungs = [dict(r) for r in earlier.rungs]
        self.total = earlier.total_budget
        self.num_objectives = earlier.num_objectives
        # the earlier best (front) competes with this call's; its aux copied, as every result's is its own
        own = partial(jax.tree_util.tree_map, np.array)
        if earlier.best_params is not None and earlier.num_objectives:
            self.finals.append((earlier.best_budget, earlier.pareto_index, earlier.pareto_loss,
                                earlier.pareto_state, own(earlier.pareto_aux)))
        elif earlier.best_params is not None:
            self.best = (earlier.best_loss, earlier.best_budget, earlier.best_index, earlier.pareto_state,
                         own(earlier.best_aux))

    def _capacity(self, n: int) -> int:
        if self.fixed_capacity is not None:
            return self.fixed_capacity
        return n if self.mesh is None else _rounded_up(n, self.mesh.size)

    def run_brackets(self, k_run, bracket_ids, schedule, strat_state):
        """Run brackets side by side, in lockstep over their budget levels.

        Every member of every bracket in ``schedule`` trains in one
        population, level by level (the union of the brackets' rung
        budgets): a bracket with a rung at a level keeps its best
        ``n_{i+1}`` there, the others' members train on unselected (they have
        not reached their first rung, or Hyperband's rungs sit on one grid
        ``R eta^-k`` and they are between rungs). Each bracket's selections
        are exactly those of running it alone; the population stays large,
        and a search runs one program per level instead of one per rung.
        One bracket is successive halving. ``k_run``: the run key
        (``_start``); bracket ``b`` draws with ``_bracket_keys(k_run, b)``.
        """
        p = self.strategy.popsize
        brackets = []  # per bracket: dict of its proposal and bookkeeping
        for bracket_id, rungs in zip(bracket_ids, schedule):
            n0 = rungs[0][0]
            num_batches = -(-n0 // p)
            xs, x, hp, init_keys, strat_state = _propose(
                self.strategy, k_run, np.int32(bracket_id), strat_state, num_batches, num_batches * p,
                np.int32(n0), self.schedule is None)
            self.key_impl = jax.random.key_impl(init_keys)
            offset = sum(len(a) for a in self.xs)
            self.xs.append(np.asarray(x)[:n0])
            self.hps.append({k: np.asarray(v)[:n0] for k, v in hp.items()})
            self.keys.append(np.asarray(jax.random.key_data(init_keys))[:n0])
            self.brackets.append(np.full(n0, bracket_id, np.int32))
            brackets.append(dict(
                id=bracket_id, rungs=rungs, n0=n0, xs=xs, num_batches=num_batches, offset=offset,
                levels={_steps(r): i for i, (_, r) in enumerate(rungs)}, alive=np.arange(n0),
                budgets=np.zeros(n0, np.int64), losses=None, aux=None,
                places=np.zeros(n0, np.float64)))  # multi-objective: what the sampler is told

        # The population: every live member, bracket after bracket;
        # ``row_bracket`` holds each row's bracket.
        row_bracket = np.concatenate([np.full(br["n0"], g) for g, br in enumerate(brackets)])
        first_rows = np.concatenate([br["offset"] - brackets[0]["offset"] + br["alive"] for br in brackets])
        cap = self._capacity(len(row_bracket))
        first_rows = _padded(first_rows, cap)
        hp = {k: jnp.asarray(np.concatenate([h[k] for h in self.hps[-len(brackets):]])[first_rows])
              for k in self.space.names}
        init_keys = jax.random.wrap_key_data(
            np.concatenate(self.keys[-len(brackets):])[first_rows], impl=self.key_impl)
        # sharded as take() shards the next levels': one training program for all
        hp, init_keys = put_population((hp, init_keys), self.mesh)
        # The first level initialises its members in the training program itself
        # (one program fewer to compile), into a buffer made on the host.
        states = empty_states(self.trainer, init_keys, hp, self.mesh)
        done = 0
        for i_level, level in enumerate(_levels(schedule)):
            n = len(row_bracket)
            extra = level - done
            # With a fixed buffer every level passes the same keys (used only
            # where ``fresh``), so that all levels share one program.
            level_keys = init_keys if (i_level == 0 or self.fixed_capacity is not None) else None
            # continue_rung donates ``states``: they are not read again. Without
            # blocks every row trains (rows past n are padding, sliced off below):
            # no num_members, whose restoring of those rows would keep a second
            # population of states alive.
            members = None if self.block_size is None else np.int32(n)
            states, out = continue_rung(self.trainer, states, hp, np.int32(extra), members, self.block_size,
                                        self.chunk_size, self.mesh, level_keys, np.bool_(i_level == 0))
            loss, aux = out if self.has_aux else (out, None)
            # Under jax.distributed the losses are sharded over every process: gather them.
            loss, aux = jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], host_local((loss, aux)))
            self.total += n * extra
            done = level
            if self.num_objectives is None:
                self.num_objectives = 0 if loss.ndim == 1 else loss.shape[1]
            elif (0 if loss.ndim == 1 else loss.shape[1]) != self.num_objectives:
                raise ValueError(f"trainer.evaluate returned {loss.shape[1:]} objectives, earlier "
                                 f"{self.num_objectives}")
            keep_rows = []
            for g, br in enumerate(brackets):
                if br["alive"] is None:
                    continue
                rows = np.flatnonzero(row_bracket == g)
                if level not in br["levels"]:
                    keep_rows.append(rows)
                    continue
                keep_rows.append(self._rung(br, br["levels"][level], level, loss[rows], rows, states,
                                            _rows_of(aux, rows)))
            rows = np.concatenate(keep_rows) if keep_rows else np.zeros(0, np.int64)
            if len(rows) == 0:
                break
            row_bracket = row_bracket[rows]
            idx = jnp.asarray(_padded(rows, self._capacity(len(rows))))
            # The survivors' rows, padded by repeating the last: one gather into
            # fresh buffers sharded as the next level shards them.
            states, hp = take((states, hp), idx, self.mesh)

        for br in brackets:
            # The sampler learns each configuration's loss at the largest budget it
            # reached (multi-objective: its place in the bracket).
            told = np.full(br["num_batches"] * p, np.inf, np.float32)
            if self.num_objectives:
                # a configuration that failed where it stopped is told a failure, as with one objective
                told[:br["n0"]] = np.where(np.isfinite(br["losses"]).all(axis=1), br["places"], np.inf)
            else:
                told[:br["n0"]] = br["losses"]
            strat_state = _tell_batches(self.strategy, strat_state, br["xs"],
                                        jnp.asarray(told.reshape(br["num_batches"], p)))
            self.budgets.append(br["budgets"])
            self.losses.append(br["losses"])
            self.auxes.append(br["aux"])
        self.sampler_state = strat_state
        return strat_state

    def _rung(self, br, i, steps, loss, rows, states, aux):
        """Record rung ``i`` of bracket ``br`` (its members are ``rows`` of
        ``states``, losses ``loss``, auxiliary outputs ``aux`` or ``None``);
        returns the rows that go on."""
        alive, rungs, n0 = br["alive"], br["rungs"], br["n0"]
        if br["losses"] is None:
            br["losses"] = np.full((n0,) + loss.shape[1:], np.inf, np.float32)
            br["aux"] = jax.tree_util.tree_map(lambda a: np.zeros((n0,) + a.shape[1:], a.dtype), aux)
        br["budgets"][alive], br["losses"][alive] = steps, loss
        for buffer, a in zip(jax.tree_util.tree_leaves(br["aux"]), jax.tree_util.tree_leaves(aux)):
            buffer[alive] = a
        self.rungs.append(dict(bracket=br["id"], rung=i, budget=steps, index=br["offset"] + alive,
                               loss=loss.copy(), aux=aux))
        order = survivor_order(loss)
        # A configuration's place in the bracket: later rungs first, then its
        # position in that rung's order (a scalar a single-objective sampler can learn).
        br["places"][alive[order]] = (len(rungs) - 1 - i) + np.arange(len(alive)) / len(alive)
        if i + 1 < len(rungs):
            # Keep exactly the first n_{i+1} of the order; ties went by position.
            keep = np.sort(order[: rungs[i + 1][0]])  # members stay in sampling order
            br["alive"] = alive[keep]
            return rows[keep]
        br["alive"] = None
        if self.num_objectives:
            self.finals.append((steps, br["offset"] + alive, loss, take(states, jnp.asarray(rows)), aux))
            return rows[:0]
        j = int(np.argmin(loss))
        if np.isfinite(loss[j]):
            cand = (float(loss[j]), steps, br["offset"] + int(alive[j]),
                    host_local(take_one(states, np.int32(rows[j]))), _rows_of(aux, j))
            if (self.best is None or cand[1] > self.best[1]
                    or (cand[1] == self.best[1] and cand[0] < self.best[0])):
                self.best = cand
        return rows[:0]

    def _init_keys(self) -> jax.Array:
        # wrapped from host data: wrapping a device array compiles for each new length
        return jax.random.wrap_key_data(np.concatenate(self.keys), impl=self.key_impl)

    def result(self) -> MultiFidelityResult:
        self.rungs.sort(key=lambda r: (r["bracket"], r["rung"]))
        x = np.concatenate(self.xs)
        hparams = {k: np.concatenate([h[k] for h in self.hps]) for k in self.space.names}
        if self.num_objectives:
            return self._mo_result(x, hparams)
        if self.best is None:
            best_index, best_params, best_loss, best_budget = -1, None, float("nan"), 0
            best_state = best_aux = None
        else:
            best_loss, best_budget, best_index, st, best_aux = self.best
            best_state = take_row(st, np.int32(0))
            best_params = self.space.to_python({k: v[best_index] for k, v in hparams.items()})
        return MultiFidelityResult(
            x=x, hparams=hparams, bracket=np.concatenate(self.brackets),
            budget=np.concatenate(self.budgets), loss=np.concatenate(self.losses),
            init_keys=self._init_keys(), rungs=self.rungs, best_index=best_index,
            best_params=best_params, best_loss=best_loss, best_budget=best_budget,
            best_state=best_state, total_budget=int(self.total), num_objectives=0,
            pareto_index=np.asarray([best_index] if best_params is not None else [], np.int64),
            pareto_params=[best_params] if best_params is not None else [],
            pareto_loss=np.asarray([best_loss] if best_params is not None else [], np.float32),
            pareto_state=None if best_state is None else st,  # the best's row, (1, ...)
            aux=self._all_aux(), best_aux=best_aux,
            pareto_aux=None if best_aux is None else jax.tree_util.tree_map(lambda a: a[None], best_aux),
            **self._continuation(),
        )

    def _continuation(self) -> dict:
        return dict(sampler_state=self.sampler_state, schedule=self.schedule, space=self.space)

    def _all_aux(self):
        """Every configuration's aux, bracket by bracket (``None`` without ``has_aux``)."""
        if not self.has_aux:
            return None
        return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *self.auxes)

    def _mo_result(self, x, hparams) -> MultiFidelityResult:
        top = max(f[0] for f in self.finals)
        finals = [f for f in self.finals if f[0] == top]
        index = np.concatenate([f[1] for f in finals])
        loss = np.concatenate([f[2] for f in finals])
        states = finals[0][3] if len(finals) == 1 else _concat([f[3] for f in finals])
        aux = None if not self.has_aux else jax.tree_util.tree_map(lambda *a: np.concatenate(a),
                                                                   *[f[4] for f in finals])
        on_front = np.flatnonzero(np.asarray(_front_mask(jnp.asarray(loss))))
        # Sorted by the first objective, ties by the next ones.
        on_front = on_front[np.lexsort(loss[on_front].T[::-1])]
        front_index = index[on_front]
        front_params = [self.space.to_python({k: v[i] for k, v in hparams.items()}) for i in front_index]
        front_state = host_local(take(states, jnp.asarray(on_front))) if len(on_front) else None
        found = len(on_front) > 0
        return MultiFidelityResult(
            x=x, hparams=hparams, bracket=np.concatenate(self.brackets),
            budget=np.concatenate(self.budgets), loss=np.concatenate(self.losses),
            init_keys=self._init_keys(), rungs=self.rungs,
            best_index=int(front_index[0]) if found else -1,
            best_params=front_params[0] if found else None,
            best_loss=float(loss[on_front[0], 0]) if found else float("nan"),
            best_budget=int(top) if found else 0,
            best_state=take_row(front_state, np.int32(0)) if found else None,
            total_budget=int(self.total), num_objectives=int(self.num_objectives),
            pareto_index=front_index.astype(np.int64), pareto_params=front_params,
            pareto_loss=loss[on_front], pareto_state=front_state,
            aux=self._all_aux(), best_aux=_rows_of(aux, on_front[0]) if found else None,
            pareto_aux=_rows_of(aux, on_front) if found else None,
            **self._continuation(),
        )


def successive_halving(trainer: Any, space: Space, key: Any, *, num_configs: int, min_budget: float,
                       max_budget: float, eta: int = 3, strategy: Strategy | None = None,
                       chunk_size: int | None = None, mesh: Mesh | None = None,
                       block_size: int | str | None = "auto") -> MultiFidelityResult:
    """One successive-halving bracket over ``trainer`` (see ``successive_halving_schedule``).

    Args:
      trainer: a ``Trainer`` (or any hashable object with ``init``, ``step``,
        ``evaluate``); ``step`` is one budget unit.
      space: the ``Space`` of the trainer's hyperparameters.
      key: a ``jax.random`` key or an integer seed; the same key gives the same run.
      num_configs: configurations in the first rung.
      min_budget, max_budget: units of the first rung, and the most any
        configuration is trained (a fractional budget trains its whole
        units: floored, at least 1).
      eta: keep the best ``floor(n_i / eta)`` after each rung.
      strategy: proposes the configurations (``RandomSearch(space,
        num_configs)`` by default), asked as many times as it takes to fill
        the rung. A strategy that learns (TPE, GP-BO, CMA-ES, ...) needs a
        ``popsize`` that divides ``num_configs``, and unless it draws each
        ask afresh (TPE) one ask for the rung: ``popsize = num_configs``.
        ``GridSearch`` is refused (its points must all be trained).
      chunk_size: train at most this many members at once (memory bound).
      mesh: shard each rung's population over the mesh's devices (padded to
        a multiple of their number by repeating a member, whose results are
        dropped).
      block_size: train every level in vmapped blocks of this many
        members, a level's member-units taken as a queue (every member's
        first unit, then every member's second, ...; see
        ``jaxhpo.training.trainer.train_blocks``), in one population buffer
        of fixed size: all rungs of all brackets then share one compiled
        training and gather program, at the cost of the last block of each
        level's queue (fewer than ``block_size`` member-units). ``None``:
        each level one vmapped block of its own size, one program per
        distinct size, no padding (best where members train in parallel
        and compiling is cheap against training). ``"auto"``
        (default): on a CPU, where compiling dominates short searches,
        the block size from 8 (or the smallest level's population, if
        smaller) up to the smallest level's population (``level_sizes``;
        multiples of the mesh's size) that pads the least training
        (``padded_work``); elsewhere ``None``. A block wider than the
        largest level is cut to it. Results do not depend on it (up to
        float rounding of vmapped arithmetic).
    Returns:
      a ``MultiFidelityResult``. Where ``trainer.evaluate`` returns ``(m,)``
      objectives, survivors go by non-dominated rank and crowding distance
      (see ``survivor_order``) and the result holds the Pareto front of the
      last rung; a model-based ``strategy`` is then told each configuration's
      place in the bracket (rungs reached first, then its position in that
      rung's order), a scalar.
    """
    rungs = successive_halving_schedule(num_configs, min_budget, max_budget, eta)
    search = _Search(trainer, space, strategy, chunk_size, mesh, int(num_configs), [[rungs]], block_size)
    strat_state, k_run = _start(search.strategy, check_batchable_keys("key", check_key(key, allow_seed=True)))
    search.run_brackets(k_run, [0], [rungs], strat_state)
    return search.result()


def hyperband(trainer: Any, space: Space, key: Any, *, max_budget: float, eta: int = 3,
              strategy: Strategy | None = None, num_brackets: int | None = None,
              chunk_size: int | None = None, mesh: Mesh | None = None,
              block_size: int | str | None = "auto",
              concurrent_brackets: bool | None = None,
              resume: MultiFidelityResult | None = None) -> MultiFidelityResult:
    """Hyperband: successive halving over every bracket of ``hyperband_schedule(max_budget, eta)``.

    The brackets are independent unless the sampler learns from them. With
    a sampler that does not (``RandomSearch``, the default, and
    ``QuasiRandom``: ``strategy.adaptive`` is False) they run side by side:
    every bracket's members train in one population, level by level over
    the budgets ``R eta^-k``, each bracket keeping its own best at its own
    rungs. The selections are exactly those of running the brackets one
    after another; the search runs ``s_max + 1`` levels instead of
    ``(s_max + 1)(s_max + 2) / 2`` rungs, on populations that stay large
    (R = 27, eta = 3: 49, 31, 17 and 8 members, where rungs one at a time
    go down to 1). With an adaptive sampler (TPE, GP-BO: the BOHB pattern)
    brackets run largest first, one after another, and the sampler's state
    carries over, so later brackets sample from a model of earlier ones.

    Args:
      trainer, space, key, eta, chunk_size, mesh, block_size: see ``successive_halving``.
      max_budget: ``R``, units of the longest training run.
      strategy: proposes configurations (``RandomSearch(space, n)`` with
        ``n`` the largest bracket's size by default). A strategy that learns
        needs a ``popsize`` that divides every bracket's size and, since a
        bracket larger than ``popsize`` asks before any tell, one that draws
        each ask afresh: ``TPE(space, 1)`` is the BOHB sampler.
      num_brackets: run this many brackets. By default one iteration of
        Hyperband (every bracket of the schedule, largest first) or, with
        ``resume``, what is left of the iteration in progress. More than
        one iteration's brackets cycle through the schedule again (bracket
        ``b`` runs ``schedule[b % len(schedule)]``): repeated Hyperband
        iterations, whose sampler keeps learning across them (BOHB).
      concurrent_brackets: run the brackets side by side (``True``) or one
        after another (``False``); ``None`` (default): side by side unless
        ``strategy.adaptive``. Side by side with an adaptive sampler, it
        learns from no bracket before proposing for all. Side by side holds
        every bracket's members at once (``level_sizes``: R = 81, eta = 3,
        143 at the first level against 81 in turn): ``chunk_size`` bounds
        the memory that takes. Several iterations run side by side one
        iteration at a time.
      resume: the result of an earlier ``hyperband`` call with the same
        trainer, space, key, ``max_budget``, ``eta`` and sampler: the
        search continues with the next bracket, the sampler from the state
        it had (``sampler_state``), and the result holds both calls'
        configurations. Run in calls of whole brackets, a search equals
        the search run in one call (for the default ``block_size``, up to
        float rounding where the calls' populations block differently),
        so a long search can be checkpointed between calls (pickle the
        result). Not so for a learning sampler with ``concurrent_brackets=True``:
        a call asks it for all its brackets before telling it any, so calls
        that split an iteration tell it sooner than one call would.
    Returns:
      a ``MultiFidelityResult``; ``bracket`` counts from 0 over the whole
      search (a resumed one's earlier calls included), largest bracket
      first in each iteration, and ``rungs`` lists rungs bracket by bracket
      either way. A
      multi-objective trainer works as in ``successive_halving``; the Pareto
      front is taken over every bracket's last rung at the largest budget.
    """
    schedule = hyperband_schedule(max_budget, eta)
    if resume is not None and not isinstance(resume, MultiFidelityResult):
        raise TypeError(f"resume must be the MultiFidelityResult of an earlier hyperband call, got "
                        f"{type(resume).__name__}")
    per_iteration = len(schedule)
    # Brackets are counted over the whole search: bracket b runs schedule[b % len(schedule)].
    start = 0 if resume is None or resume.schedule is None else int(resume.bracket.max()) + 1
    if num_brackets is None:
        num_brackets = per_iteration - start % per_iteration  # to the end of the iteration in progress
    elif isinstance(num_brackets, bool) or not isinstance(num_brackets, numbers.Integral) or num_brackets < 1:
        raise ValueError(f"num_brackets must be a positive integer or None, got {num_brackets!r}")
    if concurrent_brackets is not None and not isinstance(concurrent_brackets, bool):
        raise TypeError(f"concurrent_brackets must be True, False or None, got {concurrent_brackets!r}")
    if concurrent_brackets is None:
        concurrent_brackets = strategy is None or not getattr(strategy, "adaptive", True)
    ids = range(start, start + int(num_brackets))
    # Side by side: the brackets of one iteration together, iteration after iteration.
    id_groups = ([[b for b in ids if b // per_iteration == it] for it in sorted({b // per_iteration for b in ids})]
                 if concurrent_brackets else [[b] for b in ids])
    groups = [[schedule[b % per_iteration] for b in group] for group in id_groups]
    search = _Search(trainer, space, strategy, chunk_size, mesh, max(b[0][0] for b in schedule), groups,
                     block_size, schedule)
    strat_state, k_run = _start(search.strategy, check_batchable_keys("key", check_key(key, allow_seed=True)))
    if resume is not None:
        search.resume(resume, k_run)
        strat_state = search.sampler_state
    for id_group, group in zip(id_groups, groups):
        strat_state = search.run_brackets(k_run, id_group, group, strat_state)
    return search.result()
