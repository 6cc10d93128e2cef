"""Population-based training (Jaderberg et al., 2017), as one compiled program.

A population of ``P`` members trains side by side (one vmapped program).
Every ``steps_per_round`` budget units the members are ranked by loss, and
the bottom ``fraction`` *exploit* the top ``fraction``: each copies a random
top member's whole training state (weights, optimiser state) and
hyperparameters. The copies then *explore*: every hyperparameter is, with
probability ``resample_prob``, drawn afresh from the space, and otherwise
perturbed:

* a ``Float`` is multiplied by one of ``factors`` (0.8 or 1.2), clipped to its bounds;
* an ``Int`` is multiplied likewise and rounded, moving by at least one
  value the way the product moves (away from 0 for a factor above 1, towards
  it below; 0 one value up for a factor above 1, down below), clipped to
  its bounds;
* a ``Categorical`` moves to another of its choices, uniformly.

The rounds are a ``lax.scan``: the whole run, exploit and explore included,
is one ``jit``; nothing is recompiled between rounds and nothing leaves the
device until the end. ``fraction=0`` trains the initial population with fixed
hyperparameters through the same program (the baseline PBT is measured against).
A run continues from its result (``resume=``) for more rounds, as one longer run.
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

from ..evaluate import check_chunk_size, check_mesh, host_local, onto_mesh
from .._keys import check_batchable_keys, check_key, key_bits
from .._scalars import host_ints_as_floats
from .._traced import is_traced
from ..space import Categorical, Float, Int, Space
from ._compile import training_jit
from .trainer import (_train_population, check_carried, check_positive_int, check_trainer, init_population,
                      take_row, trainer_has_aux)

__all__ = ["pbt", "PBTResult", "explore", "exploit_parents"]


def exploit_parents(key: jax.Array, losses: jax.Array, num_exploit: int) -> jax.Array:
    """Truncation selection: ``(P,)`` int32 parent of every member.

    The ``num_exploit`` members with the highest loss each get a parent drawn
    uniformly from the ``num_exploit`` members with the lowest loss; every
    other member is its own parent. Ties rank by position (stable sort);
    non-finite losses rank last and are never parents: the parent is drawn
    from the finite ones among the top (a member keeps itself where there
    are none).
    """
    key = check_key(key, allow_seed=True)
    losses = host_ints_as_floats(losses)
    if jnp.ndim(losses) != 1:
        raise ValueError(f"losses must have shape (P,) (one scalar per member), got {jnp.shape(losses)}")
    P = losses.shape[0]
    if isinstance(num_exploit, bool) or not isinstance(num_exploit, numbers.Integral) \
            or not 0 <= num_exploit <= P // 2:
        raise ValueError(f"num_exploit must be an integer in [0, P // 2] = [0, {P // 2}] (the replaced "
                         f"and the parents must not overlap), got {num_exploit!r}")
    me = jnp.arange(P, dtype=jnp.int32)
    if num_exploit == 0:
        return me
    order = jnp.argsort(jnp.where(jnp.isfinite(losses), losses, jnp.inf), stable=True).astype(jnp.int32)
    top, bottom = order[:num_exploit], order[P - num_exploit:]
    # The top's finite losses come first in ``order``.
    num_finite = jnp.sum(jnp.isfinite(losses[top]))
    pick = jax.random.randint(key, (num_exploit,), 0, jnp.maximum(num_finite, 1), jnp.int32)
    return me.at[bottom].set(jnp.where(num_finite > 0, top[pick], bottom))


def explore(key: jax.Array, space: Space, hparams: dict, which: jax.Array, resample_prob: Any,
            factors: Any = (0.8, 1.2)) -> dict:
    """Perturb or resample the hyperparameters of the members in ``which`` (jit-able).

    Args:
      key: a key.
      space: the ``Space``; values stay inside its bounds and types.
      hparams: dict name -> ``(P,)`` decoded values.
      which: ``(P,)`` bool, the members to explore; the others are returned unchanged.
      resample_prob: ``()`` probability, per member and hyperparameter, of a fresh draw.
      factors: ``(2,)`` the two multiplicative perturbations, chosen with equal
        odds (traced: changing them does not recompile).
    Returns:
      dict name -> ``(P,)``, same dtypes.
    """
    missing = [n for n in space.names if n not in hparams]
    if missing:
        raise ValueError(f"hparams is missing {missing}; it needs every parameter of the space")
    concrete = {"resample_prob": resample_prob, "factors": factors}
    if not is_traced(concrete):
        prob, fac = np.asarray(resample_prob, np.float64), np.asarray(factors, np.float64)
        if prob.shape != () or not 0.0 <= prob <= 1.0:
            raise ValueError(f"resample_prob must be a probability in [0, 1], got {resample_prob!r}")
        if fac.shape != (2,) or not np.all(np.isfinite(fac) & (fac > 0)):
            raise ValueError(f"factors must be two positive finite numbers, got {factors!r}")
    key = check_key(key, allow_seed=True)
    P = jnp.shape(hparams[space.names[0]])[0] if jnp.ndim(hparams[space.names[0]]) else None
    if P is None or any(jnp.shape(hparams[n]) != (P,) for n in space.names):
        raise ValueError(f"hparams must hold one (P,) array per parameter, got shapes "
                         f"{ {n: jnp.shape(hparams[n]) for n in space.names} }")
    if jnp.shape(which) != (P,) or jnp.result_type(which) != jnp.bool_:
        raise ValueError(f"which must be a ({P},) bool array, one flag per member, got shape {jnp.shape(which)} "
                         f"of dtype {jnp.result_type(which)}")
    k_fresh, k_coin, k_fac, k_cat = jax.random.split(key, 4)
    fresh = space.decode(space.sample(k_fresh, P))
    coins = jax.random.uniform(k_coin, (P, space.dim), jnp.float32) < resample_prob
    up = jax.random.bernoulli(k_fac, jnp.float32(0.5), (P, space.dim))
    factors = jnp.asarray(factors, jnp.float32)
    f = jnp.where(up, factors[1], factors[0])
    out = {}
    for i, (name, d) in enumerate(space.dims.items()):
        v = jnp.asarray(hparams[name])
        if isinstance(d, Float):
            moved = jnp.clip(v.astype(jnp.float32) * f[:, i], d.low, d.high)
        elif isinstance(d, Int):
            vi = v.astype(jnp.int32)
            vf = vi.astype(jnp.float32)
            # The product rounded, where float32 holds it exactly; past 2**24
            # the change alone (there a product would move a value under a
            # factor of 1, and land off the rounded product).
            product = vf * f[:, i]
            exact = (jnp.abs(vf) < 2.0**24) & (jnp.abs(product) < 2.0**24)
            delta = jnp.where(exact, jnp.round(product) - vf, jnp.round(vf * (f[:, i] - 1.0)))
            # Small integers would not move under x1.2; step at least one value
            # the way the product moves: away from 0 for a factor above 1,
            # towards it below (none for a factor of 1; 0 itself steps up or down).
            step = jnp.sign(f[:, i] - 1.0) * jnp.where(vf < 0, -1.0, 1.0)
            delta = jnp.where(delta == 0, step, delta)
            # within the bounds (high - low < 2**22: exact in float32 and int32)
            delta = jnp.clip(delta, (d.low - vi).astype(jnp.float32), (d.high - vi).astype(jnp.float32))
            moved = vi + delta.astype(jnp.int32)
        else:
            assert isinstance(d, Categorical)
            k = d.cardinality
            if k > 1:
                shift = jax.random.randint(jax.random.fold_in(k_cat, i), (P,), 1, k, jnp.int32)
                moved = ((v + shift) % k).astype(jnp.int32)
            else:
                moved = v
        new = jnp.where(coins[:, i], fresh[name], moved).astype(v.dtype)
        out[name] = jnp.where(which, new, v)
    return out


def _exploit_explore(key, space, states, hparams, losses, num_exploit, resample_prob, factors, keep=False):
    """After a round: the bottom members copy a top member's state and
    hyperparameters (``exploit_parents``), which they then perturb
    (``explore``); where ``keep`` (the last round) every member stays as it is.
    Returns ``(states, hparams, parents)``."""
    k_sel, k_exp = jax.random.split(key)
    me = jnp.arange(jnp.shape(losses)[0], dtype=jnp.int32)
    parents = jnp.where(keep, me, exploit_parents(k_sel, losses, num_exploit))
    # Exploit: copy whole states (weights and optimiser state) and hyperparameters.
    states = jax.tree_util.tree_map(lambda a: a[parents], states)
    copied = {k: v[parents] for k, v in hparams.items()}
    return states, explore(k_exp, space, copied, parents != me, resample_prob, factors), parents


@partial(training_jit, static_argnames=("trainer", "space", "popsize", "num_rounds", "num_exploit",
                                        "chunk_size", "mesh"))
def _pbt_program(trainer, space, key, init_x, steps_per_round, resample_prob, popsize, num_rounds,
                 num_exploit, factors, chunk_size, mesh, resume=None):
    """The whole run; with ``resume = (states, hparams, losses, rounds)`` (an
    earlier call's final states, last hyperparameters and losses, and its
    rounds) ``num_rounds`` more rounds, which equal the rest of one run of
    them all. Returns the final states, the per-round records, the init keys
    (``None`` when resumed) and the earlier call's last parents (resumed)."""
    k_x, k_init, k_loop = jax.random.split(key, 3)
    if resume is None:
        x0 = space.sample(k_x, popsize) if init_x is None else init_x
        hparams = space.decode(x0)
        init_keys = jax.random.split(k_init, popsize)
        states = init_population(trainer, init_keys, hparams, chunk_size=chunk_size, mesh=mesh)
        start, boundary = jnp.int32(0), None
    else:
        # The exploit and explore that one longer run makes after the earlier
        # call's last round (which made none), with that round's key.
        states, hparams, last_losses, start = resume
        init_keys = None
        states, hparams, boundary = _exploit_explore(jax.random.fold_in(k_loop, start - 1), space, states,
                                                     hparams, last_losses, num_exploit, resample_prob, factors)

    def round_(carry, r):
        states, hparams = carry
        states, losses, aux = _train_population(trainer, states, hparams, steps_per_round, chunk_size, mesh)
        if losses.ndim != 1:
            raise ValueError("pbt needs trainer.evaluate to return a scalar loss (truncation selection "
                             f"ranks one number per member), got shape {losses.shape[1:]} per member "
                             f"({losses.shape[1]} objectives)")
        # Round r's key is fold_in(k_loop, r), r counted over every call.
        new_states, new_hparams, parents = _exploit_explore(
            jax.random.fold_in(k_loop, r), space, states, hparams, losses, num_exploit, resample_prob, factors,
            keep=r == start + num_rounds - 1)
        return (new_states, new_hparams), (hparams, losses, parents, aux)

    (states, _), (schedule, losses, parents, aux) = jax.lax.scan(
        round_, (states, hparams), start + jnp.arange(num_rounds, dtype=jnp.int32))
    return states, schedule, losses, parents, aux, init_keys, boundary


@dataclasses.dataclass
class PBTResult:
    """The outcome of ``pbt``; ``R`` rounds, ``P`` members.

    Attributes:
      hparams: dict name -> ``(R, P)``: the hyperparameters each member
        trained with during each round (its schedule).
      losses: ``(R, P)`` float32 loss of each member at the end of each round
        (before exploit; ``inf``: failed).
      parents: ``(R, P)`` int32: after round ``r``, member ``i`` continues
        from member ``parents[r, i]``'s state (itself unless it exploited);
        the last row is the identity.
      states: the final training states, leading axis ``(P, ...)``. With a
        ``mesh`` over several processes (``jax.distributed``) a global array
        sharded over the mesh: each process holds its own members' rows
        (``addressable_shards``); everything else here is a full local copy.
      best_index: the member with the lowest final loss; ``-1`` if every
        member's final loss is non-finite (failed).
      best_loss: its final loss (``nan`` if every member failed).
      best_params: its final-round hyperparameters as Python values
        (``None`` if every member failed).
      best_state: its final state (no population axis; ``None`` if every
        member failed).
      total_budget: units trained in all (``R * P * steps_per_round``, summed over
        the calls of a resumed run).
      init_keys: ``(P,)`` the key each member's ``init`` received.
      aux: for a trainer with ``has_aux``, each member's auxiliary output at
        the end of each round (the pytree ``evaluate`` returns, leading axes
        ``(R, P)``, numpy arrays); ``None`` otherwise.
      best_aux: the best member's final one (no leading axes; ``None``
        without ``has_aux`` or if every member failed).
    """

    hparams: dict
    losses: np.ndarray
    parents: np.ndarray
    states: Any
    best_index: int
    best_loss: float
    best_params: dict | None
    best_state: Any
    total_budget: int
    init_keys: Any = None
    space: Space = dataclasses.field(repr=False, default=None)
    aux: Any = None
    best_aux: Any = None

    @property
    def best_value(self) -> float:
        """``best_loss``, under the name ``jaxhpo.Result`` and ``Study`` use."""
        return self.best_loss

    def lineage(self, member: int | None = None) -> np.ndarray:
        """``(R,)``: whose weights were trained in each round on the way to ``member``'s
        final state (``best_index`` by default); ``lineage[-1] == member``."""
        if member is None and self.best_index < 0:
            raise ValueError("every member failed (best_index is -1): pass member to pick one")
        P = self.losses.shape[1]
        if member is not None and (isinstance(member, bool) or not isinstance(member, numbers.Integral)
                                   or not 0 <= member < P):
            raise ValueError(f"member must be an integer in [0, {P}), got {member!r}")
        i = self.best_index if member is None else int(member)
        R = self.losses.shape[0]
        out = np.empty(R, np.int64)
        out[-1] = i
        for r in range(R - 2, -1, -1):
            out[r] = self.parents[r, out[r + 1]]
        return out

    def schedule(self, member: int | None = None) -> dict:
        """dict name -> ``(R,)``: the hyperparameters that trained ``member``'s final
        weights, round by round (along its lineage)."""
        anc = self.lineage(member)
        rows = np.arange(len(anc))
        return {k: v[rows, anc] for k, v in self.hparams.items()}


def _check_resume(resume: Any, trainer: Any, space: Space, popsize: int, init_x: Any, key: Any) -> tuple | None:
    """``(states, hparams, losses, rounds)`` to continue from an earlier ``PBTResult``,
    checked against this call before anything is compiled."""
    if resume is None:
        return None
    if not isinstance(resume, PBTResult):
        raise TypeError(f"resume must be the PBTResult of an earlier pbt call, got {type(resume).__name__}")
    if init_x is not None:
        raise ValueError("pass init_x or resume, not both: a resumed run starts from the earlier run's members")
    if resume.space != space:
        raise ValueError("resume: the earlier run searched another space")
    rounds, members = resume.losses.shape
    if members != popsize:
        raise ValueError(f"resume: the earlier run had {members} members; popsize must be the same, got {popsize}")
    if (resume.aux is not None) != trainer_has_aux(trainer):
        raise ValueError("resume: the earlier run's trainer and this one differ in has_aux")
    # The init keys this call would draw (as _pbt_program does): the earlier run's if the key is the same.
    init_keys = jax.random.split(jax.random.split(key, 3)[1], popsize)
    if not np.array_equal(key_bits(init_keys), key_bits(resume.init_keys)):
        raise ValueError("resume: the earlier run was made with another key; resume with the same key")
    # the aux of the last round: (P, ...) as evaluate makes it for the population
    last_aux = None if resume.aux is None else jax.tree_util.tree_map(lambda a: a[-1], resume.aux)
    check_carried(trainer, space, init_keys, resume.states, last_aux, "resume")
    last = {k: v[-1] for k, v in resume.hparams.items()}
    return resume.states, last, resume.losses[-1], np.int32(rounds)


def exploit_count(fraction: float, popsize: int) -> int:
    """``floor(fraction * popsize)`` of the fraction as written: in binary
    ``0.29 * 100`` is ``28.999...``, whose floor would replace one member too few."""
    return math.floor(Fraction(repr(float(fraction))) * popsize)


def pbt(trainer: Any, space: Space, key: Any, *, popsize: int, num_rounds: int, steps_per_round: int = 1,
        fraction: float = 0.25, resample_prob: float = 0.25, factors: tuple[float, float] = (0.8, 1.2),
        init_x: Any = None, chunk_size: int | None = None, mesh: Mesh | None = None,
        resume: PBTResult | None = None) -> PBTResult:
    """Population-based training of ``trainer`` over ``space`` (one compiled program).

    Args:
      trainer: a ``Trainer`` (``step`` = one budget unit).
      space: the ``Space`` of the trainer's hyperparameters.
      key: a ``jax.random`` key or an integer seed; the same key gives the same run.
      popsize: ``P``, members (>= 2).
      num_rounds: ``R``, rounds of training; exploit/explore after each but the last.
      steps_per_round: budget units per round (traced: changing it does not recompile).
      fraction: the bottom and top shares for truncation selection, in
        ``[0, 0.5]``; ``floor(fraction * P)`` members are replaced per round.
        ``0`` disables exploit and explore.
      resample_prob: probability per copied member and hyperparameter of a
        fresh draw instead of a perturbation.
      factors: the two perturbation factors for numbers, e.g. ``(0.8, 1.2)``.
      init_x: ``(P, dim)`` cube points of the initial population (uniform
        random by default).
      chunk_size: train at most this many members at once.
      mesh: shard the population over the mesh's devices (``P`` a multiple
        of their number).
      resume: the ``PBTResult`` of an earlier call (same trainer, space,
        key and ``popsize``): train ``num_rounds`` more rounds from its final
        states. The earlier call's last round is followed by the exploit and
        explore that call left out, then the new rounds, so that with the
        same settings the result equals one call of all the rounds; it
        covers every round (the earlier records, their last ``parents`` row
        now that exploit's, then the new ones). A long run can so be trained
        in segments, each result kept (e.g. pickled) in between.
    Returns:
      a ``PBTResult``.
    """
    key = check_batchable_keys("key", check_key(key, allow_seed=True))
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
    trainer = check_trainer(trainer, space=space)
    popsize = check_positive_int(popsize, "popsize", 2)
    num_rounds = check_positive_int(num_rounds, "num_rounds")
    steps_per_round = check_positive_int(steps_per_round, "steps_per_round")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction <= 0.5:
        raise ValueError(f"fraction must be a number in [0, 0.5], got {fraction!r}")
    if isinstance(resample_prob, bool) or not isinstance(resample_prob, numbers.Real) \
            or not 0 <= resample_prob <= 1:
        raise ValueError(f"resample_prob must be a probability in [0, 1], got {resample_prob!r}")
    try:
        factors = tuple(float(f) for f in factors)
    except (TypeError, ValueError):
        raise TypeError(f"factors must be two positive numbers, got {factors!r}") from None
    if len(factors) != 2 or not all(math.isfinite(f) and f > 0 for f in factors):
        raise ValueError(f"factors must be two finite positive numbers, got {factors!r}")
    if init_x is not None:
        try:
            init_x = np.asarray(init_x, np.float32)
        except (TypeError, ValueError):
            raise TypeError(f"init_x must be a (popsize, dim) array of cube points, got {init_x!r}") from None
        if init_x.shape != (popsize, space.dim):
            raise ValueError(f"init_x must have shape (popsize, dim) = {(popsize, space.dim)}, got {init_x.shape}")
        if not np.all((init_x >= 0) & (init_x <= 1)):
            raise ValueError("init_x must hold cube points in [0, 1] (no NaN)")
        init_x = jnp.asarray(init_x)
    chunk_size = check_chunk_size(chunk_size)
    mesh = check_mesh(mesh)
    if mesh is not None and popsize % mesh.size:
        raise ValueError(f"popsize ({popsize}) must be a multiple of the mesh's {mesh.size} devices")
    num_exploit = exploit_count(fraction, popsize)
    carried = _check_resume(resume, trainer, space, popsize, init_x, key)
    key, init_x, carried = onto_mesh((key, init_x, carried), mesh)
    states, schedule, losses, parents, aux, init_keys, boundary = _pbt_program(
        trainer, space, key, init_x, np.int32(steps_per_round), np.float32(resample_prob), popsize,
        num_rounds, num_exploit, np.asarray(factors, np.float32), chunk_size, mesh, carried)
    # Under jax.distributed (a mesh over several processes' devices) these are
    # global arrays: every process takes a full local copy. The population's
    # states stay global (sharded over the mesh); only the best one is copied.
    losses, parents, schedule, aux, init_keys, boundary = host_local(
        (losses, parents, schedule, aux, init_keys, boundary))
    losses, parents, schedule, aux = jax.tree_util.tree_map(np.asarray, (losses, parents, schedule, aux))
    aux = aux if trainer_has_aux(trainer) else None
    total_budget = num_rounds * popsize * steps_per_round
    if resume is not None:
        before = np.array(resume.parents)
        before[-1] = np.asarray(boundary)
        parents = np.concatenate([before, parents])
        losses = np.concatenate([resume.losses, losses])
        schedule = {k: np.concatenate([resume.hparams[k], v]) for k, v in schedule.items()}
        aux = None if aux is None else jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b]), resume.aux, aux)
        init_keys, total_budget = resume.init_keys, resume.total_budget + total_budget
    best = int(np.argmin(losses[-1]))
    found = bool(np.isfinite(losses[-1, best]))
    return PBTResult(
        hparams=schedule, losses=losses, parents=parents, states=states, best_index=best if found else -1,
        best_loss=float(losses[-1, best]) if found else float("nan"),
        best_params=space.to_python({k: v[-1, best] for k, v in schedule.items()}) if found else None,
        best_state=host_local(take_row(states, np.int32(best))) if found else None,
        total_budget=total_budget, init_keys=init_keys, space=space,
        aux=aux,
        best_aux=jax.tree_util.tree_map(lambda a: np.array(a[-1, best]), aux) if found and aux is not None else None,
    )
