"""Small helpers shared by several test modules."""

import functools
import importlib.util
from pathlib import Path

import jax

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str):
    """The module ``examples/<name>.py``, imported from its file (examples are not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_example", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
