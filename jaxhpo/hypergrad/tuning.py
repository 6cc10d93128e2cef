"""Gradient-based tuning of a space's continuous hyperparameters, for a population at once.

Each member of a population is a point of the space. Its ``Float``
coordinates are optimised by an optax optimiser on a transform of the cube
coordinate ``u`` (``value = space.decode(u)``, affine in ``log(value)`` for
log-scaled floats), one of ``TRANSFORMS``:

* ``"logit"`` (default): ``z = logit(u)``, ``u = sigmoid(z)``, ``z`` kept
  in ``[logit(1e-6), logit(1 - 1e-6)]``: a bound is approached to within
  ``1e-6`` of the cube, never reached, so the slope ``du/dz`` never
  vanishes (in float32 ``sigmoid`` reaches 1 exactly from ``z ~ 17`` on,
  with a zero derivative: a member there could never come back).
* ``"clip"``: ``z = u``, projected back onto ``[0, 1]`` after every step
  (projected gradient descent); steps are additive in ``u`` (multiplicative
  in the value of a log-scaled float) right up to a bound, which is reached
  in finitely many steps and held while the gradient points past it.

Every iterate stays inside the bounds. A member whose evaluation fails (a
non-finite value or gradient) goes back to its last successful point and
retries half the step that left it, halving again while it fails (down to
``2**-10`` of it: a member that fails for a while whatever its step, e.g. a
stateful objective's warm-up, is not left with a step that has underflowed
to zero); after a success the step doubles back towards the optimiser's
full step. A member whose step still fails at ``2**-10`` (an optimum on the
edge of a failing region, such as the largest learning rate that does not
diverge) keeps trying that point: it has come within ``2**-10`` of a step of
the edge, and its last successful point counts towards the best. A member
whose starting point fails has no successful point or step to go back to:
it stays there, failing at every step (give ``init`` points that evaluate,
or a larger ``popsize``).

Integer and categorical coordinates are held at each member's starting value
(search them with an outer strategy, calling this driver per configuration:
it is jit- and vmap-able inside). All members run together: ``vmap`` of
``value_and_grad`` of the objective, inside one ``lax.scan`` over the steps.
"""

from __future__ import annotations

from functools import partial
from collections.abc import Mapping
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._keys import check_key
from .._rows import where_rows
from .._traced import call_traced, check_returned_like
from ..loop import Result, Trace, _decode_rows
from ..space import Float, Space
from ..strategies.base import float32_values
from ._checks import check_callable, check_choice, check_positive_int

__all__ = ["gradient_tune", "float_mask", "TRANSFORMS"]

TRANSFORMS = ("logit", "clip")
# The smallest fraction of an update retried after failures (see the module docstring).
_MIN_SCALE = 2.0**-10

# One object: the optimiser is a static argument of the compiled search, and a
# new optax.adam(0.1) per call (new closures) would compile it again each time.
_DEFAULT_OPTIMIZER = optax.adam(0.1)

# Cube coordinates are kept this far from 0 and 1 by the logit transform: a
# starting point on a bound has a finite transform, and the iterates' z stay
# within +-_Z_MAX, where sigmoid's float32 slope is still positive.
_EDGE = 1e-6
_Z_MAX = float(np.log1p(-_EDGE) - np.log(_EDGE))


def float_mask(space: Space) -> np.ndarray:
    """``(dim,)`` bool: which cube coordinates ``gradient_tune`` optimises (the ``Float`` ones)."""
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
    return np.array([isinstance(d, Float) for d in space.dims.values()])


def _check_update_arguments(optimizer: optax.GradientTransformation, dim: int) -> None:
    """Refuse an optimiser whose ``update`` needs more than ``(updates, state,
    params)`` of one ``(dim,)`` float32 array, which is all the driver gives
    it (``optax.lbfgs`` also wants the value, the gradient and the objective
    for its line search; ``optax.lookahead`` wants its own params type)."""
    z = jax.ShapeDtypeStruct((dim,), jnp.float32)
    try:
        jax.eval_shape(lambda z: optimizer.update(z, optimizer.init(z), z), z)
    except (TypeError, AttributeError, ValueError) as e:
        raise TypeError(f"optimizer: gradient_tune calls optimizer.update(updates, state, params) with params "
                        f"one float32 array and nothing more, which this optimiser refuses "
                        f"({type(e).__name__}: {e}); an optimiser that needs value=, grad= or value_fn= "
                        f"(optax.lbfgs's line search) or params of its own type (optax.lookahead) is not "
                        f"supported") from e


@partial(jax.jit, static_argnames=("objective", "space", "optimizer", "num_steps", "negate", "stateful",
                                   "has_grad", "transform"))
def _tune(objective, space, optimizer, num_steps, negate, stateful, has_grad, transform, u0, carry0):
    mask = jnp.asarray(float_mask(space))
    float_names = [n for n, d in space.dims.items() if isinstance(d, Float)]
    sign = -1.0 if negate else 1.0

    clip = transform == "clip"

    def decode(z, u_fixed):
        # "clip": z is the cube coordinate itself, kept in [0, 1] by the
        # projection after each step (so no clip here, whose derivative
        # would vanish on a bound).
        u = jnp.where(mask, z if clip else jax.nn.sigmoid(z), u_fixed)
        return u, space.decode(u)

    def call(config, carry):
        if stateful:
            out = call_traced("objective", objective, config, carry, config=config)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise ValueError("with carry the objective must return a pair (value, carry)")
            check_returned_like("objective", "a carry of the structure it was given (per member)", "carry",
                                carry, out[1])
        else:
            out = (call_traced("objective", objective, config, config=config), None)
        value, carry = out
        if has_grad:
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ValueError("with has_grad=True the objective must return a pair (value, grads)")
            value, grads = value
        else:
            if isinstance(value, (tuple, list, dict)):
                raise TypeError(f"objective returned a {type(value).__name__}; with has_grad=False it must return "
                                "one scalar (an objective returning (value, grads), such as an unrolled "
                                "hypergradient, needs has_grad=True)")
            grads = None
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"objective must return a scalar per configuration, got shape {value.shape}")
        if not has_grad and not jnp.issubdtype(value.dtype, jnp.floating):
            # jax.grad refuses it too; cast to float32 it would differentiate to zero everywhere
            raise TypeError(f"objective must return a floating-point value to be differentiated, got {value.dtype} "
                            "(return a float, or its own gradient with has_grad=True)")
        # The next carry is data for the next step, not a path for gradients.
        return sign * float32_values(value), grads, jax.lax.stop_gradient(carry)

    def member_autodiff(z, u_fixed, carry):
        def loss(z):
            u, config = decode(z, u_fixed)
            value, _, carry_new = call(config, carry)
            return value, (u, carry_new)
        (value, (u, carry_new)), gz = jax.value_and_grad(loss, has_aux=True)(z)
        return value, gz, u, carry_new

    def member_given_grad(z, u_fixed, carry):
        # The objective brings its own gradient in config space (e.g. an
        # ``unrolled`` hypergradient, forward or reverse); chain it through
        # the decoding by one VJP.
        def floats(z):
            return {n: decode(z, u_fixed)[1][n] for n in float_names}
        _, vjp = jax.vjp(floats, z)
        u, config = decode(z, u_fixed)
        value, grads, carry_new = call(config, carry)
        missing = [n for n in float_names if not isinstance(grads, dict) or n not in grads]
        if missing:
            raise ValueError(f"with has_grad=True the objective's gradient must be a dict with entries {missing}")
        shapes = {n: jnp.shape(grads[n]) for n in float_names if jnp.size(grads[n]) != 1}
        if shapes:
            raise ValueError(f"with has_grad=True every gradient entry must be a scalar, got shapes {shapes}")
        cot = {n: sign * jnp.asarray(grads[n], jnp.float32).reshape(()) for n in float_names}
        return value, vjp(cot)[0], u, carry_new

    member = jax.vmap(member_given_grad if has_grad else member_autodiff)
    if clip:
        z0 = u0
    else:
        uc = jnp.clip(u0, _EDGE, 1 - _EDGE)
        z0 = jnp.log(uc) - jnp.log1p(-uc)
    opt_state0 = jax.vmap(optimizer.init)(z0)

    def project(z):
        return jnp.where(mask, jnp.clip(z, 0.0, 1.0) if clip else jnp.clip(z, -_Z_MAX, _Z_MAX), z)

    def body(carry, _):
        # z is z_good + scale * upd_good: the last successful point, the
        # update computed there (opt_state is the optimiser's state after
        # it) and the fraction of it taken.
        z, inner, z_good, upd_good, opt_state, scale = carry
        values, grads, u, inner_new = member(z, u0, inner)
        finite = jnp.isfinite(values)
        ok = finite & jnp.all(jnp.isfinite(grads), axis=-1)
        grads = jnp.where(ok[:, None], grads * mask, 0.0)
        updates, opt_state_new = jax.vmap(optimizer.update)(grads, opt_state, z)
        # success: step on from z, at twice the last fraction (at most the
        # whole update); failure: from the last good point, half as far
        scale = jnp.where(ok, jnp.minimum(2.0 * scale, 1.0), jnp.maximum(0.5 * scale, _MIN_SCALE))
        z_good, upd_good = jnp.where(ok[:, None], z, z_good), jnp.where(ok[:, None], updates, upd_good)
        opt_state = where_rows(ok, opt_state_new, opt_state)
        z_new = project(z_good + scale[:, None] * upd_good)
        return (z_new, inner_new, z_good, upd_good, opt_state, scale), (values, u, finite, finite & ~ok)

    start = (z0, carry0, z0, jnp.zeros_like(z0), opt_state0, jnp.ones(z0.shape[:1], z0.dtype))
    (_, inner, *_), (values, us, oks, bad_grads) = jax.lax.scan(body, start, None, length=num_steps)
    return values, us, oks, bad_grads, inner


def _starting_points(init: Any, space: Space, key: Any) -> jax.Array:
    """``init`` as ``(popsize, dim)`` cube points: given as such, or as
    configurations (a dict, or a list of dicts, of Python values with labels)
    whose parameters left out are drawn at random with ``key``."""
    if isinstance(init, Mapping) or (isinstance(init, (list, tuple)) and init
                                     and all(isinstance(c, Mapping) for c in init)):
        pts = np.atleast_2d(space.fixed_coordinates(init))
        free = np.isnan(pts)
        if free.any():
            drawn = np.asarray(space.sample(check_key(key, allow_seed=True), len(pts)))
            pts = np.where(free, drawn, pts)
        return jnp.asarray(pts, jnp.float32)
    try:
        u0 = np.asarray(init, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"init must be (popsize, dim) cube points or configurations (a dict or a list of "
                        f"dicts), got {type(init).__name__} {init!r:.80}") from None
    if u0.ndim != 2 or u0.shape[1] != space.dim or u0.shape[0] < 1:
        raise ValueError(f"init must have shape (popsize, {space.dim}), got {u0.shape}")
    if not np.all((u0 >= 0) & (u0 <= 1)):
        raise ValueError("init must hold cube points in [0, 1]")
    return jnp.asarray(u0)


def gradient_tune(objective: Callable, space: Space, *, key: Any = 0, popsize: int = 16,
                  num_steps: int = 50, optimizer: optax.GradientTransformation | None = None,
                  init: Any = None, carry: Any = None, has_grad: bool = False,
                  maximize: bool = False, transform: str = "logit") -> Result:
    """Tune the continuous hyperparameters of ``space`` by gradient descent, a population at once.

    Args:
      objective: ``f(config) -> ()`` (or, with ``carry``, ``f(config, carry)
        -> ((), carry)``), ``config`` a dict of ``()`` arrays as given by
        ``space.decode`` for one point. Must be differentiable in the
        ``Float`` entries (for a training run: an ``unrolled`` or
        ``implicit`` validation loss, or plain ``jax.grad``-able code).
        Minimised (``maximize=True``: maximised).
      space: the ``Space``. ``Float`` dimensions are tuned; ``Int`` and
        ``Categorical`` ones keep each member's starting value.
      key: a ``jax.random`` key or int seed, for the starting points when
        ``init`` is ``None``.
      popsize: members (ignored when ``init`` is given).
      num_steps: gradient steps per member (objective evaluations).
      optimizer: optax optimiser on ``z`` (see ``transform``); default
        ``optax.adam(0.1)`` (Adam's per-coordinate scaling makes the step
        size in ``z`` independent of the objective's scale; with
        ``"clip"``, a step of ``0.1`` is a tenth of the range). The
        compiled search is kept per optimiser object: build it once and
        pass the same one again (a new ``optax.adam(0.05)`` at every call
        compiles again).
      init: where the members start (then ``popsize`` is its length):
        ``(popsize, dim)`` cube points, or configurations as Python values
        (a dict, or a list of dicts, with labels, as ``minimize``'s
        ``initial`` takes them; parameters a configuration leaves out are
        drawn at random with ``key``). Default: ``popsize`` uniform points.
      carry: optional pytree whose leaves have a leading ``popsize`` axis,
        threaded through the steps per member: each evaluation starts from
        the carry the previous one returned. With it, ``objective`` can
        continue one training run across evaluations (e.g. train ``K`` more
        steps and return the validation loss and the new model), so the
        hyperparameters adapt while the model trains, at the cost of one
        training run per member. The carry is not differentiated. A member
        whose evaluation fails goes back towards its last successful
        hyperparameters (see the module docstring) but takes the carry the
        objective returned (a diverged model stays diverged).
      has_grad: the objective computes its own gradient: it returns
        ``((value, grads), carry)`` / ``(value, grads)`` with ``grads`` a
        dict holding d value / d config for every ``Float`` name (the
        ``(value, grads)`` of an ``unrolled`` hypergradient, which may use
        forward mode or rematerialisation). Otherwise the driver applies
        ``jax.value_and_grad`` to the objective itself.
      maximize: maximise instead.
      transform: ``"logit"`` (default; ``z = logit(u)``, kept within ``1e-6``
        of the cube's faces) or
        ``"clip"`` (``z = u``, projected onto ``[0, 1]`` after each step; use
        it when the optimum may lie on a bound, or for steps of a fixed size
        in ``log(value)`` anywhere in the range). See ``TRANSFORMS``.

    Returns:
      a ``jaxhpo.Result``: ``best_params`` / ``best_value`` / ``best_x`` the
      best configuration evaluated by any member at any step (failed, i.e.
      non-finite, evaluations excluded; a finite value whose gradient is
      not finite competes, while its member steps back as from a failure);
      ``history`` a ``Trace`` with
      ``values`` ``(num_steps, popsize)`` (as the objective returned them,
      failures included), ``x`` ``(num_steps, popsize,
      dim)`` (the evaluated points) and the running best; ``state`` a dict
      with ``"final_x"`` ``(popsize, dim)`` (the points evaluated last),
      ``"final_values"`` ``(popsize,)`` (their values), ``"carry"`` (the
      final carry, or ``None``) and ``"nonfinite_gradients"`` ``(num_steps,
      popsize)`` bool (a finite value whose gradient was not, e.g. from a
      ``jnp.where`` whose unselected branch takes a ``sqrt`` of a negative
      number: the member stepped back as from a failure).
      ``num_evaluations = popsize * num_steps`` objective gradients.
    """
    check_callable("objective", objective)
    if not isinstance(space, Space):
        raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
    num_steps = check_positive_int("num_steps", num_steps)
    transform = check_choice("transform", transform, TRANSFORMS)
    if optimizer is None:
        optimizer = _DEFAULT_OPTIMIZER
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    _check_update_arguments(optimizer, space.dim)
    for name, flag in (("has_grad", has_grad), ("maximize", maximize)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    if not float_mask(space).any():
        raise ValueError("space has no Float dimension: nothing for gradient_tune to tune")
    if init is None:
        popsize = check_positive_int("popsize", popsize)
        u0 = space.sample(check_key(key, allow_seed=True), popsize)
    else:
        u0 = _starting_points(init, space, key)
        popsize = u0.shape[0]
    stateful = carry is not None
    if stateful:
        for leaf in jax.tree_util.tree_leaves(carry):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != popsize:
                raise ValueError(f"every carry leaf needs a leading popsize axis ({popsize}), got shape {jnp.shape(leaf)}")
    values, us, oks, bad_grads, inner = _tune(objective, space, optimizer, num_steps, bool(maximize), stateful,
                                              bool(has_grad), transform, u0, carry)
    raw, us, oks = np.asarray(values), np.asarray(us), np.asarray(oks)
    values = np.where(oks, raw, np.inf)  # for ranking; the history keeps what the objective returned
    sign = -1.0 if maximize else 1.0
    running = np.minimum.accumulate(values.min(axis=1))
    history = Trace(
        best_value=sign * running,
        num_valid=np.full((num_steps,), popsize, np.int32),
        num_failed=(~oks).sum(axis=1).astype(np.int32),
        values=sign * raw,
        valid=np.ones_like(oks),
        x=us,
    )
    found = bool(np.isfinite(values).any())
    flat = int(np.argmin(values)) if found else 0
    best_x = us.reshape(-1, space.dim)[flat]
    best_value = float(sign * values.reshape(-1)[flat]) if found else float("nan")
    return Result(
        # decoded compiled, as minimize decodes its best (op by op, a log-scale
        # value can differ in its last bits from the one the objective was given)
        best_params=space.to_python({k: v[0] for k, v in _decode_rows(space, best_x[None]).items()})
        if found else None,
        best_value=best_value,
        best_x=best_x,
        history=history,
        state={"final_x": us[-1], "final_values": sign * raw[-1], "carry": inner,
               "nonfinite_gradients": np.asarray(bad_grads)},
        num_evaluations=popsize * num_steps,
        num_failed=int((~oks).sum()),
    )
