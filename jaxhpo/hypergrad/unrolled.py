"""Unrolled hypergradients: differentiate the validation loss through ``T`` training steps.

The training procedure ``state_T = step(... step(step(state_0, h, 0), h, 1) ..., h, T-1)``
is one ``lax.scan``; the hypergradient ``d val_loss(state_T, h) / d h`` is its
exact derivative, by reverse mode (``jax.value_and_grad``, with optional
rematerialisation) or by forward mode (one tangent per hyperparameter
scalar: each step linearised once and every tangent pushed through it, or,
beyond ``_LINEARIZE_MAX`` scalars, ``jax.jvp`` vmapped over the tangents).
"""

from __future__ import annotations

from typing import Any, Callable

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from ._checks import check_bool, check_callable, check_choice, check_positive_int, real_scalar

__all__ = ["unrolled", "rollout", "contractions_saveable", "MODES", "STEP_POLICIES", "AUTO_FORWARD_MAX"]

MODES = ("reverse", "forward", "auto")

# What reverse mode keeps of each training step for the backward pass:
# "contractions" keeps the step's input state and the outputs of its
# contracting matrix products (see ``contractions_saveable``), recomputing the
# rest; "carry" keeps nothing but the input state (the backward pass
# recomputes the whole step once); "all" keeps every residual (no
# recomputation, memory ``O(T r)``). A jax checkpoint policy (e.g.
# ``jax.checkpoint_policies.dots_saveable``) is also accepted.
STEP_POLICIES = ("contractions", "carry", "all")


def contractions_saveable(prim, *avals, **params) -> bool:
    """A ``jax.checkpoint`` policy: save the matrix products whose output is
    smaller than each operand, recompute everything else.

    In a training step these are the weight gradients, which contract the
    batch axis (``X^T delta``: ``(B, d_in), (B, d_out) -> (d_in, d_out)``):
    as large as the parameters, cheap to keep, and a third or more of the
    step's multiply-adds to recompute. The products that make activations
    (``(B, d_in) @ (d_in, d_out)``) are as large as the batch: those are
    recomputed, as reading them back would cost more than computing them.
    """
    if prim is not lax.dot_general_p:
        return False
    lhs, rhs = avals[:2]
    (lhs_contract, rhs_contract), (_, rhs_batch) = params["dimension_numbers"]
    contract = math.prod(lhs.shape[i] for i in lhs_contract)
    rhs_free = math.prod(rhs.shape) // max(1, contract * math.prod(rhs.shape[i] for i in rhs_batch))
    out = math.prod(lhs.shape) // max(1, contract) * rhs_free
    return out < min(math.prod(lhs.shape), math.prod(rhs.shape))

# ``mode="auto"`` takes forward mode up to this many hyperparameter scalars.
# Forward mode costs about 1 + 1.3 n training runs of multiply-adds (a
# tangent through a gradient step is a Hessian-vector product), memory flat
# in T; reverse mode (per-step rematerialisation of the activations) a
# constant ~3.1-3.3 runs of time whatever n is (measured in
# benchmarks/hypergrad_cost.py), memory O(T) states. Up to ~2 scalars forward
# mode is no slower and always lighter; beyond, reverse wins on time.
AUTO_FORWARD_MAX = 2


def _check_checkpoint_every(value: Any) -> int | None:
    if value is None:
        return None
    return check_positive_int("checkpoint_every", value)


def _check_step_policy(value: Any) -> Any:
    if isinstance(value, str):
        return check_choice("step_policy", value, STEP_POLICIES)
    if callable(value):
        return value
    raise TypeError(f"step_policy must be one of {STEP_POLICIES} or a jax.checkpoint policy, got {value!r}")


def _policy_step(step: Callable, policy: Any) -> Callable:
    """``step`` wrapped for reverse mode according to ``policy`` (see ``STEP_POLICIES``)."""
    if policy == "all":
        return step
    policy = {"carry": jax.checkpoint_policies.nothing_saveable,
              "contractions": contractions_saveable}.get(policy, policy)
    # prevent_cse=False: every call sits inside a scan, which already keeps
    # XLA from merging the recomputation with the forward pass.
    return jax.checkpoint(step, policy=policy, prevent_cse=False)


def _check_float_leaves(hparams: Any, name: str = "hparams") -> None:
    leaves = jax.tree_util.tree_leaves_with_path(hparams)
    if not leaves:
        raise ValueError(f"{name} holds no arrays; there is nothing to differentiate")
    for path, leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"{name} must hold only real floating-point arrays (integer hyperparameters have no "
                f"gradient, complex ones no real-valued one); {name}{jax.tree_util.keystr(path)} has dtype "
                f"{jnp.result_type(leaf)}: write it as a float (0.0, not 0)"
            )


# Up to this many hyperparameter scalars, forward mode linearises each step
# once and pushes every tangent through that linear map separately; beyond,
# it vmaps jax.jvp over the tangents (one batched program, constant compile).
_LINEARIZE_MAX = 8

# Forward mode's steps are unrolled by this many per loop iteration: the
# primal of the next step does not wait for this step's tangents, and
# unrolled, XLA runs them side by side (3-4% faster on a 2-core CPU, where
# a plain training run gains nothing from unrolling;
# benchmarks/hypergrad_cost.py). Memory stays independent of T.
_FORWARD_UNROLL = 4


def _weakly_typed(a: Any) -> bool:
    if isinstance(a, (int, float, complex)) and not isinstance(a, bool):
        return True
    return bool(getattr(getattr(a, "aval", None), "weak_type", False))


def _promote_weak_leaves(step, init_state, hparams):
    """``init_state`` with each weakly typed leaf (a Python number) cast to the
    dtype ``step`` returns for it, as ``lax.scan`` promotes its carry: a leaf
    given as ``0`` that the step makes a float must carry a tangent. A step
    that returns another structure, shape or dtype is refused by name."""
    out = jax.eval_shape(lambda s: step(s, hparams, jnp.int32(0)), init_state)
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(init_state)
    out_leaves, out_def = jax.tree_util.tree_flatten(out)
    if out_def != treedef:
        raise TypeError(f"step must return a state of init_state's structure; it returned {out_def} for {treedef}")
    for (path, a), o in zip(leaves_with_path, out_leaves):
        if jnp.shape(a) != o.shape or (not _weakly_typed(a) and jnp.result_type(a) != o.dtype):
            raise TypeError(f"step must return a state of init_state's shapes and dtypes; "
                            f"state{jax.tree_util.keystr(path)} went from {jnp.shape(a)} {jnp.result_type(a)} "
                            f"to {o.shape} {o.dtype}")
    leaves = [jnp.asarray(a, o.dtype) if _weakly_typed(a) else a for (_, a), o in zip(leaves_with_path, out_leaves)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _forward_linearized(step, val_loss, num_steps, hparams, flat, unravel, init_state):
    """Forward mode for a few hyperparameters: ``(value, grads, final state)``.

    Each step is linearised once (``jax.linearize``: the primal and its
    residuals) and the ``n`` tangents go through the linear map one after
    another. Vmapping ``jax.jvp`` over the tangents instead batches every
    matrix product of the step, which XLA:CPU runs about 1.4x slower than
    ``n`` plain ones. Only floating leaves of the state carry tangents;
    integer leaves (step counters) are carried as they are. Memory: the
    state and ``n`` tangents of it, one step's residuals, none of ``T``.
    The primal is ``hparams`` as given (a Python float stays weakly typed, as
    in reverse mode); only the tangents go through ``unravel``.
    """
    n = flat.size
    basis = [unravel(e) for e in jnp.eye(n, dtype=flat.dtype)]
    init_state = _promote_weak_leaves(step, init_state, hparams)
    leaves, treedef = jax.tree_util.tree_flatten(init_state)
    inexact = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]

    def split(state):
        ls = jax.tree_util.tree_leaves(state)
        return [a for a, f in zip(ls, inexact) if f], [a for a, f in zip(ls, inexact) if not f]

    def join(floats, others):
        fi, oi = iter(floats), iter(others)
        return jax.tree_util.tree_unflatten(treedef, [next(fi) if f else next(oi) for f in inexact])

    def body(carry, _):
        floats, others, tangents, t = carry

        def f(fl, h):
            new = step(join(fl, others), h, t)
            nf, no = split(new)
            return nf, no

        floats, lin, others = jax.linearize(f, floats, hparams, has_aux=True)
        tangents = [lin(tangents[i], basis[i]) for i in range(n)]
        return (floats, others, tangents, t + 1), None

    floats, others = split(init_state)
    zeros = [[jnp.zeros_like(a) for a in floats] for _ in range(n)]
    # The step index rides in the carry: a scanned-over arange would be an
    # array of T int32s, the one thing in forward mode that grew with T.
    (floats, others, tangents, _), _ = jax.lax.scan(
        body, (floats, others, zeros, jnp.int32(0)), None, length=num_steps, unroll=min(_FORWARD_UNROLL, num_steps))
    state = join(floats, others)
    value, lin = jax.linearize(lambda fl, h: real_scalar("val_loss", val_loss(join(fl, others), h)), floats, hparams)
    dflat = jnp.stack([lin(tangents[i], basis[i]) for i in range(n)])
    return value, unravel(dflat.astype(flat.dtype)), state


def _steps(step: Callable, state: Any, hparams: Any, t0: jax.Array, length: int) -> Any:
    """``length`` steps from step index ``t0``, as one ``lax.scan`` whose carry
    holds the index (no scanned-over array of ``length`` indices)."""
    def body(carry, _):
        s, t = carry
        return (step(s, hparams, t), t + 1), None

    (state, _), _ = lax.scan(body, (state, jnp.asarray(t0, jnp.int32)), None, length=length)
    return state


def rollout(step: Callable, hparams: Any, init_state: Any, num_steps: int,
            checkpoint_every: int | None = None, step_policy: Any = "all") -> Any:
    """Run ``num_steps`` training steps as one ``lax.scan``; returns the final state.

    Args:
      step: ``step(state, hparams, t) -> state``, ``t`` an int32 scalar step
        index (``0 .. num_steps - 1``).
      hparams: any pytree, passed unchanged to every step.
      init_state: the state pytree before the first step.
      num_steps: ``T``, a positive Python int (static).
      checkpoint_every: ``None``, or ``k``: run the steps as ``T // k``
        segments of ``k`` steps (plus one segment of ``T % k`` steps when
        ``k`` does not divide ``T``), each wrapped in ``jax.checkpoint``.
        Under reverse-mode differentiation only the segment boundaries are
        kept and each segment is recomputed during the backward pass:
        ``ceil(T / k)`` states plus one segment's ``k`` steps of residuals
        live at once, instead of ``T`` steps of residuals. ``k`` near
        ``sqrt(T)`` minimises that. ``k >= T`` means no rematerialisation.
        The values computed are the same either way.
      step_policy: what reverse-mode differentiation keeps of each step
        (``"all"``, the default here: every residual; ``"contractions"`` or
        ``"carry"``, see ``unrolled``; or a ``jax.checkpoint`` policy). No
        effect on the values, nor on a run that is not differentiated.
    Returns:
      the state after ``T`` steps (``init_state``'s structure).
    """
    check_callable("step", step)
    num_steps = check_positive_int("num_steps", num_steps)
    k = _check_checkpoint_every(checkpoint_every)
    step = _policy_step(step, _check_step_policy(step_policy))
    init_state = _promote_weak_leaves(step, init_state, hparams)

    if k is None or k >= num_steps:
        return _steps(step, init_state, hparams, jnp.int32(0), num_steps)

    def segment_fn(length):
        # hparams go in as an argument, not a closure, so the checkpointed
        # function's inputs are exactly what its recomputation needs.
        def segment(state, hp, t0):
            return _steps(step, state, hp, t0, length)
        # prevent_cse=False is safe (and faster) because the call sits inside
        # a scan, which already keeps XLA from merging it with the forward pass.
        return jax.checkpoint(segment, prevent_cse=False)

    num_segments, rem = divmod(num_steps, k)
    full = segment_fn(k)
    starts = jnp.arange(num_segments, dtype=jnp.int32) * k
    state, _ = lax.scan(lambda s, t0: (full(s, hparams, t0), None), init_state, starts)
    if rem:
        state = segment_fn(rem)(state, hparams, jnp.int32(num_segments * k))
    return state


def unrolled(step: Callable, val_loss: Callable, num_steps: int, *, mode: str = "reverse",
             checkpoint_every: int | None = None, step_policy: Any = "contractions",
             return_state: bool = False) -> Callable:
    """The exact hypergradient of a validation loss through ``T`` unrolled training steps.

    Args:
      step: ``step(state, hparams, t) -> state``: one training step (data
        closed over; ``t`` an int32 scalar, the step index, for picking a
        minibatch). Typically an optax update whose hyperparameters come from
        ``hparams``. Must be jax-traceable and differentiable in ``hparams``.
      val_loss: ``val_loss(state, hparams) -> ()`` scalar to minimise.
      num_steps: ``T >= 1`` training steps (static).
      mode: ``"reverse"`` (``jax.value_and_grad`` through the scan),
        ``"forward"`` (one tangent per hyperparameter scalar; see the module
        docstring) or ``"auto"``: forward when ``hparams`` has at most
        ``AUTO_FORWARD_MAX`` scalars in total, else reverse (decided when
        traced, from the shapes).
      checkpoint_every: ``None`` or a positive int ``k`` (need not divide
        ``T``); rematerialise every ``k`` steps in reverse mode (see
        ``rollout``). Ignored by forward mode, which stores no trajectory.
      step_policy: what reverse mode keeps of each step for the backward
        pass: ``"contractions"`` (default: the step's input state and its
        contracting matrix products' outputs, e.g. the weight gradients,
        which are parameter-sized; the backward pass recomputes the rest of
        the step once), ``"carry"`` (the input state only: the whole step is
        recomputed), ``"all"`` (every residual, no recomputation) or a
        ``jax.checkpoint`` policy such as
        ``jax.checkpoint_policies.dots_saveable``. For a step that takes a
        gradient itself, storing all residuals of the second-order backward
        pass costs more in memory traffic than recomputing the step's
        batch-sized products, so the default is both light and fast.
        Ignored by forward mode.
      return_state: also return the final training state (computed by the
        same forward pass, not differentiated).

    Memory (``s`` = size of the state, ``r >= s`` = residuals one step keeps
    for its backward pass, ``n`` = hyperparameter scalars):

    | mode | memory |
    | --- | --- |
    | reverse, ``step_policy="contractions"`` (default) | ``O(T (s + c) + r)``, ``c`` the saved products (parameter-sized) |
    | reverse, ``step_policy="carry"`` | ``O(T s + r)`` |
    | reverse, ``step_policy="all"`` | ``O(T r)`` |
    | reverse, ``checkpoint_every=k`` | ``O((T / k) s + k s + r)`` (``"carry"``) or ``O((T / k) s + k r)`` (``"all"``); ``O(sqrt(T))`` at ``k = sqrt(T)`` |
    | forward | ``O(n s)``, independent of ``T`` |

    Time, in training runs of ``T`` steps: forward about ``1 + 1.3 n``;
    reverse a constant multiple independent of ``n`` (a step that itself
    takes a gradient is differentiated to second order): one forward run,
    the recomputation of each step's activations and the transposed step.
    ``checkpoint_every`` adds one more recomputation of each segment.
    ``benchmarks/hypergrad_cost.py`` has the measured ratios for a small MLP
    on CPU.

    Returns:
      ``hg(hparams, init_state) -> (value, grads)``, or ``(value, grads,
      final_state)`` with ``return_state=True``: ``value`` is the ``()``
      validation loss after ``T`` steps and ``grads`` has ``hparams``'
      structure (shapes and dtypes). ``hparams`` is any pytree of float
      arrays (scalars, per-layer or per-parameter arrays); ``init_state`` is
      not differentiated. ``hg`` is pure and compiled on its first call
      for each argument structure and shapes (a ``jax.jit`` inside), so an
      outer loop in Python compiles once; ``jax.vmap`` it, or call it
      inside one's own ``jax.jit``.

    Raises:
      TypeError / ValueError at construction for a non-callable ``step`` or
      ``val_loss``, a ``num_steps`` or ``checkpoint_every`` that is not a
      positive int, or an unknown ``mode``.
    """
    check_callable("step", step)
    check_callable("val_loss", val_loss)
    num_steps = check_positive_int("num_steps", num_steps)
    mode = check_choice("mode", mode, MODES)
    checkpoint_every = _check_checkpoint_every(checkpoint_every)
    step_policy = _check_step_policy(step_policy)
    return_state = check_bool("return_state", return_state)

    def loss_and_state(hparams, init_state, remat):
        if remat:
            state = rollout(step, hparams, init_state, num_steps, checkpoint_every, step_policy)
        else:
            state = rollout(step, hparams, init_state, num_steps)
        return real_scalar("val_loss", val_loss(state, hparams)), state

    def reverse(hparams, init_state):
        (value, state), grads = jax.value_and_grad(
            lambda h: loss_and_state(h, init_state, True), has_aux=True)(hparams)
        return value, grads, state

    def forward(hparams, init_state):
        # grads come back in hparams' dtypes: unravel takes the flat
        # (promoted) dtype, whatever dtype val_loss computes in
        flat, unravel = ravel_pytree(hparams)
        if flat.size == 0:  # nothing to differentiate: no tangent to push
            value, state = loss_and_state(hparams, init_state, False)
            return value, unravel(flat), state
        if flat.size <= _LINEARIZE_MAX:
            return _forward_linearized(step, val_loss, num_steps, hparams, flat, unravel, init_state)

        def f(h):
            return loss_and_state(h, init_state, False)

        def one_direction(v):
            # the primal as given (weak Python floats stay weak); the tangent through unravel
            value, dvalue, state = jax.jvp(f, (hparams,), (unravel(v),), has_aux=True)
            return value, dvalue, state

        # vmap over the n basis tangents: the primal does not depend on the
        # tangent, so it is computed once (out_axes=None) and only the
        # tangents are batched -- memory n copies of the state, none of T.
        basis = jnp.eye(flat.size, dtype=flat.dtype)
        value, dflat, state = jax.vmap(one_direction, out_axes=(None, 0, None))(basis)
        return value, unravel(dflat.astype(flat.dtype)), state

    def hg(hparams, init_state):
        _check_float_leaves(hparams)
        use = mode
        if mode == "auto":
            n = sum(jnp.size(leaf) for leaf in jax.tree_util.tree_leaves(hparams))
            use = "forward" if n <= AUTO_FORWARD_MAX else "reverse"
        value, grads, state = (forward if use == "forward" else reverse)(hparams, init_state)
        return (value, grads, state) if return_state else (value, grads)

    # Compiled here, once per argument shapes: called from a Python loop
    # (an outer gradient descent), an unjitted hg traced and compiled the
    # whole unrolled run anew in every call.
    compiled = jax.jit(hg)

    def hypergradient(hparams, init_state):
        return compiled(hparams, init_state)

    hypergradient.mode = mode
    hypergradient.num_steps = num_steps
    hypergradient.checkpoint_every = checkpoint_every
    hypergradient.step_policy = step_policy
    return hypergradient
