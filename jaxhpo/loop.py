"""The search loop: ask -> decode -> evaluate -> tell, compiled as one ``lax.scan``."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import pareto
from ._materialize import materialize, stored
from ._keys import check_key, is_key_dtype
from .evaluate import auto_chunk_size, check_chunk_size, check_mesh, evaluate, host_local, onto_mesh, shard_population
from .space import Space
from .strategies.base import Strategy, counting_dtype, float32_values

__all__ = ["run", "minimize", "search_memory", "Result", "Trace", "HISTORY_MODES"]

HISTORY_MODES = ("best", "values", "all")


class Trace(NamedTuple):
    """What a search records per generation (leading axis ``G`` = generations).

    Attributes:
      best_value: ``(G,)`` best value so far after each generation (user's sign;
        ``inf``, or ``-inf`` with ``maximize``, until an evaluation succeeds).
      num_valid: ``(G,)`` int32, proposals evaluated (grid padding excluded).
      num_failed: ``(G,)`` int32, of those, how many returned a non-finite value.
      values: ``(G, popsize)`` every value, or ``None`` (history ``"best"``);
        for a strategy of several values ``(G, popsize, num_objectives +
        num_constraints)``, the objectives in the user's signs, then the
        constraints (``best_value`` is the first objective's).
      valid: ``(G, popsize)`` which rows were real proposals, or ``None``.
      x: ``(G, popsize, dim)`` every cube point, or ``None`` unless history ``"all"``.
      aux: with ``has_aux``, the objective's auxiliary outputs, each leaf
        ``(G, popsize, ...)`` (rows of failed evaluations as the objective
        returned them), or ``None`` (history ``"best"``, or no ``has_aux``).
      best_aux: with ``has_aux``, each leaf ``(G, ...)``: the auxiliary
        output of the best configuration so far after each generation (the
        one ``best_value`` is the value of; ``nan``, or ``0`` for integer
        leaves, until an evaluation succeeds, with constraints a feasible
        one), else ``None``.
    """

    best_value: jax.Array
    num_valid: jax.Array
    num_failed: jax.Array
    values: Any = None
    valid: Any = None
    x: Any = None
    aux: Any = None
    best_aux: Any = None


def _report(generation, total, best_value, negate) -> None:
    best = -float(best_value) if negate else float(best_value)  # negate: the first objective's flag
    print(f"jaxhpo: generation {int(generation)}/{total}  best {best:.6g}", flush=True)


def _check_params(strategy: Strategy, params: Any) -> dict:
    if params is not None and not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of the strategy's hyperparameters or None, got {params!r}")
    strategy.check_params(params)  # concrete values, before the search is traced
    # Every hyperparameter, in its default's dtype (strongly typed): no params,
    # the defaults, and the same values as Python numbers or NumPy scalars are
    # one compiled search. Arrays, not lists: a list would enter the trace as
    # a list of scalars.
    defaults = strategy.default_params()
    merged = {**defaults, **(params or {})}
    return {k: jnp.asarray(v, jnp.asarray(defaults[k]).dtype) for k, v in merged.items()}


def _check_progress(progress_every: Any) -> int | None:
    if progress_every is None:
        return None
    if isinstance(progress_every, bool) or not isinstance(progress_every, numbers.Integral) or progress_every < 1:
        raise ValueError(f"progress_every must be a positive integer or None, got {progress_every!r}")
    return int(progress_every)


def _check_generations(num_generations: Any) -> int:
    if isinstance(num_generations, bool) or not isinstance(num_generations, numbers.Integral) or num_generations < 1:
        raise ValueError(f"num_generations must be a positive integer, got {num_generations!r}")
    if num_generations > 2**31 - 1:
        raise ValueError(f"num_generations must be at most 2**31 - 1 (an int32 count), got {num_generations!r}")
    return int(num_generations)


def _check_history(history: Any) -> str:
    if history not in HISTORY_MODES:
        raise ValueError(f"history must be one of {HISTORY_MODES}, got {history!r}")
    return history


def _check_mesh(mesh: Any, popsize: int) -> Mesh | None:
    if check_mesh(mesh) is None:
        return None
    if popsize % mesh.size:
        raise ValueError(
            f"popsize ({popsize}) must be a multiple of the mesh's {mesh.size} devices to shard the population"
        )
    return mesh


def _replicate(x: Any, mesh: Mesh | None) -> Any:
    """A full copy of ``x`` (an array or a pytree of them) on every device of ``mesh``.

    Pins the strategy's side of the loop to replicated arrays: without it the
    partitioner propagates the evaluation's population sharding back into
    ``ask`` (and forward into ``tell``), computing each device's rows of e.g.
    CMA-ES's ``z @ sqrt_C`` with a smaller matrix shape, which XLA:CPU rounds
    differently in the last bit.
    """
    if mesh is None:
        return x
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, NamedSharding(mesh, PartitionSpec())),
                                  x)


def _check_accepts_points(strategy: Strategy) -> None:
    if not strategy.accepts_points:
        raise ValueError(f"initial: {type(strategy).__name__} evaluates a fixed set of points, which "
                         "other configurations cannot replace")


def _check_initial(initial: Any, strategy: Strategy, num_generations: int) -> jax.Array | None:
    """``initial`` (cube points, ``nan`` = left to the strategy) checked, as float32 ``(k, dim)``."""
    if initial is None:
        return None
    _check_accepts_points(strategy)
    if isinstance(initial, jax.core.Tracer):
        raise TypeError("initial must be concrete cube points (its rows are checked before compiling)")
    if isinstance(initial, Mapping) or (isinstance(initial, (list, tuple)) and initial
                                        and all(isinstance(c, Mapping) for c in initial)):
        raise TypeError("run's initial takes (k, dim) cube points; for configurations use "
                        "space.fixed_coordinates(configs), or minimize(initial=configs)")
    try:
        pts = np.asarray(initial, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"initial must be (k, dim) cube points (numbers in [0, 1], nan for free), got "
                        f"{type(initial).__name__} {initial!r:.80}") from None
    if pts.ndim == 1:
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[1] != strategy.dim or pts.shape[0] == 0:
        raise ValueError(f"initial must have shape (k, dim) = (k, {strategy.dim}) with k >= 1, "
                         f"got {np.shape(initial)}")
    fixed = ~np.isnan(pts)
    if np.any(fixed & ~((pts >= 0.0) & (pts <= 1.0))):
        raise ValueError("initial holds coordinates outside the cube [0, 1] (nan leaves one to the strategy)")
    if pts.shape[0] > strategy.popsize * num_generations:
        raise ValueError(f"initial has {pts.shape[0]} rows, more than the search evaluates "
                         f"({num_generations} generations of {strategy.popsize})")
    return jnp.asarray(pts)


def _with_initial(initial: jax.Array, x: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Generation ``g``'s proposals ``x`` with rows ``g * popsize ...`` of ``initial``
    in their place; and which rows were replaced, ``(popsize,)`` bool."""
    popsize, k = x.shape[0], initial.shape[0]
    # g * popsize overflows int32 past 2**31 evaluations: the generations that
    # hold initial points are g < ceil(k / popsize), and no row index past them is formed.
    holding = -(-k // popsize)
    index = jnp.minimum(g, holding) * popsize + jnp.arange(popsize, dtype=jnp.int32)
    rows = initial[jnp.minimum(index, k - 1)]
    fixed = ((g < holding) & (index < k))[:, None] & ~jnp.isnan(rows)
    return jnp.where(fixed, rows, x), jnp.any(fixed, axis=1)


def _count(flags: jax.Array) -> jax.Array:
    """``()`` int32 number of True entries, summed in ``counting_dtype``."""
    return flags.sum(dtype=counting_dtype(flags.size)).astype(jnp.int32)


def _split_output(out: Any, has_aux: bool, several: bool = False) -> tuple[Any, Any]:
    """The objective's batched output as ``(values, aux)`` (``aux`` None without
    ``has_aux``); ``several``: the strategy takes a vector of values."""
    if has_aux:
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            got = (f"one array (shape {tuple(out.shape[1:])} per configuration)" if hasattr(out, "shape")
                   else f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
            raise ValueError(f"objective must return a pair (value, aux) per configuration with has_aux=True, "
                             f"got {got}")
        return out[0], out[1]
    if isinstance(out, (tuple, list, Mapping)):
        fix = ("stack the objectives and constraints into one vector (jnp.stack([f1, f2, ...])); to return other "
               "outputs alongside it, return (vector, aux) and pass has_aux=True" if several else
               "to return other outputs alongside the value, return (value, aux) and pass has_aux=True")
        raise ValueError(f"objective must return one array per configuration (a scalar; for a multi-objective "
                         f"strategy a vector), got a {type(out).__name__}: {fix}")
    return out, None


def _empty_aux(strategy: Strategy, objective: Callable) -> Any:
    """The auxiliary output's shapes, filled with ``nan`` (``0`` for integer and bool
    leaves): the best configuration's until an evaluation succeeds."""
    one = jax.eval_shape(lambda u: evaluate(objective, strategy.space.decode(u)),
                         jax.ShapeDtypeStruct((1, strategy.dim), jnp.float32))
    _, aux = _split_output(one, True)
    return jax.tree_util.tree_map(
        lambda s: jnp.full(s.shape[1:], jnp.nan if jnp.issubdtype(s.dtype, jnp.inexact) else 0, s.dtype), aux)


def _best_aux(strategy: Strategy, best_aux: Any, aux: Any, values: jax.Array, valid: jax.Array,
              before: jax.Array, after: jax.Array) -> Any:
    """``best_aux`` after a tell that moved the best value from ``before`` to
    ``after``: the auxiliary output of the first row that counts (valid,
    finite, feasible) with the new best value, as every ``tell`` picks its
    best (the first minimum of the first objective over such rows)."""
    rows = values.reshape(strategy.popsize, -1)
    counts = valid & jnp.all(jnp.isfinite(rows), axis=1)
    m = getattr(strategy, "num_objectives", None)
    if m is not None and strategy.num_constraints:
        counts &= jnp.all(rows[:, m:] <= 0.0, axis=1)
    i = jnp.argmax(counts & (rows[:, 0] == after))
    return jax.tree_util.tree_map(lambda b, a: jnp.where(after < before, a[i], b), best_aux, aux)


@partial(jax.jit, static_argnames=("strategy", "objective", "num_generations", "chunk_size", "history",
                                   "negate", "mesh", "progress_every", "has_aux"))
def _search(strategy, objective, key, params, num_generations, chunk_size, history, negate, mesh=None,
            progress_every=None, initial=None, has_aux=False, state=None):
    key_init, key_loop = jax.random.split(key)
    if state is None:
        # Kept from constant folding into the first generation, which would
        # round a fresh run's first values otherwise than a continued run's.
        state = jax.lax.optimization_barrier(strategy.init(key_init, params))
    # Generation g (counted over every call that continued this state) is
    # proposed with fold_in(key_loop, g), as a Study proposes it: a search run
    # in segments equals the search run at once.
    start = state.generation

    def generation(carry, g):
        state, best_aux = carry
        x, state = strategy.ask(jax.random.fold_in(key_loop, start + g), state)
        x = _replicate(x, mesh)
        if initial is not None:
            # Replicated as the strategy's own update is, so that a sharded run computes the same numbers.
            x, injected = _with_initial(initial, x, g)

            def inject(state):
                return _replicate(strategy.inject(_replicate(state, mesh), _replicate(x, mesh),
                                                  _replicate(injected, mesh)), mesh)

            # Only the first generations hold initial points: the others skip the re-expression.
            state = jax.lax.cond(jnp.any(injected), inject, lambda s: s, state)
        valid = strategy.valid(state)
        # Only the evaluation is sharded: strategies' updates are small and
        # stay replicated, so the sharded run computes the same numbers.
        values, aux = _split_output(
            evaluate(objective, strategy.space.decode(shard_population(x, mesh)), chunk_size, mesh), has_aux,
            getattr(strategy, "num_values", None) is not None)
        if not isinstance(values, jax.Array):
            raise ValueError(f"objective must return one array per configuration (a scalar; for a "
                             f"multi-objective strategy a vector), got a {type(values).__name__}")
        if jnp.issubdtype(values.dtype, jnp.complexfloating) or values.dtype == jnp.bool_:
            raise ValueError(f"objective must return real values, got {values.dtype}")
        if chunk_size is None and mesh is None:
            # The values feed several reductions (the strategy's, the failure
            # count); stored once, by a kernel of the objective's own, an
            # elementwise objective is neither re-evaluated inside each nor
            # fused into one (a chunked evaluation's lax.map stores them
            # anyway; a sharded population is left to the partitioner). The
            # generation index is the token: unbatched under vmap over seeds.
            # A conditional costs accelerators a host round-trip per
            # generation, so they keep the scatter.
            values = jax.lax.platform_dependent(values, g, cpu=stored,
                                                default=lambda v, _: materialize(v))
        # Multi-valued strategies (NSGA2) tell (popsize, num_values) rows:
        # the objectives, then the constraint values.
        num_values = getattr(strategy, "num_values", None)
        if num_values is None:
            if values.shape != (strategy.popsize,):
                raise ValueError(
                    "objective must return one scalar per configuration; got output of shape "
                    f"{values.shape[1:]} per configuration"
                )
        else:
            if num_values == 1 and values.shape == (strategy.popsize,):
                values = values[:, None]
            if values.shape != (strategy.popsize, num_values):
                raise ValueError(
                    f"objective must return a vector of {num_values} values per configuration "
                    f"({strategy.num_objectives} objectives, then {strategy.num_constraints} constraints); "
                    f"got output of shape {values.shape[1:]} per configuration"
                )
        # (constraint columns: a positive value too small for float32 is kept a violation, and so recorded)
        values = float32_values(shard_population(values, mesh),
                                None if num_values is None else strategy.num_objectives)
        if isinstance(negate, tuple):  # one flag per column; constraint columns are never negated
            values = values * jnp.asarray([-1.0 if n else 1.0 for n in negate], jnp.float32)
        elif negate:
            values = -values
        # The trace keeps the population axis sharded (each device stores its
        # rows of every generation); the strategy gets a full copy everywhere.
        sharded = values
        values = _replicate(values, mesh)
        before = strategy.best(state)[1]
        state = strategy.tell(state, x, values)
        best_value = strategy.best(state)[1]
        if has_aux:
            best_aux = _replicate(_best_aux(strategy, best_aux, _replicate(aux, mesh), values, valid, before,
                                            best_value), mesh)
        failed = valid & ~jnp.all(jnp.isfinite(values.reshape(strategy.popsize, -1)), axis=1)
        record = Trace(
            best_value=best_value,
            num_valid=_count(valid),
            num_failed=_count(failed),
            values=sharded if history != "best" else None,
            valid=valid if history != "best" else None,
            x=shard_population(x, mesh) if history == "all" else None,
            aux=shard_population(aux, mesh) if history != "best" else None,
            best_aux=best_aux,
        )
        if progress_every is not None:
            done, end = state.generation, start + num_generations
            # One host callback every k generations; the loop never waits on it.
            jax.lax.cond(
                (done % progress_every == 0) | (done == end),
                lambda: jax.debug.callback(_report, done, end, record.best_value,
                                           negate[0] if isinstance(negate, tuple) else negate),
                lambda: None,
            )
        return (state, best_aux), record

    best_aux = _replicate(_empty_aux(strategy, objective), mesh) if has_aux else None
    (state, _), trace = jax.lax.scan(generation, (state, best_aux), jnp.arange(num_generations, dtype=jnp.int32))
    return state, trace


def _resolve_chunk_size(chunk_size: Any, strategy: Strategy, objective: Callable, mesh: Mesh | None) -> int | None:
    """Validate ``chunk_size`` and turn ``"auto"`` into a number before compiling (it fixes shapes)."""
    chunk_size = check_chunk_size(chunk_size, allow_auto=True)
    if chunk_size != "auto":
        # A chunk of the whole population is no chunking: the same compiled search.
        return None if chunk_size is not None and chunk_size >= strategy.popsize else chunk_size
    devices = list(mesh.devices.flat) if mesh is not None else None
    chunk = auto_chunk_size(objective, jax.ShapeDtypeStruct((strategy.dim,), jnp.float32), strategy.popsize,
                            decode=strategy.space.decode, devices=devices)
    return None if chunk >= strategy.popsize else chunk


def run(strategy: Strategy, objective: Callable, key: jax.Array, num_generations: int, *,
        params: dict | None = None, chunk_size: int | str | None = None, history: str = "best",
        mesh: Mesh | None = None, progress_every: int | None = None, initial: Any = None,
        has_aux: bool = False, state: Any = None):
    """Run a whole search as one compiled program (pure; jit- and vmap-able).

    Args:
      strategy: any ``Strategy``.
      objective: ``f(config) -> scalar`` for one configuration, where
        ``config`` is ``strategy.space.decode`` of one cube point (a dict of
        arrays of shape ``()``); minimised, jax-traceable.
      key: a ``jax.random`` key or an integer seed.
      num_generations: number of ask/tell rounds (static).
      params: the strategy's hyperparameters (``strategy.default_params()``
        when ``None``); arrays, so ``vmap`` can run over them. Not with
        ``state``, which carries its own.
      chunk_size: evaluate at most this many configurations at once;
        ``"auto"``: the largest number whose evaluation fits in half the free
        memory of the device (of each mesh device), measured from the
        compiled objective before the search is compiled (see
        ``jaxhpo.evaluate.auto_chunk_size``). Under ``vmap`` of ``run`` the
        budget is per search, so pass a number there.
      history: ``"best"`` (best value per generation only), ``"values"``
        (plus every value) or ``"all"`` (plus every cube point).
      mesh: a ``jax.sharding.Mesh``; the population axis of every evaluation
        is sharded over all its devices (``popsize`` must be a multiple of
        their number). Results equal the unsharded run's for the same key,
        up to the rounding of the objective's arithmetic (the sharded
        program may fuse it differently: a value's last bit can differ).
        Under ``jax.distributed`` the mesh may span every process's devices
        (``Mesh(np.array(jax.devices()), ("pop",))``; every process runs the
        same call with the same key); ``run`` then returns global arrays
        (``from jaxhpo.evaluate import host_local`` gives this process a copy)
        and ``minimize`` returns the same host-local ``Result`` everywhere.
      progress_every: print the best value so far from inside the compiled
        loop every this many generations (a host callback; off by default).
      initial: ``(k, dim)`` cube points to evaluate first (a warm start:
        known good configurations, the defaults), in place of the first
        ``k`` proposals, ``popsize`` per generation; the strategy is told
        them like its own. A ``nan`` coordinate is left to the strategy's
        proposal. ``Space.fixed_coordinates`` makes them from Python
        configurations. Not with ``GridSearch``.
      has_aux: the objective returns ``(value, aux)``, ``aux`` any pytree
        of arrays (metrics to keep alongside the value: an accuracy, a
        training loss); the trace then holds the best configuration's
        (``Trace.best_aux``) and, with history ``"values"`` or ``"all"``,
        every evaluation's (``Trace.aux``).
      state: continue the search from this strategy state (one ``run``
        returned, or ``jaxhpo.load_state`` read back) instead of starting
        afresh: ``num_generations`` more generations. With the same ``key``,
        a search run in segments equals the search run at once (generation
        ``g``, counted from the first segment, is proposed with the key
        ``fold_in(key_loop, g)``, as a ``Study`` proposes it), so a long
        search can be saved between segments (``jaxhpo.save_state``) and
        resumed after an interruption. ``initial`` points are evaluated
        first in this call; the trace covers this call's generations; with
        ``has_aux``, ``best_aux`` holds the placeholder (``nan``) until this
        call improves on the state's best.
    Returns:
      ``(state, trace)``: the final strategy state and a ``Trace``.

    ``jax.vmap(lambda k: run(strategy, f, k, 50))(keys)`` runs one search per key.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo strategy, got {type(strategy).__name__}")
    _check_objective(objective)
    mesh = _check_mesh(mesh, strategy.popsize)
    num_generations = _check_generations(num_generations)
    initial = _check_initial(initial, strategy, num_generations)
    state = check_state(strategy, state, params)
    key, params, initial, state = onto_mesh(
        (check_key(key, allow_seed=True), _check_params(strategy, params), initial, state), mesh)
    has_aux = _check_has_aux(has_aux)
    return _search(strategy, objective, key, params,
                   num_generations, _resolve_chunk_size(chunk_size, strategy, objective, mesh),
                   _check_history(history), False, mesh, _check_progress(progress_every), initial, has_aux,
                   state)


def state_template(strategy: Strategy) -> Any:
    """The structure, shapes and dtypes of ``strategy``'s states (``ShapeDtypeStruct`` leaves)."""
    return jax.eval_shape(lambda k: strategy.init(k, _check_params(strategy, None)), jax.random.key(0))


def check_state(strategy: Strategy, state: Any, params: Any = None) -> Any:
    """``state`` refused unless it is a state of ``strategy``: ``strategy.init``'s
    structure, leaf shapes and dtypes (``None`` passes: a fresh search; float
    leaves of another width are cast); its leaves returned as arrays of
    exactly those dtypes (a Python or NumPy number would compile the search
    again). A state of the same shapes made over another space or popsize is
    not told apart."""
    if state is None:
        return None
    if params is not None:
        raise ValueError("pass params or state, not both: a state carries its strategy's hyperparameters "
                         "(state.params)")
    # Its type, structure and shapes (the shared check, not a strategy's own message for its ask and tell).
    expected = Strategy._check_own_state(strategy, "state", state)
    name = type(strategy).__name__
    got_paths, _ = jax.tree_util.tree_flatten_with_path(state)
    want_leaves, want_def = jax.tree_util.tree_flatten(expected)
    leaves = []
    for (path, got), want in zip(got_paths, want_leaves):
        dtype = jnp.result_type(got)
        # Floats of another width are cast, as load_state casts them: CMA-ES keeps
        # its state in the default float type, so a state made under the other
        # jax_enable_x64 setting has float64 leaves where this one has float32.
        cast = jnp.issubdtype(dtype, jnp.floating) and jnp.issubdtype(want.dtype, jnp.floating)
        if dtype != want.dtype and not cast:
            raise ValueError(
                f"state{jax.tree_util.keystr(path)} has shape {jnp.shape(got)} and dtype {jnp.result_type(got)}; "
                f"this {name} keeps {want.shape} {want.dtype} there: the state is another strategy's "
                "(another space, popsize or capacity; minimize's sized strategy is Result.strategy)")
        leaves.append(got if is_key_dtype(want.dtype) else jnp.asarray(got, want.dtype))
    return jax.tree_util.tree_unflatten(want_def, leaves)


def _check_objective(objective: Any) -> None:
    """The objective is a static argument of the compiled search: callable, and
    hashable (JAX keys its compiled programs by the objective's hash and
    equality, so an objective whose state changes between calls keeps the
    program compiled for its first state)."""
    if not callable(objective):
        raise TypeError("objective must be callable")
    try:
        hash(objective)
    except TypeError:
        raise TypeError(f"objective must be hashable: it is a static argument of the compiled search; "
                        f"{type(objective).__name__} is not (use a function, functools.partial, a frozen "
                        "dataclass of hashable fields, or define __hash__ and __eq__)") from None


def _check_has_aux(has_aux: Any) -> bool:
    if not isinstance(has_aux, (bool, np.bool_)):
        raise TypeError(f"has_aux must be a bool, got {has_aux!r}")
    return bool(has_aux)


def search_memory(strategy: Strategy, objective: Callable, num_generations: int, *,
                  params: dict | None = None, chunk_size: int | str | None = None, history: str = "best",
                  mesh: Mesh | None = None, has_aux: bool = False) -> dict[str, int]:
    """Memory of the compiled search ``run`` would execute, without running it.

    Compiles the whole search (the same program as ``run`` with these
    settings) and reads XLA's ``memory_analysis``.

    Returns:
      dict with ``argument_bytes``, ``output_bytes``, ``temp_bytes`` (scratch
      live at some point, the population and the objective's intermediates
      included), ``alias_bytes`` (outputs sharing an argument's buffer, i.e.
      donated) and ``peak_bytes`` = output + temp, all per device; plus
      ``chunk_size`` as resolved.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo strategy, got {type(strategy).__name__}")
    _check_objective(objective)
    mesh = _check_mesh(mesh, strategy.popsize)
    has_aux = _check_has_aux(has_aux)
    chunk = _resolve_chunk_size(chunk_size, strategy, objective, mesh)
    compiled = _search.lower(strategy, objective, jax.random.key(0), _check_params(strategy, params),
                             _check_generations(num_generations),
                             chunk, _check_history(history), False, mesh, None, has_aux=has_aux).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        raise RuntimeError(f"search_memory: the {jax.default_backend()!r} backend reports no memory analysis "
                           "for compiled programs")
    out = dict(argument_bytes=int(stats.argument_size_in_bytes), output_bytes=int(stats.output_size_in_bytes),
               temp_bytes=int(stats.temp_size_in_bytes), alias_bytes=int(stats.alias_size_in_bytes))
    out["peak_bytes"] = out["output_bytes"] + out["temp_bytes"]
    out["chunk_size"] = chunk
    return out


@dataclasses.dataclass
class Result:
    """The outcome of ``minimize``.

    Attributes:
      best_params: the best configuration as plain Python values (labels
        restored), or ``None`` if every evaluation failed.
      best_value: its objective value in the user's sign (``nan`` if none),
        as the strategy ranked it: in float32, a value beyond float32's
        range at float32's largest.
      best_x: ``(dim,)`` its cube point.
      history: a ``Trace``; values in the user's sign.
      state: the final strategy state (this process's copy under ``jax.distributed``),
        ``strategy``'s: continue it with ``Result.strategy``.
      num_evaluations: configurations evaluated (grid padding excluded).
      num_failed: evaluations that returned a non-finite value.
      pareto_params: multi-objective strategies only (``NSGA2``, ``MOTPE``,
        ``GPBO`` with several objectives): the non-dominated feasible points
        the strategy's state holds (NSGA2's archive, the model-based ones'
        buffer of ``capacity`` rows), as a list of Python dicts sorted by
        the first objective; ``None`` otherwise. A front larger than that
        memory is truncated, and a point dominated only by a dropped one can
        then appear in it: give ``archive_size`` / ``capacity`` room for the
        front, or keep ``history="all"``: then the front is the exact one of
        every evaluated point (continuing a search, of this call's points and
        the front the state kept of the earlier calls').
      pareto_values: ``(k, m)`` their objective values in the user's signs.
      hypervolume: the front's hypervolume with respect to ``ref_point``
        (computed in minimisation signs).
      ref_point: ``(m,)`` the reference point used, in the user's signs.
      maximize: as given: a bool for one objective (constraints or not); for
        several, a tuple of one flag per objective.
      strategy: the strategy that ran, which ``state`` belongs to: the one
        given, or its copy with ``GPBO``'s default capacity fitted to the
        search (``Strategy.sized_for``).
      best_aux: with ``has_aux``, the auxiliary output the objective
        returned with ``best_value`` (NumPy arrays, 0-d for scalars; typed
        PRNG keys stay JAX arrays); ``None`` otherwise or if every
        evaluation failed.
    """

    best_params: dict | None
    best_value: float
    best_x: np.ndarray
    history: Trace
    state: Any
    num_evaluations: int
    num_failed: int
    pareto_params: list | None = None
    pareto_values: np.ndarray | None = None
    hypervolume: float | None = None
    ref_point: np.ndarray | None = None
    maximize: bool | tuple | None = None
    strategy: Any = None
    best_aux: Any = None

    def __repr__(self) -> str:
        front = "" if self.pareto_values is None else (
            f", pareto_size={len(self.pareto_values)}, hypervolume={self.hypervolume!r}")
        return (f"Result(best_value={self.best_value!r}, best_params={self.best_params!r}, "
                f"num_evaluations={self.num_evaluations}, num_failed={self.num_failed}{front})")


def minimize(objective: Callable, space: Space, strategy: Strategy, *, key: Any = 0,
             num_generations: int | None = None, maximize: bool = False,
             chunk_size: int | str | None = None, history: str = "best",
             params: dict | None = None, mesh: Mesh | None = None,
             progress_every: int | None = None, ref_point: Any = None, initial: Any = None,
             has_aux: bool = False, state: Any = None) -> Result:
    """Search ``space`` for the configuration that minimises (or maximises) ``objective``.

    The whole ask -> decode -> evaluate -> tell loop runs as one ``lax.scan``
    inside one compiled program; a second call with equal settings reuses it.

    Args:
      objective: ``f(config) -> scalar``, ``config`` a dict of arrays of shape
        ``()`` as given by ``space.decode`` (categoricals as int32 indices).
        A static argument of the compiled search: hashable, and keyed by its
        hash and equality, so an objective object changed between calls (or
        a closure over a global rebound since) reuses the program compiled
        for it before; make a new one (a new function, ``functools.partial``,
        a frozen dataclass with the new values).
        Non-finite values are failed evaluations and never become best.
      space: the ``Space``; must be the strategy's.
      strategy: any ``Strategy``.
      key: a ``jax.random`` key or an integer seed.
      num_generations: ask/tell rounds; optional for strategies with a
        natural length (``GridSearch``).
      maximize: maximise instead of minimise. With a multi-objective
        strategy (``NSGA2``), a bool for every objective or a tuple of one
        bool per objective; the objective then returns a vector of
        ``num_objectives`` values followed by ``num_constraints`` constraint
        values (feasible when ``<= 0``; never negated).
      chunk_size, history, params, mesh, progress_every, has_aux: see ``run``
        (with ``has_aux`` the best configuration's auxiliary output is
        ``Result.best_aux``).
      ref_point: multi-objective only: ``(m,)`` reference point of the
        hypervolume, in the user's signs. ``None``: the front's worst value
        in each objective moved out by 10% of the front's range (by 1 where
        the range is 0; ``pareto.default_ref_point``); the point used is in
        ``Result.ref_point``.
      initial: configurations to evaluate first (a warm start): a dict of
        Python values or a list of them, each naming any subset of the
        parameters (the others are the strategy's proposal); they take the
        place of the first proposals and the strategy learns from them like
        from its own. A float reaches the objective as its float32
        decoding (``0.1`` may arrive as ``0.099999905``). A parameter given
        but inactive there (its condition's parent given, or proposed,
        otherwise) is not passed, as ``Study.enqueue_trial`` treats it.
      state: continue a search (see ``run``): ``minimize(f, space,
        result.strategy, state=result.state, key=same_key,
        num_generations=more)``; ``strategy`` must be the one the state
        belongs to (``Result.strategy``: ``minimize`` sizes a ``GPBO``'s
        buffer to a fresh search, not to a continued one). The ``Result``
        holds the best of the whole search, and this call's history,
        evaluations and failures; ``best_aux`` is ``None`` when the best was
        found before this call.
    Returns:
      a ``Result``.
    """
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo strategy, got {type(strategy).__name__}")
    if strategy.space != space:
        raise ValueError("strategy was built for a different space than the one given to minimize")
    _check_objective(objective)
    state = check_state(strategy, state, params)
    if num_generations is None:
        num_generations = getattr(strategy, "num_generations", None)
        if num_generations is None:
            raise ValueError(f"num_generations is required for {type(strategy).__name__}")
        if state is not None:  # continuing: what is left of the natural length
            done = int(np.asarray(state.generation))
            if done >= num_generations:
                raise ValueError(f"state has run all {num_generations} generations of this "
                                 f"{type(strategy).__name__}; pass num_generations to run more")
            num_generations -= done
    key = check_key(key, allow_seed=True)
    num_objectives = getattr(strategy, "num_objectives", None)
    if num_objectives is None:
        if not isinstance(maximize, (bool, np.bool_)):
            raise TypeError(f"maximize must be a bool for a single-objective strategy, got {maximize!r}")
        negate = bool(maximize)
        signs = np.float32(-1.0 if negate else 1.0)
    else:
        if isinstance(maximize, (bool, np.bool_)):
            maximize = (bool(maximize),) * num_objectives
        elif not isinstance(maximize, (tuple, list)) or len(maximize) != num_objectives or not all(
                isinstance(m, (bool, np.bool_)) for m in maximize):
            raise ValueError(
                f"maximize must be a bool or a tuple of {num_objectives} bools (one per objective), got {maximize!r}")
        negate = tuple(bool(m) for m in maximize) + (False,) * strategy.num_constraints
        signs = np.array([-1.0 if n else 1.0 for n in negate], np.float32)
    ref_point = _check_ref_point(ref_point, num_objectives, hasattr(strategy, "pareto_front"))
    has_aux = _check_has_aux(has_aux)
    mesh = _check_mesh(mesh, strategy.popsize)
    num_generations = _check_generations(num_generations)
    if state is None:
        strategy = strategy.sized_for(strategy.popsize * num_generations)
    if initial is not None:
        _check_accepts_points(strategy)  # before the configurations are looked at
        configs = [initial] if isinstance(initial, Mapping) else initial
        if isinstance(configs, (str, bytes)) or not isinstance(configs, (list, tuple)) or not configs:
            raise TypeError("initial must be a dict of parameter values or a non-empty list of them, "
                            f"got {type(initial).__name__}")
        if any(isinstance(c, Mapping) and not c for c in configs):
            raise ValueError("initial: every configuration must name at least one parameter")
        initial = _check_initial(space.fixed_coordinates(list(configs)), strategy, num_generations)
    chunk = _resolve_chunk_size(chunk_size, strategy, objective, mesh)
    previous_best = None if state is None else float(np.asarray(strategy.best(state)[1]))
    key, params, initial, state = onto_mesh((key, _check_params(strategy, params), initial, state), mesh)
    state, trace = _search(strategy, objective, key, params,
                           num_generations, chunk, _check_history(history), negate, mesh,
                           _check_progress(progress_every), initial, has_aux, state)
    # Under jax.distributed the outputs span every process's devices: take
    # this process's copy (the state is replicated; the trace's population
    # columns are gathered). A no-op in a single process.
    state, trace = host_local((state, trace))
    sign = float(np.ravel(signs)[0])  # best_value is the first objective's
    trace = jax.tree_util.tree_map(_on_host, trace)
    trace = trace._replace(
        best_value=sign * trace.best_value,
        values=None if trace.values is None else signs * trace.values,
    )
    best_x, best_value = (np.asarray(a) for a in strategy.best(state))
    found = bool(np.isfinite(best_value))
    # Decoded compiled, as the search decoded it: op by op, a log-scale value
    # can differ in its last bits from the one the objective was given.
    best_params = space.to_python({k: v[0] for k, v in _decode_rows(space, best_x[None]).items()}) if found else None
    front = {}
    if hasattr(strategy, "pareto_front"):
        # 4+ objectives: a Monte Carlo hypervolume, its draws from the search's key
        front = _pareto_result(strategy, state, signs[:num_objectives], ref_point, jax.random.fold_in(key, 1),
                               _evaluated(trace, signs, num_objectives))
        front["maximize"] = tuple(bool(f) for f in negate[:num_objectives])
    return Result(
        best_params=best_params,
        best_value=float(sign * best_value) if found else float("nan"),
        best_x=best_x,
        history=trace,
        state=state,
        num_evaluations=int(trace.num_valid.sum()),
        num_failed=int(trace.num_failed.sum()),
        strategy=strategy,
        best_aux=(jax.tree_util.tree_map(lambda a: _on_host(a[-1]), trace.best_aux)
                  if found and has_aux and (previous_best is None or best_value < previous_best) else None),
        **{**front, "maximize": negate if num_objectives is None else
           negate[0] if num_objectives == 1 else tuple(negate[:num_objectives])},
    )


def _on_host(a: Any) -> Any:
    """A NumPy array of ``a``; typed PRNG keys (which NumPy cannot hold) stay JAX arrays."""
    if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
        return a
    return np.asarray(a)


def _check_ref_point(ref_point: Any, num_objectives: int | None, has_front: bool = True) -> np.ndarray | None:
    """``ref_point`` as ``(m,)`` finite float32, checked before the search runs."""
    if ref_point is None:
        return None
    if num_objectives is None or not has_front:
        raise ValueError("ref_point is for multi-objective strategies (NSGA2, MOTPE, GPBO with "
                         "num_objectives >= 2); this strategy keeps no Pareto front")
    return pareto.check_ref_point(ref_point, num_objectives, np.float32)


@partial(jax.jit, static_argnums=0)
def _decode_rows(space: Space, x: jax.Array) -> dict:
    return space.decode(x)


def _evaluated(trace: Trace, signs: np.ndarray, m: int) -> tuple | None:
    """``(x (N, dim), objectives (N, m) minimised, feasible (N,))`` of every evaluated
    point, where the history kept them (``history="all"``); else ``None``."""
    if trace.x is None or trace.values is None:
        return None
    values = (trace.values * signs).reshape(-1, trace.values.shape[-1])
    ok = trace.valid.reshape(-1) & np.all(np.isfinite(values), axis=1) & np.all(values[:, m:] <= 0, axis=1)
    return trace.x.reshape(-1, trace.x.shape[-1]), values[:, :m], ok


def _front_of(values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows among ``candidates`` (equal rows once), by
    first objective then the next: in that order only an earlier row can dominate."""
    v = values[candidates]
    kept: list[int] = []
    for i in np.lexsort(v.T[::-1]):
        if kept and np.any(np.all(v[kept] <= v[i], axis=1)):  # dominated, or equal to a kept row
            continue
        kept.append(i)
    return candidates[np.asarray(kept, np.int64)]


@partial(jax.jit, static_argnums=0)
def _strategy_front(strategy, state):
    """``strategy.pareto_front(state)`` as one compiled program (op by op, a
    front over a buffer of a new size compiled a few dozen kernels)."""
    return strategy.pareto_front(state)


def _pareto_result(strategy, state, signs: np.ndarray, ref_point: Any, key: jax.Array,
                   evaluated: tuple | None = None) -> dict:
    """``pareto_params``, ``pareto_values``, ``hypervolume``, ``ref_point`` of a multi-objective search.

    The front is the strategy state's (``pareto_front``), or, where ``evaluated``
    holds every point evaluated in this call, the exact front of them and the
    state's front (which holds what a continued search found before it)."""
    fx, fv, fm = (np.asarray(a) for a in _strategy_front(strategy, state))
    fx, fv = fx[fm], fv[fm]
    if evaluated is not None:
        # The state's front after the trace's rows: a point in both is kept
        # once, as the trace has it (equal rows once, the first in order).
        x_all, v_all, ok = (np.concatenate([a, b]) for a, b in zip(evaluated, (fx, fv, np.ones(len(fv), bool))))
        # Points worse in every objective than one of the state's front cannot be
        # on the whole front: drop them first (strictly worse, so a front point's
        # own row stays whatever the state stored of it).
        candidates = np.flatnonzero(ok)
        for f in fv:
            candidates = candidates[~np.all(f < v_all[candidates], axis=1)]
        idx = _front_of(v_all, candidates)
        fx, fv = x_all[idx], v_all[idx]
    order = np.argsort(fv[:, 0], kind="stable")
    fx, fv = fx[order], fv[order]
    n, m = fv.shape
    if ref_point is None:
        ref_min = pareto.default_ref_point(fv) if len(fv) else np.full((m,), np.nan, np.float32)
    else:
        ref_min = signs * ref_point
    # The front's size varies from run to run: padded to a power of two (here for
    # the decoding; pareto.padded_hypervolume pads its own), so each size class
    # compiles once rather than a few dozen eager kernels per size.
    size = max(8, 1 << max(n - 1, 0).bit_length())
    padded_x = np.full((size, fx.shape[1]), 0.5, np.float32)
    padded_x[:n] = fx
    hv = 0.0
    if n and np.all(np.isfinite(ref_min)):
        hv = pareto.padded_hypervolume(fv, ref_min, key=key)
    space = strategy.space
    decoded = {k: np.asarray(v)[:n] for k, v in _decode_rows(space, padded_x).items()}
    return dict(
        pareto_params=space.to_python(decoded) if n else [],
        pareto_values=signs * fv,
        hypervolume=hv,
        ref_point=signs * ref_min,
    )
