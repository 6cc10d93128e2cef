"""Dtypes: the same key gives the same search with x64 on (every random draw in jaxhpo
names its dtype: one left to the default takes float64 / int64 under x64,
which reads the key's bits differently; CMA-ES excepted, whose arithmetic and
draws run in the default float by design), and narrow or wide floats come out float32."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxhpo
from jaxhpo import Categorical, Float, Int, Space
from jaxhpo.training import exploit_parents, explore

# Where each draw takes its dtype positionally (after the key).
_DTYPE_POSITION = {"uniform": 2, "normal": 2, "exponential": 2, "gumbel": 2, "bits": 2, "truncated_normal": 4,
                   "randint": 4}


def _draws_without_dtype(path: pathlib.Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and ast.unparse(node.func.value) == "jax.random"):
            continue
        name = node.func.attr
        if name in _DTYPE_POSITION:
            typed = any(k.arg == "dtype" for k in node.keywords) or len(node.args) > _DTYPE_POSITION[name]
        elif name == "bernoulli":  # its dtype is p's: a Python number becomes float64 under x64
            typed = len(node.args) > 1 and not isinstance(node.args[1], ast.Constant)
        else:
            continue
        if not typed:
            found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_every_draw_in_the_library_names_its_dtype():
    root = pathlib.Path(jaxhpo.__file__).parent
    found = [hit for path in sorted(root.rglob("*.py")) for hit in _draws_without_dtype(path)]
    assert not found, "\n".join(found)


def test_pbt_exploit_and_explore_draw_the_same_under_x64():
    space = Space(lr=Float(1e-4, 1e-1, log=True), width=Int(1, 6), opt=Categorical(["sgd", "adam", "rmsprop"]))
    hp = space.decode(space.sample(jax.random.key(1), 16))
    losses = jnp.linspace(1.0, 2.0, 16).at[3].set(jnp.nan)

    def draws():
        parents = exploit_parents(jax.random.key(2), losses, 4)
        moved = explore(jax.random.key(3), space, hp, jnp.arange(16) % 2 == 0, 0.3)
        return [np.asarray(parents)] + [np.asarray(moved[k]) for k in space.names]

    plain = draws()
    with jax.enable_x64(True):
        wide = draws()
    for a, b in zip(plain, wide):
        np.testing.assert_array_equal(a, b)


def test_a_float_dimension_decodes_float64_points_to_float32_under_x64():
    with jax.enable_x64(True):
        v = Float(0.1, 0.99).decode(jnp.asarray([0.0, 0.5, 1.0], jnp.float64))
    assert v.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(v), np.float32([0.1, 0.545, 0.99]))


def test_narrow_float_values_pass_without_a_warning():
    # finfo(float16).max against float32's largest used to cast 3.4e38 to float16 (an overflow warning).
    import warnings

    from jaxhpo.strategies.base import float32_values
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in (jnp.float16, jnp.bfloat16):
            out = float32_values(jnp.asarray([1.5, -2.0, jnp.inf], dtype))
            assert out.dtype == jnp.float32
            np.testing.assert_array_equal(np.asarray(out), [1.5, -2.0, np.inf])
