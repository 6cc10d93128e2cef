"""Bad arguments to the search loop, the hypergradient functions and the CV helpers
are rejected at the call, by an error that names the argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import Float, RandomSearch, Space
from jaxhpo.cv import cross_validate, kfold_masks, masks_from_splits
from jaxhpo.hypergrad import conjugate_gradient, gradient_tune, meta_gradient, neumann

SPACE = Space(x=Float(0.0, 1.0))
STRATEGY = RandomSearch(SPACE, 2)


def square(c):
    return (c["x"] - 0.5) ** 2


# ------------------------------------------------------------------ keys
@pytest.mark.parametrize("key, error, match", [
    ("abc", TypeError, "key must be a jax.random key or an integer seed"),
    (None, TypeError, "key must be"),
    (1.5, TypeError, "key must be"),
    (True, TypeError, "key must be"),
    (jnp.float32(1), TypeError, "key must be"),
    (np.array([1]), TypeError, "key must be"),
    (2**70, ValueError, "key as an integer seed"),
    (jax.random.split(jax.random.key(0), 3), ValueError, "key must be a single jax.random key"),
    (jnp.zeros(3, jnp.uint32), ValueError, r"key as raw uint32 key data must have shape \(2,\)"),
])
def test_minimize_rejects_bad_keys(key, error, match):
    with pytest.raises(error, match=match):
        jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, key=key)


def test_run_and_gradient_tune_and_kfold_reject_bad_keys():
    with pytest.raises(TypeError, match="key must be a jax.random key or an integer seed"):
        jaxhpo.run(STRATEGY, square, "0", 1)
    with pytest.raises(TypeError, match="key must be a jax.random key or an integer seed"):
        gradient_tune(square, SPACE, key="abc", popsize=2, num_steps=1)
    with pytest.raises(TypeError, match="key must be a jax.random key"):
        kfold_masks(10, 2, key=jnp.float32(1))
    state = STRATEGY.init(jax.random.key(0))
    with pytest.raises(TypeError, match="key must be a jax.random key or an integer seed"):
        STRATEGY.ask(1.5, state)
    with pytest.raises(TypeError, match="key must be a jax.random key or an integer seed"):
        SPACE.sample("0", 3)


def test_every_entry_point_takes_an_integer_seed_as_its_key():
    from jaxhpo._keys import seed_key
    k = jax.random.key(7)
    a, b = jaxhpo.run(STRATEGY, square, 7, 2), jaxhpo.run(STRATEGY, square, k, 2)
    assert float(a[1].best_value[-1]) == float(b[1].best_value[-1])
    assert np.array_equal(kfold_masks(10, 2, key=7), kfold_masks(10, 2, key=k))
    assert np.array_equal(SPACE.sample(2**40, 3), SPACE.sample(seed_key(2**40), 3))
    assert np.array_equal(STRATEGY.ask(7, STRATEGY.init(7))[0], STRATEGY.ask(k, STRATEGY.init(k))[0])
    # a 0-d integer array is a seed too, concrete or traced (vmap over seeds)
    for seed in (jnp.int32(7), np.array(7, np.int64), jnp.uint32(7)):
        assert float(jaxhpo.run(STRATEGY, square, seed, 2)[1].best_value[-1]) == float(a[1].best_value[-1])
    vmapped = jax.vmap(lambda seed: jaxhpo.run(STRATEGY, square, seed, 2)[1].best_value[-1])(jnp.arange(6, 9))
    assert float(vmapped[1]) == float(a[1].best_value[-1])


def test_code_that_needs_concrete_values_is_explained():
    from jaxhpo.training import Trainer, successive_halving
    for bad in (lambda c: float(c["x"]) ** 2, lambda c: np.sin(c["x"]), lambda c: 1.0 if c["x"] > 0.5 else 0.0):
        with pytest.raises(TypeError, match=r"objective is traced by JAX .* use jaxhpo.Study"):
            jaxhpo.minimize(bad, SPACE, STRATEGY, num_generations=1, key=0)
        with pytest.raises(TypeError, match=r"objective is traced by JAX"):
            gradient_tune(bad, SPACE, popsize=2, num_steps=1)
        # "auto" measures the objective's memory first: the same error there
        with pytest.raises(TypeError, match=r"objective is traced by JAX .* use jaxhpo.Study"):
            jaxhpo.minimize(bad, SPACE, STRATEGY, num_generations=1, key=0, chunk_size="auto")
    trainer = Trainer(lambda k, hp: jnp.ones(2), lambda s, hp: s * float(hp["x"]), lambda s, hp: jnp.sum(s))
    with pytest.raises(TypeError, match=r"trainer.step is traced by JAX .* no float\(\)"):
        successive_halving(trainer, SPACE, 0, num_configs=2, min_budget=1, max_budget=2, eta=2)
    # A shape taken from a hyperparameter: JAX's own advice (static_argnums) cannot apply here.
    # So is an arange's length or a slice's bound taken from one.
    for sized in (lambda c: jnp.zeros(c["x"].astype(int)).sum(), lambda c: jnp.arange(c["x"].astype(int)).sum(),
                  lambda c: jnp.ones(4)[:c["x"].astype(int)].sum()):
        with pytest.raises(TypeError, match=r"objective is traced by JAX .* make the array its largest size and "
                                            r"mask what lies past the value"):
            jaxhpo.minimize(sized, SPACE, STRATEGY, num_generations=1)
    sized = Trainer(lambda k, hp: jnp.ones(hp["x"].astype(int)), lambda s, hp: s, lambda s, hp: jnp.sum(s))
    with pytest.raises(TypeError, match=r"trainer.init is traced by JAX .* mask what lies past"):
        successive_halving(sized, SPACE, 0, num_configs=2, min_budget=1, max_budget=2, eta=2)


def test_text_returned_by_traced_code_is_named():
    from jaxhpo.training import Trainer, successive_halving
    with pytest.raises(TypeError, match=r"objective returned text \('loss'\); it must return arrays of numbers"):
        jaxhpo.minimize(lambda c: "loss", SPACE, STRATEGY, num_generations=1)
    with pytest.raises(TypeError, match=r"objective returned text \('acc'\)"):
        jaxhpo.minimize(lambda c: (c["x"], {"name": "acc"}), SPACE, STRATEGY, num_generations=1, has_aux=True)
    trainer = Trainer(lambda k, hp: jnp.ones(2), lambda s, hp: s, lambda s, hp: "done")
    with pytest.raises(TypeError, match=r"trainer.evaluate returned text \('done'\)"):
        successive_halving(trainer, SPACE, 0, num_configs=2, min_budget=1, max_budget=2, eta=2)


def _notes(raised):
    """jaxhpo's notes (JAX adds its own on traceback filtering)."""
    return [n for n in getattr(raised.value, "__notes__", []) if "hyperparameter" in n]


def test_a_misspelt_hyperparameter_lists_the_names():
    from jaxhpo.training import Trainer, successive_halving
    names = ", ".join(map(repr, SPACE.names))
    with pytest.raises(KeyError) as raised:
        jaxhpo.minimize(lambda c: c["lr"] ** 2, SPACE, STRATEGY, num_generations=1)
    assert raised.value.args == ("lr",)
    assert f"objective: 'lr' is not a hyperparameter of the space; its hyperparameters are {names}" in _notes(raised)
    with pytest.raises(KeyError) as raised:
        gradient_tune(lambda c: c["lr"] ** 2, SPACE, popsize=2, num_steps=1)
    assert _notes(raised)[0].startswith("objective: 'lr' is not a hyperparameter")
    trainer = Trainer(lambda k, hp: jnp.ones(2), lambda s, hp: s * hp["lr"], lambda s, hp: jnp.sum(s))
    with pytest.raises(KeyError) as raised:
        successive_halving(trainer, SPACE, 0, num_configs=2, min_budget=1, max_budget=2, eta=2)
    assert _notes(raised)[0].startswith("trainer.step: 'lr' is not a hyperparameter")
    # the objective's own dicts' misses keep their args; a key the space has gets no note
    table = {"alpha": 1.0}
    for name in ("x", "beta"):
        with pytest.raises(KeyError) as raised:
            jaxhpo.minimize(lambda c: c["x"] * table[name], SPACE, STRATEGY, num_generations=1)
        assert raised.value.args == (name,)
        assert bool(_notes(raised)) == (name not in SPACE.names)
    keeps = Trainer(lambda k, hp: {"w": jnp.ones(2), "hp": hp}, lambda s, hp: {"w": s["weights"], "hp": hp},
                    lambda s, hp: jnp.sum(s["w"]))
    with pytest.raises(KeyError) as raised:
        successive_halving(keeps, SPACE, 0, num_configs=2, min_budget=1, max_budget=2, eta=2)
    assert raised.value.args == ("weights",)
    # a state that keeps the hyperparameters keeps a plain dict, which a step may rebuild
    from jaxhpo.training import init_population, train_population
    keeps = Trainer(lambda k, hp: {"w": jnp.ones(2), "hp": hp}, lambda s, hp: {"w": s["w"] * hp["x"], "hp": dict(hp)},
                    lambda s, hp: jnp.sum(s["w"]))
    hp = {"x": jnp.full(3, 0.5)}
    states = init_population(keeps, jax.random.split(jax.random.key(0), 3), hp)
    assert type(states["hp"]) is dict
    np.testing.assert_allclose(train_population(keeps, states, hp, 2)[1], 0.5)


def test_the_objective_is_given_a_plain_dict():
    # tree_map with a plain dict, a lax.scan carrying the configuration, and
    # lax.cond returning it: the structure of a dict. A dict subclass was
    # another pytree node type, and each of these failed inside the search.
    target = {name: 0.5 for name in SPACE.names}

    def f(p):
        assert type(p) is dict
        d = jax.tree_util.tree_map(lambda a, b: (a - b) ** 2, p, target)
        carried, _ = jax.lax.scan(lambda h, _: (h, None), p, None, length=2)
        chosen = jax.lax.cond(p["x"] > 0, lambda: p, lambda: target)
        return sum(jax.tree_util.tree_leaves(d)) + 0.0 * carried["x"] + 0.0 * chosen["x"]

    decoded = SPACE.decode(SPACE.sample(0, 4))
    res = jaxhpo.minimize(f, SPACE, STRATEGY, num_generations=2)
    assert np.isfinite(res.best_value)
    np.testing.assert_allclose(np.asarray(jaxhpo.evaluate(f, decoded)), np.asarray(jax.vmap(f)(decoded)), rtol=1e-6)
    # what the objective writes into its dict stays its own
    def writes(p):
        p["x"] = p["x"] * 0.0
        return p["x"]

    jaxhpo.evaluate(writes, decoded)
    assert np.any(np.asarray(decoded["x"]) != 0.0)


def test_tell_refuses_points_off_the_cube_and_complex_values():
    state = STRATEGY.init(jax.random.key(0))
    x, state = STRATEGY.ask(jax.random.key(1), state)
    for bad in (np.nan, -0.25, 1.5):
        with pytest.raises(ValueError, match=r"tell: x must hold points of the unit cube .*x\[1, 0\]"):
            STRATEGY.tell(state, x.at[1, 0].set(bad), [1.0, 2.0])
    with pytest.raises(TypeError, match="values must be real numbers, got dtype complex"):
        STRATEGY.tell(state, x, np.array([1.0, 1j]))
    from jaxhpo import CMAES, LocalSearch
    with pytest.raises(ValueError, match=r"params x0 must have shape \(1,\).*got shape \(1, 1\)"):
        CMAES(SPACE, 4).init(jax.random.key(0), {"x0": np.full((1, 1), 0.5)})
    with pytest.raises(ValueError, match="patience must be a whole number of generations, got 2.5"):
        LocalSearch(SPACE, 4).init(jax.random.key(0), {"patience": 2.5})
    # inside a trace the points are the caller's: the same tell compiles
    told = jax.jit(STRATEGY.tell)(state, x, jnp.array([1.0, 2.0]))
    assert float(told.best_value) == 1.0
    # the multi-objective tells (their own) check too, and TPE's warm start
    from jaxhpo import GPBO, MOTPE, NSGA2, TPE
    off = np.full((2, 1), 0.5, np.float32)
    off[1, 0] = np.nan
    for s in (NSGA2(SPACE, 2, num_objectives=2), MOTPE(SPACE, 2, num_objectives=2),
              GPBO(SPACE, 2, num_objectives=2)):
        with pytest.raises(ValueError, match=r"tell: x must hold points of the unit cube .*x\[1, 0\] = nan"):
            s.tell(s.init(jax.random.key(0)), off, np.ones((2, 2)))
    tpe = TPE(SPACE, 2)
    with pytest.raises(ValueError, match=r"warm_start: x must hold points of the unit cube .*x\[1, 0\] = nan"):
        tpe.warm_start(tpe.init(jax.random.key(0)), off, np.ones(2))


def test_raw_key_data_is_accepted():
    raw = jax.random.PRNGKey(0)
    assert np.isfinite(jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, key=raw).best_value)
    assert kfold_masks(10, 2, key=np.asarray(raw)).shape == (2, 10)


def test_integer_seeds_keep_all_64_bits():
    """Seeds that agree in their low 32 bits are different searches; those
    below 2**32 are jax.random.key's own."""
    from jaxhpo._keys import seed_key

    seeds = [0, 2**32, 2**40, -1, 2**32 - 1, 12345, 12345 + 2**33, 2**63 - 1]
    data = {tuple(np.asarray(jax.random.key_data(seed_key(s))).tolist()) for s in seeds}
    assert len(data) == len(seeds)
    assert np.array_equal(jax.random.key_data(seed_key(12345)), jax.random.key_data(jax.random.key(12345)))
    assert np.array_equal(jax.random.key_data(seed_key(2**40)), [256, 0])  # as jax with 64-bit integers
    a = jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, key=0, history="all")
    b = jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, key=2**32, history="all")
    assert not np.array_equal(a.history.x, b.history.x)


# ------------------------------------------------------------ loop params
def test_an_infinite_bound_reads_as_open():
    # inf is refused (not finite): the interval says so, not "(0.0, inf]"
    with pytest.raises(ValueError, match=r"prior_weight must lie in \(0.0, inf\), got inf"):
        jaxhpo.TPE(SPACE, 4, prior_weight=float("inf"))


def test_strategy_params_are_checked_before_the_search_compiles():
    de = jaxhpo.DifferentialEvolution(SPACE, 4)
    for entry in (jaxhpo.minimize, lambda f, sp, s, **kw: jaxhpo.run(s, f, jax.random.key(0), 1, params=kw["params"])):
        with pytest.raises(ValueError, match="F must lie in"):
            entry(square, SPACE, de, num_generations=1, params={"F": -1.0})
        with pytest.raises(ValueError, match="unknown key"):
            entry(square, SPACE, de, num_generations=1, params={"f": 0.5})


def test_an_objective_returning_a_tuple_is_named():
    with pytest.raises(ValueError, match="one array per configuration .* got a tuple"):
        jaxhpo.minimize(lambda c: (c["x"], c["x"]), SPACE, STRATEGY, num_generations=1)


def test_genetic_algorithm_takes_its_smallest_population():
    ga = jaxhpo.GeneticAlgorithm(SPACE, 2)
    assert ga.tournament_size == 2
    assert np.isfinite(jaxhpo.minimize(square, SPACE, ga, num_generations=3).best_value)



def test_params_must_be_a_dict():
    with pytest.raises(TypeError, match="params must be a dict"):
        jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, params=3)
    with pytest.raises(TypeError, match="params must be a dict"):
        jaxhpo.run(STRATEGY, square, jax.random.key(0), 1, params=[1.0])


# --------------------------------------------------------------- evaluate
def test_evaluate_rejects_a_non_callable_and_unbatched_params():
    with pytest.raises(TypeError, match="objective must be callable"):
        jaxhpo.evaluate(None, {"x": jnp.ones(3)})
    with pytest.raises(ValueError, match="params needs the same leading batch axis"):
        jaxhpo.evaluate(square, [1.0, 2.0])


# ---------------------------------------------------------- gradient_tune
def test_gradient_tune_flags_must_be_bools():
    with pytest.raises(TypeError, match="maximize must be a bool"):
        gradient_tune(square, SPACE, popsize=2, num_steps=1, maximize="no")
    with pytest.raises(TypeError, match="has_grad must be a bool"):
        gradient_tune(square, SPACE, popsize=2, num_steps=1, has_grad=1)


def test_gradient_tune_rejects_objective_outputs_of_the_wrong_structure():
    with pytest.raises(ValueError, match="has_grad=True the objective must return a pair"):
        gradient_tune(square, SPACE, popsize=2, num_steps=1, has_grad=True)
    with pytest.raises(ValueError, match="has_grad=True every gradient entry must be a scalar"):
        gradient_tune(lambda c: (square(c), {"x": jnp.ones(3)}), SPACE, popsize=2, num_steps=1, has_grad=True)
    with pytest.raises(ValueError, match="with carry the objective must return a pair"):
        gradient_tune(lambda c, s: square(c), SPACE, popsize=2, num_steps=1, carry=jnp.zeros(2))


# ----------------------------------------------------------- meta_gradient
def _meta(query_loss):
    return meta_gradient(lambda m, t: m["w"], lambda s, m, t, i: s - 0.1 * t * s, query_loss, 2)


def test_meta_gradient_checks_its_inputs():
    meta, tasks = {"w": jnp.ones(3)}, jnp.ones(4)
    with pytest.raises(ValueError, match="query_loss must return a scalar"):
        _meta(lambda s, m, t: s)(meta, tasks)
    total = _meta(lambda s, m, t: jnp.sum(s))
    with pytest.raises(TypeError, match=r"meta must hold only real floating-point arrays .*meta\[.w.\] has dtype int32"):
        total({"w": jnp.ones(3, jnp.int32)}, tasks)
    with pytest.raises(ValueError, match="tasks must be a pytree of arrays sharing one leading axis"):
        total(meta, jnp.float32(1.0))
    with pytest.raises(ValueError, match="tasks must be"):
        total(meta, jnp.ones(0))


# ------------------------------------------------------- linear solvers
def test_linear_solvers_check_their_arguments():
    b = jnp.ones(3)
    with pytest.raises(ValueError, match="maxiter"):
        conjugate_gradient(lambda v: v, b, maxiter=0)
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(lambda v: v, b, maxiter=3, tol=-1.0)
    with pytest.raises(ValueError, match="maxiter"):
        neumann(lambda v: v, b, maxiter=0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        neumann(lambda v: v, b, maxiter=3, alpha=-1.0)
    with pytest.raises(TypeError, match="maxiter"):
        neumann(lambda v: v, b, maxiter=2.5, alpha=0.5)
    for bad in ([1.0, 2.0, "x"], jnp.ones(3, jnp.int32), jnp.ones((3, 1))):
        for solve in (lambda b: conjugate_gradient(lambda v: v, b, maxiter=3),
                      lambda b: neumann(lambda v: v, b, maxiter=3, alpha=0.5)):
            with pytest.raises(TypeError, match=r"b must be a floating-point \(m,\) array"):
                solve(bad)
    np.testing.assert_allclose(conjugate_gradient(lambda v: 2.0 * v, [1.0, 2.0], maxiter=3), [0.5, 1.0])
    # an array argument (e.g. a step computed in jax) is the caller's to keep in range
    np.testing.assert_allclose(neumann(lambda v: 2.0 * v, b, maxiter=40, alpha=jnp.float32(0.4)), 0.5, rtol=1e-5)


# ----------------------------------------------------------------------- cv
def test_masks_from_splits_takes_an_empty_index_list_and_names_bad_splits():
    train, val = masks_from_splits([([0, 1], []), ([], [2, 3])], 4)
    np.testing.assert_array_equal(train, [[1, 1, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(val, [[0, 0, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(TypeError, match="splits must be an iterable"):
        masks_from_splits(5, 4)
    with pytest.raises(ValueError, match=r"splits\[0\] must be a \(train_indices, val_indices\) pair"):
        masks_from_splits([5], 4)


def test_cross_validate_rejects_masks_without_folds_or_samples():
    def fit_and_score(h, tw, vw):
        return jnp.sum(vw) * h

    with pytest.raises(ValueError, match=r"masks must have shape \(k, n\) with k, n >= 1"):
        cross_validate(fit_and_score, 1.0, np.ones((0, 4), bool))
    with pytest.raises(ValueError, match=r"masks must have shape \(k, n\) with k, n >= 1"):
        cross_validate(fit_and_score, 1.0, np.ones((2, 0), bool))
    # a fold with nothing to score (an empty split) would give nan: refused by number
    train, val = masks_from_splits([([0, 1], [2, 3]), ([0, 1, 2, 3], [])], 4)
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\] have no validation or no training sample"):
        cross_validate(fit_and_score, 1.0, (train, val))
    with pytest.raises(ValueError, match=r"splits\[0\] train indices must be a 1-d sequence"):
        masks_from_splits([([[0, 1]], [2])], 4)
    # a list of k rows is k validation masks, not a (train, val) pair
    rows = [[True, False, False, True], [False, True, True, False], [False, False, True, True]]
    for k in (2, 3):
        np.testing.assert_allclose(float(cross_validate(fit_and_score, 1.0, rows[:k])),
                                   np.mean(np.sum(rows[:k], axis=1)))


def test_multi_objective_checks_and_four_objectives():
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))

    def four(c):
        return jnp.stack([c["x"], 1.0 - c["x"], c["y"], 1.0 - c["y"]])

    nsga = jaxhpo.NSGA2(space, 8, num_objectives=4)
    res = jaxhpo.minimize(four, space, nsga, num_generations=2, key=0)  # a Monte Carlo hypervolume
    assert len(res.pareto_params) > 0 and res.hypervolume > 0
    again = jaxhpo.minimize(four, space, nsga, num_generations=2, key=0)
    assert again.hypervolume == res.hypervolume  # its draws come from the search's key
    two = jaxhpo.NSGA2(space, 8, num_objectives=2)
    f2 = lambda c: jnp.stack([c["x"], c["y"]])  # noqa: E731
    with pytest.raises(ValueError, match="ref_point is for multi-objective strategies"):
        jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, ref_point=[1.0])
    with pytest.raises(TypeError, match="ref_point must be 2 numbers"):
        jaxhpo.minimize(f2, space, two, num_generations=1, ref_point="ab")
    for bad, match in (([1.0, float("nan")], "ref_point must be 2 finite numbers"),
                       ([1.0, 2.0, 3.0], r"ref_point must have shape \(2,\)")):
        with pytest.raises(ValueError, match=match):
            jaxhpo.minimize(f2, space, two, num_generations=1, ref_point=bad)
    with pytest.raises(ValueError, match="objective must return real values"):
        jaxhpo.minimize(lambda c: c["x"] + 1j, SPACE, STRATEGY, num_generations=1)


def test_cmaes_and_local_search_params_follow_the_constructors_rules():
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    cma = jaxhpo.CMAES(space, 4)
    for params, match in [({"sigma0": -0.2}, "sigma0 must be a positive finite"),
                          ({"sigma0": float("nan")}, "sigma0"), ({"x0": [2.0, 0.5]}, "x0 must lie in"),
                          ({"max_condition": 0.0}, "max_condition"), ({"x0": [0.5, 0.5, 0.5]}, "x0 must have shape")]:
        with pytest.raises(ValueError, match=match):
            jaxhpo.minimize(lambda c: c["x"], space, cma, num_generations=1, params=params)
    for nested in ([[0.5, 0.5]] * 2, [[0.5, 0.5, 0.5]] * 2):  # the shape given, named (a list's length was)
        with pytest.raises(ValueError, match=rf"x0 must have shape \(2,\).*got shape \(2, {len(nested[0])}\)"):
            cma.init(0, {"x0": nested})
    res = jaxhpo.minimize(lambda c: c["x"] + c["y"], space, cma, num_generations=2, params={"x0": [0.1, 0.2]})
    assert np.isfinite(res.best_value)
    with pytest.raises(ValueError, match="step_min <= step_init <= step_max"):
        jaxhpo.minimize(square, SPACE, jaxhpo.LocalSearch(SPACE, 4), num_generations=1,
                        params={"step_min": 0.5, "step_max": 0.2})


def test_auto_chunk_size_names_bad_arguments():
    from jaxhpo.evaluate import auto_chunk_size

    config = {"x": jnp.float32(0.5)}
    assert 1 <= auto_chunk_size(square, config, 64, free_bytes=10**9) <= 64
    for kwargs, match in [(dict(memory_fraction="0.5"), "memory_fraction"), (dict(devices=[]), "devices"),
                          (dict(free_bytes="1e9"), "free_bytes"), (dict(free_bytes=-5), "free_bytes"),
                          (dict(free_bytes=float("inf")), "finite number of bytes")]:
        with pytest.raises(ValueError, match=match):
            auto_chunk_size(square, config, 64, **kwargs)
    with pytest.raises(TypeError, match="objective must be callable"):
        auto_chunk_size(None, config, 64)


def test_array_params_outside_vmap_and_labels_equal_by_value_are_refused():
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0), y=jaxhpo.Float(0.0, 1.0))
    de = jaxhpo.DifferentialEvolution(space, 8)
    with pytest.raises(ValueError, match=r"params\['F'\] must be a scalar \(to search over several values, vmap"):
        jaxhpo.minimize(lambda c: c["x"], space, de, num_generations=2, params={"F": np.array([0.5, 0.9])})
    with pytest.raises(ValueError, match="1 and 1.0 are equal"):
        jaxhpo.Categorical([1, 1.0, 2])
    with pytest.raises(ValueError, match="1 appears twice"):  # np.int64(1) is taken as 1
        jaxhpo.Categorical([1, np.int64(1)])
    assert jaxhpo.Categorical([1, True, "off"]).cardinality == 3
    with pytest.raises(ValueError, match="high - low within float32's range"):
        jaxhpo.Float(-3e38, 3e38)
    assert jaxhpo.Float(1e-30, 3e38, log=True).high == 3e38


def test_evaluate_called_again_reads_the_objective_afresh_and_measures_auto_once():
    # Outside a trace evaluate runs op by op: a second call sees the objective's
    # current state (a compiled program keyed on the objective would not) and
    # compiles nothing unchunked; "auto" measures the objective's memory once.
    from jaxhpo.evaluate import evaluate
    compiles = []
    listener = lambda name, *a, **k: compiles.append(name)  # noqa: E731
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        scale = np.ones(1, np.float32)
        f = lambda c: jnp.sin(c["x"]) ** 2 * scale[0]  # noqa: E731
        configs = {"x": jnp.linspace(0.0, 1.0, 24)}
        expected = np.sin(np.linspace(0.0, 1.0, 24, dtype=np.float32)) ** 2
        for chunk in (None, "auto"):
            np.testing.assert_allclose(np.asarray(evaluate(f, configs, chunk)), expected, rtol=1e-6)
            compiles.clear()
            scale[0] = 3.0
            again = np.asarray(evaluate(f, configs, chunk))
            scale[0] = 1.0
            assert "/jax/core/compile/backend_compile_duration" not in compiles, chunk
            np.testing.assert_allclose(again, 3.0 * expected, rtol=1e-6)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def test_common_mistakes_get_errors_that_say_what_to_do():
    """The calls users get wrong first: each refused by name, before any compile."""
    # an objective returning (value, grads) without has_grad
    with pytest.raises(TypeError, match="needs has_grad=True"):
        gradient_tune(lambda c: (square(c), {"x": 2 * c["x"]}), SPACE, popsize=2, num_steps=2)
    # run's initial takes cube points, minimize's configurations
    with pytest.raises(TypeError, match="run's initial takes \\(k, dim\\) cube points"):
        jaxhpo.run(STRATEGY, square, 0, 2, initial=[{"x": 0.5}])
    # strategy params: a dict of numbers
    de = jaxhpo.DifferentialEvolution(SPACE, 4)
    with pytest.raises(TypeError, match=r"params\['F'\] must be a real number"):
        jaxhpo.minimize(square, SPACE, de, num_generations=2, params={"F": None})
    with pytest.raises(TypeError, match="params must be a dict of settings"):
        de.init(0, ["F"])
    # a mesh or devices of the wrong kind
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        jaxhpo.evaluate(square, {"x": jnp.zeros(2)}, mesh="x")
    with pytest.raises(TypeError, match="devices must be a sequence of jax.Device"):
        jaxhpo.auto_chunk_size(square, {"x": jnp.zeros(())}, 8, devices="cpu")
    # a 0-d jax array is a number in a configuration
    res = jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=1, key=0, initial={"x": jnp.float32(0.5)})
    assert res.best_params["x"] == 0.5


def test_a_trainer_whose_evaluate_returns_no_loss_is_named():
    from jaxhpo.training import Trainer, successive_halving
    space = Space(lr=Float(0.1, 1.0))
    init = lambda k, hp: {"w": jnp.zeros(2)}  # noqa: E731
    step = lambda s, hp: {"w": s["w"] + hp["lr"]}  # noqa: E731
    for bad, match in ((lambda s, hp: None, "trainer.evaluate must return the loss as one real array"),
                       (lambda s, hp: {"loss": s["w"][0]}, "trainer.evaluate must return the loss"),
                       (lambda s, hp: s["w"][0] + 1j, "trainer.evaluate must return real values")):
        with pytest.raises(TypeError, match=match):
            successive_halving(Trainer(init, step, bad), space, 0, num_configs=2, min_budget=1, max_budget=1)
    # a tuple is refused (objectives are stacked; other outputs are has_aux's aux), not taken as objectives
    with pytest.raises(TypeError, match=r"jnp.stack.*has_aux=True"):
        successive_halving(Trainer(init, step, lambda s, hp: (s["w"][0], hp["lr"])), space, 0, num_configs=2,
                           min_budget=1, max_budget=1)
    # strategy params of any real dtype (bfloat16 too) are numbers
    cma = jaxhpo.CMAES(Space(a=Float(0.0, 1.0), b=Float(0.0, 1.0)), 4)
    assert float(cma.init(0, {"sigma0": jnp.asarray(0.25, jnp.bfloat16)}).params["sigma0"]) == 0.25


def test_cross_validation_masks_closed_over_in_a_compiled_objective():
    """Concrete masks inside a trace are checked on the host (indexing them there is traced)."""
    def fit_and_score(h, tw, vw):
        return jnp.sum(vw * h) / jnp.sum(vw) + 0.0 * jnp.sum(tw)

    for masks in ((~kfold_masks(6, 3), kfold_masks(6, 3)),
                  tuple(jnp.asarray(m) for m in masks_from_splits([([2, 3, 4, 5], [0, 1]), ([0, 1], [2, 3, 4, 5])], 6))):
        assert float(jax.jit(lambda h: cross_validate(fit_and_score, h, masks))(2.0)) == 2.0


def test_a_step_that_changes_the_state_is_named_in_every_mode():
    from jaxhpo.hypergrad import rollout, unrolled

    def widening(state, h, t):
        return {"w": jnp.concatenate([state["w"], state["w"]])[:3] * h["lr"]}

    def retyped(state, h, t):
        return {"w": (state["w"] * h["lr"]).astype(jnp.int32)}

    state, h = {"w": jnp.ones(2)}, {"lr": jnp.float32(0.5)}
    val = lambda s, h: jnp.sum(s["w"])  # noqa: E731
    for step, match in ((widening, r"state\['w'\] went from \(2,\) float32 to \(3,\) float32"),
                        (retyped, r"state\['w'\] went from \(2,\) float32 to \(2,\) int32")):
        with pytest.raises(TypeError, match=match):
            rollout(step, h, state, 3)
        for mode in ("reverse", "forward"):
            with pytest.raises(TypeError, match=match):
                unrolled(step, val, 3, mode=mode)(h, state)
    with pytest.raises(TypeError, match="step must return a state of init_state's structure"):
        rollout(lambda s, h, t: (s, 0), h, state, 3)


def test_space_helpers_check_their_inputs():
    space = Space(x=Float(0.0, 1.0), n=jaxhpo.Int(1, 5), c=jaxhpo.Categorical(["a", "b"]))
    # (n went to jax.random.uniform unchecked: 2**40 made an array whose read aborted the process)
    for n in (2**40, -1, 2.5, True):
        with pytest.raises(ValueError, match="sample n must be an integer"):
            space.sample(0, n)
    for n in (np.int64(3), jnp.int32(3), np.array(3, np.uint8)):  # concrete 0-d integers
        assert space.sample(0, n).shape == (3, 3)
    # (concrete values outside the bounds were clipped into another, valid configuration)
    for bad, match in (({"x": 0.5, "n": 9, "c": 0}, "'n' must be an integer in \\[1, 5\\]"),
                       ({"x": 0.5, "n": 2, "c": 5}, "'c' must be a choice index in \\[0, 1\\]"),
                       ({"x": 1.5, "n": 2, "c": 0}, "'x' must be in \\[0.0, 1.0\\]"),
                       ({"x": float("nan"), "n": 2, "c": 0}, "'x' must be in"),
                       ({"x": 0.5, "n": 2.5, "c": 0}, "'n' must be an integer")):
        with pytest.raises(ValueError, match="encode input " + match):
            space.encode(bad)
    edge = Space(x=Float(0.0, 0.1))
    assert float(edge.encode({"x": np.float32(0.1)})[0]) == 1.0  # the float32 bound is inside
    for call in (space.from_python, space.fixed_coordinates):
        for config in (None, 3):
            with pytest.raises(TypeError, match="config must be a dict of parameter values or a list"):
                call(config)
    with pytest.raises(TypeError, match="space must be a jaxhpo.Space"):
        jaxhpo.GridSearch(None)
    from jaxhpo.hypergrad.tuning import float_mask
    with pytest.raises(TypeError, match="space must be a jaxhpo.Space"):
        float_mask(None)


def test_integer_settings_past_int32_are_refused_by_name():
    # (each became a bare OverflowError, or an out-of-memory error, once the search was traced)
    for make, name in ((lambda: jaxhpo.TPE(SPACE, 2, n_startup=2**31), "n_startup"),
                       (lambda: jaxhpo.GPBO(SPACE, 2, fit_steps=2**31), "fit_steps"),
                       (lambda: jaxhpo.GPBO(SPACE, 2, n_init=2**31), "n_init"),
                       (lambda: jaxhpo.NSGA2(SPACE, 4, 2, archive_size=2**31), "archive_size")):
        with pytest.raises(ValueError, match=f"{name} must be at most 2\\*\\*31 - 1"):
            make()
    with pytest.raises(ValueError, match="num_generations must be at most 2\\*\\*31 - 1"):
        jaxhpo.minimize(square, SPACE, STRATEGY, num_generations=2**31)
    with pytest.raises(ValueError, match="maxiter must be at most 2\\*\\*31 - 1"):
        conjugate_gradient(lambda v: v, jnp.ones(2), maxiter=2**31)
    # a pruner's counts are host numbers: steps past int32 are fine there
    from jaxhpo.study import MedianPruner
    assert MedianPruner(n_warmup_steps=2**40).n_warmup_steps == 2**40


def test_run_names_initial_points_that_are_not_numbers():
    with pytest.raises(TypeError, match="initial must be \\(k, dim\\) cube points"):
        jaxhpo.run(STRATEGY, square, 0, 1, initial="abc")


def test_pareto_and_cv_inputs_that_hold_no_numbers_are_named():
    from jaxhpo import cv, pareto

    v = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]], np.float32)
    for call, match in ((lambda: pareto.nondominated_rank("abc"), "values must be an array of numbers"),
                        (lambda: pareto.nondominated_rank(None), "values must be an array of numbers"),
                        (lambda: pareto.constrained_nondominated_rank(v, None), "constraints must be an array"),
                        (lambda: pareto.pareto_front_mask(v, mask="abc"), "mask must be a boolean array"),
                        (lambda: pareto.dominates([1j, 1j], [1, 1]), "a must be real objective values"),
                        (lambda: cv.fold_scores(lambda h, t, s: 0.0, {"a": jnp.ones(())}, None),
                         "masks must be a \\(k, n\\) boolean array")):
        with pytest.raises(TypeError, match=match):
            call()
    # a failed row's rank past int32 reads as failed, not wrapped into front 0
    want = [np.inf, 0.0, np.inf]
    for ranks in (np.array([0, 3, 0]), np.array([0, 2**32, 0], np.int64), np.array([0, 2**32 - 1, 0], np.uint32)):
        np.testing.assert_array_equal(pareto.crowding_distance(v, ranks), want)
    # every JAX number type is numbers (bfloat16's NumPy kind is "V")
    np.testing.assert_array_equal(pareto.nondominated_rank(jnp.asarray(v, jnp.bfloat16)), [0, 0, 1])


def test_population_helpers_name_bad_arguments():
    import importlib

    ev = importlib.import_module("jaxhpo.evaluate")  # (jaxhpo.evaluate the attribute is the function)

    x = jnp.ones((4, 2))
    for call, error, match in (
            (lambda: ev.map_population(lambda a: a, {}), ValueError, "args must be a pytree of arrays sharing"),
            (lambda: ev.map_population(lambda a: a, (jnp.ones(4), jnp.ones(6)), 2), ValueError, "sharing one"),
            (lambda: ev.map_population(lambda a: a, x, mesh="x"), TypeError, "map_population: mesh must be"),
            (lambda: ev.map_population(3, x), TypeError, "fn must be callable"),
            (lambda: ev.shard_population(x, "m"), TypeError, "shard_population: mesh must be"),
            (lambda: ev.onto_mesh(x, "m"), TypeError, "onto_mesh: mesh must be"),
            (lambda: ev.population_sharding(None, 2), TypeError, "population_sharding: mesh must be"),
            (lambda: ev.free_memory_bytes(["a"]), TypeError, "devices must be a sequence of jax.Device"),
            (lambda: ev.auto_chunk_size(square, {"x": 0.0}, 4, devices=3), TypeError, "devices must be"),
            (lambda: ev.auto_chunk_size(square, {"x": 0.0}, 4, decode=3), TypeError, "decode must be callable"),
            (lambda: ev.per_config_bytes(None, {"x": 0.0}), TypeError, "objective must be callable"),
            (lambda: ev.per_config_bytes(square, "abc"), TypeError, "config must be one configuration")):
        with pytest.raises(error, match=match):
            call()
    # a configuration may carry a typed key, or bfloat16 numbers
    config = {"k": jax.random.key(0), "w": jnp.ones(3, jnp.bfloat16)}
    assert ev.per_config_bytes(lambda c: jax.random.normal(c["k"]) + c["w"].sum(), config) >= 1


def test_tell_refuses_a_result_with_an_error():
    # (the trial was stored complete and the error text dropped)
    from jaxhpo.study import Study

    study = Study(SPACE, STRATEGY, seed=0)
    (trial, _) = study.ask_trials(2)
    with pytest.raises(ValueError, match="was given a result .* and an error"):
        study.tell(trial, 1.0, error="boom")
    study.tell(trial, None, error="boom")
    assert study.trials[0].error == "boom"


def test_tell_values_and_inject_arguments_are_checked_by_name():
    from jaxhpo import CMAES, DifferentialEvolution

    space = Space(a=Float(0.0, 1.0), b=Float(0.0, 1.0))
    for strategy in (CMAES(space, 4), DifferentialEvolution(space, 4)):
        state = strategy.init(0)
        x, state = strategy.ask(0, state)
        for values in (np.array(["1", "2", "3", "4"]), np.array([True, False, True, True])):
            with pytest.raises(TypeError, match="values must be real numbers, got dtype"):
                strategy.tell(state, x, values)
        first = np.array([True, False, False, False])
        for bad_x, bad_rows, match in ((x, first[:2], r"injected must be a \(4,\) bool array"),
                                       (x, first.astype(np.int32), r"injected must be a \(4,\) bool array"),
                                       (x[:3], first[:3], r"inject: x must have shape \(popsize, dim\)"),
                                       (x.at[0, 0].set(jnp.nan), first, r"inject: x must hold points of the unit"),
                                       (x + 3.0, first, r"inject: x must hold points of the unit")):
            with pytest.raises(ValueError, match=match):
                strategy.inject(state, bad_x, bad_rows)
        strategy.tell(strategy.inject(state, x, first), x, np.arange(4.0))
    # an objective returning a flag is refused too (True and False are no objective values)
    with pytest.raises(ValueError, match="objective must return real values, got bool"):
        jaxhpo.minimize(lambda c: c["x"] > 0.5, SPACE, STRATEGY, num_generations=1, key=0)


def test_an_unhashable_objective_is_refused_by_name_before_compiling():
    import dataclasses

    @dataclasses.dataclass
    class Objective:  # a dataclass with __eq__ and no __hash__
        target: float

        def __call__(self, p):
            return (p["x"] - self.target) ** 2

    for call in (lambda: jaxhpo.minimize(Objective(0.5), SPACE, STRATEGY, num_generations=1, chunk_size="auto"),
                 lambda: jaxhpo.run(STRATEGY, Objective(0.5), 0, 1),
                 lambda: jaxhpo.loop.search_memory(STRATEGY, Objective(0.5), 1)):
        with pytest.raises(TypeError, match="objective must be hashable: it is a static argument"):
            call()
    frozen = dataclasses.make_dataclass("Frozen", [("target", float)], frozen=True,
                                        namespace={"__call__": lambda self, p: (p["x"] - self.target) ** 2})
    assert jaxhpo.minimize(frozen(0.5), SPACE, STRATEGY, num_generations=2, key=0).best_value >= 0
    # an empty batch needs no chunk: "auto" sized nothing (it refused n = 0, a parameter never passed)
    assert jaxhpo.evaluate(square, {"x": jnp.ones(0)}, chunk_size="auto").shape == (0,)


def test_host_integers_beyond_int32_are_numbers_not_wrapped():
    # Without x64, jnp.asarray wrapped a host int64 2**32 to 0: a huge loss read
    # as the best one, a hypervolume twice what it is, the worst member a parent.
    from jaxhpo.training import exploit_parents

    s = RandomSearch(SPACE, 4)
    state = s.init(0)
    x, state = s.ask(1, state)
    for values in (np.array([2**40, 5, 7, 9], np.int64), [2**32, 5, 7, 9]):
        told = s.tell(state, x, values)
        assert float(told.best_value) == 5.0
        np.testing.assert_array_equal(np.asarray(told.best_x), np.asarray(x[1]))
    assert float(jaxhpo.hypervolume(np.array([[2**33, 1]], np.int64), [2**34, 2])) == 2.0**33
    from jaxhpo import pareto

    big = np.int64(2**32)
    assert not bool(pareto.dominates(np.array([big, 0]), np.array([1, 1])))
    assert not bool(pareto.dominates([2**32, 0], [1, 1]))
    ranks = pareto.constrained_nondominated_rank(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[big], [0]]))
    assert np.asarray(ranks).tolist() == [1, 0]  # the violation of 2**32 is one
    parents = np.asarray(exploit_parents(0, np.array([2**32, 1, 2, 3], np.int64), 1))
    assert parents.tolist() == [1, 1, 2, 3]


def test_a_user_strategy_with_an_unhashable_setting_runs_everywhere():
    # A class outside jaxhpo compares and hashes by identity: an array among
    # its settings is fine for ask / tell, run and Study alike (run's static
    # argument and Study's program cache refused it before).
    class Shifted(RandomSearch):
        def __init__(self, space, popsize, shift):
            super().__init__(space, popsize)
            self.shift = np.asarray(shift, np.float32)

        def _ask(self, key, state):
            x, state = super()._ask(key, state)
            return x * 0.5 + self.shift, state

    s = Shifted(SPACE, 3, [0.5])
    assert s == s and s != Shifted(SPACE, 3, [0.5]) and hash(s) == hash(s)
    x, state = s.ask(1, s.init(0))
    assert bool(jnp.all(x >= 0.5))
    assert int(s.tell(state, x, jnp.arange(3.0)).generation) == 1
    _, trace = jaxhpo.run(s, square, 0, 2, history="all")
    assert bool(jnp.all(trace.x >= 0.5))
    study = jaxhpo.Study(SPACE, s)
    study.optimize(lambda p: float(p["x"]) ** 2, num_trials=3, progress=False)
    assert all(SPACE.encode(t.params)[0] >= 0.5 - 1e-6 for t in study.trials)


def test_user_strategies_differing_in_a_private_attribute_never_share_a_program():
    # Two instances equal in their public settings, not in a private attribute
    # their _ask reads: each proposes its own points, op by op and through run,
    # minimize, Study and successive halving (these keyed the strategy by its
    # settings and ran the first instance's program for the second).
    class Scaled(RandomSearch):
        def __init__(self, space, popsize, scale):
            super().__init__(space, popsize)
            self._scale = float(scale)

        def _ask(self, key, state):
            x, state = super()._ask(key, state)
            return x * self._scale, state

    a, b = Scaled(SPACE, 4, 1.0), Scaled(SPACE, 4, 0.0)
    assert a != b
    xa, _ = a.ask(1, a.init(0))
    xb, _ = b.ask(1, b.init(0))
    assert float(jnp.max(xa)) > 0 and float(jnp.max(xb)) == 0
    for s, zero in ((a, False), (b, True)):
        _, trace = jaxhpo.run(s, square, 0, 2, history="all")
        assert bool(jnp.all(trace.x == 0)) == zero
        result = jaxhpo.minimize(square, SPACE, s, num_generations=2, history="all")
        assert bool(jnp.all(result.history.x == 0)) == zero
        study = jaxhpo.Study(SPACE, s)
        study.optimize(lambda p: float(p["x"]) ** 2, num_trials=4, progress=False)
        assert all(SPACE.encode(t.params)[0] == 0 for t in study.trials) == zero


def test_a_user_strategy_that_returns_a_wrong_state_or_x_is_named():
    class BadTell(RandomSearch):
        def _tell(self, state, x, values):
            return (state,)

    class ReshapedTell(RandomSearch):
        def _tell(self, state, x, values):
            return state._replace(best_x=x)

    class TallAsk(RandomSearch):
        def _ask(self, key, state):
            x, state = super()._ask(key, state)
            return jnp.concatenate([x, x[:1]]), state

    class BareAsk(RandomSearch):  # the state forgotten
        def _ask(self, key, state):
            return super()._ask(key, state)[0]

    class SwappedAsk(RandomSearch):
        def _ask(self, key, state):
            x, state = super()._ask(key, state)
            return state, x

    for cls, call, match in (
            (BadTell, "tell", r"BadTell._tell must return a state of the type it was given \(RandomState"),
            (ReshapedTell, "tell", r"ReshapedTell._tell must return a state like.*best_x went from shape \(1,\)"),
            (TallAsk, "ask", r"TallAsk._ask must return x of shape \(popsize, dim\) = \(4, 1\).*\(5, 1\)"),
            (BareAsk, "ask", r"BareAsk._ask must return \(x, state\)"),
            (SwappedAsk, "ask", r"SwappedAsk._ask must return \(x, state\).*first item is a RandomState")):
        s = cls(SPACE, 4)
        state = s.init(0)
        with pytest.raises(TypeError, match=match):
            x, state = s.ask(1, state)
            s.tell(state, x, jnp.arange(4.0))
        with pytest.raises(TypeError, match=match):
            jaxhpo.run(s, square, 0, 2)


def test_a_user_strategys_init_must_return_a_state_with_the_common_fields():
    # A dict (or a NamedTuple without best_x) failed at the first tell, naming an attribute.
    class DictInit(RandomSearch):
        def _init(self, key, params):
            return dict(super()._init(key, params)._asdict())

    class WideBest(RandomSearch):
        def _init(self, key, params):
            return super()._init(key, params)._replace(best_x=jnp.zeros((3,)))

    with pytest.raises(TypeError, match=r"DictInit._init must return a NamedTuple state .*got dict"):
        DictInit(SPACE, 4).init(0)
    with pytest.raises(ValueError, match=r"WideBest._init must return a state whose best_x has shape \(1,\)"):
        jaxhpo.run(WideBest(SPACE, 4), square, 0, 1)


def test_ask_and_tell_refuse_another_strategys_state():
    # Another popsize's state failed inside tell (a concatenate of mismatched shapes);
    # another strategy's state of fitting shapes was read as garbage.
    space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))
    small, big = jaxhpo.CMAES(space, 4), jaxhpo.CMAES(space, 6)
    state = big.init(0)
    with pytest.raises(ValueError, match=r"ask: state\.\w+ has shape .*this CMAES's init makes"):
        small.ask(1, state)
    x, own = small.ask(1, small.init(0))
    with pytest.raises(ValueError, match=r"tell: state\.\w+ has shape"):
        small.tell(state, x, jnp.arange(4.0))
    rs = RandomSearch(space, 4)
    with pytest.raises(TypeError, match="tell: state must be a state of this RandomSearch"):
        rs.tell(own, x, jnp.arange(4.0))
    with pytest.raises(TypeError, match="ask: state must be a state of this RandomSearch"):
        rs.ask(1, jaxhpo.TPE(space, 4).init(0))


def test_weakly_typed_state_leaves_compile_once():
    # A user _init with jnp.full(n, 0.5) (weakly typed) made the state that
    # tell returns a different type: every program compiled twice.
    from helpers import compiles_during

    class Drifting(RandomSearch):
        def _init(self, key, params):
            return super()._init(key, params)._replace(best_x=jnp.full((self.dim,), 0.5))

    s = Drifting(SPACE, 4)
    state = s.init(0)
    counts = []
    for g in range(3):
        with compiles_during() as compiles:
            x, state = s.ask(g, state)
            state = s.tell(state, x, jnp.arange(4.0))
        counts.append(len(compiles))
    assert counts[1:] == [0, 0], counts


def test_params_without_a_rule_are_checked_against_their_default():
    class Loose(RandomSearch):
        def default_params(self):
            return {"sigma": jnp.float32(1.0), "m": jnp.int32(2), "flag": jnp.bool_(False)}

    s = Loose(SPACE, 4)
    for params, error, match in (({"sigma": None}, TypeError, r"params\['sigma'\] must be a real number"),
                                 ({"sigma": "a"}, TypeError, r"params\['sigma'\] must be a real number"),
                                 ({"sigma": True}, TypeError, r"params\['sigma'\] must be a real number"),
                                 ({"m": 2.7}, ValueError, r"params\['m'\] must be an integer"),
                                 ({"flag": 1}, TypeError, r"params\['flag'\] must be a bool")):
        with pytest.raises(error, match=match):
            s.init(0, params)
        with pytest.raises(error, match=match):
            jaxhpo.run(s, square, 0, 1, params=params)
    for value in (np.int64(2**40), 2**40, np.float64(3e9), float("inf"), np.float32("nan")):
        with pytest.raises(ValueError, match=r"params\['m'\] must be an integer"):  # int32 wrapped or saturated
            s.init(0, {"m": value})
    state = s.init(0, {"sigma": 2, "m": 3.0, "flag": np.bool_(True)})
    assert state.params["m"].dtype == jnp.int32 and int(state.params["m"]) == 3


def test_a_vector_param_given_as_a_list_of_traced_values_vmaps():
    # init converted a list on the host with numpy, which cannot hold a tracer.
    s = jaxhpo.CMAES(Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0)), 4)
    means = jax.vmap(lambda a: s.init(0, {"x0": [a, 0.5]}).mean)(jnp.array([0.2, 0.8]))
    assert means.shape == (2, 2)
    np.testing.assert_allclose(np.asarray(means), [[0.2, 0.5], [0.8, 0.5]], atol=1e-6)


def test_a_user_gpbo_subclass_sized_for_a_search_is_the_same_copy_each_time():
    # minimize sizes a default-capacity GPBO with a copy; a subclass compares by
    # identity, so a new copy per call compiled the whole search again.
    class MyGP(jaxhpo.GPBO):
        pass

    g = MyGP(SPACE, 2)
    a, b = g.sized_for(10), g.sized_for(10)
    assert a is b and a is not g and a.capacity == 10 and g.capacity == 256
    assert g.sized_for(12) is not a and g.sized_for(12).capacity == 12


def test_default_buffers_hold_a_large_population_and_popsize_minimums_are_named():
    # A popsize above the default capacity was refused because of a capacity
    # the user never gave; GA and NSGA2 refused popsize 0 with ">= 1" though
    # their minimum is 2.
    space = Space(x=Float(0.0, 1.0))
    assert jaxhpo.GPBO(space, 257).capacity == 257 and jaxhpo.GPBO(space, 4).capacity == 256
    assert jaxhpo.MOTPE(space, 257).capacity == 257 and jaxhpo.TPE(space, 1025).capacity == 1025
    assert jaxhpo.TPE(space) == jaxhpo.TPE(space, capacity=1024)
    assert jaxhpo.GPBO(space, 300).sized_for(100).capacity == 300
    with pytest.raises(ValueError, match=r"capacity must be >= popsize \(257\), got 256"):
        jaxhpo.GPBO(space, 257, capacity=256)
    for cls in (jaxhpo.GeneticAlgorithm, jaxhpo.NSGA2):
        for popsize in (0, 1):
            with pytest.raises(ValueError, match=f"popsize must be >= 2, got {popsize}"):
                cls(space, popsize)


def test_magnitude_mask_takes_a_bool_active_and_ragged_cv_masks_are_named():
    # An integer `active` was and-ed bitwise (2 & True is 0: an empty mask, no
    # error) and a float one failed inside JAX; ragged mask rows gave NumPy's error.
    from jaxhpo.training import magnitude_mask

    w = jnp.array([[0.5, -2.0, 1.0], [3.0, 0.1, -0.2]])
    keep = magnitude_mask(w, 0.5, jnp.array([True, True, False]))
    assert keep.dtype == jnp.bool_ and np.asarray(keep).tolist() == [[False, True, False], [True, False, False]]
    for active in (jnp.array([2, 2, 0]), jnp.array([1.0, 1.0, 0.0])):
        with pytest.raises(TypeError, match="active must be a bool array, got dtype"):
            magnitude_mask(w, 0.5, active)
    with pytest.raises(TypeError, match=r"masks must be a \(k, n\) boolean array .*rows of lengths \[2, 3\]"):
        jaxhpo.fold_scores(lambda p, tr, va: 0.0, {}, [[True, False], [False, True, True]])


def test_population_training_refuses_hyperparameters_the_classifier_cannot_realise():
    # Given concretely to population training (not through a search's space,
    # which check_space checks), an unknown name or an out-of-range width,
    # depth, sparsity or optimiser index was clipped or ignored under vmap.
    from jaxhpo.training import MLPClassifierTrainer, init_population, train_bucketed

    X = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    trainer = MLPClassifierTrainer(X, y, X, y, max_width=8, max_depth=1, optimizers=("sgd", "adam"))
    keys = jax.random.split(jax.random.key(0), 2)
    base = {"width": np.array([4, 8]), "learning_rate": np.full(2, 0.1, np.float32)}
    for bad, rule in ((dict(depth=np.array([3, 1])), r"hparams\['depth'\] must lie in \[1, 1\]"),
                      (dict(optimizer=np.array([7, 1])), r"hparams\['optimizer'\] must lie in \[0, 1\]"),
                      (dict(sparsity=np.array([1.5, 0.0])), r"hparams\['sparsity'\] must lie in \[0, 1\]"),
                      (dict(widht=np.array([4, 4])), r"\['widht'\] are not hyperparameters")):
        with pytest.raises(ValueError, match=rule):
            train_bucketed(lambda w: MLPClassifierTrainer(X, y, X, y, max_width=w, optimizers=("sgd", "adam")),
                           keys, {**base, **bad}, 2, buckets=(8,), chunk=2)
    with pytest.raises(ValueError, match=r"hparams\['width'\] must lie in \[1, 8\]"):
        init_population(trainer, keys, {**base, "width": np.array([20, 8])})
