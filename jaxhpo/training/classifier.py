"""A ready-made trainer: a masked MLP classifier with a switchable optimiser.

``MLPClassifierTrainer`` implements the trainer protocol for softmax
classification on in-memory arrays, full batch: ``step`` is
``steps_per_unit`` optimiser steps; ``evaluate`` is the validation
cross-entropy (with ``has_aux=True``, also ``{"accuracy": ...}``, the
validation accuracy). Its hyperparameters (all optional; a ``Space`` names the ones
searched, the rest take the defaults below):

| name            | type                      | default     |
| --------------- | ------------------------- | ----------- |
| learning_rate   | float                     | 1e-3        |
| weight_decay    | float                     | 0           |
| momentum        | float (adam: ``b1``)      | 0.9         |
| optimizer       | int32 index into optimizers | 0         |
| width           | int32, 1..max_width       | max_width   |
| depth           | int32, 1..max_depth       | max_depth   |
| sparsity        | float in [0, 1]           | no pruning  |

It hashes by its data and settings, so equal trainers share compiled code.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._digest import digest as _digest
from ..space import Categorical, Int
from .models import MaskedMLP
from .optimizers import SwitchOptimizer
from .trainer import check_has_aux

__all__ = ["MLPClassifierTrainer", "HYPERPARAMETERS"]

# The hyperparameters the trainer reads (the module docstring's table).
HYPERPARAMETERS = ("learning_rate", "weight_decay", "momentum", "optimizer", "width", "depth", "sparsity")


class MLPClassifierTrainer:
    """Trainer protocol for a ``MaskedMLP`` softmax classifier (full-batch training).

    Args:
      X_train: ``(n, d)`` float features; y_train: ``(n,)`` int labels.
      X_val, y_val: the data ``evaluate`` scores (cross-entropy).
      max_width, max_depth: the largest network of the search.
      optimizers: the choices of ``SwitchOptimizer`` (names from ``OPTIMIZERS``
        or ``(name, factory)`` pairs), indexed by the ``optimizer`` hyperparameter.
      steps_per_unit: optimiser steps per budget unit.
      num_classes: classes (``max(y_train, y_val) + 1`` by default).
      has_aux: ``evaluate`` returns ``(cross-entropy, {"accuracy": ()})``, so
        that the searches record each configuration's validation accuracy.

    Train state: ``(params, opt_state)``; ``params`` as ``MaskedMLP.init``.
    """

    def __init__(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any, *, max_width: int,
                 max_depth: int = 1, optimizers: Sequence[Any] = ("adam",), steps_per_unit: int = 1,
                 num_classes: int | None = None, has_aux: bool = False):
        arrays = []
        for xn, yn, X, y in (("X_train", "y_train", X_train, y_train), ("X_val", "y_val", X_val, y_val)):
            X = np.asarray(X, np.float32)
            y = np.asarray(y)
            if X.ndim != 2 or X.shape[0] == 0:
                raise ValueError(f"{xn} must have shape (n, d) with n >= 1, got {X.shape}")
            if y.shape != X.shape[:1] or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
                raise ValueError(f"{yn} must be nonnegative int labels of shape ({X.shape[0]},), got {y.dtype} {y.shape}")
            arrays += [X, y.astype(np.int32)]
        self.X_train, self.y_train, self.X_val, self.y_val = arrays
        if self.X_val.shape[1] != self.X_train.shape[1]:
            raise ValueError("X_val must have as many features as X_train")
        if isinstance(steps_per_unit, bool) or not isinstance(steps_per_unit, numbers.Integral) or steps_per_unit < 1:
            raise ValueError(f"steps_per_unit must be a positive integer, got {steps_per_unit!r}")
        self.steps_per_unit = int(steps_per_unit)
        k = int(max(self.y_train.max(), self.y_val.max())) + 1
        if num_classes is not None:
            if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < k:
                raise ValueError(f"num_classes must be an integer >= {k} (the largest label + 1), got {num_classes!r}")
            k = int(num_classes)
        self.num_classes = k
        self.has_aux = check_has_aux(has_aux, "has_aux")
        self.model = MaskedMLP(self.X_train.shape[1], k, max_width, max_depth)
        self.optimizer = SwitchOptimizer(tuple(optimizers))
        self._key = (self.model, self.optimizer, self.steps_per_unit, self.has_aux,
                     _digest(self.X_train, self.y_train, self.X_val, self.y_val))

    def with_max_width(self, max_width: int) -> "MLPClassifierTrainer":
        """The same trainer on a network of another ``max_width`` (for width buckets)."""
        return MLPClassifierTrainer(self.X_train, self.y_train, self.X_val, self.y_val,
                                    max_width=max_width, max_depth=self.model.max_depth,
                                    optimizers=self.optimizer.choices, steps_per_unit=self.steps_per_unit,
                                    num_classes=self.num_classes, has_aux=self.has_aux)

    def check_hparams(self, hparams: Any) -> None:
        """``ValueError`` where a population's concrete hyperparameters (dict
        name -> ``(n,)``) hold what this trainer cannot realise: a name it
        does not know, a width or depth outside ``1..max``, a sparsity outside
        ``[0, 1]``, an optimiser index with no optimiser. Traced values pass
        (a vmapped member clips them). Population training calls it."""
        unknown = sorted(set(hparams) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"hparams: {unknown} are not hyperparameters of {type(self).__name__} "
                             f"(it takes {list(HYPERPARAMETERS)})")
        ranges = {"width": (1, self.model.max_width), "depth": (1, self.model.max_depth), "sparsity": (0, 1),
                  "optimizer": (0, len(self.optimizer.names) - 1)}
        for name, (low, high) in ranges.items():
            value = hparams.get(name)
            if value is None or isinstance(value, jax.core.Tracer) or not getattr(value, "is_fully_addressable", True):
                continue  # (a traced or another host's value cannot be read here)
            v = np.asarray(value)
            if v.size and not (np.all(v >= low) and np.all(v <= high)):
                raise ValueError(f"hparams[{name!r}] must lie in [{low}, {high}] for this trainer, got values in "
                                 f"[{v.min()}, {v.max()}]")

    def check_space(self, space: Any) -> None:
        """``ValueError`` where ``space`` gives a hyperparameter values this trainer
        cannot realise: a name it does not know; a ``Categorical`` for a
        number (it decodes to its index, not its label) or a ``Float`` for a
        width or depth; a width or depth beyond the network's maximum; an
        optimiser index with no optimiser, or optimiser labels in another
        order than ``optimizers`` (index ``i`` runs ``optimizers[i]``,
        whatever its label). Searches call it before training anything."""
        dims = space.dims
        unknown = sorted(set(dims) - set(HYPERPARAMETERS))
        if unknown:
            raise ValueError(f"space: {unknown} are not hyperparameters of {type(self).__name__} "
                             f"(it takes {list(HYPERPARAMETERS)})")
        for name, d in dims.items():
            if name == "optimizer":
                continue
            integer = name in ("width", "depth")
            if isinstance(d, Categorical) or (integer and not isinstance(d, Int)):
                kind = "an Int" if integer else "a Float (or an Int)"
                raise ValueError(f"space: {name} must be {kind} for {type(self).__name__}, got {d!r} "
                                 "(a Categorical reaches the trainer as the index of its choice)")
        for name, most in (("width", self.model.max_width), ("depth", self.model.max_depth)):
            if name in dims and (dims[name].low < 1 or dims[name].high > most):
                raise ValueError(f"space: {name} takes values in [{dims[name].low}, {dims[name].high}], and this "
                                 f"trainer's network has {name} 1..{most} (max_{name}={most})")
        if "sparsity" in dims and (dims["sparsity"].low < 0 or dims["sparsity"].high > 1):
            raise ValueError(f"space: sparsity must lie in [0, 1], got [{dims['sparsity'].low}, "
                             f"{dims['sparsity'].high}]")
        d, names = dims.get("optimizer"), self.optimizer.names
        if isinstance(d, Categorical):
            if tuple(d.choices) != names[:len(d.choices)]:
                raise ValueError(f"space: optimizer choices {list(d.choices)} must be this trainer's optimizers "
                                 f"{list(names)} in their order (the index chooses the optimiser), or a leading "
                                 "part of them")
        elif d is not None:
            if not isinstance(d, Int):
                raise ValueError(f"space: optimizer must be a Categorical of {list(names)} or an Int index, "
                                 f"got {d!r}")
            if d.low < 0 or d.high > len(names) - 1:
                raise ValueError(f"space: optimizer indexes {list(names)}: values in [0, {len(names) - 1}], "
                                 f"got [{d.low}, {d.high}]")

    def __eq__(self, other):
        return type(self) is type(other) and self._key == other._key

    def __hash__(self):
        return hash(self._key)

    def __repr__(self):
        aux = ", has_aux=True" if self.has_aux else ""
        return (f"MLPClassifierTrainer({self.model!r}, {self.optimizer!r}, "
                f"steps_per_unit={self.steps_per_unit}{aux})")

    # ------------------------------------------------------------ the model
    def _arch(self, hparams):
        return (hparams.get("width", self.model.max_width), hparams.get("depth", self.model.max_depth),
                hparams.get("sparsity"))

    def logits(self, params: dict, X: jax.Array, hparams: dict) -> jax.Array:
        """``(batch, num_classes)`` logits of one member."""
        width, depth, sparsity = self._arch(hparams)
        return self.model.apply(params, X, width, depth, sparsity)

    def _loss(self, params, X, y, hparams):
        logits = self.logits(params, X, hparams)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    # ------------------------------------------------------------ the protocol
    def init(self, key: jax.Array, hparams: dict) -> tuple:
        params = self.model.init(key, hparams.get("width", self.model.max_width))
        return params, self.optimizer.init(params)

    def step(self, state: tuple, hparams: dict) -> tuple:
        X, y = jnp.asarray(self.X_train), jnp.asarray(self.y_train)
        # The first optimiser where the space does not search the choice (see the table).
        chosen = hparams if "optimizer" in hparams else {**hparams, "optimizer": jnp.zeros((), jnp.int32)}

        def one(_, state):
            params, opt_state = state
            grads = jax.grad(self._loss)(params, X, y, hparams)
            updates, opt_state = self.optimizer.update(grads, opt_state, params, chosen)
            return optax.apply_updates(params, updates), opt_state

        return jax.lax.fori_loop(0, self.steps_per_unit, one, state)

    def evaluate(self, state: tuple, hparams: dict) -> Any:
        X, y = jnp.asarray(self.X_val), jnp.asarray(self.y_val)
        if not self.has_aux:
            return self._loss(state[0], X, y, hparams)
        logits = self.logits(state[0], X, hparams)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, {"accuracy": jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))}

    def accuracy(self, state: tuple, hparams: dict, X: Any, y: Any) -> jax.Array:
        """``()`` accuracy of one member on ``X (n, d)``, ``y (n,)``."""
        pred = jnp.argmax(self.logits(state[0], jnp.asarray(X, jnp.float32), hparams), axis=-1)
        return jnp.mean((pred == jnp.asarray(y)).astype(jnp.float32))
