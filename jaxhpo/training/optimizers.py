"""The optimiser as a categorical hyperparameter, inside one vmapped program.

``SwitchOptimizer`` holds one ``optax.inject_hyperparams`` optimiser per
choice and keeps *all* their states in one tuple, so the state has the same
fixed shape whichever optimiser a member uses. ``update`` picks the member's
branch with ``lax.switch`` on its (traced) ``optimizer`` index; only that
branch's state advances. Under ``vmap`` the switch becomes a select: every
branch is computed for every member, which costs a few elementwise passes
over the parameters — cheap next to the forward and backward pass.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["OPTIMIZERS", "SwitchOptimizer", "optimizer_factory", "HYPERPARAMS"]

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
    if name not in _FACTORIES:
        raise ValueError(f"optimizer name must be one of {OPTIMIZERS}, got {name!r}")
    return _FACTORIES[name]


class SwitchOptimizer:
    """Several optimisers behind one fixed-shape state; the choice is a traced index.

    Args:
      names: the choices, in the order of the ``Categorical`` that indexes
        them (default ``OPTIMIZERS``).

    ``hparams`` below is a dict with ``learning_rate``, ``weight_decay``,
    ``momentum`` (float ``()``) and ``optimizer`` (int32 ``()`` index into
    ``names``); missing floats default to ``1e-3``, ``0`` and ``0.9``.
    """

    def __init__(self, names: Sequence[str] = OPTIMIZERS):
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise TypeError(f"names must be a non-empty sequence of optimizer names, got {names!r}")
        for n in names:
            optimizer_factory(n)
        if len(set(names)) != len(names):
            raise ValueError(f"names must be distinct, got {list(names)}")
        self.names = tuple(names)
        self._txs = tuple(optax.inject_hyperparams(optimizer_factory(n))(
            learning_rate=1e-3, weight_decay=0.0, momentum=0.9) for n in self.names)

    def __eq__(self, other):
        return type(self) is type(other) and self.names == other.names

    def __hash__(self):
        return hash(("SwitchOptimizer", self.names))

    def __repr__(self):
        return f"SwitchOptimizer({list(self.names)})"

    @staticmethod
    def _values(hparams: dict) -> dict:
        defaults = {"learning_rate": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
        return {k: jnp.asarray(hparams.get(k, v), jnp.float32) for k, v in defaults.items()}

    def init(self, params: Any) -> tuple:
        """A tuple of every branch's state (fixed shapes whatever the choice)."""
        return tuple(tx.init(params) for tx in self._txs)

    def update(self, grads: Any, state: tuple, params: Any, hparams: dict) -> tuple[Any, tuple]:
        """``(updates, new_state)``; only the chosen branch's state changes.

        Args:
          grads, params: pytrees of the model's parameters (one member).
          state: from ``init``.
          hparams: see the class docstring; ``optimizer`` is required when
            there is more than one choice.
        """
        values = self._values(hparams)
        if len(self.names) == 1:
            index = jnp.int32(0)
        else:
            if "optimizer" not in hparams:
                raise ValueError("hparams must hold 'optimizer' (an int32 index into names)")
            index = jnp.clip(jnp.asarray(hparams["optimizer"], jnp.int32), 0, len(self.names) - 1)

        def branch(i):
            def run(state):
                s = state[i]
                # Write this member's (traced) hyperparameters into the injected state.
                s = s._replace(hyperparams={k: values[k].astype(s.hyperparams[k].dtype)
                                            for k in s.hyperparams})
                updates, s = self._txs[i].update(grads, s, params)
                return updates, tuple(s if j == i else state[j] for j in range(len(state)))
            return run

        return jax.lax.switch(index, [branch(i) for i in range(len(self.names))], state)
