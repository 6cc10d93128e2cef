"""Search spaces: the cube maps, grids, Python values, conditions and validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxhpo import Categorical, Float, Int, Space

# Bounds are normal float32 numbers or 0 (others are refused: see test_float32_bounds).
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).filter(
    lambda v: v == 0 or abs(v) >= np.finfo(np.float32).tiny)


@st.composite
def float_dims(draw):
    if draw(st.booleans()):
        low = draw(st.floats(1e-6, 1e3))
        high = draw(st.floats(low * 1.001 + 1e-9, low * 1e6))
        assume(high > low)
        return Float(low, high, log=True)
    low = draw(finite)
    width = draw(st.floats(1e-3, 1e6))
    assume(np.float32(low) < np.float32(low + width))  # else refused: no float32 between them
    return Float(low, low + width)


@st.composite
def int_dims(draw):
    if draw(st.booleans()):
        low = draw(st.integers(1, 10_000))
        return Int(low, low + draw(st.integers(0, 100_000)), log=True)
    low = draw(st.integers(-100_000, 100_000))
    return Int(low, low + draw(st.integers(0, 100_000)))


labels = st.one_of(st.text(max_size=5), st.integers(-5, 5), st.none(), st.booleans(), st.floats(-3, 3))


def _label_key(v):
    """Labels Categorical tells apart: numbers by value (1 and 1.0 are one label), others by type and value."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ("number", float(v))
    return (type(v).__name__, v)


cat_dims = st.lists(labels, min_size=1, max_size=7, unique_by=_label_key).map(Categorical)
any_dim = st.one_of(float_dims(), int_dims(), cat_dims)


@given(st.lists(any_dim, min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_decode_encode_round_trip(dims, seed):
    space = Space({f"p{i}": d for i, d in enumerate(dims)})
    u = np.asarray(space.sample(jax.random.key(seed), 16))
    params = space.decode(u)
    again = space.decode(space.encode(params))
    for name, d in space.dims.items():
        a, b = np.asarray(params[name]), np.asarray(again[name])
        if isinstance(d, Float):
            span = math.log(d.high / d.low) if d.log else d.high - d.low
            # float32 cube: the round trip is exact to ~1e-6 of the range (relative in log space),
            # and never better than the value's own float32 resolution (2 ulp: 2^-22 relative).
            err = np.abs(np.log(b / a)) if d.log else np.abs(b - a)
            assert (err <= 2e-6 * span + 1e-6 * np.abs(a) * (not d.log) + 2.0**-22 * d.log + 1e-30).all()
        else:
            assert a.dtype == np.int32
            np.testing.assert_array_equal(a, b)


@given(any_dim, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20))
def test_decode_stays_in_bounds_edges_included(d, us):
    space = Space(p=d)
    u = np.asarray(us + [0.0, 1.0, np.nextafter(np.float32(1), np.float32(0))], np.float32)[:, None]
    v = np.asarray(space.decode(u)["p"])
    if isinstance(d, Categorical):
        assert v.dtype == np.int32 and v.min() >= 0 and v.max() < d.cardinality
        assert v[-3] == 0 and v[-2] == d.cardinality - 1
    elif isinstance(d, Int):
        assert v.dtype == np.int32 and v.min() >= d.low and v.max() <= d.high
        assert v[-3] == d.low and v[-2] == d.high
    else:
        assert v.dtype == np.float32 and v.min() >= np.float32(d.low) and v.max() <= np.float32(d.high)


def test_int_bins_have_equal_width():
    d = Int(3, 7)
    u = np.linspace(0, 1, 100_001, dtype=np.float32)
    counts = np.bincount(np.asarray(Space(k=d).decode(u[:, None])["k"]) - 3)
    np.testing.assert_allclose(counts / counts.sum(), 0.2, atol=1e-3)
    # log bins: value v takes the share log((v+1)/v) / log((high+1)/low)
    dl = Int(1, 8, log=True)
    counts = np.bincount(np.asarray(Space(k=dl).decode(u[:, None])["k"]), minlength=9)[1:]
    expect = np.log(np.arange(2, 10) / np.arange(1, 9)) / np.log(9.0)
    np.testing.assert_allclose(counts / counts.sum(), expect, atol=1e-3)


def test_log_float_is_uniform_in_log_space():
    space = Space(lr=Float(1e-4, 1e-1, log=True))
    v = np.asarray(space.decode(np.array([[0.0], [1 / 3], [2 / 3], [1.0]], np.float32))["lr"])
    np.testing.assert_allclose(v, [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-5)


def test_decode_is_jittable_and_vmappable():
    space = Space(a=Float(0, 1), b=Int(0, 9), c=Categorical(["x", "y"]))
    u = jax.random.uniform(jax.random.key(0), (5, 7, 3))
    direct = space.decode(u)
    jitted = jax.jit(space.decode)(u)
    vmapped = jax.vmap(space.decode)(u)
    for n in space.names:
        assert direct[n].shape == (5, 7)
        np.testing.assert_array_equal(direct[n], jitted[n])
        np.testing.assert_array_equal(direct[n], vmapped[n])


def test_space_constructors_names_and_dim():
    a = Space(x=Float(0, 1), n=Int(1, 3))
    b = Space({"x": Float(0, 1), "n": Int(1, 3)})
    assert a == b and hash(a) == hash(b)
    assert a.names == ("x", "n") and a.dim == 2
    assert a.kinds == ("float", "int")
    np.testing.assert_array_equal(a.cardinalities, [0, 3])
    assert a != Space(n=Int(1, 3), x=Float(0, 1))


def test_labels_are_restored_and_kept_apart():
    space = Space(c=Categorical([1, True, None, "1", 1.5]))
    u = (np.arange(5, dtype=np.float32) + 0.5)[:, None] / 5
    out = space.to_python(space.decode(u))
    got = [r["c"] for r in out]
    assert got == [1, True, None, "1", 1.5]
    assert [type(v) for v in got] == [int, bool, type(None), str, float]
    back = space.from_python(out)
    np.testing.assert_array_equal(back["c"], np.arange(5))
    assert space.to_python(space.decode(u[2]))["c"] is None
    # Conditions on labels Categorical tells apart are different spaces (a jit cache
    # keyed by the space must not give one the other's program).
    on = [Space(o=Categorical([1, True]), x=Float(0, 1, when={"o": c})) for c in (1, True, 1)]
    assert on[0] != on[1] and hash(on[0]) != hash(on[1]) and on[0] == on[2] and hash(on[0]) == hash(on[2])
    active = jax.jit(lambda u, s: s.active(s.decode(u))["x"], static_argnums=1)
    u = jnp.array([[0.1, 0.5], [0.9, 0.5]])
    assert active(u, on[0]).tolist() == [True, False] and active(u, on[1]).tolist() == [False, True]


def test_to_python_types_and_from_python_round_trip():
    space = Space(lr=Float(1e-3, 1.0, log=True), layers=Int(1, 5), act=Categorical(["relu", "tanh"]))
    cfg = {"lr": 0.01, "layers": 3, "act": "tanh"}
    p = space.from_python(cfg)
    out = space.to_python(space.decode(space.encode(p)))
    assert out["layers"] == 3 and out["act"] == "tanh" and isinstance(out["layers"], int)
    assert out["lr"] == pytest.approx(0.01, rel=1e-5)
    with pytest.raises(ValueError, match="act"):
        space.from_python({"lr": 0.01, "layers": 3, "act": "gelu"})
    with pytest.raises(ValueError, match="layers"):
        space.from_python({"lr": 0.01, "layers": 9, "act": "relu"})
    with pytest.raises(ValueError, match="missing"):
        space.from_python({"lr": 0.01})


def test_grid_levels_and_completeness():
    space = Space(lr=Float(1e-4, 1e-1, log=True), w=Float(0, 1), n=Int(2, 5), c=Categorical(["a", "b", "c"]))
    g = space.grid(num=4)
    assert g.shape == (4 * 4 * 4 * 3, 4)
    assert len(np.unique(g, axis=0)) == len(g)
    v = space.decode(g)
    np.testing.assert_allclose(np.unique(np.asarray(v["lr"])), [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-5)
    np.testing.assert_allclose(np.unique(np.asarray(v["w"])), [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    np.testing.assert_array_equal(np.unique(np.asarray(v["n"])), [2, 3, 4, 5])
    np.testing.assert_array_equal(np.unique(np.asarray(v["c"])), [0, 1, 2])
    g2 = space.grid(num=2, sizes={"n": 2, "lr": 3})
    assert g2.shape == (3 * 2 * 2 * 3, 4)
    np.testing.assert_array_equal(np.unique(np.asarray(space.decode(g2)["n"])), [2, 5])
    with pytest.raises(ValueError, match="num"):
        space.grid(num=0)
    with pytest.raises(ValueError, match="zz"):
        space.grid(sizes={"zz": 3})


def test_conditional_parameters():
    space = Space(
        optimizer=Categorical(["sgd", "adam", "nesterov"]),
        momentum=Float(0.0, 0.99, when={"optimizer": ["sgd", "nesterov"]}),
        beta2=Float(0.9, 0.9999, when={"optimizer": "adam"}),
        use_wd=Categorical([False, True]),
        wd=Float(1e-6, 1e-2, log=True, when={"use_wd": True}),
    )
    u = jax.random.uniform(jax.random.key(3), (200, space.dim))
    p = space.decode(u)
    act = space.active(p)
    np.testing.assert_array_equal(act["momentum"], np.asarray(p["optimizer"]) != 1)
    np.testing.assert_array_equal(act["beta2"], np.asarray(p["optimizer"]) == 1)
    np.testing.assert_array_equal(act["wd"], np.asarray(p["use_wd"]) == 1)
    rows = space.to_python(p)
    for row in rows:
        assert ("momentum" in row) == (row["optimizer"] != "adam")
        assert ("beta2" in row) == (row["optimizer"] == "adam")
        assert ("wd" in row) == row["use_wd"]
    # fixed shape under jit: every parameter decoded, the mask says which count
    jp = jax.jit(space.decode)(u)
    assert all(jp[n].shape == (200,) for n in space.names)
    # the grid keeps configurations that differ only in inactive parameters once
    g = space.grid(num=3)
    assert len(g) == (2 * 3 + 3) * (1 + 3)
    # a configuration without its inactive parameters encodes
    enc = space.encode(space.from_python({"optimizer": "adam", "beta2": 0.99, "use_wd": False}))
    assert space.to_python(space.decode(enc)) == pytest.approx({"optimizer": "adam", "beta2": 0.99, "use_wd": False})


def test_nested_conditions_follow_the_parent_chain():
    space = Space(
        model=Categorical(["linear", "mlp"]),
        act=Categorical(["relu", "tanh"], when={"model": "mlp"}),
        slope=Float(0.0, 0.3, when={"act": "relu"}),
    )
    p = space.from_python([{"model": "linear"}, {"model": "mlp", "act": "relu", "slope": 0.1},
                           {"model": "mlp", "act": "tanh"}])
    act = space.active(p)
    np.testing.assert_array_equal(act["slope"], [False, True, False])
    np.testing.assert_array_equal(act["act"], [False, True, True])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: Float(1.0, 1.0), "low < high"),
        (lambda: Float(2.0, 1.0), "low < high"),
        (lambda: Float(0.0, 1.0, log=True), "low > 0"),
        (lambda: Float(-1.0, float("inf")), "finite"),
        (lambda: Float(float("nan"), 1.0), "finite"),
        (lambda: Int(3, 2), "low <= high"),
        (lambda: Int(0, 10, log=True), "low > 0"),
        (lambda: Int(0, 2**23), "2\\*\\*22"),
        (lambda: Int(1, 10**6, log=True), "too wide for a float32 cube"),
        (lambda: Float(0.0, 1e39), "float32"),
        (lambda: Float(1e-50, 1.0, log=True), "float32"),
        (lambda: Float(0.0, 1e-39), "float32"),
        (lambda: Float(1.0, 1.0 + 1e-8), "low < high in float32"),
        (lambda: Float(0.0, 2e-38), "2\\*\\*24 times float32's smallest normal"),
        (lambda: Float(-1e-32, 1e-32), "2\\*\\*24 times float32's smallest normal"),
        (lambda: Categorical([]), "empty"),
        (lambda: Categorical(["a", "b", "a"]), "twice"),
        (lambda: Space(), "at least one"),
        (lambda: Space(a=Float(0, 1), b=Float(0, 1, when={"zz": 1})), "unknown parameter 'zz'"),
        (lambda: Space(a=Float(0, 1), b=Float(0, 1, when={"a": 1})), "must be Categorical"),
        (lambda: Space(a=Categorical(["x"]), b=Float(0, 1, when={"a": "y"})), "not a choice"),
        (lambda: Space(a=Categorical(["x"], when={"b": "y"}), b=Categorical(["y"], when={"a": "x"})), "cycle"),
    ],
)
def test_validation_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build",
    [lambda: Float("0", 1), lambda: Int(0.5, 3), lambda: Categorical("abc"), lambda: Categorical([[1], [2]]),
     lambda: Space(a=(0, 1)), lambda: Float(True, 2), lambda: Int(True, 5), lambda: Int(1, np.True_),
     lambda: Float(1, 5, log="no"), lambda: Int(1, 5, log="false")],
)
def test_type_errors(build):
    with pytest.raises(TypeError):
        build()


def test_concrete_0d_arrays_are_bounds_like_numpy_scalars():
    assert Float(jnp.float32(0.5), jnp.array(2.0)) == Float(0.5, 2.0)
    assert Int(jnp.int32(1), jnp.array(5)) == Int(1, 5)
    with pytest.raises(TypeError, match="Float.low must be a real number"):
        Float(jnp.array(True), 1.0)


def test_wrong_trailing_dimension():
    space = Space(a=Float(0, 1), b=Int(0, 3))
    with pytest.raises(ValueError, match="trailing dimension 2"):
        space.decode(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="trailing dimension 2"):
        space.decode(jnp.zeros(()))
    with pytest.raises(ValueError, match="unknown parameter"):
        space.encode({"a": jnp.zeros(3), "b": jnp.zeros(3), "c": jnp.zeros(3)})
    with pytest.raises(ValueError, match="missing"):
        space.encode({"a": jnp.zeros(3)})


def test_values_at_the_bounds_stay_inside_and_come_back():
    """A search that ends on a bound reports a value inside the bounds (not the
    float32 neighbour just outside), and from_python takes it back."""
    space = Space(mom=Float(0.0, 0.99), lr=Float(1e-4, 0.7, log=True), c=Categorical(["a", "b"]))
    corners = space.to_python(space.decode(jnp.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])))
    assert corners[0] == {"mom": 0.0, "lr": 1e-4, "c": "a"}  # float32(0.99) is 0.9900000095...
    assert corners[1]["mom"] == 0.99 and corners[1]["lr"] == pytest.approx(0.7, rel=2e-7)
    for row in corners:
        assert space.to_python(space.decode(space.encode(space.from_python(row)))) == row
    # Interior values: the shortest decimal that is the same float32.
    u = jnp.array([[0.3137, 0.5, 0.0]])
    (row,) = space.to_python(space.decode(u))
    assert np.float32(row["mom"]) == np.asarray(space.decode(u)["mom"])[0] and len(repr(row["mom"])) <= 11


@pytest.mark.parametrize("low, high", [(1_000_000, 1_001_000), (1, 100_000), (100_000_000, 100_000_100),
                                       (2**31 - 100, 2**31 - 1), (16, 4096)])
def test_log_int_round_trips_and_reaches_every_value(low, high):
    d = Int(low, high, log=True)
    v = np.arange(low, high + 1)
    np.testing.assert_array_equal(np.asarray(d.decode(d.encode(jnp.asarray(v, jnp.int32)))), v)
    u = jnp.linspace(0.0, 1.0, 2_000_001, dtype=jnp.float32)
    decoded = np.asarray(d.decode(u))
    assert decoded.min() == low and decoded.max() == high and len(np.unique(decoded)) == high - low + 1
    # Log bins: the value's share of the cube is log((v + 1) / v) / log((high + 1) / low).
    share = np.bincount(decoded - low, minlength=high - low + 1) / u.size
    expected = np.log1p(1.0 / v) / math.log((high + 1) / low)
    np.testing.assert_allclose(share, expected, atol=2.0 / u.size + 1e-6)


@pytest.mark.parametrize("low, high", [(100_000_000, 104_000_000), (10_000_000, 12_000_000), (1, 300_000)])
def test_log_int_bins_a_few_float32_steps_wide_still_round_trip(low, high):
    """Near the width limit a bin is a few float32 steps of the cube: every value's centre
    still decodes to it (plain float32 rounding sent 6% of [1e8, 1.04e8] to the next one down),
    and TPE's bins (its own vectorised copy) agree with the space's."""
    from jaxhpo.strategies.tpe import _Coords

    d = Int(low, high, log=True)
    v = np.arange(low, high + 1)
    centres = jax.jit(d.encode)(jnp.asarray(v, jnp.int32))
    np.testing.assert_array_equal(np.asarray(jax.jit(d.decode)(centres)), v)
    # Op by op too: a bin one float32 apart rounds its midpoint onto an edge.
    np.testing.assert_array_equal(np.asarray(d.decode(d.encode(jnp.asarray(v, jnp.int32)))), v)
    u = jax.random.uniform(jax.random.key(0), (200_000,))
    mid, _ = jax.jit(_Coords(Space(v=d)).int_bins)(u[:, None])
    np.testing.assert_array_equal(np.asarray(d.decode(mid[:, 0])), np.asarray(d.decode(u)))


@pytest.mark.parametrize("log", [False, True])
def test_the_cubes_faces_decode_to_the_bounds_exactly(log):
    """u = 0 and u = 1 give the bounds as float32 numbers (the exp/log map missed 43 of 91
    decade pairs by an ulp: 0.099999994 for 0.1); the slope there is the map's."""
    bounds = [(10.0**i, 10.0**j) for i in range(-9, 5) for j in range(i + 1, 6)] + [(0.3, 0.7), (1e-3, 0.99)]
    bounds += [] if log else [(-2.5, 0.1), (-0.7, -0.3)]
    space = Space({f"p{i}": Float(lo, hi, log=log) for i, (lo, hi) in enumerate(bounds)})
    faces = space.decode(jnp.stack([jnp.zeros(space.dim), jnp.ones(space.dim)]))
    for i, (lo, hi) in enumerate(bounds):
        assert np.asarray(faces[f"p{i}"]).tolist() == [np.float32(lo), np.float32(hi)]
    lo, hi = bounds[0]
    d = Float(lo, hi, log=log)
    slope = jax.vmap(jax.grad(lambda u: d.decode(u)))(jnp.array([0.0, 1.0]))
    expected = np.array([lo, hi]) * math.log(hi / lo) if log else np.full(2, hi - lo)
    np.testing.assert_allclose(np.asarray(slope), expected, rtol=1e-5)


def test_a_float_range_near_float32s_limit_encodes():
    """A width above ~8.5e37 has a subnormal reciprocal, which XLA:CPU flushes to zero."""
    d = Float(-1e38, 1e38)
    v = jnp.array([-1e38, 0.0, 5e37, 1e38], jnp.float32)
    for encode in (d.encode, jax.jit(d.encode)):
        np.testing.assert_allclose(np.asarray(encode(v)), [0.0, 0.5, 0.75, 1.0], atol=1e-6)
    u = jnp.array([0.25, 0.5, 0.75])
    np.testing.assert_allclose(np.asarray(d.encode(d.decode(u))), np.asarray(u), atol=1e-6)


def test_python_values_are_checked():
    space = Space(opt=Categorical(["sgd", "adam"]), momentum=Float(0.0, 0.9, when={"opt": "sgd"}),
                  flag=Categorical([1, True]))
    with pytest.raises(ValueError, match="missing parameter 'momentum', which is active"):
        space.from_python({"opt": "sgd", "flag": 1})
    assert space.from_python({"opt": "adam", "flag": np.True_})["flag"] == 1  # True, not 1
    with pytest.raises(ValueError, match="holds values that are no index in \\[0, 2\\)"):
        space.to_python({"opt": jnp.array([0, -1]), "momentum": jnp.zeros(2), "flag": jnp.zeros(2, jnp.int32)})
    with pytest.raises(ValueError, match="share one shape"):
        space.to_python({"opt": jnp.array([0, 1]), "momentum": jnp.zeros(3), "flag": jnp.zeros(2, jnp.int32)})
    with pytest.raises(TypeError, match="categorical indices, not labels"):
        space.encode({"opt": np.array(["sgd"]), "momentum": np.zeros(1), "flag": np.zeros(1, np.int32)})
    with pytest.raises(ValueError, match="'opt' is categorical; its grid is every choice"):
        space.grid(3, sizes={"opt": 1})


def test_grid_sizes_give_that_many_distinct_integers_on_a_log_scale():
    # 8 points of Int(1, 10, log=True): 7 before. The grids are decoded
    # compiled, as a search decodes them: each dimension a column of one
    # space, padded to one length, so that one program decodes them all.
    dims = [Int(low, high, log=log) for low, high in [(1, 10), (1, 1000), (3, 40), (100, 110)] for log in (False, True)]
    space = Space(**{f"d{j}": d for j, d in enumerate(dims)})
    nums = [sorted({1, 2, 3, 5, 8, d.cardinality - 1, d.cardinality} - {0}) for d in dims]
    rows = max(d.cardinality for d in dims)
    decode = jax.jit(space.decode)
    for k in range(max(map(len, nums))):
        grids = [d.grid_values(ns[min(k, len(ns) - 1)]) for d, ns in zip(dims, nums)]
        out = decode(np.stack([np.pad(g, (0, rows - len(g)), mode="edge") for g in grids], axis=1))
        for j, (d, g) in enumerate(zip(dims, grids)):
            v = np.asarray(out[f"d{j}"])[:len(g)]
            assert len(v) == len(np.unique(v)), (d, len(g))
            assert v[0] == d.low and v[-1] == d.high or len(g) == 1


def test_labels_inside_tuples_keep_their_types_and_numpy_labels_are_plain():
    a = Space(shape=Categorical([(1, 2), (3, 4)]))
    b = Space(shape=Categorical([(True, 2.0), (3.0, 4)]))
    assert a != b and hash(a.dims["shape"]) != hash(b.dims["shape"])
    assert Categorical([(1,), (True,)]).cardinality == 2
    with pytest.raises(ValueError, match="must be distinct"):
        Categorical([(1, 2), (1.0, 2)])
    # np.unique's labels are NumPy scalars: kept as the Python values they stand for
    c = Categorical(list(np.unique(np.array(["rbf", "linear"]))) + [np.float64(0.5)])
    assert c.choices == ("linear", "rbf", 0.5) and [type(x) for x in c.choices] == [str, str, float]
    assert Space(k=c) == Space(k=Categorical(["linear", "rbf", 0.5]))
    # a tuple in when= names several choices; a tuple label goes in a list
    with pytest.raises(ValueError, match=r"put it in a list, when=\{'shape': \[\(1, 2\)\]\}"):
        Space(shape=a.dims["shape"], x=Float(0.0, 1.0, when={"shape": (1, 2)}))
    cond = Space(shape=a.dims["shape"], x=Float(0.0, 1.0, when={"shape": [(3, 4)]}))
    active = cond.active({"shape": jnp.array([0, 1]), "x": jnp.array([0.5, 0.5])})
    assert np.asarray(active["x"]).tolist() == [False, True]


def test_to_python_refuses_values_no_decode_gives():
    space = Space(n=Int(1, 5), x=Float(0.0, 1.0), c=Categorical(["a", "b"]))
    ok = {"n": np.int32(5), "x": np.float32(1.0), "c": np.int32(1)}
    assert space.to_python(ok) == {"n": 5, "x": 1.0, "c": "b"}
    for name, bad in [("n", np.int32(100)), ("n", np.float32(2.7)), ("x", np.float32(37.0)),
                      ("x", np.float32(np.nan)), ("c", np.float32(1.9))]:
        with pytest.raises(ValueError, match=f"to_python input {name!r} holds values"):
            space.to_python({**ok, name: bad})
    with pytest.raises(ValueError, match=r"shape \(\) or \(n,\), got \(2, 3\)"):  # was flattened
        space.to_python(space.decode(np.full((2, 3, 3), 0.5, np.float32)))


def test_decode_refuses_nan_and_non_real_coordinates_and_traced_nan_decodes_as_documented():
    space = Space(n=Int(1, 5), c=Categorical(["a", "b"]), x=Float(0.0, 1.0))
    # (an Int or a Categorical took a nan as its lowest value or first choice, silently)
    with pytest.raises(ValueError, match=r"decode input holds nan coordinates \(first for 'c'\)"):
        space.decode(np.array([[0.5, np.nan, 0.2]], np.float32))
    for bad in (np.array([[0.25 + 0.9j, 0.5, 0.1]]), np.array([["a", "b", "c"]])):
        with pytest.raises(TypeError, match="decode input must hold real cube coordinates, got dtype"):
            space.decode(bad)
    traced = jax.jit(space.decode)(jnp.full((1, 3), jnp.nan))
    assert (int(traced["n"][0]), int(traced["c"][0])) == (1, 0) and np.isnan(float(traced["x"][0]))
    # integer, bool and bfloat16 coordinates are cube points too
    assert space.to_python({k: v[0] for k, v in space.decode(jnp.ones((1, 3), jnp.bfloat16)).items()}) == \
        {"n": 5, "c": "b", "x": 1.0}


def test_log_float_bounds_encode_to_the_faces_whatever_the_batch():
    for d in (Float(1e30, 2e30, log=True), Float(0.1, 1e7, log=True)):
        space = Space(x=d)
        for n in (1, 4, 8, 16):
            u = space.encode({"x": np.full(n, d.high, np.float32)})
            assert np.all(np.asarray(u) == 1.0), (d, n)
            assert np.all(np.asarray(space.decode(u)["x"]) == np.float32(d.high))
            assert np.all(np.asarray(space.encode({"x": np.full(n, d.low, np.float32)})) == 0.0)


def test_decode_is_float32_under_x64():
    space = Space(x=Float(0.0, 1.0), n=Int(1, 3))
    with jax.enable_x64(True):
        out = space.decode(np.array([[0.3, 0.5]], np.float64))
        assert out["x"].dtype == jnp.float32 and out["n"].dtype == jnp.int32


@pytest.mark.parametrize("low, high", [(-(2**31), -(2**31) + 100), (2**31 - 2**22, 2**31 - 1)])
def test_int_bounds_at_the_ends_of_int32_round_trip(low, high):
    d = Int(low, high)
    v = np.unique(np.linspace(low, high, 1000).astype(np.int64))
    np.testing.assert_array_equal(np.asarray(d.decode(d.encode(jnp.asarray(v, jnp.int32)))), v)
    assert int(d.decode(jnp.float32(0.0))) == low and int(d.decode(jnp.float32(1.0))) == high
    for bad in ((-(2**31) - 1, -(2**31) + 5), (2**31 - 5, 2**31)):
        with pytest.raises(ValueError, match=r"Int bounds must fit in int32 \(\[-2\*\*31, 2\*\*31 - 1\]\)"):
            Int(*bad)


def test_a_condition_written_any_way_makes_one_space_and_one_spec():
    # A set's order varies between processes (string hashing), numpy labels
    # are not JSON, and [b, a, a] names what {a, b} names: one space, one spec.
    import json

    from jaxhpo.study.specs import space_to_spec

    opt = Categorical(["sgd", "nesterov", "adam", "rms"])
    ways = [{"sgd", "nesterov", "rms"}, ["rms", "sgd", "nesterov", "sgd"], ("nesterov", "rms", "sgd"),
            list(np.array(["rms", "sgd", "nesterov"]))]
    spaces = [Space(opt=opt, deg=Categorical([2, 3]), mom=Float(0.0, 0.99, when={"deg": np.int64(2), "opt": w}))
              for w in ways]
    spaces.append(Space(opt=opt, deg=Categorical([2, 3]),
                        mom=Float(0.0, 0.99, when={"opt": ["sgd", "nesterov", "rms"], "deg": 2})))
    specs = {json.dumps(space_to_spec(s)) for s in spaces}
    assert len(specs) == 1 and len(set(spaces)) == 1
    assert spaces[0].dims["mom"].when == (("opt", ("sgd", "nesterov", "rms")), ("deg", (2,)))
    assert all(type(a) is str for a in spaces[3].dims["mom"].when[0][1])


def test_canonical_python_checks_a_value_it_leaves_out():
    space = Space(opt=Categorical(["sgd", "adam"]), mom=Float(0.0, 0.99, when={"opt": "sgd"}))
    assert space.canonical_python({"opt": "adam", "mom": 0.5}) == {"opt": "adam"}
    with pytest.raises(ValueError, match="'mom' = 5.0 is outside"):
        space.canonical_python({"opt": "adam", "mom": 5.0})


def test_encode_leaves_out_a_conditional_parameter_only_where_it_is_inactive():
    space = Space(opt=Categorical(["sgd", "adam"]), mom=Float(0.0, 0.99, when={"opt": "sgd"}),
                  nest=Categorical([False, True], when={"opt": "sgd"}), damp=Float(0.0, 1.0, when={"nest": True}))
    u = space.encode({"opt": np.array([1, 1])})  # adam: every other parameter inactive
    np.testing.assert_array_equal(np.asarray(u), [[0.75, 0.5, 0.5, 0.5]] * 2)
    with pytest.raises(ValueError, match=r"leaves out parameter\(s\) \['mom', 'nest'\].*active"):
        space.encode({"opt": np.array([1, 0])})
    with pytest.raises(ValueError, match=r"\['damp'\]"):  # active through its parent's value
        space.encode({"opt": np.array([0]), "mom": np.array([0.5]), "nest": np.array([1])})
    assert space.encode({"opt": np.array([0]), "mom": np.array([0.5]), "nest": np.array([0])}).shape == (1, 4)
    # traced values cannot be checked: the left-out coordinate encodes to 0.5 there
    traced = jax.jit(lambda o: space.encode({"opt": o}))(jnp.array([0]))
    np.testing.assert_array_equal(np.asarray(traced), [[0.25, 0.5, 0.5, 0.5]])


def test_floats_at_float32s_extremes_decode_their_faces():
    """A log range up to float32's largest number decoded u = 1 as nan (exp rounded up to
    inf, then inf - inf); one from near its smallest normal number missed u = 0, the
    face correction being subnormal and flushed to zero."""
    top = float(np.finfo(np.float32).max)
    tiny = float(np.finfo(np.float32).tiny)
    bounds = [(1e-3, top), (1e-3, 3.40281e38), (1e-35, 1.0), (1.5e-38, 1e30), (2e-38, 1e-33), (tiny, 1.0)]
    space = Space({f"p{i}": Float(lo, hi, log=True) for i, (lo, hi) in enumerate(bounds)})
    u = jnp.stack([jnp.zeros(space.dim), jnp.full(space.dim, 0.5), jnp.ones(space.dim)])
    for decode in (space.decode, jax.jit(space.decode)):
        values = decode(u)
        for i, (lo, hi) in enumerate(bounds):
            got = np.asarray(values[f"p{i}"])
            assert got[0] == np.float32(lo) and got[2] == np.float32(hi), (lo, hi, got)
            assert np.float32(lo) < got[1] < np.float32(hi)
    assert space.to_python(space.decode(u[2:]))[0]["p0"] == top
    # the slope is the map's, on the faces and inside (where the face term is the value itself)
    for lo, hi, log in [(1e-35, 1.0, True), (1e-4, 1e2, True), (-1.0, 2.0, False)]:
        at = jnp.array([0.0, 0.3, 0.8, 1.0])
        slope = jax.vmap(jax.grad(Float(lo, hi, log=log).decode))(at)
        decoded = np.exp(np.log(lo) + np.asarray(at, np.float64) * np.log(hi / lo)) if log else None
        expected = decoded * math.log(hi / lo) if log else np.full(4, hi - lo)
        np.testing.assert_allclose(np.asarray(slope), expected, rtol=1e-4)


def test_a_float_width_that_decode_cannot_hold_is_refused():
    # float32(high) - float32(low) is finite, but decode's high - low rounds to inf
    with pytest.raises(ValueError, match="high - low within float32's range"):
        Float(-1.0705570074422415e32, 3.402822542181678e38)
    with pytest.raises(ValueError, match=r"Float.high must be of magnitude at most"):
        Float(0, 10**400)
    with pytest.raises(ValueError, match=r"Float.low must be of magnitude at most"):
        Float(-10**309, 1)


def test_a_grid_too_large_is_refused_before_it_is_built():
    space = Space(x=Float(0.0, 1.0), n=Int(0, 99))
    with pytest.raises(ValueError, match="grid would hold 1000000000000 points"):
        space.grid(num=10**10)
    with pytest.raises(ValueError, match="grid would hold"):
        space.grid(sizes={"x": 10**7, "n": 50})
    assert space.grid(num=3, sizes={"n": 500}).shape == (300, 2)  # an Int's grid is at most every integer


def test_out_of_range_values_encode_clipped_on_a_log_int_too():
    for d in (Int(1, 100, log=True), Int(1, 100)):
        np.testing.assert_array_equal(np.asarray(d.decode(d.encode(jnp.array([-5, 0, 1, 100, 250])))),
                                      [1, 1, 1, 100, 100])


def test_a_floats_decoded_bound_is_taken_back():
    """decode(1) of Float(1e-4, 0.1) is float32(0.1) = 0.10000000149: inside the range as
    the cube holds it, so from_python takes it (values past it still are refused)."""
    space = Space(lr=Float(1e-4, 0.1, log=True))
    top = space.decode(jnp.ones((1, 1)))["lr"][0]
    for v in (top.item(), np.float32(top)):
        np.testing.assert_array_equal(np.asarray(space.from_python({"lr": v})["lr"]), np.float32(0.1))
    for far in (0.1000001, 10**400, -10**400):
        with pytest.raises(ValueError, match="outside"):
            space.from_python({"lr": far})


def test_a_nan_choice_is_refused():
    with pytest.raises(ValueError, match="must not hold NaN"):
        Categorical([float("nan"), 1.0])


def test_compiled_encode_of_a_range_wider_than_float32s_reciprocal_from_zero():
    # (x - 0) * 2**-64 / (w * 2**-64) compiled folds to x * (2**-64 / (w * 2**-64)) = x / w,
    # whose reciprocal 1 / w is subnormal for w > ~8.5e37: every value encoded to 0.
    v = np.array([1e37, 1e38, 2e38], np.float32)
    u = np.array([[0.25], [0.5]], np.float32)
    for low in (0.0, 1e-30):
        space = Space(x=Float(low, 3.4e38))
        np.testing.assert_allclose(jax.jit(space.encode)({"x": v})[:, 0], v / np.float32(3.4e38), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(lambda u: space.encode(space.decode(u)))(u), u, rtol=1e-6)


def test_a_zero_dimensional_array_label_is_its_item():
    space = Space(c=Categorical([1, True]), x=Categorical(["p", "q"], when={"c": True}))
    for true in (True, np.bool_(True), np.asarray(True), jnp.asarray(True)):
        assert space.from_python({"c": true, "x": "p"}) == {"c": 1, "x": 0}
        assert space.canonical_python({"c": true, "x": "p"}) == {"c": True, "x": "p"}
    assert space.from_python({"c": np.asarray(1)})["c"] == 0
    # as choices too
    assert Categorical([np.asarray(True), jnp.asarray(1), np.asarray("a")]).choices == (True, 1, "a")


def test_labels_and_conditions_that_could_never_be_chosen_are_refused():
    with pytest.raises(ValueError, match="must not hold NaN"):
        Categorical([(math.nan, 1), "x"])
    with pytest.raises(ValueError, match="must not hold NaN"):
        Categorical([("a", (2.0, float("nan")))])
    a = Categorical(["x", "y", "z"])
    with pytest.raises(ValueError, match=r"parameter 'c' could never be active: its conditions need 'a' to be one "
                                         r"of \['y'\] and one of \['x'\], which share no choice"):
        Space(a=a, b=Categorical(["p", "q"], when={"a": "x"}), c=Float(0, 1, when={"a": "y", "b": "p"}))
    # Three links of a chain, the third contradicting the first.
    with pytest.raises(ValueError, match="parameter 'd' could never be active"):
        Space(a=a, b=Categorical(["p", "q"], when={"a": ["x", "y"]}), c=Categorical(["r", "s"], when={"b": "p"}),
              d=Float(0, 1, when={"c": "r", "a": "z"}))
    # Overlapping requirements leave the shared choice: d is active exactly where a = "y", b = "p", c = "r".
    space = Space(a=a, b=Categorical(["p", "q"], when={"a": ["x", "y"]}), c=Categorical(["r", "s"], when={"b": "p"}),
                  d=Float(0, 1, when={"c": "r", "a": ["y", "z"]}))
    rows = space.to_python(space.decode(space.grid(3)))
    assert {(r["a"], r["b"], r["c"]) for r in rows if "d" in r} == {("y", "p", "r")}


@pytest.mark.parametrize("n", [1000, 10**6, 3 * 2**20])
def test_int_values_are_as_likely_as_documented_from_the_samplers_float32_lattice(n):
    # jax.random.uniform's float32 draws are the multiples of 2**-23 in [0, 1)
    u = (np.arange(2**23, dtype=np.float64) * 2.0**-23).astype(np.float32)[:, None]
    counts = np.bincount(np.asarray(Space(v=Int(0, n - 1)).decode(u)["v"]), minlength=n)
    k = 2**23 // n
    assert counts.min() == k and counts.max() <= k + 1  # a ratio of at most (k + 1) / k
    draws = np.asarray(jax.random.uniform(jax.random.key(0), (4096,)), np.float64)
    assert np.all(draws * 2**23 % 1 == 0)  # the lattice the samplers draw from


def test_a_dimension_decodes_a_float64_point_as_the_space_does():
    # Under x64, Int and Categorical computed floor(u * n) in float64 where
    # Space.decode rounds u to float32 first: 0.3 - 1e-12 gave bin 2, not 3.
    with jax.enable_x64(True):
        u = jnp.asarray([0.3 - 1e-12, 0.7 - 1e-12, 0.123456789012], jnp.float64)
        dims = dict(n=Int(0, 9), c=Categorical(list("abcdefghij")), g=Int(1, 1000, log=True))
        whole = Space(**dims).decode(jnp.stack([u] * 3, -1))
        for name, d in dims.items():
            np.testing.assert_array_equal(np.asarray(d.decode(u)), np.asarray(whole[name]), err_msg=name)


def test_decode_keeps_the_spaces_parameter_order():
    # Concrete points are decoded by a compiled program, whose dict output
    # JAX returns with sorted keys; the space's order is the cube's.
    space = Space(lr=Float(1e-4, 1e-1, log=True), batch=Int(8, 64), alpha=Float(0.0, 1.0))
    u = np.array([[0.5, 0.5, 0.9]], np.float32)
    assert list(space.decode(u)) == ["lr", "batch", "alpha"]
    with jax.disable_jit():
        assert list(space.decode(u)) == ["lr", "batch", "alpha"]
