"""Store an intermediate once instead of letting XLA recompute it in each consumer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["materialize", "stored"]


def materialize(x: jax.Array) -> jax.Array:
    """``x``, computed once and stored, whatever its consumers.

    XLA fuses an elementwise producer into each of its consumers and, inside
    a fusion, into each use: a threefry hash (some hundred integer operations
    per word) read by five expressions per gene was hashed five times, and an
    elementwise objective feeding the strategy's reductions and the loop's
    failure count was evaluated once per reduction. XLA:CPU drops
    ``optimization_barrier`` before fusion, but never fuses a scatter into its
    users, so an identity scatter (one pass over ``x``) stores it.
    """
    flat = x.reshape(-1)
    out = jnp.zeros_like(flat).at[jnp.arange(flat.size)].set(
        flat, unique_indices=True, indices_are_sorted=True, mode="promise_in_bounds")
    return out.reshape(x.shape)


def stored(x: jax.Array, token: jax.Array) -> jax.Array:
    """``x``, computed by an elementwise kernel of its own and stored.

    ``materialize`` stores ``x`` too, but inside a scatter: XLA:CPU fuses
    ``x``'s producer into the scatter, whose loop it does not vectorise (a
    cheap objective then runs about 1.6x slower than alone). A conditional's
    operand is computed before the branch, by a plain fusion. ``token`` is an
    ``()`` integer XLA cannot evaluate when compiling, e.g. a loop counter;
    it must not depend on a vmapped value, or ``vmap`` turns the conditional
    into a select and nothing is stored. Both branches return ``x``.
    """
    return lax.cond(token >= 0, lambda a: a, lambda a: a + jnp.zeros((), a.dtype), x)
