"""Small helpers shared by several test modules."""

import contextlib
import functools
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxhpo import Float, Int, Space

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """The module ``examples/<name>.py``, imported from its file (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def compiles_during():
    """A list that collects one entry per XLA compile made inside the ``with`` block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@functools.lru_cache(maxsize=None)
def counted_protocol(strategy, vmapped: bool = False):
    """Jitted ask/tell for ``strategy`` (vmapped over seeds when ``vmapped``) and how often each was traced.

    Cached per strategy, so tests with equal settings share the compiled functions.
    """
    traces = {"ask": 0, "tell": 0}

    def ask(key, state):
        traces["ask"] += 1
        return strategy.ask(key, state)

    def tell(state, x, values):
        traces["tell"] += 1
        return strategy.tell(state, x, values)

    if vmapped:
        ask, tell = jax.vmap(ask), jax.vmap(tell)
    return jax.jit(ask), jax.jit(tell), traces


# A toy trainer shared by the trainer-search tests: gradient descent on
# ||w - target||^2 / 2 plus a configuration-dependent pull, so that rankings
# change with the budget (the point of successive halving); ``n`` counts the
# steps trained.
TOY_SPACE = Space(lr=Float(0.01, 0.5, log=True), shift=Int(0, 3))
TOY_TARGET = jnp.array([1.0, -2.0, 0.5], jnp.float32)


def toy_init(key, hp):
    return {"w": jax.random.normal(key, (3,), jnp.float32), "n": jnp.int32(0)}


def toy_step(state, hp):
    g = state["w"] - TOY_TARGET + 0.05 * hp["shift"].astype(jnp.float32)
    return {"w": state["w"] - hp["lr"] * g, "n": state["n"] + 1}


def toy_error(state):
    return jnp.sum((state["w"] - TOY_TARGET) ** 2)


def assert_trees_equal(a, b):
    """Every leaf of ``a`` equals ``b``'s bit for bit (typed keys by their key data)."""
    from jaxhpo._keys import key_bits

    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(key_bits(x), key_bits(y))
