"""TPE: the Parzen estimators against Optuna's and against integration, the split,
the masked buffer, and search behaviour (seeds vmapped; counts stated per test)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo.strategies import tpe
from jaxhpo.strategies.tpe import TPE

MIXED = jaxhpo.Space(f=jaxhpo.Float(0.0, 1.0), n=jaxhpo.Int(0, 6), c=jaxhpo.Categorical([0, 1, 2]))
FLOATS = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(1e-3, 1.0, log=True))
# Integers with many values: no ties among observations, whose order within a
# tie Optuna leaves to numpy's (unstable) sort.
ORACLE = jaxhpo.Space(f=jaxhpo.Float(0.0, 1.0), n=jaxhpo.Int(0, 99_999), c=jaxhpo.Categorical([0, 1, 2]))
LOGINT = jaxhpo.Space(m=jaxhpo.Int(1, 40, log=True), c=jaxhpo.Categorical(["x", "y", "z", "w"]))


def _buffer(space, n_real, capacity, seed):
    """A shuffled buffer: ``n_real`` observations at random rows, padding full of garbage.

    Returns ``(x (C, dim), member (C,), number (C,), real_rows)``; ``number``
    orders the real rows by age.
    """
    rng = np.random.default_rng(seed)
    coords = tpe._Coords(space)
    real = np.array(coords.snap(jnp.asarray(rng.uniform(size=(n_real, space.dim)), jnp.float32)))
    # Cluster a few observations so that some bandwidths hit the magic clip.
    if n_real >= 3:
        real[: n_real // 3] = np.clip(real[0] + 0.01 * rng.normal(size=(n_real // 3, space.dim)), 0, 1)
        real = np.array(coords.snap(jnp.asarray(real, jnp.float32)))
    x = rng.normal(size=(capacity, space.dim)).astype(np.float32) * 50.0
    x[::7] = np.nan
    rows = rng.permutation(capacity)[:n_real]
    x[rows] = real
    member = np.zeros(capacity, bool)
    member[rows] = True
    number = rng.integers(-5, 5, capacity).astype(np.int32)
    number[rows] = np.arange(n_real)
    return x, member, number, rows


@functools.lru_cache(maxsize=None)
def _density_fn(space, joint, **fit_kw):
    coords = tpe._Coords(space)

    @jax.jit
    def f(x, member, number, points):
        p = tpe.fit_parzen(coords, x, member, number, 1.0, **dict(fit_kw))
        return tpe.log_density(coords, p, points, joint)

    return f


def _optuna_estimator(space, obs_cube, **kw):
    """Optuna's _ParzenEstimator on the same observations (cube coordinates decoded)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
    from optuna.samplers._tpe.sampler import default_weights

    dists, obs = {}, {}
    dec = space.decode(jnp.asarray(obs_cube))
    for name, d in space.dims.items():
        if isinstance(d, jaxhpo.Float):
            # Float(0, 1) is the identity map; densities are then comparable.
            dists[name] = FloatDistribution(d.low, d.high)
        elif isinstance(d, jaxhpo.Int):
            dists[name] = IntDistribution(d.low, d.high)
        else:
            dists[name] = CategoricalDistribution(list(range(d.cardinality)))
        obs[name] = np.asarray(dec[name], np.float64)
    params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True,
                                        consider_endpoints=kw.get("consider_endpoints", False),
                                        weights=default_weights, multivariate=True)
    return _ParzenEstimator(obs, dists, params), dists


@pytest.mark.parametrize("n_real", [0, 1, 5, 40])
def test_parzen_matches_optuna_joint_and_marginals(n_real):
    # 40 observations > 25 exercise Optuna's ramp weights for old observations.
    x, member, number, rows = _buffer(ORACLE, n_real, 64, seed=n_real)
    obs = x[rows][np.argsort(number[rows])]  # Optuna sees them in trial order
    pts = np.asarray(tpe._Coords(ORACLE).snap(jax.random.uniform(jax.random.key(3), (200, 3))))
    dec = {k: np.asarray(v, np.float64) for k, v in ORACLE.decode(jnp.asarray(pts)).items()}

    ours = np.asarray(_density_fn(ORACLE, True)(x, member, number, pts))
    pe, _ = _optuna_estimator(ORACLE, obs)
    np.testing.assert_allclose(ours, pe.log_pdf(dec), rtol=1e-4, atol=2e-4)

    # Independent TPE: each coordinate's marginal is Optuna's one-parameter estimator.
    marg = np.asarray(_density_fn(ORACLE, False)(x, member, number, pts))
    for j, name in enumerate(ORACLE.names):
        sub = jaxhpo.Space({name: ORACLE[name]})
        pe1, _ = _optuna_estimator(sub, obs[:, j : j + 1])
        np.testing.assert_allclose(marg[:, j], pe1.log_pdf({name: dec[name]}), rtol=1e-4, atol=2e-4)


def test_parzen_consider_endpoints_matches_optuna():
    x, member, number, rows = _buffer(ORACLE, 12, 64, seed=1)
    obs = x[rows][np.argsort(number[rows])]
    pts = np.asarray(tpe._Coords(ORACLE).snap(jax.random.uniform(jax.random.key(4), (100, 3))))
    dec = {k: np.asarray(v, np.float64) for k, v in ORACLE.decode(jnp.asarray(pts)).items()}
    ours = np.asarray(_density_fn(ORACLE, True, consider_endpoints=True)(x, member, number, pts))
    pe, _ = _optuna_estimator(ORACLE, obs, consider_endpoints=True)
    np.testing.assert_allclose(ours, pe.log_pdf(dec), rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("joint", [True, False])
def test_density_integrates_to_one_2d_floats(joint):
    x, member, number, _ = _buffer(FLOATS, 12, 24, seed=5)
    g = (np.arange(400) + 0.5) / 400  # midpoint rule; h = 1/400 << min bandwidth 1/14
    pts = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    logp = np.asarray(_density_fn(FLOATS, joint)(x, member, number, pts))
    if not joint:
        logp = logp.sum(-1)  # the independent model is the product of its marginals
    assert np.exp(logp).mean() == pytest.approx(1.0, abs=2e-3)
    # 1-D: the marginal of one coordinate alone.
    marg = np.asarray(_density_fn(FLOATS, False)(x, member, number, pts[:400]))  # b varies
    assert np.exp(marg[:, 1]).mean() == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("space", [MIXED, LOGINT], ids=["float_int_cat", "logint_cat"])
def test_density_sums_to_one_over_bins_and_categories(space):
    x, member, number, _ = _buffer(space, 9, 16, seed=2)
    levels = []
    for d in space.dims.values():
        if isinstance(d, jaxhpo.Float):
            levels.append((np.arange(1000) + 0.5) / 1000)
        else:
            levels.append(np.asarray(d.grid_values(None)))  # every bin centre / category
    pts = np.stack(np.meshgrid(*levels, indexing="ij"), -1).reshape(-1, space.dim).astype(np.float32)
    weight = np.prod([1.0 / len(lv) if isinstance(d, jaxhpo.Float) else 1.0
                      for lv, d in zip(levels, space.dims.values())])
    for joint in (True, False):
        logp = np.asarray(_density_fn(space, joint)(x, member, number, pts))
        if not joint:
            logp = logp.sum(-1)
        assert np.exp(logp).sum() * weight == pytest.approx(1.0, abs=2e-3)


def test_split_size_is_optunas_gamma():
    from optuna.samplers._tpe.sampler import default_gamma

    n = np.arange(0, 400)
    ours = np.asarray(jax.vmap(lambda k: tpe.num_good(k, jnp.float32(0.1), 25))(n))
    np.testing.assert_array_equal(ours, [default_gamma(int(k)) for k in n])

    # On a buffer with failures and padding: the good set is the lowest finite
    # values, of Optuna's size counted over finite observations only.
    rng = np.random.default_rng(0)
    cap = 256
    values = rng.normal(size=cap).astype(np.float32)
    values[rng.random(cap) < 0.2] = np.inf
    split = jax.jit(lambda v, ok: tpe.split_good_bad(v, ok, jnp.float32(0.1), 25))
    for count in (0, 7, 30, 121, 256):
        valid = np.arange(cap) < count
        good, bad = (np.asarray(a) for a in split(values, valid))
        finite = valid & np.isfinite(values)
        assert good.sum() == min(default_gamma(int(finite.sum())), finite.sum())
        assert not (good & bad).any() and ((good | bad) == valid).all()
        assert np.isfinite(values[good]).all(), "a failed observation entered the good set"
        if good.any() and (finite & ~good).any():
            assert values[good].max() <= values[finite & ~good].min()


def test_padding_rows_never_affect_the_density():
    x, member, number, rows = _buffer(MIXED, 20, 64, seed=9)
    pts = np.asarray(jax.random.uniform(jax.random.key(0), (300, 3)))
    for joint in (True, False):
        padded = np.asarray(_density_fn(MIXED, joint)(x, member, number, pts))
        compact = np.asarray(_density_fn(MIXED, joint)(x[rows], member[rows], number[rows], pts))
        np.testing.assert_allclose(padded, compact, rtol=1e-5, atol=1e-5)
        assert np.isfinite(padded).all()


SMOOTH = jaxhpo.Space({f"x{i}": jaxhpo.Float(-5.0, 5.0) for i in range(4)})
OPT = jnp.array([1.3, -2.1, 0.7, 2.9])


def smooth(p):
    x = jnp.stack([p[f"x{i}"] for i in range(4)])
    return jnp.sum((x - OPT) ** 2)


SEEDS = 16


@functools.lru_cache(maxsize=None)
def _vmapped_runs(strategy, objective, generations, seeds):
    """Final best values ``(seeds,)`` and every point ``(seeds, G, popsize, dim)``."""
    keys = jax.random.split(jax.random.key(42), seeds)

    def one(k):
        trace = jaxhpo.run(strategy, objective, k, generations, history="all")[1]
        return trace.best_value[-1], trace.x

    best, xs = jax.jit(jax.vmap(one))(keys)
    return np.asarray(best), np.asarray(xs)


def test_inactive_values_say_nothing():
    """A kernel's coordinate whose parameter its point made inactive is the prior's: the
    values such rows happen to hold change neither estimator nor what is drawn from it."""
    space = jaxhpo.Space(c=jaxhpo.Categorical(["a", "b"]), m=jaxhpo.Float(0.0, 1.0, when={"c": "a"}))
    s = TPE(space, 1, capacity=32, n_startup=0)
    x = np.stack([np.where(np.arange(20) < 10, 0.75, 0.25), np.linspace(0.02, 0.98, 20)], 1).astype(np.float32)
    other = x.copy()
    other[:10, 1] = 0.05  # the 10 best rows have c = "b": m is inactive there
    values = jnp.asarray(np.where(np.arange(20) < 10, 0.0, 1.0) + 0.01 * np.arange(20), jnp.float32)

    @jax.jit
    def fit_and_draw(x):
        l, g = s.estimators(s.warm_start(s.init(jax.random.key(0)), x, values))
        pts = jnp.array([[0.75, 0.05], [0.75, 0.9], [0.25, 0.5]], jnp.float32)
        return tpe.log_density(s._coords, l, pts), tpe.log_density(s._coords, g, pts)

    for a, b in zip(fit_and_draw(jnp.asarray(x)), fit_and_draw(jnp.asarray(other))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_conditional_parameters_kernels_are_optunas_fitted_on_its_active_observations():
    """Bandwidth floor and categorical smoothing count the observations in which the
    parameter is active, as Optuna's estimator of that parameter does: 4 active of 36,
    clustered, so the floor is 1/6 (it was 1/38 when every observation counted)."""
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
    from optuna.samplers._tpe.sampler import default_weights
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = jaxhpo.Space(c=jaxhpo.Categorical(["a", "b"]), m=jaxhpo.Float(0.0, 1.0, when={"c": "a"}),
                         k=jaxhpo.Categorical([0, 1, 2], when={"c": "a"}))
    coords = tpe._Coords(space)
    rng = np.random.default_rng(0)
    active = np.zeros(36, bool)
    active[[3, 11, 20, 29]] = True
    m = np.where(active, 0.0, rng.uniform(size=36))
    m[active] = [0.40, 0.42, 0.45, 0.47]
    k = np.where(active, 0.0, rng.uniform(size=36))
    k[active] = [1 / 6, 1 / 2, 1 / 2, 5 / 6]  # categories 0, 1, 1, 2
    x = np.stack([np.where(active, 0.25, 0.75), m, k], 1).astype(np.float32)
    fit = jax.jit(lambda x: tpe.fit_parzen(coords, x, jnp.ones(36, bool), jnp.arange(36), 1.0))
    ours = fit(jnp.asarray(x))
    j_m = list(coords.nidx).index(space.names.index("m"))
    j_k = list(coords.cidx).index(space.names.index("k"))

    params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False,
                                        weights=default_weights, multivariate=False)
    pe_m = _ParzenEstimator({"m": m[active]}, {"m": FloatDistribution(0.0, 1.0)}, params)
    pe_k = _ParzenEstimator({"k": np.array([0.0, 1.0, 1.0, 2.0])}, {"k": CategoricalDistribution([0, 1, 2])}, params)
    np.testing.assert_allclose(np.asarray(ours.sigmas)[:36][active, j_m],
                               pe_m._mixture_distribution.distributions[0].sigma[:4], rtol=1e-5)
    probs = pe_k._mixture_distribution.distributions[0].weights[:4]  # (4, 3)
    hit, miss = np.exp(np.asarray(ours.cat_hit)[:36][active, j_k]), np.exp(np.asarray(ours.cat_miss)[:36][active, j_k])
    np.testing.assert_allclose(hit, probs[np.arange(4), [0, 1, 1, 2]], rtol=1e-5)
    np.testing.assert_allclose(miss, probs[np.arange(4), [1, 0, 0, 0]], rtol=1e-5)
    # Independent draws of m follow that estimator: its variance (about 0.03), not one
    # pulled towards the prior's 1/12 by the 32 inactive observations.
    draws = jax.jit(lambda x, key: tpe.sample_parzen(
        coords, tpe.fit_parzen(coords, x, jnp.ones(36, bool), jnp.arange(36), 1.0), key, 8000, joint=False))
    got = np.asarray(draws(jnp.asarray(x), jax.random.key(0)))[:, space.names.index("m")]
    grid = np.linspace(0.0, 1.0, 4001)
    dens = np.exp(pe_m.log_pdf({"m": grid}))
    mean = np.sum(grid * dens) / np.sum(dens)
    var = np.sum((grid - mean) ** 2 * dens) / np.sum(dens)
    assert abs(got.mean() - mean) < 4 * np.sqrt(var / 8000) and abs(got.var() / var - 1) < 0.07, (got.var(), var)


def test_a_conditional_parameters_marginal_is_optunas_estimator_of_its_active_observations():
    """Independent TPE: a parameter's marginal mixture leaves out the observations that make
    it inactive and ramps the age weights over those in which it is active (30 of 60 here,
    so past Optuna's 25 the oldest active ones weigh less), as Optuna's estimator fitted on
    the active observations does. Before, the inactive ones stayed in as prior kernels, and
    the ramp followed all 60."""
    from optuna.samplers._tpe.parzen_estimator import _ParzenEstimator, _ParzenEstimatorParameters
    from optuna.samplers._tpe.sampler import default_weights
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    space = jaxhpo.Space(c=jaxhpo.Categorical(["a", "b"]), m=jaxhpo.Float(0.0, 1.0, when={"c": "a"}),
                         k=jaxhpo.Categorical([0, 1, 2], when={"c": "a"}))
    coords = tpe._Coords(space)
    rng = np.random.default_rng(1)
    active = rng.permutation(np.arange(60) % 2 == 0)
    m = rng.uniform(size=60)
    kcat = rng.integers(0, 3, size=60)
    x = np.stack([np.where(active, 0.25, 0.75), m, (kcat + 0.5) / 3], 1).astype(np.float32)
    pts_m = np.linspace(0.01, 0.99, 9)
    pts = np.stack([np.full(9, 0.25), pts_m, (np.arange(9) % 3 + 0.5) / 3], 1).astype(np.float32)
    fit = jax.jit(lambda x: tpe.log_density(coords, tpe.fit_parzen(coords, x, jnp.ones(60, bool), jnp.arange(60),
                                                                   1.0), jnp.asarray(pts), joint=False))
    ours = np.asarray(fit(jnp.asarray(x)))

    params = _ParzenEstimatorParameters(prior_weight=1.0, consider_magic_clip=True, consider_endpoints=False,
                                        weights=default_weights, multivariate=False)
    pe_m = _ParzenEstimator({"m": m[active]}, {"m": FloatDistribution(0.0, 1.0)}, params)
    pe_k = _ParzenEstimator({"k": kcat[active].astype(float)}, {"k": CategoricalDistribution([0, 1, 2])}, params)
    np.testing.assert_allclose(ours[:, space.names.index("m")], pe_m.log_pdf({"m": pts_m}), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours[:, space.names.index("k")], pe_k.log_pdf({"k": np.arange(9.0) % 3}),
                               rtol=1e-4, atol=1e-5)


def test_batches_on_a_conditional_space_weigh_pending_points_per_parameter():
    """Independent TPE in batches of 4 on a conditional space: the pending points join each
    parameter's marginal where they make it active (per-coordinate normalisers); 3 seeds,
    vmapped: every proposal in the cube, nothing non-finite in the state, the same search
    for the same key, and the batch's rows distinct."""
    space = jaxhpo.Space(c=jaxhpo.Categorical(["a", "b"]), m=jaxhpo.Float(0.0, 1.0, when={"c": "a"}),
                         k=jaxhpo.Int(0, 9, when={"c": "b"}))
    s = TPE(space, 4, capacity=32, n_startup=4)

    def f(p):
        return jnp.where(p["c"] == 0, (p["m"] - 0.3) ** 2, 0.05 + 0.01 * (p["k"] - 4.0) ** 2)

    run = jax.jit(jax.vmap(lambda k: jaxhpo.run(s, f, k, 8, history="all")))
    keys = jax.random.split(jax.random.key(5), 3)
    (state, trace), (_, again) = run(keys), run(keys)
    x = np.asarray(trace.x)
    assert np.all((x >= 0) & (x <= 1)) and np.array_equal(x, np.asarray(again.x))
    assert np.all(np.isfinite(np.asarray(state.y)[:, :32]))
    later = x[:, 1:]  # model batches: no two rows of a batch alike
    assert all(len({tuple(r) for r in b.tolist()}) == 4 for b in later.reshape(-1, 4, 3))
    assert np.all(np.asarray(trace.best_value)[:, -1] < 0.05)


@pytest.mark.parametrize("consider_endpoints", [False, True])
def test_a_pending_points_kernel_is_the_one_it_gets_as_a_member_of_the_bad_set(consider_endpoints):
    """Constant liar: a point being evaluated gets the bandwidth it would get as one more
    member (Optuna adds it to the set), the inner gap beyond every member when endpoints
    are not considered (it got the gap to the face: 0.3 for 0.7 above [0.3, 0.6]). No
    floor (magic_clip=False): the pending kernel's counts leave the pending points out."""
    coords = tpe._Coords(FLOATS)
    members = jnp.array([[0.3, 0.3], [0.6, 0.6]], jnp.float32)
    pending = jnp.array([[0.1, 0.7], [0.45, 0.4], [0.7, 0.1]], jnp.float32)

    @jax.jit
    def pending_and_as_member(members, pending):
        bad = tpe.fit_parzen(coords, members, jnp.ones(2, bool), jnp.arange(2), 1.0,
                             consider_endpoints=consider_endpoints, magic_clip=False)
        got = tpe._pending_parzen(coords, bad, pending, consider_endpoints, False, "optuna", 2).sigmas
        as_member = jax.vmap(lambda z: tpe.fit_parzen(
            coords, jnp.concatenate([members, z[None]]), jnp.ones(3, bool), jnp.arange(3), 1.0,
            consider_endpoints=consider_endpoints, magic_clip=False).sigmas[2])(pending)
        return got, as_member

    got, as_member = pending_and_as_member(members, pending)
    np.testing.assert_allclose(np.asarray(got), np.asarray(as_member), rtol=1e-6)


def test_tpe_beats_random_search_at_equal_budget():
    # 4-D shifted sphere, 60 evaluations in batches of 4 (constant liar), 16
    # seeds vmapped: TPE's median final regret is below half of random search's.
    ours, _ = _vmapped_runs(TPE(SMOOTH, 4, capacity=64), smooth, 15, SEEDS)
    rand, _ = _vmapped_runs(jaxhpo.RandomSearch(SMOOTH, 4), smooth, 15, SEEDS)
    assert np.median(ours) < 0.5 * np.median(rand), (np.median(ours), np.median(rand))


def test_batch_rows_are_distinct():
    # The same 16 searches: every model generation (after the 10 startup
    # points, generation 3 on) proposes 4 distinct points.
    _, xs = _vmapped_runs(TPE(SMOOTH, 4, capacity=64), smooth, 15, SEEDS)
    xs = xs[:, 3:]
    dist = np.linalg.norm(xs[..., :, None, :] - xs[..., None, :, :], axis=-1) + np.eye(4)
    assert dist.min() > 1e-4, "a batch proposed duplicate rows"


CATS = jaxhpo.Space(a=jaxhpo.Categorical(list("abcde")), b=jaxhpo.Categorical(list(range(7))),
                    c=jaxhpo.Categorical([None, True, False, 3]))
COST = [jnp.array([0.6, 0.9, 0.0, 0.7, 1.0]), jnp.linspace(1.0, 0.0, 7) ** 2 + 0.05,
        jnp.array([0.5, 0.8, 0.1, 0.6])]


def cats_objective(p):
    return COST[0][p["a"]] + COST[1][p["b"]] + COST[2][p["c"]]


def test_categorical_only_problem_finds_the_best_category():
    # 140 combinations, 48 evaluations in batches of 4 (constant liar), 16
    # seeds vmapped; random search hits the best one in ~29% of such runs.
    best = float(COST[0].min() + COST[1].min() + COST[2].min())
    ours, _ = _vmapped_runs(TPE(CATS, 4, capacity=64, multivariate=True), cats_objective, 12, SEEDS)
    assert np.mean(np.isclose(ours, best)) >= 0.75, ours


def test_padding_capacity_never_changes_the_search():
    # Same observations (20) in buffers of 40 and 80 rows: identical proposals.
    a = jaxhpo.run(TPE(MIXED, 1, capacity=40, multivariate=True), lambda p: p["f"] + 0.1 * p["n"] + (p["c"] != 2),
                   jax.random.key(1), 20, history="all")[1]
    b = jaxhpo.run(TPE(MIXED, 1, capacity=80, multivariate=True), lambda p: p["f"] + 0.1 * p["n"] + (p["c"] != 2),
                   jax.random.key(1), 20, history="all")[1]
    np.testing.assert_allclose(a.x, b.x, atol=1e-5)


def test_nothing_recompiles_while_the_buffer_fills():
    s = TPE(MIXED, 4, capacity=16, multivariate=True)
    traces = {"ask": 0, "tell": 0}

    def counted(name, fn):
        def wrapped(*args):
            traces[name] += 1
            return fn(*args)
        return jax.jit(wrapped)

    ask, tell = counted("ask", s.ask), counted("tell", s.tell)
    state = s.init(jax.random.key(0))
    counts = []
    for g in range(8):  # 32 observations: empty, startup, filling, full and replacing
        x, state = ask(jax.random.key(g), state)
        values = jax.vmap(lambda p: p["f"] + (p["c"] != 1))(MIXED.decode(x))
        state = tell(state, x, values)
        counts.append(int(state.count))
        # The running orders that spare `ask` its sorts equal fresh sorts.
        n = int(state.count)
        valid = np.arange(16) < n
        xs, ys, num = (np.asarray(a) for a in (state.x, state.y, state.number))
        for k, j in enumerate(s._coords.nidx):
            np.testing.assert_array_equal(np.asarray(state.order)[k, :n], np.lexsort((num[:n], xs[:n, j])))
        np.testing.assert_array_equal(np.sort(np.asarray(state.value_order)[:n]), np.arange(n))
        assert (np.diff(ys[np.asarray(state.value_order)[:n]]) >= 0).all()
        np.testing.assert_array_equal(num[np.asarray(state.age_order)[:n]], np.sort(num[:n]))
        assert valid.sum() == n
    assert counts == [4, 8, 12, 16, 16, 16, 16, 16]
    assert traces == {"ask": 1, "tell": 1}
    # A full buffer keeps the best observations seen.
    assert float(state.y.min()) == float(state.best_value)


def test_failed_observations_stay_out_of_the_good_set():
    s = TPE(SMOOTH, 1, capacity=64)
    state = s.init(jax.random.key(0))
    xs = jax.random.uniform(jax.random.key(1), (40, 4))
    vals = jnp.where(jnp.arange(40) % 2 == 0, jnp.inf, jnp.arange(40.0))
    state = s.warm_start(state, xs, vals)
    l_est, g_est = jax.jit(s.estimators)(state)
    assert l_est.n.tolist() == [2] * 4  # ceil(0.1 * 20 finite), in every coordinate
    assert g_est.n.tolist() == [38] * 4  # failures count as bad


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(capacity=4, popsize=8), ValueError, "capacity"),
    (dict(capacity=0), ValueError, "capacity"),
    (dict(gamma=0.0), ValueError, "gamma"),
    (dict(gamma=1.5), ValueError, "gamma"),
    (dict(prior_weight=0.0), ValueError, "prior_weight"),
    (dict(n_ei_candidates=0), ValueError, "n_ei_candidates"),
    (dict(n_startup=-1), ValueError, "n_startup"),
    (dict(max_good=0), ValueError, "max_good"),
    (dict(bandwidth="silverman"), ValueError, "bandwidth"),
    (dict(startup="grid"), ValueError, "startup"),
    (dict(multivariate="yes"), TypeError, "multivariate"),
    (dict(capacity=2.5), TypeError, "capacity"),
])
def test_bad_settings_are_rejected_at_construction(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        TPE(SMOOTH, **kwargs)


def test_bad_params_are_rejected_at_init_and_settings_hash():
    s = TPE(SMOOTH, 2, capacity=8)
    with pytest.raises(ValueError, match="gamma"):
        s.init(jax.random.key(0), {"gamma": 2.0})
    with pytest.raises(ValueError, match="prior_weight"):
        s.init(jax.random.key(0), {"prior_weight": -1.0})
    assert s == TPE(SMOOTH, 2, capacity=8) and hash(s) == hash(TPE(SMOOTH, 2, capacity=8))
    assert s != TPE(SMOOTH, 2, capacity=16)
    assert math.isclose(float(s.default_params()["gamma"]), 0.1, rel_tol=1e-6)


def test_failed_observations_do_not_end_the_startup():
    # As Optuna counts only completed trials towards n_startup: a Sobol point
    # is asked until 4 observations succeeded, however many failed between.
    # One search, every other evaluation (and the first three) failing.
    s = TPE(FLOATS, 1, capacity=32, n_startup=4)
    fails = np.array([1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0], bool)
    ask, tell = jax.jit(s.ask), jax.jit(s.tell)
    state = s.init(jax.random.key(3))
    startup_points = 0
    for g, fail in enumerate(fails):
        x, new = ask(jax.random.key(g), state)
        startup_points += int(new.startup.index != state.startup.index)
        state = tell(new, x, jnp.array([jnp.nan if fail else float(x[0, 0])]))
    # the 4th success is evaluation 8 (0-based): 9 startup points, then the model
    assert startup_points == 9
    assert int(state.startup.index) == 9


def test_a_full_buffer_ends_the_startup():
    s = TPE(FLOATS, 2, capacity=4, n_startup=10)
    state = s.warm_start(s.init(jax.random.key(0)), jnp.full((4, 2), 0.5), jnp.full((4,), jnp.nan))
    _, new = jax.jit(s.ask)(jax.random.key(1), state)
    assert int(new.startup.index) == int(state.startup.index)
