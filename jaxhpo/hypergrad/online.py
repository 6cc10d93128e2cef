"""Online hypergradient descent (Baydin et al., 2018) as an optax transformation.

An optimiser with learning rate ``alpha`` moves the parameters by
``u_t = alpha_t d_t``, ``d_t`` its direction at unit learning rate (``-g_t``
for SGD, ``-m_hat_t / (sqrt(v_hat_t) + eps)`` for Adam). The loss at the
next step depends on ``alpha`` through the last update, so

    d f(theta_t) / d alpha_{t} ~= grad f(theta_t) . d_t = g_{t+1} . d_t,

and the learning rate follows it by gradient descent with step ``beta``:

    alpha_t = alpha_{t-1} - beta g_t . d_{t-1}.

For SGD that is ``alpha_t = alpha_{t-1} + beta g_t . g_{t-1}``: the rate grows
while successive gradients agree and shrinks when they turn against each
other. Bases: SGD-HD, SGDN-HD (Nesterov), Adam-HD from the paper, plus heavy-
ball momentum. ``beta = 0`` reproduces the base optax optimiser bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._checks import check_bool, check_choice, check_real_unless_traced

__all__ = ["hypergradient_descent", "HypergradientState", "BASES"]

BASES = ("sgd", "momentum", "nesterov", "adam")


class HypergradientState(NamedTuple):
    """State of ``hypergradient_descent``.

    Attributes:
      learning_rate: the current learning rate ``alpha_t``: a ``()`` array,
        or with ``per_leaf=True`` a pytree of ``()`` arrays, one per
        parameter leaf. Read it to log or schedule; it is what the last
        ``update`` used.
      direction: the last raw direction of the base optimiser (the update at
        learning rate ``-1``: the gradient for SGD, the momentum trace
        (Nesterov: ``g + momentum * trace``), Adam's ``m_hat / (sqrt(v_hat) +
        eps)``); zeros before the first step.
      base_state: the state of the base transformation.
    """

    learning_rate: Any
    direction: Any
    base_state: Any


def _base_direction(base: str, momentum: float, b1: float, b2: float, eps: float,
                    eps_root: float) -> optax.GradientTransformation:
    # The same transformations optax.sgd / optax.adam chain before
    # scale_by_learning_rate, so beta = 0 gives identical arithmetic.
    if base == "sgd":
        return optax.identity()
    if base == "momentum":
        return optax.trace(decay=momentum, nesterov=False)
    if base == "nesterov":
        return optax.trace(decay=momentum, nesterov=True)
    return optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root)


def _rate_dtype(dtype: Any) -> Any:
    """``dtype`` widened to the default float where narrower: float32, or float64
    with x64 on. A float16 leaf's update then rounds the rate once, from the
    default float, as optax's Python-float step size does (not twice). Real
    also for a complex leaf: the rate is a real step size."""
    real = jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype
    return jnp.promote_types(real, jax.dtypes.canonicalize_dtype(jnp.float64))


def hypergradient_descent(learning_rate: float, beta: float, *, base: str = "sgd",
                          momentum: float = 0.9, b1: float = 0.9, b2: float = 0.999,
                          eps: float = 1e-8, eps_root: float = 0.0,
                          per_leaf: bool = False,
                          min_learning_rate: float | None = 0.0) -> optax.GradientTransformation:
    """An optax optimiser that adapts its learning rate by hypergradient descent.

    Args:
      learning_rate: the initial learning rate ``alpha_0`` (> 0).
      beta: the hypergradient step (>= 0); ``0`` keeps the rate fixed and
        reproduces the base optimiser exactly. Its scale depends on the
        gradients' (``sgd``: ``alpha`` moves by ``beta |g|^2`` per step when
        successive gradients agree), so tune it per problem; the paper uses
        ``1e-3``-``1e-4`` for SGD and ``1e-7``-``1e-8`` for Adam on MNIST.
      base: ``"sgd"`` (SGD-HD; base ``optax.sgd(lr)``), ``"momentum"``
        (``optax.sgd(lr, momentum)``), ``"nesterov"`` (SGDN-HD;
        ``optax.sgd(lr, momentum, nesterov=True)``), ``"adam"`` (Adam-HD;
        ``optax.adam(lr, b1, b2, eps, eps_root)``).
      momentum: decay of the momentum trace, in ``[0, 1)``.
      b1, b2, eps, eps_root: Adam's, as in ``optax.adam``.
      per_leaf: one learning rate per parameter leaf (e.g. per layer), each
        adapted by its own leaf's dot product, instead of one shared rate.
      min_learning_rate: the rate is kept at or above this (>= 0) after
        every hypergradient step. With a ``beta`` too large for the
        gradients, the paper's unclipped rule can take the rate below zero,
        where the optimiser climbs the loss; at the floor of 0 the
        parameters stand still, the next hypergradient is ``|g|^2 > 0``
        (``sgd``) and the rate rises again. A run whose rate stays above the
        floor is the paper's rule exactly. ``None``: no floor.

    Returns:
      an ``optax.GradientTransformation``; ``update(grads, state, params=None)``
      returns ``(updates, state)`` with ``updates`` shaped like ``grads`` and
      ``state`` a ``HypergradientState`` whose ``learning_rate`` is the rate
      in use. Apply with ``optax.apply_updates``. Pure: jit, scan and vmap it.

    A non-finite gradient makes the rate non-finite for good (it enters the
    dot product and the kept direction); wrap the optimiser in
    ``optax.apply_if_finite`` to skip such steps.

    ``optax.inject_hyperparams(hypergradient_descent, static_args=("base",))``
    makes ``beta`` and the base's constants state that may be traced or
    changed between steps. The injected ``learning_rate`` only seeds the rate
    at ``init``; the rate in use is the inner state's ``learning_rate``.
    """
    learning_rate = check_real_unless_traced("learning_rate", learning_rate, low=0.0, low_open=True)
    beta = check_real_unless_traced("beta", beta, low=0.0)
    base = check_choice("base", base, BASES)
    momentum = check_real_unless_traced("momentum", momentum, low=0.0, high=1.0, high_open=True)
    b1 = check_real_unless_traced("b1", b1, low=0.0, high=1.0, high_open=True)
    b2 = check_real_unless_traced("b2", b2, low=0.0, high=1.0, high_open=True)
    eps = check_real_unless_traced("eps", eps, low=0.0)
    eps_root = check_real_unless_traced("eps_root", eps_root, low=0.0)
    per_leaf = check_bool("per_leaf", per_leaf)
    if min_learning_rate is not None:
        min_learning_rate = check_real_unless_traced("min_learning_rate", min_learning_rate, low=0.0)
    inner = _base_direction(base, momentum, b1, b2, eps, eps_root)

    def init_fn(params):
        # The rate and its hypergradient at least in float32: in a bfloat16
        # leaf's precision a step of beta * h is mostly rounded away.
        leaves = jax.tree_util.tree_leaves(params)
        dtype = _rate_dtype(jnp.result_type(*leaves)) if leaves else _rate_dtype(jnp.float32)
        if per_leaf:
            lr = jax.tree_util.tree_map(lambda p: jnp.asarray(learning_rate, _rate_dtype(jnp.result_type(p))),
                                        params)
        else:
            lr = jnp.asarray(learning_rate, dtype)
        return HypergradientState(
            learning_rate=lr,
            # strongly typed, as update_fn keeps it: a weakly typed leaf
            # (jnp.asarray(1.0)) would otherwise change type after one step
            # and recompile a jitted update
            direction=jax.tree_util.tree_map(lambda p: jnp.zeros(jnp.shape(p), jnp.result_type(p)), params),
            base_state=inner.init(params),
        )

    def update_fn(grads, state, params=None):
        lr = state.learning_rate
        if isinstance(beta, jax.core.Tracer) or beta != 0.0:
            # h = g_t . d_{t-1} with d = -direction; alpha <- alpha - beta h.
            def dot(g, d):
                # Re <g, d>: the derivative of the loss in the real rate, also for complex leaves.
                wide = jnp.promote_types(jnp.result_type(d), _rate_dtype(jnp.result_type(d)))
                return jnp.real(jnp.vdot(jnp.asarray(g, wide), jnp.asarray(d, wide)))

            dots = jax.tree_util.tree_map(dot, grads, state.direction)
            if per_leaf:
                lr = jax.tree_util.tree_map(lambda a, h: a + (beta * h).astype(jnp.result_type(a)), lr, dots)
            elif jax.tree_util.tree_leaves(dots):  # (a tree of no leaves leaves the rate as it is)
                total = sum(jax.tree_util.tree_leaves(dots))
                lr = lr + (beta * total).astype(jnp.result_type(lr))
            if min_learning_rate is not None:
                lr = jax.tree_util.tree_map(
                    lambda a: jnp.maximum(a, jnp.asarray(min_learning_rate, jnp.result_type(a))), lr)
        direction, base_state = inner.update(grads, state.base_state, params)
        # Same expression as optax.scale(-lr): (-lr) * g, the rate in each
        # leaf's own dtype, as optax's Python-float step size is (a bfloat16
        # leaf's update stays bfloat16); an integer leaf's update is in the
        # rate's float dtype, as optax's is (a rate cast to int would be 0).
        def step(rate, d):
            leaf = jnp.result_type(d)
            return (-rate).astype(leaf if jnp.issubdtype(leaf, jnp.inexact) else rate.dtype) * d

        if per_leaf:
            updates = jax.tree_util.tree_map(step, lr, direction)
        else:
            updates = jax.tree_util.tree_map(lambda d: step(lr, d), direction)
        # The direction is kept in the parameters' dtypes, as initialised, so
        # the state's types never change (gradients may come narrower).
        # (A Python-number leaf passes the base's identity as it came.)
        kept = jax.tree_util.tree_map(lambda d, old: jnp.asarray(d, old.dtype), direction, state.direction)
        return updates, HypergradientState(learning_rate=lr, direction=kept, base_state=base_state)

    return optax.GradientTransformation(init_fn, update_fn)
