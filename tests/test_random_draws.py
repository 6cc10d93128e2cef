"""The fast random draws of the evolutionary strategies equal jax.random's."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo._materialize import materialize
from jaxhpo.strategies._variation import normal, random_bits, uniform

KEY = jax.random.key(7)


def test_bits_and_uniforms_equal_jax_random_eagerly_and_under_jit():
    shape = (33, 5)
    want_bits = jax.random.bits(KEY, shape, jnp.uint32)
    want_u = jax.random.uniform(KEY, shape, jnp.float32, -2.0, 3.0)
    np.testing.assert_array_equal(random_bits(KEY, shape), want_bits)
    np.testing.assert_array_equal(jax.jit(lambda k: random_bits(k, shape))(KEY), want_bits)
    np.testing.assert_array_equal(uniform(KEY, shape, jnp.float32, -2.0, 3.0), want_u)
    # Consumed several times inside one fusion, as the GA's operators do.
    both = jax.jit(lambda k: (lambda w: (w >> 3) + (w & 7) * (w[:, :1] ^ w))(random_bits(k, shape)))(KEY)
    np.testing.assert_array_equal(both, (want_bits >> 3) + (want_bits & 7) * (want_bits[:, :1] ^ want_bits))


def test_normals_match_jax_random_within_float32_tolerance():
    z = normal(KEY, (4096,))
    np.testing.assert_allclose(z, jax.random.normal(KEY, (4096,)), rtol=1e-5, atol=1e-6)


def test_materialize_is_the_identity_under_jit_vmap_and_grad():
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(jax.jit(materialize)(x), x)
    np.testing.assert_array_equal(jax.vmap(materialize)(x), x)
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(materialize(v) ** 2))(x), 2 * x)
