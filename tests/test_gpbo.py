"""GPBO: settings, the masked buffer, batches, failed values, recompiles, and search quality."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo.strategies.gpbo import GPBO, first_distinct

from helpers import counted_protocol

BRANIN_SPACE = jaxhpo.Space(x1=jaxhpo.Float(-5.0, 10.0), x2=jaxhpo.Float(0.0, 15.0))
BRANIN_MIN = 0.397887357729739

MIXED = jaxhpo.Space(
    x=jaxhpo.Float(-2.0, 2.0),
    n=jaxhpo.Int(1, 6),
    c=jaxhpo.Categorical(["a", "b", "c"]),
)


def branin(p):
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * jnp.pi**2), 5 / jnp.pi, 1 / (8 * jnp.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1 - t) * jnp.cos(x1) + 10.0


def mixed_objective(p):
    return (p["x"] - 0.5) ** 2 + 0.1 * (p["n"] - 3) ** 2 + (p["c"] != 1)


# Small settings where a test checks mechanics, not quality (compiles faster).
SMALL = dict(fit_steps=20, num_candidates=64, num_local=32, restarts=4, acq_steps=10)
MIXED_STRATEGY = GPBO(MIXED, popsize=4, capacity=12, n_init=4, **SMALL)


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="capacity"):
        GPBO(BRANIN_SPACE, popsize=8, capacity=4)
    with pytest.raises(ValueError, match="acquisition"):
        GPBO(BRANIN_SPACE, acquisition="ei")
    with pytest.raises(ValueError, match="n_init"):
        GPBO(BRANIN_SPACE, n_init=0)
    with pytest.raises(TypeError, match="capacity"):
        GPBO(BRANIN_SPACE, capacity=10.5)
    with pytest.raises(ValueError, match="restarts"):
        GPBO(BRANIN_SPACE, num_candidates=4, num_local=0, restarts=8)
    with pytest.raises(ValueError, match="beta"):
        GPBO(BRANIN_SPACE).init(jax.random.key(0), {"beta": -1.0})
    with pytest.raises(TypeError, match="deterministic"):
        GPBO(BRANIN_SPACE, deterministic="yes")
    with pytest.raises(TypeError, match="acq_precondition"):
        GPBO(BRANIN_SPACE, acq_precondition=1)
    assert GPBO(BRANIN_SPACE, deterministic=True) != GPBO(BRANIN_SPACE)
    assert GPBO(BRANIN_SPACE, capacity=32) == GPBO(BRANIN_SPACE, capacity=32)
    assert hash(GPBO(BRANIN_SPACE, capacity=32)) == hash(GPBO(BRANIN_SPACE, capacity=32))


def test_buffer_fills_and_keeps_the_best_without_recompiling():
    s = MIXED_STRATEGY
    ask, tell, traces = counted_protocol(s)
    state = s.init(jax.random.key(0))
    told = []
    for g in range(6):  # 24 points into 12 rows: the buffer fills, then replaces
        x, state = ask(jax.random.key(g), state)
        values = jax.vmap(mixed_objective)(MIXED.decode(x))
        state = tell(state, x, values)
        told.append(np.asarray(values))
        assert np.isfinite(np.asarray(x)).all()
    assert traces == {"ask": 1, "tell": 1}, traces
    assert int(state.count) == 12 and (np.asarray(state.status) == 1).all()
    # Once full, the buffer keeps the 6 newest rows and the 6 best of the others.
    held = list(np.concatenate(told[:3]))
    for values in told[3:]:
        held += list(values)
        newest, rest = held[-6:], held[:-6]
        held = [v for v in rest if v in sorted(rest)[:6]] + newest
    np.testing.assert_allclose(np.asarray(state.y), held, rtol=1e-6)
    # Proposals sit at bin centres of the integer and categorical coordinates.
    centres_n = (np.arange(6) + 0.5) / 6
    centres_c = (np.arange(3) + 0.5) / 3
    xs = np.asarray(state.x)
    assert np.abs(xs[:, 1:2] - centres_n[None]).min(axis=1).max() < 1e-6
    assert np.abs(xs[:, 2:3] - centres_c[None]).min(axis=1).max() < 1e-6


def test_failed_values_stay_out_of_the_fit_and_out_of_the_state():
    s = MIXED_STRATEGY
    ask, tell, _ = counted_protocol(s)
    state = s.init(jax.random.key(1))
    for g in range(3):
        x, state = ask(jax.random.key(10 + g), state)
        values = jax.vmap(mixed_objective)(MIXED.decode(x))
        values = values.at[0].set(jnp.nan).at[1].set(jnp.inf)
        state = tell(state, x, values)
    status = np.asarray(state.status)
    assert (status == 2).sum() == 6 and (status == 1).sum() == 6
    assert np.isfinite(np.asarray(state.y)).all()
    for leaf in jax.tree_util.tree_leaves(state):
        if np.issubdtype(np.asarray(leaf).dtype, np.floating):
            assert np.isfinite(np.asarray(leaf)).all()
    assert int(state.gp_failures) == 0
    assert np.isfinite(float(state.best_value))
    # A buffer of only failures still gives finite proposals (uniform fallback).
    state = s.init(jax.random.key(2))
    for g in range(2):
        x, state = ask(jax.random.key(20 + g), state)
        state = tell(state, x, jnp.full((4,), jnp.nan))
    x, state = ask(jax.random.key(30), state)
    assert np.isfinite(np.asarray(x)).all() and float(state.best_value) == np.inf


@pytest.mark.parametrize("acquisition", ["logei", "ucb", "ts"])
def test_batch_rows_are_distinct(acquisition):
    s = GPBO(BRANIN_SPACE, popsize=6, capacity=24, acquisition=acquisition, n_init=6, **SMALL)
    state = s.init(jax.random.key(3))
    ask, tell = jax.jit(s.ask), jax.jit(s.tell)
    x, state = ask(jax.random.key(4), state)  # the Sobol design
    state = tell(state, x, jax.vmap(branin)(BRANIN_SPACE.decode(x)))
    x, state = ask(jax.random.key(5), state)  # the model's batch
    x = np.asarray(x)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)) + np.eye(6)
    # No copies (the Kriging believer may still place two points close
    # together near a confident minimum), and the batch is spread out.
    assert d.min() > 1e-5, d.min()
    assert np.median(d[np.triu_indices(6, 1)]) > 0.02
    assert np.isfinite(x).all() and ((x >= 0) & (x <= 1)).all()


DISCRETE = jaxhpo.Space(n=jaxhpo.Int(0, 9), c=jaxhpo.Categorical(list("abcde")))  # 50 configurations


@pytest.mark.parametrize("acquisition", ["logei", "ts"])
def test_the_model_proposes_no_configuration_already_evaluated_or_in_its_batch(acquisition):
    """In a discrete space the incumbent's acquisition (its noise kept at the floor) beat every
    other configuration once the optimum was found: batches of four copies of it, 14 of the
    last 16 evaluations. The model's points are new while new configurations are left."""
    s = GPBO(DISCRETE, popsize=4, capacity=32, n_init=4, deterministic=True, acquisition=acquisition, **SMALL)

    def f(p):
        return 0.3 * (p["n"] - 6.0) ** 2 + jnp.where(p["c"] == 2, 0.0, 1.0) + 0.1 * p["c"]

    x = np.asarray(jaxhpo.run(s, f, jax.random.key(0), 8, history="all")[1].x).reshape(-1, 2)
    seen = set()  # the Sobol design too: it took a configuration twice before it skipped repeats
    for row in x.tolist():
        assert tuple(row) not in seen, (row, len(seen))
        seen.add(tuple(row))


def test_the_initial_design_takes_every_configuration_once_before_any_twice():
    # 6 configurations, a design of 8: all 6 first, in Sobol order, then repeats.
    space = jaxhpo.Space(n=jaxhpo.Int(1, 2), c=jaxhpo.Categorical(list("abc")))
    for seed in range(3):
        design = np.asarray(GPBO(space, n_init=8, **SMALL).init(jax.random.key(seed)).design)
        assert len({tuple(r) for r in design[:6].tolist()}) == 6
        assert {tuple(r) for r in design[6:].tolist()} <= {tuple(r) for r in design[:6].tolist()}


def test_first_distinct_matches_numpy():
    rng = np.random.default_rng(0)
    for k, n in [(40, 10), (40, 40), (7, 5)]:
        rows = rng.integers(0, 3, size=(k, 2)).astype(np.float32)
        got = np.asarray(first_distinct(jnp.asarray(rows), n))
        _, first = np.unique(rows, axis=0, return_index=True)
        first = np.sort(first)
        repeats = np.setdiff1d(np.arange(k), first)
        np.testing.assert_array_equal(got, np.concatenate([first, repeats])[:n])


BRANCHES = ("a", "b", "c")
CONDITIONAL = jaxhpo.Space(branch=jaxhpo.Categorical(list(BRANCHES)),
                           **{f"{v}{b}": jaxhpo.Float(0.0, 1.0, when={"branch": b}) for b in BRANCHES for v in "xy"})


def branches_objective(p):
    """Three branches with their own two parameters; minima 0.3, 0.2 (wide) and 0 (narrow)."""
    b = p["branch"]

    def pick(v):
        return jnp.where(b == 0, p[f"{v}a"], jnp.where(b == 1, p[f"{v}b"], p[f"{v}c"]))

    x, y = pick("x"), pick("y")
    return jnp.where(b == 0, 0.3 + (x - 0.5) ** 2 + (y - 0.5) ** 2,
                     jnp.where(b == 1, 0.2 + 3.0 * ((x - 0.8) ** 2 + (y - 0.1) ** 2),
                               10.0 * ((x - 0.2) ** 2 + (y - 0.8) ** 2)))


def test_a_conditional_space_is_searched_on_its_active_coordinates():
    """Inactive coordinates are 1/2 in every point the GP sees or proposes: two points of a
    branch are one configuration to it whatever the other branches' coordinates hold. When
    they held the design's random values, most seeds stalled in branch b (at 40 evaluations
    in batches of 2, 7 of 8; benchmarks/README.md); now most find branch c's minimum (8
    seeds, vmapped, 40 evaluations in batches of 4)."""
    s = GPBO(CONDITIONAL, popsize=4, capacity=40, n_init=8, **SMALL)
    trace = jax.jit(jax.vmap(lambda k: jaxhpo.run(s, branches_objective, k, 10, history="all")[1]))(
        jax.random.split(jax.random.key(0), 8))
    x = np.asarray(trace.x).reshape(-1, CONDITIONAL.dim)
    active = CONDITIONAL.active(CONDITIONAL.decode(jnp.asarray(x)))
    for j, name in enumerate(CONDITIONAL.names):
        assert np.all(x[~np.asarray(active[name]), j] == 0.5), name
    assert np.sum(np.asarray(trace.best_value)[:, -1] < 1e-2) >= 6, np.asarray(trace.best_value)[:, -1]


def test_deterministic_holds_the_noise_at_its_floor():
    # (That a fitted noise does not stay there: tests/test_gp.py.)
    s = GPBO(BRANIN_SPACE, popsize=4, capacity=12, n_init=8, deterministic=True, **SMALL)
    state = s.init(jax.random.key(6))
    ask, tell = jax.jit(s.ask), jax.jit(s.tell)
    for g in range(3):  # the design (two generations), then a model ask
        x, state = ask(jax.random.key(g), state)
        if g < 2:
            state = tell(state, x, jax.vmap(branin)(BRANIN_SPACE.decode(x)))
    assert float(jnp.exp(state.kernel.log_noise)) == pytest.approx(1e-9, rel=1e-3)
    assert np.isfinite(np.asarray(x)).all() and int(state.gp_failures) == 0


@pytest.mark.parametrize("num_constraints", [0, 1])
def test_preconditioned_refinement_moves_the_chosen_point(num_constraints):
    # (The preconditioned steps themselves: tests/test_gp.py.) The same
    # search state and keys, with and without acq_precondition: both points
    # lie in the cube, and the scaled steps end elsewhere.
    def values(x):
        v = jax.vmap(branin)(BRANIN_SPACE.decode(x))
        return jnp.stack([v, x[:, 0] - 0.8], axis=1) if num_constraints else v

    points = []
    for precondition in (False, True):
        s = GPBO(BRANIN_SPACE, popsize=1, capacity=12, n_init=8, deterministic=True,
                 num_constraints=num_constraints, acq_precondition=precondition, **SMALL)
        ask, tell = jax.jit(s.ask), jax.jit(s.tell)
        state = s.init(jax.random.key(6))
        for g in range(9):  # the design, then a model ask
            x, state = ask(jax.random.key(g), state)
            if g < 8:
                state = tell(state, x, values(x))
        points.append(np.asarray(x))
        assert ((points[-1] >= 0) & (points[-1] <= 1)).all() and int(state.gp_failures) == 0
    assert np.abs(points[0] - points[1]).max() > 1e-4


def test_branin_median_regret_over_10_vmapped_seeds():
    # 10 seeds, vmapped; 50 evaluations each, one point per generation.
    s = GPBO(BRANIN_SPACE, popsize=1, capacity=50)
    keys = jax.random.split(jax.random.key(2024), 10)
    best = jax.jit(jax.vmap(lambda k: jaxhpo.run(s, branin, k, 50)[1].best_value[-1]))(keys)
    regret = np.asarray(best) - BRANIN_MIN
    assert np.median(regret) < 1e-3, np.sort(regret)
    assert (regret < 0.05).all(), np.sort(regret)


def test_a_full_buffer_remembers_its_newest_points_and_does_not_repeat_them():
    # 10 seeds, vmapped; 50 evaluations into 16 rows, one point per generation.
    # A buffer of the 16 best alone forgot each poor point at once, and the
    # acquisition proposed it again: 86% of the 34 proposals after the buffer
    # filled repeated an earlier one, the median regret 1.06 (now 21%, 0.096).
    s = GPBO(BRANIN_SPACE, popsize=1, capacity=16)
    keys = jax.random.split(jax.random.key(2024), 10)
    trace = jax.jit(jax.vmap(lambda k: jaxhpo.run(s, branin, k, 50, history="all")[1]))(keys)
    late = np.asarray(trace.x).reshape(10, 50, 2)[:, 16:]
    gaps = np.linalg.norm(late[:, :, None] - late[:, None], axis=-1) + 9.0 * np.eye(late.shape[1])
    assert (gaps.min(axis=2) < 1e-4).mean() < 0.4
    assert np.median(np.asarray(trace.best_value[:, -1]) - BRANIN_MIN) < 0.3


def test_runs_with_64_bit_floats_enabled():
    """Under jax_enable_x64 the GP's arithmetic widens; the state and proposals keep float32."""
    space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0))
    with jax.enable_x64(True):
        s = jaxhpo.GPBO(space, 2, capacity=8, n_init=2, num_candidates=16, num_local=4, restarts=1, acq_steps=2,
                        fit_steps=2)
        res = jaxhpo.minimize(lambda c: (c["a"] - 0.3) ** 2 + c["b"], space, s, num_generations=3, key=0,
                              history="all")
    assert np.isfinite(res.best_value) and res.history.x.dtype == np.float32


def test_minimize_fits_the_default_capacity_to_its_evaluations():
    # 3 generations of 4: the default buffer of 256 rows becomes 12, the search
    # the same as with capacity=12 given (the same program); a capacity given stays.
    default = GPBO(MIXED, popsize=4, n_init=4, **SMALL)
    assert default.capacity == 256 and default == GPBO(MIXED, popsize=4, capacity=256, n_init=4, **SMALL)
    fitted = jaxhpo.minimize(mixed_objective, MIXED, default, num_generations=3, key=0)
    given = jaxhpo.minimize(mixed_objective, MIXED, MIXED_STRATEGY, num_generations=3, key=0)
    assert fitted.strategy == MIXED_STRATEGY and fitted.state.x.shape == (12, 3)
    assert fitted.best_value == given.best_value and fitted.best_params == given.best_params
    assert default.sized_for(300) is default and MIXED_STRATEGY.sized_for(8) is MIXED_STRATEGY
    assert GPBO(MIXED, popsize=4).sized_for(2).capacity == 4  # at least popsize
    assert fitted.strategy.sized_for(100).capacity == 100 and fitted.strategy.sized_for(900).capacity == 256
    # the state continues with the strategy that ran, and only with it
    x, _ = fitted.strategy.ask(jax.random.key(1), fitted.state)
    assert x.shape == (4, 3)
    with pytest.raises(ValueError, match="buffer of 12 rows, this GPBO a capacity of 256: continue a minimize "
                                         "result with Result.strategy"):
        default.tell(fitted.state, x, jnp.zeros(4))
