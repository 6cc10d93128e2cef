"""Searches continued from a state, checkpoints on disk, and the key schedule shared with Study.

(The strategy matrix checks, for every strategy, that a search run in two
segments equals the search run at once.)
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import Float, Int, Space
from jaxhpo.study.serialize import StateChecksumError, StateFormatError

from helpers import assert_trees_equal

SPACE = Space(x=Float(-2.0, 2.0), n=Int(1, 6))


def f(p):
    return (p["x"] - 0.5) ** 2 + 0.1 * (p["n"] - 3) ** 2


def test_a_study_proposes_what_run_proposes_for_the_same_seed():
    strategy = jaxhpo.CMAES(SPACE, 4)
    _, trace = jaxhpo.run(strategy, f, 5, 3, history="all")
    study = jaxhpo.Study(SPACE, strategy, seed=5)
    study.optimize(lambda p: float(f({k: jnp.asarray(v) for k, v in p.items()})), 12, progress=False)
    asked = np.array([[t.params["x"], t.params["n"]] for t in study.get_trials()])
    proposed = SPACE.decode(jnp.asarray(trace.x.reshape(-1, SPACE.dim)))
    np.testing.assert_allclose(asked[:, 0], np.asarray(proposed["x"]), rtol=1e-6)
    np.testing.assert_array_equal(asked[:, 1], np.asarray(proposed["n"]))


def test_minimize_continues_its_result_with_the_strategy_it_ran():
    gp = jaxhpo.GPBO(SPACE, 4, num_candidates=64, num_local=16, restarts=2, acq_steps=5)
    g = lambda p: (f(p), {"x": p["x"]})  # noqa: E731
    first = jaxhpo.minimize(g, SPACE, gp, key=1, num_generations=3, has_aux=True)
    assert first.strategy.capacity != gp.capacity  # sized to the fresh search
    more = jaxhpo.minimize(g, SPACE, first.strategy, key=1, num_generations=2, has_aux=True, state=first.state)
    assert int(more.state.generation) == 5 and more.num_evaluations == 8 and len(more.history.best_value) == 2
    assert more.best_value <= first.best_value
    if more.best_value < first.best_value:
        assert more.best_aux["x"] == pytest.approx(more.best_params["x"], abs=1e-6)
    else:  # the best was found before this call: its aux is not known here
        assert more.best_aux is None and more.best_params == first.best_params
    with pytest.raises(ValueError, match=r"state\.x has shape .*Result\.strategy"):
        jaxhpo.minimize(f, SPACE, gp, key=1, num_generations=2, state=first.state)


def test_continuation_vmaps_over_keys_and_states():
    s = jaxhpo.RandomSearch(SPACE, 4)
    keys = jax.random.split(jax.random.key(0), 3)
    starts = jax.vmap(lambda k: s.init(jax.random.split(k)[0]))(keys)
    go = jax.jit(jax.vmap(lambda k, st: jaxhpo.run(s, f, k, 2, state=st)))
    mid, _ = go(keys, starts)
    end, trace = go(keys, mid)
    whole, whole_trace = jax.vmap(lambda k: jaxhpo.run(s, f, k, 4))(keys)
    np.testing.assert_array_equal(trace.best_value, whole_trace.best_value[:, 2:])
    np.testing.assert_array_equal(end.best_x, whole.best_x)


def test_bad_states_are_refused_by_name():
    s = jaxhpo.CMAES(SPACE, 4)
    state = s.init(0)
    with pytest.raises(ValueError, match="pass params or state, not both"):
        jaxhpo.run(s, f, 0, 1, params={"sigma0": 0.2}, state=state)
    with pytest.raises(TypeError, match="state must be a state of this CMAES"):
        jaxhpo.run(s, f, 0, 1, state=jaxhpo.RandomSearch(SPACE, 4).init(0))
    with pytest.raises(ValueError, match=r"state\.params\['x0'\] has shape \(3,\)"):
        jaxhpo.run(s, f, 0, 1, state=jaxhpo.CMAES(Space(a=Float(0, 1), b=Float(0, 1), c=Float(0, 1)), 4).init(0))


def test_checkpoint_file_round_trip_and_refusals(tmp_path):
    s = jaxhpo.CMAES(SPACE, 4)
    state, _ = jaxhpo.run(s, f, 2, 2)
    path = tmp_path / "search.state"
    jaxhpo.save_state(path, state)
    back = jaxhpo.load_state(path, s)
    assert_trees_equal(back, state)
    with pytest.raises(StateFormatError, match="does not fit this strategy"):
        jaxhpo.load_state(path, jaxhpo.RandomSearch(SPACE, 4))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "damaged").write_bytes(bytes(data))
    with pytest.raises(StateChecksumError):
        jaxhpo.load_state(tmp_path / "damaged", s)
    with pytest.raises(TypeError, match="strategy must be a jaxhpo strategy"):
        jaxhpo.load_state(path, "cmaes")


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    s = jaxhpo.RandomSearch(SPACE, 4)
    path = tmp_path / "search.state"
    old, _ = jaxhpo.run(s, f, 0, 1)
    jaxhpo.save_state(path, old)
    before = path.read_bytes()
    new, _ = jaxhpo.run(s, f, 0, 2)

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jaxhpo.save_state(path, new)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["search.state"]


def test_save_state_refuses_what_is_not_a_state_and_keeps_permissions(tmp_path):
    s = jaxhpo.RandomSearch(SPACE, 4)
    out = jaxhpo.run(s, f, 0, 1)
    path = tmp_path / "search.state"
    with pytest.raises(TypeError, match=r"run returns \(state, trace\): save the first"):
        jaxhpo.save_state(path, out)
    with pytest.raises(TypeError, match="got NoneType"):
        jaxhpo.save_state(path, None)
    with pytest.raises(FileNotFoundError, match="the folder of .*missing.* does not exist"):
        jaxhpo.save_state(tmp_path / "missing" / "search.state", out[0])
    with pytest.raises(IsADirectoryError, match="save_state: path .* is a folder; give the path of a file"):
        jaxhpo.save_state(tmp_path, out[0])
    assert not path.exists()
    assert [n for n in os.listdir(tmp_path.parent) if n.startswith(tmp_path.name + ".")] == []  # no temporary left
    umask = os.umask(0o022)
    try:
        jaxhpo.save_state(path, out[0])
        assert path.stat().st_mode & 0o777 == 0o644  # a new file: 0o666 less the umask
        path.chmod(0o640)
        jaxhpo.save_state(path, out[0])
        assert path.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its permissions
    finally:
        os.umask(umask)


def test_a_continued_multi_objective_search_keeps_the_earlier_front():
    s = jaxhpo.NSGA2(SPACE, 8, num_objectives=2, archive_size=64)  # room for the whole front
    g = lambda p: jnp.stack([p["x"], (1.0 - p["x"]) ** 2 + 0.1 * p["n"]])  # noqa: E731
    first = jaxhpo.minimize(g, SPACE, s, key=0, num_generations=2, history="all")
    more = jaxhpo.minimize(g, SPACE, s, key=0, num_generations=2, history="all", state=first.state)
    # every point of the earlier front is matched or dominated by the continued one
    for v in first.pareto_values:
        assert np.any(np.all(more.pareto_values <= v, axis=1))
    assert more.hypervolume >= first.hypervolume - 1e-6


def test_grid_search_continues_where_it_stopped():
    grid = jaxhpo.GridSearch(SPACE, 4, num=3)  # 3 x 3 x ... points in batches of 4
    whole = jaxhpo.minimize(f, SPACE, grid, key=0)
    part = jaxhpo.minimize(f, SPACE, grid, key=0, num_generations=1)
    rest = jaxhpo.minimize(f, SPACE, grid, key=0, state=part.state)  # the natural length less what ran
    assert part.num_evaluations + rest.num_evaluations == whole.num_evaluations
    assert rest.best_value == whole.best_value
    with pytest.raises(ValueError, match="has run all .* generations"):
        jaxhpo.minimize(f, SPACE, grid, key=0, state=rest.state)
    # a fresh search of one generation is the first generation of a longer one, to the last bit
    # (the initial state is not folded into the first generation's constants)
    space = Space(x=Float(-2.0, 2.0), lr=Float(1e-4, 1.0, log=True))
    grid = jaxhpo.GridSearch(space, 8, num=3)
    h = lambda p: (p["x"] - 0.5) ** 2 + (jnp.log10(p["lr"]) + 2.0) ** 2  # noqa: E731
    _, one = jaxhpo.run(grid, h, 3, 1, history="values")
    _, two = jaxhpo.run(grid, h, 3, 2, history="values")
    np.testing.assert_array_equal(one.values[0], two.values[0])


def test_a_state_made_under_the_other_x64_setting_is_cast_not_refused():
    # CMA-ES keeps its state in the default float type: float64 leaves under
    # x64. minimize(state=) refused such a state as "another strategy's",
    # where load_state casts it.
    from jaxhpo.loop import check_state

    space = jaxhpo.Space(a=jaxhpo.Float(-2.0, 2.0), b=jaxhpo.Float(-2.0, 2.0))
    s = jaxhpo.CMAES(space, 4)
    with jax.enable_x64(True):
        wide = s.init(0)
        assert wide.mean.dtype == np.float64
        wide = jax.tree_util.tree_map(np.asarray, wide)
    narrow = check_state(s, wide)
    assert narrow.mean.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(narrow.mean), np.asarray(wide.mean, np.float32))
    with jax.enable_x64(True):
        assert check_state(s, narrow).mean.dtype == np.float64
    with pytest.raises(ValueError, match="has shape"):
        check_state(s, narrow._replace(mean=np.zeros(3, np.float32)))
