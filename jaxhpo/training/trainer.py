"""The trainer protocol, and training a population of it as one vmapped program.

A trainer is three pure, jax-traceable functions of one model:

  ``init(key, hparams) -> train_state``      a fresh model and optimiser state,
  ``step(train_state, hparams) -> train_state``  one unit of budget (an epoch,
                                              or k optimiser steps),
  ``evaluate(train_state, hparams) -> loss``  a scalar, minimised (validation
                                              loss or error; non-finite = failed),
                                              or a vector ``(m,)`` of objectives,
                                              all minimised (multi-objective
                                              successive halving / Hyperband).

A trainer with ``has_aux=True`` returns ``(loss, aux)`` from ``evaluate``:
``aux`` is any pytree of arrays (a validation accuracy, a training loss),
recorded for every evaluation and returned with the results, never ranked.

``hparams`` is one configuration as ``Space.decode`` gives it: a dict of
arrays of shape ``()`` (floats, int32 integers, int32 categorical indices).
jaxhpo vmaps the three functions over a population, so every hyperparameter
reaching the model or the optimiser is a traced array (``optax.inject_hyperparams``
for learning rates, weight decay, momentum; masks for shapes, see
``jaxhpo.training.models``).

The trainer is a static argument of the compiled programs here: it must be
hashable, and equal trainers share compiled code. ``Trainer`` (three
functions) hashes by the functions' identity.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh

from .._keys import check_member_keys, is_key_dtype
from .._rows import where_rows
from .._traced import call_traced, check_returned_like
from ..evaluate import map_population, population_sharding, shard_population
from ._compile import small_program_jit, training_jit

__all__ = [
    "Trainer", "check_trainer", "init_population", "train_population", "evaluate_population",
    "take", "take_one", "fresh_rung", "init_rung", "continue_rung", "train_blocks", "empty_states",
]


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Three pure functions of one model (see the module docstring).

    Args:
      init: ``(key, hparams) -> train_state`` (any pytree of arrays).
      step: ``(train_state, hparams) -> train_state``, one budget unit.
      evaluate: ``(train_state, hparams) -> ()`` float loss, minimised (or
        ``(m,)`` objectives, each minimised); with ``has_aux``, a pair
        ``(loss, aux)``.
      has_aux: ``evaluate`` also returns ``aux``, a pytree of arrays of
        fixed shapes (e.g. ``{"accuracy": acc}``), which the searches
        record beside each loss (``MultiFidelityResult.aux``,
        ``PBTResult.aux``, ``train_population``'s ``(losses, aux)``).
    """

    init: Callable
    step: Callable
    evaluate: Callable
    has_aux: bool = False

    def __post_init__(self):
        for name in ("init", "step", "evaluate"):
            if not callable(getattr(self, name)):
                raise TypeError(f"Trainer.{name} must be callable, got {getattr(self, name)!r}")
        object.__setattr__(self, "has_aux", check_has_aux(self.has_aux, "Trainer.has_aux"))


def check_trainer(trainer: Any, name: str = "trainer", space: Any = None) -> Any:
    """Any object with callable ``init``, ``step``, ``evaluate`` that is hashable;
    with ``space``, one whose ``check_space(space)`` (where it has one) accepts it."""
    for attr in ("init", "step", "evaluate"):
        if not callable(getattr(trainer, attr, None)):
            raise TypeError(
                f"{name} must provide callable init, step and evaluate (a jaxhpo.training.Trainer); "
                f"{type(trainer).__name__} has no callable {attr!r}"
            )
    try:
        hash(trainer)
    except TypeError:
        raise TypeError(
            f"{name} must be hashable: it is a static argument of the compiled training programs"
        ) from None
    check_has_aux(getattr(trainer, "has_aux", False), f"{name}.has_aux")
    if space is not None and callable(getattr(trainer, "check_space", None)):
        trainer.check_space(space)
    return trainer


# Counts (steps, members) travel as int32 scalars into the compiled programs.
MAX_COUNT = 2**31 - 1


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value > MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**31 - 1 (an int32 count), got {value!r}")
    return int(value)


def _init(trainer: Any, key: jax.Array, hparams: Any) -> Any:
    return call_traced("trainer.init", trainer.init, key, hparams, config=hparams)


def check_carried(trainer: Any, space: Any, keys: Any, states: Any, aux: Any, what: str) -> None:
    """Refuse training states (and auxiliary outputs, ``None`` to skip)
    carried over from an earlier run unless they are what ``trainer.init``
    (``trainer.evaluate``) makes for ``space``: the same structure, dtypes
    and shapes, leading axis ``keys.shape[0]`` (members) included (``keys``:
    the members' init keys, or a ``jax.ShapeDtypeStruct`` of them).
    Checked by shape evaluation, before anything is compiled."""
    cube = jax.ShapeDtypeStruct((keys.shape[0], space.dim), jnp.float32)
    expected = jax.eval_shape(lambda k, u: jax.vmap(partial(_init, trainer))(k, space.decode(u)), keys, cube)

    def forms(tree):
        return jax.tree_util.tree_map(lambda a: (tuple(jnp.shape(a)), jnp.result_type(a)), tree)

    if forms(states) != forms(expected):
        raise ValueError(f"{what}: the earlier run's states are not this trainer's (structure, shapes or dtypes "
                         "differ from what trainer.init makes)")
    if aux is not None:
        made = jax.eval_shape(lambda st, u: jax.vmap(partial(_evaluate, trainer))(st, space.decode(u))[1],
                              expected, cube)
        if forms(aux) != forms(made):
            raise ValueError(f"{what}: the earlier run's aux {forms(aux)} is not what this trainer's evaluate "
                             f"returns {forms(made)} (structure, shapes or dtypes)")


def check_has_aux(value: Any, name: str) -> bool:
    """``value`` as a bool, refused unless it is ``True`` or ``False`` (numpy's too)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def trainer_has_aux(trainer: Any) -> bool:
    """Whether ``trainer.evaluate`` returns ``(loss, aux)``."""
    return bool(getattr(trainer, "has_aux", False))


def _described(out: Any) -> str:
    if hasattr(out, "shape"):
        return f"one array of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")


def _evaluate(trainer: Any, state: Any, hparams: Any) -> tuple[jax.Array, Any]:
    """``(loss, aux)``: the loss as float32 (``()`` or ``(m,)``) and the
    auxiliary output's arrays (``()``, no arrays, without ``has_aux``)."""
    out = call_traced("trainer.evaluate", trainer.evaluate, state, hparams, config=hparams)
    aux = ()
    if trainer_has_aux(trainer):
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"trainer.evaluate must return a pair (loss, aux) for a trainer with has_aux=True, "
                            f"got {_described(out)}")
        out, aux = out
        aux = jax.tree_util.tree_map(jnp.asarray, aux)
        for path, leaf in jax.tree_util.tree_leaves_with_path(aux):
            if is_key_dtype(leaf.dtype):
                raise TypeError(f"trainer.evaluate's aux must hold numeric arrays; aux{jax.tree_util.keystr(path)} "
                                "is a PRNG key (return jax.random.key_data(key) instead)")
    rule = "the loss as one real array (a scalar, or a vector of objectives)"
    hint = ("" if trainer_has_aux(trainer) else
            "; to return other outputs alongside the loss, return (loss, aux) from a trainer with has_aux=True")
    if isinstance(out, (tuple, list)):
        raise TypeError(f"trainer.evaluate must return {rule}, got a {type(out).__name__}: stack several "
                        f"objectives into one vector (jnp.stack([f1, f2, ...])){hint}")
    if out is None or isinstance(out, (Mapping, str, bytes)):
        raise TypeError(f"trainer.evaluate must return {rule}, got {type(out).__name__}{hint}")
    try:
        loss = jnp.asarray(out)
    except TypeError:
        raise TypeError(f"trainer.evaluate must return {rule}, got {type(out).__name__}{hint}") from None
    if jnp.issubdtype(loss.dtype, jnp.complexfloating) or loss.dtype == jnp.bool_:
        raise TypeError(f"trainer.evaluate must return real values, got {loss.dtype}")
    return loss.astype(jnp.float32), aux


def _evaluated(trainer: Any, losses: jax.Array, aux: Any) -> Any:
    """A population's evaluation in the form ``trainer.evaluate`` gives one:
    ``losses``, or ``(losses, aux)`` for a trainer with ``has_aux``."""
    return (losses, aux) if trainer_has_aux(trainer) else losses


def _checked_step(trainer: Any, state: Any, hparams: Any) -> Any:
    """``trainer.step(state, hparams)``, refused unless it returns a state of
    ``state``'s structure, shapes and dtypes (the loops carry it as such)."""
    new = call_traced("trainer.step", trainer.step, state, hparams, config=hparams)
    check_returned_like("trainer.step", "a train state of the structure trainer.init makes", "state", state, new)
    return new


def _population_size(hparams: Any) -> int:
    leaves = jax.tree_util.tree_leaves(hparams)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError("hparams must be a dict of arrays with a leading population axis (n,)")
    n = jnp.shape(leaves[0])[0]
    if any(jnp.shape(x)[0] != n for x in leaves):
        raise ValueError("every hparams array needs the same leading population axis")
    return int(n)


def _check_loss_shape(loss: jax.Array) -> None:
    if loss.ndim > 1 or loss.shape == (0,):
        raise ValueError("trainer.evaluate must return a scalar loss or a vector of m >= 1 "
                         f"objectives, got shape {loss.shape}")


def _finite_or_inf(losses: jax.Array) -> jax.Array:
    ok = jnp.isfinite(losses) if losses.ndim == 1 else jnp.all(jnp.isfinite(losses), axis=1, keepdims=True)
    return jnp.where(ok, losses, jnp.inf)


def init_population(trainer: Any, keys: jax.Array, hparams: dict, *, chunk_size: int | None = None,
                    mesh: Mesh | None = None) -> Any:
    """Fresh training states for a population (traceable; call inside ``jit``).

    Args:
      trainer: the trainer.
      keys: ``(n,)`` keys, one per member.
      hparams: dict name -> ``(n,)`` decoded hyperparameters.
      chunk_size: initialise at most this many members at once (``None``: all).
      mesh: shard the population axis over this ``Mesh``'s devices.
    Returns:
      the train-state pytree with a leading ``(n, ...)`` axis.
    """
    n = _population_size(hparams)
    check_member_keys("keys", keys, n)
    check_population_hparams(trainer, hparams)
    keys, hparams = shard_population((keys, hparams), mesh)
    states = map_population(lambda a: _init(trainer, *a), (keys, hparams), chunk_size, mesh)
    return shard_population(states, mesh)


def check_population_hparams(trainer: Any, hparams: Any) -> None:
    """The trainer's ``check_hparams(hparams)``, where it has one (a population
    given directly: the searches check their space instead)."""
    if callable(getattr(trainer, "check_hparams", None)):
        trainer.check_hparams(hparams)


def _check_count(name: str, value: Any, most: int | None = None) -> None:
    """Refuse a concrete ``value`` that is not an integer scalar in ``[0, most]``
    (a traced one is taken as it comes: a negative one counts as 0)."""
    if value is None or isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if v.shape != () or v.dtype.kind not in "iu" or int(v) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if int(v) > MAX_COUNT:
        raise ValueError(f"{name} must be at most 2**31 - 1 (an int32 count), got {value!r}")
    if most is not None and int(v) > most:
        raise ValueError(f"{name} ({int(v)}) must be at most the population size ({most})")


def _check_rung_arguments(arguments: dict) -> None:
    """The host-side check of a compiled rung's counts (inside, they are traced)."""
    _check_count("num_steps", arguments.get("num_steps"))
    _check_count("num_members", arguments.get("num_members"), most=_population_size(arguments["hparams"]))


def train_population(trainer: Any, states: Any, hparams: dict, num_steps: Any, *,
                     chunk_size: int | None = None, mesh: Mesh | None = None) -> tuple[Any, jax.Array]:
    """Train every member ``num_steps`` budget units, then evaluate it (traceable).

    ``num_steps`` may be a traced int32 scalar: the loop is a ``fori_loop``
    with a dynamic trip count, so rungs of equal population size share one
    compiled program whatever their budget.

    Args:
      trainer: the trainer.
      states: train states with a leading ``(n, ...)`` axis.
      hparams: dict name -> ``(n,)``.
      num_steps: ``()`` int, budget units to add (0 only evaluates).
      chunk_size: train at most this many members at once (``None``: all).
      mesh: shard the population axis over this ``Mesh``'s devices.
    Returns:
      ``(states, losses)``: the trained states ``(n, ...)`` and ``(n,)``
      float32 losses, non-finite ones replaced by ``+inf`` (failed); ``(n, m)``
      where ``evaluate`` returns ``m`` objectives (a member with any
      non-finite objective gets ``+inf`` in all of them). For a trainer with
      ``has_aux``, ``(states, (losses, aux))``, ``aux`` each member's
      auxiliary output with a leading ``(n,)`` axis.
    """
    check_population_hparams(trainer, hparams)
    states, losses, aux = _train_population(trainer, states, hparams, num_steps, chunk_size, mesh)
    return states, _evaluated(trainer, losses, aux)


def _train_population(trainer, states, hparams, num_steps, chunk_size, mesh):
    """``train_population`` as ``(states, losses, aux)`` (``aux`` ``()`` without ``has_aux``)."""
    _population_size(hparams)  # (checks the hyperparameters' batch axis)
    _check_count("num_steps", num_steps)
    states, hparams = shard_population((states, hparams), mesh)

    def member(args):
        s, hp = args
        s = lax.fori_loop(0, num_steps, lambda _, s: _checked_step(trainer, s, hp), s)
        loss, aux = _evaluate(trainer, s, hp)
        _check_loss_shape(loss)
        return s, loss, aux

    states, losses, aux = map_population(member, (states, hparams), chunk_size, mesh)
    return (shard_population(states, mesh), shard_population(_finite_or_inf(losses), mesh),
            shard_population(aux, mesh))


def evaluate_population(trainer: Any, states: Any, hparams: dict, *, chunk_size: int | None = None,
                        mesh: Mesh | None = None) -> Any:
    """``(n,)`` (or ``(n, m)``) float32 losses of a population's states (non-finite -> ``+inf``);
    ``(losses, aux)`` for a trainer with ``has_aux``."""
    return train_population(trainer, states, hparams, 0, chunk_size=chunk_size, mesh=mesh)[1]


def _put_rows(host: np.ndarray, mesh: Mesh | None, key_impl: Any = None) -> jax.Array:
    """A host array put on the devices, its leading axis sharded over ``mesh`` as
    the compiled rungs shard a population (also across processes, each giving the
    same data); with ``key_impl`` the array is key data, wrapped as typed keys
    (which have no host buffer)."""
    out = jax.device_put(host, None if mesh is None else population_sharding(mesh, host.ndim))
    return out if key_impl is None else jax.random.wrap_key_data(out, impl=key_impl)


def empty_states(trainer: Any, keys: jax.Array, hparams: dict, mesh: Mesh | None = None) -> Any:
    """Zero-filled train states for a population, made on the host: a buffer
    for ``continue_rung(..., keys=keys, fresh=True)`` to initialise in place
    (no compiled program of its own)."""
    shapes = jax.eval_shape(jax.vmap(partial(_init, trainer)), keys, hparams)

    def one(shape):
        if jax.dtypes.issubdtype(shape.dtype, jax.dtypes.prng_key):
            data = jax.eval_shape(jax.random.key_data, shape)
            return _put_rows(np.zeros(data.shape, data.dtype), mesh, shape.dtype._impl)
        return _put_rows(np.zeros(shape.shape, shape.dtype), mesh)

    return jax.tree_util.tree_map(one, shapes)


def put_population(tree: Any, mesh: Mesh | None) -> Any:
    """Arrays holding the same data in every process (or host data) put on the
    devices, each leaf's leading axis sharded over ``mesh`` as the compiled
    rungs shard a population; typed keys included. Without a mesh, as they are."""
    if mesh is None:
        return tree

    def put(a):
        if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return _put_rows(np.asarray(jax.random.key_data(a)), mesh, jax.random.key_impl(a))
        return _put_rows(np.asarray(a), mesh)

    return jax.tree_util.tree_map(put, tree)


@small_program_jit
def take_row(tree: Any, i: Any) -> Any:
    """Row ``i`` of every leaf's leading axis, ``(n, ...) -> (...)``: one compiled
    gather (op by op, each leaf's shape compiled a gather of its own)."""
    return jax.tree_util.tree_map(lambda a: a[i], tree)


@small_program_jit
def take_one(tree: Any, i: Any) -> Any:
    """Row ``i`` of every leaf's leading axis, kept as a batch of one:
    ``(n, ...) -> (1, ...)`` (one small compiled program, whatever ``i``)."""
    return jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, i, 1), tree)


@partial(training_jit, static_argnames=("mesh",))
def take(tree: Any, idx: jax.Array, mesh: Mesh | None = None) -> Any:
    """Rows ``idx`` ``(m,)`` of every leaf's leading axis: ``(n, ...) -> (m, ...)``.

    With a ``mesh`` (``m`` a multiple of its size) the rows come out sharded
    over it as the compiled rungs shard a population, so ``continue_rung``
    can write its output into them (donation needs equal per-device shapes).
    """
    return shard_population(jax.tree_util.tree_map(lambda a: a[idx], tree), mesh)


@partial(training_jit, static_argnames=("trainer", "chunk_size", "mesh"), check=_check_rung_arguments)
def fresh_rung(trainer, keys, hparams, num_steps, chunk_size=None, mesh=None):
    """Compiled: init a population, train ``num_steps`` units, evaluate. See ``train_population``."""
    states = init_population(trainer, keys, hparams, chunk_size=chunk_size, mesh=mesh)
    return train_population(trainer, states, hparams, num_steps, chunk_size=chunk_size, mesh=mesh)


@partial(training_jit, static_argnames=("trainer", "chunk_size", "mesh"))
def init_rung(trainer, keys, hparams, chunk_size=None, mesh=None):
    """Compiled: fresh states for a population. See ``init_population``."""
    return init_population(trainer, keys, hparams, chunk_size=chunk_size, mesh=mesh)


def train_blocks(trainer: Any, states: Any, hparams: dict, num_steps: Any, num_members: Any = None,
                 block_size: int | None = None, *, chunk_size: int | None = None,
                 mesh: Mesh | None = None, keys: jax.Array | None = None,
                 fresh: Any = False) -> tuple[Any, jax.Array]:
    """``train_population`` on the first ``num_members`` rows of a fixed-size population (traceable).

    With a ``block_size`` ``B`` the training is a queue of ``num_members x
    num_steps`` member-units, taken unit by unit (every member's first
    unit, then every member's second, ...) ``w = min(B, num_members)`` at a
    time: each pass of the loop gathers the ``w`` members next in the queue,
    trains each one unit in one vmapped program of ``B`` slots and writes
    them back. Consecutive members of the queue are distinct as long as
    ``w <= num_members``, and a member's unit ``u + 1`` always comes in a
    later pass than its unit ``u``, so each member trains exactly as alone.
    The padding is what is left of the last pass, ``< B`` member-units in
    all (and ``B - num_members`` slots of every pass where ``num_members <
    B``), where blocks of whole members would pad every unit of a partial
    block (``17`` members of ``6`` units in blocks of ``8``: ``104``
    member-units against ``144``). The trip counts are traced, so
    populations of every size up to ``N`` and every ``num_steps`` share one
    compiled program; rows past ``num_members`` cost nothing. Without
    ``block_size`` (or with ``block_size >= N``) this is
    ``train_population`` on all ``N`` rows (every row is trained; those
    past ``num_members`` are then given back unchanged, with ``+inf``
    losses).

    Args:
      states: ``(N, ...)`` train states; hparams: dict name -> ``(N,)``.
      num_steps: ``()`` int, budget units to add.
      num_members: ``()`` int, rows to train (``N`` by default); rows past
        them are returned unchanged.
      block_size: static, a divisor of ``N`` (a multiple of the mesh's size).
      keys, fresh: ``(N,)`` init keys and a ``()`` bool (may be traced):
        where ``fresh``, each trained row first gets ``trainer.init(key,
        hparams)`` in place of its state (``states`` then only gives the
        shapes), so initialising and training share one compiled program.
    Returns:
      ``(states, losses)`` as ``train_population`` (``(states, (losses,
      aux))`` for a trainer with ``has_aux``); rows not trained get ``+inf``
      losses and zero ``aux``.
    """
    n = _population_size(hparams)
    _check_count("num_steps", num_steps)
    _check_count("num_members", num_members, most=n)
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral)
                                   or block_size < 1):
        raise ValueError(f"block_size must be a positive integer (a divisor of the population size {n}) or None, "
                         f"got {block_size!r}")
    if keys is not None:
        check_member_keys("keys", keys, n)

    if block_size is None or block_size >= n:
        start = states
        if keys is not None:
            start = lax.cond(fresh, lambda: init_population(trainer, keys, hparams, chunk_size=chunk_size,
                                                            mesh=mesh), lambda: states)
        new, losses, aux = _train_population(trainer, start, hparams, num_steps, chunk_size, mesh)
        if num_members is None:
            return new, _evaluated(trainer, losses, aux)
        # Every row was initialised and trained (one vmapped program); those
        # past num_members are given back as they came, as the blocked queue
        # leaves them.
        keep = jnp.arange(n) < num_members
        return where_rows(keep, new, states), _evaluated(
            trainer, where_rows(keep, losses, jnp.full_like(losses, jnp.inf)),
            where_rows(keep, aux, jax.tree_util.tree_map(jnp.zeros_like, aux)))
    if n % block_size:
        raise ValueError(f"block_size ({block_size}) must divide the population size ({n})")
    members = jnp.asarray(n if num_members is None else num_members, jnp.int32)
    units = jnp.asarray(num_steps, jnp.int32)
    slots = jnp.arange(block_size, dtype=jnp.int32)
    one, one_aux = jax.eval_shape(lambda s, h: _evaluate(trainer, s, h),
                                  *jax.tree_util.tree_map(lambda a: a[0], (states, hparams)))
    _check_loss_shape(one)
    losses = jnp.full((n,) + one.shape, jnp.inf, jnp.float32)
    aux = jax.tree_util.tree_map(lambda a: jnp.zeros((n,) + a.shape, a.dtype), one_aux)

    # The queue of member-units, w at a time (num_steps = 0: one pass over
    # the members, evaluating only). A pass's slots past w, or past the
    # queue's end, hold a copy of a queued member whose result is dropped.
    width = jnp.minimum(members, block_size)
    queued = jnp.maximum(units, 1)
    total = members * queued
    # No passes run when members is 0; the divisors only have to be nonzero.
    nonzero_members, nonzero_width = jnp.maximum(members, 1), jnp.maximum(width, 1)
    num_passes = (total + width - 1) // nonzero_width

    def one_pass(j, carry):
        states, losses, aux = carry
        task = j * width + slots
        valid = (slots < width) & (task < total)
        member = jnp.where(valid, task, j * width) % nonzero_members
        unit = task // nonzero_members
        block, block_hp = shard_population(jax.tree_util.tree_map(lambda a: a[member], (states, hparams)), mesh)
        if keys is not None:
            # Only the passes over every member's first unit initialise.
            def init(block):
                block_keys = shard_population(keys[member], mesh)
                new = map_population(lambda a: _init(trainer, *a), (block_keys, block_hp), chunk_size, mesh)
                return where_rows(unit == 0, new, block)

            block = lax.cond(jnp.asarray(fresh) & (j * width < members), init, lambda b: b, block)
        block = lax.cond(units > 0, lambda b: map_population(lambda a: _checked_step(trainer, *a), (b, block_hp),
                                                             chunk_size, mesh), lambda b: b, block)
        last = valid & (unit == queued - 1)

        def evaluate(block):
            loss, block_aux = map_population(lambda a: _evaluate(trainer, *a), (block, block_hp), chunk_size, mesh)
            return _finite_or_inf(loss), block_aux

        def skip(block):
            return (jnp.full((block_size,) + one.shape, jnp.inf, jnp.float32),
                    jax.tree_util.tree_map(lambda a: jnp.zeros((block_size,) + a.shape, a.dtype), one_aux))

        # Only the passes over every member's last unit evaluate.
        loss, block_aux = lax.cond(jnp.any(last), evaluate, skip, block)

        # Dropped writes go past the end (distinct rows, so the writes are unique).
        def put(rows, buffer, update):
            return jax.tree_util.tree_map(lambda a, u: a.at[rows].set(u, mode="drop", unique_indices=True),
                                          buffer, update)

        states = put(jnp.where(valid, member, n + slots), states, block)
        evaluated = jnp.where(last, member, n + slots)
        return states, put(evaluated, losses, loss), put(evaluated, aux, block_aux)

    states, losses, aux = lax.fori_loop(0, num_passes, one_pass, (states, losses, aux))
    return states, _evaluated(trainer, losses, aux)


@partial(training_jit, static_argnames=("trainer", "block_size", "chunk_size", "mesh"),
         donate_argnames=("states",), check=_check_rung_arguments)
def continue_rung(trainer, states, hparams, num_steps, num_members=None, block_size=None, chunk_size=None,
                  mesh=None, keys=None, fresh=False):
    """Compiled: train existing states ``num_steps`` more units, evaluate.

    See ``train_blocks``: with ``block_size`` only the first
    ``num_members`` rows are trained (the others come back unchanged, with
    ``+inf`` losses), and one program serves every population size up to
    the buffer's; with ``keys`` and ``fresh`` the same program initialises
    the members first.

    ``states`` is donated: the trained states are written into its buffers,
    so a rung holds one population of states, not two. The arrays passed in
    are deleted by the call (reading them afterwards raises "Array has been
    deleted"); keep the returned states instead, or pass a copy.
    """
    return train_blocks(trainer, states, hparams, num_steps, num_members, block_size, chunk_size=chunk_size,
                        mesh=mesh, keys=keys, fresh=fresh)
