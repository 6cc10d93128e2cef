"""Meta-learning: hyperparameters shared by a distribution of tasks, learned by hypergradients.

A batch of tasks is trained in parallel (``vmap``) from an initial state and
with hyperparameters that all tasks share (an initialisation as in MAML,
per-parameter learning rates as in Meta-SGD, a regulariser); the meta-loss
is the mean post-training loss on each task's held-out (query) data, and its
exact gradient with respect to the shared hyperparameters is reverse mode
through every task's unrolled inner training.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ._checks import check_callable, check_positive_int, real_scalar
from .unrolled import _check_checkpoint_every, _check_float_leaves, rollout

__all__ = ["meta_gradient"]


def meta_gradient(init: Callable, step: Callable, query_loss: Callable, num_steps: int, *,
                  checkpoint_every: int | None = None) -> Callable:
    """The meta-loss over a batch of tasks and its gradient in the shared hyperparameters.

    Args:
      init: ``init(meta, task) -> state``: a task's state before inner
        training (e.g. ``meta["w0"]`` for a learned initialisation).
      step: ``step(state, meta, task, t) -> state``: one inner training step
        on the task's support data.
      query_loss: ``query_loss(state, meta, task) -> ()``: the loss after
        inner training, on the task's query data.
      num_steps: inner steps ``K >= 1``.
      checkpoint_every: rematerialise every ``k`` inner steps (see
        ``rollout``); ``None`` keeps every step.

    Returns:
      ``mg(meta, tasks) -> (value, grads)``: ``value`` the ``()`` mean query
      loss over the batch, ``grads`` its gradient with ``meta``'s structure.
      ``tasks`` is a pytree whose leaves have a leading axis ``(num_tasks,
      ...)``; ``meta`` any pytree of float arrays. Compiled on its first
      call for each argument structure and shapes (a ``jax.jit`` inside).
    """
    check_callable("init", init)
    check_callable("step", step)
    check_callable("query_loss", query_loss)
    num_steps = check_positive_int("num_steps", num_steps)
    checkpoint_every = _check_checkpoint_every(checkpoint_every)

    def one_task(meta, task):
        state = rollout(lambda s, m, t: step(s, m, task, t), meta, init(meta, task), num_steps,
                        checkpoint_every)
        return real_scalar("query_loss", query_loss(state, meta, task), "a scalar per task")

    def meta_loss(meta, tasks):
        return jnp.mean(jax.vmap(one_task, in_axes=(None, 0))(meta, tasks))

    value_and_grad = jax.value_and_grad(meta_loss)

    def mg(meta, tasks):
        _check_float_leaves(meta, "meta")
        sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree_util.tree_leaves(tasks)}
        if len(sizes) != 1 or None in sizes or 0 in sizes:
            raise ValueError("tasks must be a pytree of arrays sharing one leading axis of num_tasks >= 1, "
                             f"got leading axes {sorted(sizes, key=str)}")
        return value_and_grad(meta, tasks)

    # Compiled once per argument shapes, so that a meta-training loop in
    # Python does not trace and compile the inner runs in every call.
    compiled = jax.jit(mg)

    def meta_gradient_of(meta, tasks):
        return compiled(meta, tasks)

    return meta_gradient_of
