"""The optimiser as a categorical hyperparameter, inside one vmapped program.

``SwitchOptimizer`` holds one ``optax.inject_hyperparams`` optimiser per
choice behind one state of fixed shape whichever optimiser a member uses:
the branches' states share storage (slots), so a member carries as many
parameter-sized arrays as the most demanding choice needs (Adam's two
moments), not one set per choice. ``update`` picks the member's branch with
``lax.switch`` on its (traced) ``optimizer`` index. Under ``vmap`` the switch
becomes a select: every branch is computed for every member, which costs a
few elementwise passes over the parameters — cheap next to the forward and
backward pass. Sharing the slots also keeps the train state's leaves few (24
rather than 64 for the demo's two-layer MLP and five optimisers: its 6
parameter leaves, then 18 of optimiser state against 58), and XLA's
compile time grows with them: on a CPU a vmapped block of training compiles
about a quarter faster.

Learning rate, weight decay and momentum are traced arrays written into the
injected hyperparameters at every update, so they can differ per member and
change during training (population-based training, schedules).

The branches (``wd`` = weight decay, ``m`` = momentum):

| name       | optax                                                        |
| ---------- | ------------------------------------------------------------ |
| sgd        | ``chain(add_decayed_weights(wd), sgd(lr))``                  |
| momentum   | ``chain(add_decayed_weights(wd), sgd(lr, momentum=m))``      |
| adam       | ``chain(add_decayed_weights(wd), adam(lr, b1=m))``           |
| adamw      | ``adamw(lr, b1=m, weight_decay=wd)`` (decoupled decay)       |
| rmsprop    | ``chain(add_decayed_weights(wd), rmsprop(lr))``              |

Other optimisers join the choice as ``(name, factory)`` pairs, ``factory``
being ``f(learning_rate, weight_decay, momentum) -> GradientTransformation``
like the functions above (a factory may ignore what it does not use), e.g.
``SwitchOptimizer(["adam", ("lion", lambda learning_rate, weight_decay,
momentum: optax.lion(learning_rate, b1=momentum, weight_decay=weight_decay))])``
(the three are passed by keyword, as ``optax.inject_hyperparams`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..strategies._checks import check_concrete_params, check_int

__all__ = ["OPTIMIZERS", "SwitchOptimizer", "SwitchState", "optimizer_factory", "HYPERPARAMS"]

HYPERPARAMS = ("learning_rate", "weight_decay", "momentum")


def _sgd(learning_rate, weight_decay, momentum):
    del momentum  # plain SGD; kept in the signature so every branch injects the same three
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate))


def _momentum(learning_rate, weight_decay, momentum):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def _adam(learning_rate, weight_decay, momentum):
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=momentum))


def _adamw(learning_rate, weight_decay, momentum):
    return optax.adamw(learning_rate, b1=momentum, weight_decay=weight_decay)


def _rmsprop(learning_rate, weight_decay, momentum):
    del momentum
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.rmsprop(learning_rate))


_FACTORIES = {"sgd": _sgd, "momentum": _momentum, "adam": _adam, "adamw": _adamw, "rmsprop": _rmsprop}
OPTIMIZERS = tuple(_FACTORIES)


def optimizer_factory(name: str):
    """``f(learning_rate, weight_decay, momentum) -> optax.GradientTransformation`` for ``name``."""
    if not isinstance(name, str) or name not in _FACTORIES:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS} (or a (name, factory) pair), got {name!r}")
    return _FACTORIES[name]


def _choice(entry: Any) -> tuple[str, Callable]:
    """``(name, factory)`` of one choice: a built-in name or a user's pair."""
    if isinstance(entry, str):
        return entry, optimizer_factory(entry)
    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
        raise TypeError(f"each optimizer choice must be a name from {OPTIMIZERS} or a (name, factory) pair, "
                        f"got {entry!r}")
    name, factory = entry
    if not callable(factory):
        raise TypeError(f"optimizer choice {name!r}: factory must be callable "
                        f"f(learning_rate, weight_decay, momentum) -> optax.GradientTransformation, got {factory!r}")
    # Built eagerly, so that a factory of another signature is named here
    # rather than inside a traced update.
    try:
        tx = factory(learning_rate=1e-3, weight_decay=0.0, momentum=0.9)
    except TypeError as e:
        raise TypeError(f"optimizer choice {name!r}: factory must accept the keyword arguments learning_rate, "
                        f"weight_decay and momentum ({e})") from None
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"optimizer choice {name!r}: factory must return an optax.GradientTransformation, "
                        f"got {type(tx).__name__}")
    return name, factory


class SwitchState(NamedTuple):
    """``SwitchOptimizer``'s state: the branches' states in shared slots.

    Attributes:
      active: ``()`` int32, the branch whose state the slots hold (``-1``
        before the first update).
      slots: a tuple of arrays; branch ``i``'s state leaves live in the
        slots ``SwitchOptimizer`` assigned them (one slot per leaf of a
        given shape and dtype, shared between branches).
    """

    active: jax.Array
    slots: tuple


class SwitchOptimizer:
    """Several optimisers behind one fixed-shape state; the choice is a traced index.

    The branches share their state's storage: a branch's ``k``-th state leaf
    of a given shape and dtype lives in the ``k``-th slot of that shape and
    dtype, so the state holds as many parameter-sized arrays as the most
    demanding branch needs (Adam's two moments), not the sum over branches.
    A member's state belongs to the branch it last ran: when a member's
    ``optimizer`` changes (population-based training resampling it, say),
    the new branch starts from its own ``init(params)``, as a freshly built
    optax optimiser would, and the parameters carry over.

    Args:
      names: the choices, in the order of the ``Categorical`` that indexes
        them (default ``OPTIMIZERS``): names from ``OPTIMIZERS`` and
        ``(name, factory)`` pairs of one's own (see the module docstring).
        Two optimisers are equal when their names and factories are.

    ``hparams`` below is a dict with ``learning_rate``, ``weight_decay``,
    ``momentum`` (float ``()``) and ``optimizer`` (int32 ``()`` index into
    ``names``); missing floats default to ``1e-3``, ``0`` and ``0.9``.
    """

    def __init__(self, names: Sequence[str | tuple[str, Callable]] = OPTIMIZERS):
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise TypeError("names must be a non-empty sequence of optimizer names or (name, factory) pairs, "
                            f"got {names!r}")
        choices = tuple(_choice(n) for n in names)
        self.names = tuple(n for n, _ in choices)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names must be distinct, got {list(self.names)}")
        # Built-in choices stay plain names, so that equal settings compare
        # (and share compiled programs) across instances.
        self.choices = tuple(n if f is _FACTORIES.get(n) else (n, f) for n, f in choices)
        self._txs = tuple(optax.inject_hyperparams(f)(learning_rate=1e-3, weight_decay=0.0, momentum=0.9)
                          for _, f in choices)
        self._layouts = {}

    def __eq__(self, other):
        return type(self) is type(other) and self.choices == other.choices

    def __hash__(self):
        return hash(("SwitchOptimizer", self.choices))

    def __repr__(self):
        return f"SwitchOptimizer({list(self.choices)})"

    @staticmethod
    def _values(hparams: dict) -> dict:
        defaults = {"learning_rate": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
        return {k: jnp.asarray(hparams.get(k, v), jnp.float32) for k, v in defaults.items()}

    def _layout(self, params: Any) -> tuple:
        """``(slots, assign, treedefs)`` for parameters shaped like ``params``.

        ``slots``: ``(shape, dtype)`` of each shared slot; ``assign[i]``: the
        slot of each of branch ``i``'s state leaves; ``treedefs[i]``: branch
        ``i``'s state structure.
        """
        leaves, treedef = jax.tree_util.tree_flatten(params)
        cache_key = (treedef, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))
        if cache_key not in self._layouts:
            slots, assign, treedefs = [], [], []
            of_kind = {}  # (shape, dtype) -> its slots, in order
            for tx in self._txs:
                shapes = jax.eval_shape(tx.init, params)
                seen, idx = {}, []
                for leaf in jax.tree_util.tree_leaves(shapes):
                    kind = (tuple(leaf.shape), jnp.dtype(leaf.dtype))
                    k = seen.get(kind, 0)
                    seen[kind] = k + 1
                    same = of_kind.setdefault(kind, [])
                    if k == len(same):
                        same.append(len(slots))
                        slots.append(kind)
                    idx.append(same[k])
                assign.append(tuple(idx))
                treedefs.append(jax.tree_util.tree_structure(shapes))
            self._layouts[cache_key] = (tuple(slots), tuple(assign), tuple(treedefs))
        return self._layouts[cache_key]

    def init(self, params: Any) -> SwitchState:
        """Empty shared slots (fixed shapes whatever the choice); the first
        ``update`` fills them with its branch's ``init(params)``."""
        slots, _, _ = self._layout(params)
        return SwitchState(active=jnp.int32(-1), slots=tuple(jnp.zeros(s, d) for s, d in slots))

    def branch_state(self, state: SwitchState, params: Any, index: int) -> Any:
        """Branch ``index``'s optax state as it stands in ``state`` (valid
        where ``state.active == index``)."""
        _, assign, treedefs = self._layout(params)
        return jax.tree_util.tree_unflatten(treedefs[index], [state.slots[k] for k in assign[index]])

    def update(self, grads: Any, state: SwitchState, params: Any, hparams: dict) -> tuple[Any, SwitchState]:
        """``(updates, new_state)``: the chosen branch's optax update.

        Args:
          grads, params: pytrees of the model's parameters (one member).
          state: from ``init``.
          hparams: see the class docstring; ``optimizer`` is required when
            there is more than one choice.
        """
        if not isinstance(hparams, Mapping):
            raise TypeError(f"hparams must be a dict name -> value, got {type(hparams).__name__}")
        values = self._values(hparams)
        for name, value in values.items():  # one member's: scalars (vmap adds the population's axis)
            if jnp.shape(value) != ():
                raise ValueError(f"hparams[{name!r}] must be a scalar for one member (vmap over a "
                                 f"population), got shape {jnp.shape(value)}")
        if "optimizer" in hparams:  # also with one choice: an index past it is a mistake
            check_concrete_params({"optimizer": hparams["optimizer"]},
                                  {"optimizer": lambda v: check_int("optimizer", v, 0, len(self.names) - 1)})
        if len(self.names) == 1:
            index = jnp.int32(0)
        else:
            if "optimizer" not in hparams:
                raise ValueError("hparams must hold 'optimizer' (an int32 index into names)")
            index = jnp.clip(jnp.asarray(hparams["optimizer"], jnp.int32), 0, len(self.names) - 1)
        _, assign, _ = self._layout(params)
        # A member whose choice changed (or that never ran) starts its branch afresh.
        restart = state.active != index

        def branch(i):
            def run(slots):
                s = self.branch_state(SwitchState(state.active, slots), params, i)
                s = jax.tree_util.tree_map(lambda old, new: jnp.where(restart, new, old), s, self._txs[i].init(params))
                # Write this member's (traced) hyperparameters into the injected state.
                s = s._replace(hyperparams={k: values[k].astype(s.hyperparams[k].dtype)
                                            for k in s.hyperparams})
                updates, s = self._txs[i].update(grads, s, params)
                # Every branch returns the same types: the slots keep their
                # dtypes and updates take their gradients' (optax promotes a
                # bfloat16 leaf's moments and updates by the float32 rates).
                updates = jax.tree_util.tree_map(lambda u, g: u.astype(jnp.result_type(g)), updates, grads)
                new = list(slots)
                for k, leaf in zip(assign[i], jax.tree_util.tree_leaves(s)):
                    new[k] = leaf.astype(slots[k].dtype)
                return updates, tuple(new)
            return run

        updates, slots = jax.lax.switch(index, [branch(i) for i in range(len(self.names))], state.slots)
        return updates, SwitchState(active=index, slots=slots)
