"""Study with several objectives: vector values in storage, the Pareto front,
hypervolume, resume, the upgrade of version-1 files, the plot and the CLI."""

import json
import math
import sqlite3

import jax.numpy as jnp
import numpy as np
import pytest

import jaxhpo
from jaxhpo import cli_study, pareto
from jaxhpo.study import SCHEMA_VERSION, Study, TrialState

SPACE = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0), b=jaxhpo.Float(0.0, 1.0), k=jaxhpo.Categorical(["x", "y"]))
# One strategy for every test here: its ask and tell compile once.
STRATEGY = jaxhpo.NSGA2(SPACE, popsize=6, num_objectives=2, num_constraints=1)
MAXIMIZE = (False, True)


def objective(p):
    """[f1 (min), g (max), constraint]; some trials fail, some are infeasible."""
    if p["b"] > 0.9:
        raise RuntimeError("diverged")
    if p["b"] < 0.08:
        return [float("nan"), 0.0, 0.0]
    f1 = p["a"] + (0.05 if p["k"] == "y" else 0.0)
    f2 = (1.0 + p["b"]) * (1.0 - math.sqrt(p["a"] / (1.0 + p["b"])))
    return [f1, -f2 + 1e-9 * math.pi, 0.15 - p["a"]]  # digits that float32 would lose


def brute_front(values):
    """Indices of rows of ``values (n, m)`` (minimised) that no row dominates."""
    return [i for i, v in enumerate(values)
            if not any(np.all(w <= v) and np.any(w < v) for w in values)]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A file-backed study of 30 trials, closed: (path, trials as stored)."""
    path = tmp_path_factory.mktemp("mo") / "mo.db"
    with Study(SPACE, STRATEGY, seed=1, maximize=MAXIMIZE, storage=str(path), name="mo") as s:
        s.optimize(objective, num_trials=30, progress=False)
        trials = s.trials
    return path, trials


def test_vectors_round_trip_and_failures_are_failed(stored):
    path, trials = stored
    assert len(trials) == 30
    with Study.load(str(path)) as s:
        assert s.multi_objective and s.maximize == MAXIMIZE and s.directions == ("minimize", "maximize")
        assert s.num_objectives == 2 and s.num_constraints == 1
        again = s.trials
    assert again == trials
    done = [t for t in again if t.state == TrialState.COMPLETE]
    failed = [t for t in again if t.state == TrialState.FAILED]
    assert done and failed
    for t in done:  # exactly what the objective returned, as Python floats (not float32)
        want = objective(t.params)
        assert list(t.values) + list(t.constraints) == want and t.value is None
        assert t.feasible == (want[2] <= 0)
    for t in failed:
        assert t.values is None and t.constraints is None and not t.feasible
        assert ("diverged" in t.error) == (t.params["b"] > 0.9)
        assert ("nan" in t.error) == (t.params["b"] < 0.08)
    # the strategy never took a failed or infeasible trial into its Pareto archive
    with Study.load(str(path)) as s:
        state = s.state
    fx, fv, fm = (np.asarray(a) for a in STRATEGY.pareto_front(state))
    assert fm.any() and np.all(np.isfinite(fv[fm]))
    told = {tuple(np.float32(np.array(t.values) * [1, -1])) for t in done if t.feasible}
    assert {tuple(v) for v in fv[fm]} <= told


def test_pareto_front_is_the_brute_force_front_and_hypervolume(stored):
    path, trials = stored
    with Study.load(str(path)) as s:
        front, values = s.pareto_front()
        best = s.best_trials
        hv_default, hv = s.hypervolume(), s.hypervolume((1.2, -1.5))
        with pytest.raises(ValueError, match="no single best"):
            s.best_trial
        with pytest.raises(ValueError, match="ref_point"):
            s.hypervolume((1.0,))
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and t.feasible]
    mins = np.array([[t.values[0], -t.values[1]] for t in feasible])
    expect = {feasible[i].number for i in brute_front(mins)}
    assert {t.number for t in front} == {t.number for t in best} == expect and len(expect) >= 2
    assert [t.number for t in best] == sorted(expect)
    np.testing.assert_array_equal(values, [t.values for t in front])
    assert np.all(np.diff(values[:, 0]) >= 0)  # sorted by the first objective
    # hypervolume in minimisation signs, the reference point flipped like the values
    front_min = np.array([[v[0], -v[1]] for v in values])
    ref = np.array([1.2, 1.5])
    assert hv == pytest.approx(float(pareto.hypervolume(front_min, ref)), rel=1e-6)
    # and against the union of boxes, by a sweep over the sorted front
    order = np.argsort(front_min[:, 0])
    xs, ys = front_min[order, 0], np.minimum.accumulate(front_min[order, 1])
    area = sum((x1 - x0) * (ref[1] - y) for x0, x1, y in zip(xs, list(xs[1:]) + [ref[0]], ys))
    assert hv == pytest.approx(area, rel=1e-5) and hv > 0
    hi, lo = front_min.max(0), front_min.min(0)
    ref_default = hi + np.where(hi > lo, 0.1 * (hi - lo), 1.0)
    assert hv_default == pytest.approx(float(pareto.hypervolume(front_min, ref_default)), rel=1e-6)


def test_resume_after_interruption_keeps_the_front(tmp_path):
    url = str(tmp_path / "r.db")
    calls = []

    def interrupted(p):
        calls.append(p)
        if len(calls) == 15:  # mid-generation 2: this trial is released, not finished
            raise KeyboardInterrupt
        return objective(p)

    with Study(SPACE, STRATEGY, seed=2, directions=("minimize", "maximize"), storage=url) as s:
        with pytest.raises(KeyboardInterrupt):
            s.optimize(interrupted, max_trials=30, progress=False)
        assert len(s.get_trials(("complete", "failed"))) == 14
    with Study.load(url) as s:
        assert s.maximize == MAXIMIZE
        s.optimize(objective, max_trials=30, progress=False)
        resumed = [(t.number, t.params, t.values, t.state) for t in s.trials]
        front = [t.number for t in s.best_trials]
        hv = s.hypervolume((1.2, -1.5))
    ref = Study(SPACE, STRATEGY, seed=2, maximize=MAXIMIZE)
    ref.optimize(objective, max_trials=30, progress=False)
    assert resumed == [(t.number, t.params, t.values, t.state) for t in ref.trials]
    assert front == [t.number for t in ref.best_trials] and hv == ref.hypervolume((1.2, -1.5))


def test_tell_vectors_and_bad_input():
    s = Study(SPACE, STRATEGY, seed=3, maximize=MAXIMIZE)
    s.ask()
    # values that are no numbers are the caller's mistake, refused by name before anything is told
    # (a vector of another length, text, a flag); a non-finite one, or None, is a failed trial
    for bad, error, match in (((0.1, 0.2), ValueError, r"value must be 3 numbers \(2 objective values, then 1"),
                              ("x", ValueError, "value must be 3 numbers"),
                              ((True, 0.2, 0.0), TypeError, "tell: value must be a real number, got True")):
        with pytest.raises(error, match=match):
            s.tell([(0.5, -0.25, -0.1), bad, (0.5, -0.25, -0.1), (0.5, -0.25, -0.1), None, None])
    assert all(x.state == "running" for x in s.trials)  # asked, nothing told
    s.tell([(0.5, -0.25, -0.1), np.array([0.2, -0.5, 0.05]), (1.0, np.nan, 0.0), (1.0, np.inf, 0.0), None,
            None])
    t = s.trials
    assert [x.state for x in t] == ["complete", "complete", "failed", "failed", "failed", "failed"]
    assert t[0].values == (0.5, -0.25) and t[1].constraints == (0.05,) and not t[1].feasible
    assert "nan" in t[2].error and "inf" in t[3].error
    assert [x.number for x in s.best_trials] == [0]  # trial 1 is infeasible
    assert s.generation == 1
    with pytest.raises(ValueError, match="tuple of 2 bools"):
        Study(SPACE, STRATEGY, maximize=(True,))
    with pytest.raises(ValueError, match="not both"):
        Study(SPACE, STRATEGY, maximize=True, directions=("minimize", "minimize"))
    with pytest.raises(ValueError, match="directions must be"):
        Study(SPACE, STRATEGY, directions=("min", "max"))
    with pytest.raises(ValueError, match="one direction per objective"):
        Study(SPACE, STRATEGY, directions=("minimize",))
    with pytest.raises(TypeError, match="single-objective"):
        Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), maximize=(True, False))


def test_intermediate_values_are_refused_and_a_pruned_trial_has_no_value():
    # As Optuna: pruning ranks one objective, so a study of several takes no
    # report; a trial may still stop itself, recorded as pruned without a value.
    s = Study(SPACE, STRATEGY, seed=3, maximize=MAXIMIZE)
    trial = s.ask_trials()[0]
    with pytest.raises(ValueError, match="a study of 2 objectives takes no intermediate values"):
        s.report(trial, 0.5, 0)
    s.tell(trial, pruned=True)
    assert s.trials[0].state == "pruned" and s.trials[0].value is None and s.trials[0].values is None


def test_values_beyond_float32_are_its_largest_not_failures():
    """A finite objective value too large for float32 is the worst result there is, as for
    one objective: the strategy ranks it at float32's largest value instead of dropping the
    row as failed: through a Study, through tell under x64, and from host float64 values."""
    import jax

    big = float(np.finfo(np.float32).max)
    s = Study(SPACE, STRATEGY, seed=5)
    s.ask()
    s.tell([(1e39, -1e9, -1.0)] + [(0.5, 0.5, -1.0)] * 5)  # row 0 is alone on the front
    assert [t.state for t in s.trials] == ["complete"] * 6 and s.best_trials[0].number == 0
    # The default reference point stops at float32's largest (it overflowed to a
    # refused inf): (big, 1e8). The volume the front dominates, about 3.4e38 * 1e8,
    # is beyond float32 (it measured inf) but not float64, where it is now taken.
    assert s.hypervolume() == pytest.approx((big - 0.5) * (1e8 - 0.5), rel=1e-6)
    told = np.asarray(s.state.objectives)
    assert np.isfinite(told).all() and (told[:, 0] == big).sum() == 1
    # A subnormal positive constraint is a violation for the strategy too, as for Trial.feasible.
    s.ask()
    s.tell([(0.1, 0.1, 1e-40)] + [(0.5, 0.5, -1.0)] * 5)
    assert not s.trials[6].feasible
    front = np.asarray(s.state.front_values)[np.asarray(s.state.front_mask)]
    assert all(t.number != 6 for t in s.best_trials) and not np.any(np.all(np.isclose(front, 0.1), axis=1))
    with jax.enable_x64(True):
        for strategy in (jaxhpo.NSGA2(SPACE, 2, num_objectives=2), jaxhpo.MOTPE(SPACE, 2, 4, num_objectives=2),
                         jaxhpo.GPBO(SPACE, 2, 4, num_objectives=2)):
            # two points told straight after init: one compile, no ask (eager asks
            # under x64 cost seconds each)
            x = jnp.array([[0.2, 0.3, 0.25], [0.7, 0.6, 0.75]], jnp.float32)
            state = jax.jit(lambda v, s=strategy: s.tell(s.init(jax.random.key(0)), x, v))(
                jnp.array([[1e39, 0.0], [0.5, 0.5]]))
            _, front, on = (np.asarray(a) for a in strategy.pareto_front(state))
            assert sorted(front[on].tolist()) == [[0.5, 0.5], [big, 0.0]], type(strategy).__name__
    # Host float64 values without x64 are clipped before they become float32 arrays
    # (every tell takes its values through float32_values).
    from jaxhpo.strategies.base import float32_values

    host = np.array([[1e39, -1e39], [np.nan, 0.5]])
    np.testing.assert_array_equal(np.asarray(float32_values(host)), [[big, -big], [np.nan, 0.5]])


def test_version_1_file_is_upgraded_and_resumes(tmp_path):
    path = tmp_path / "v1.db"
    single = jaxhpo.RandomSearch(SPACE, 4)
    with Study(SPACE, single, seed=0, storage=str(path), name="old") as s:
        s.optimize(lambda p: p["a"], num_trials=6, progress=False)
        before = [(t.number, t.params, t.value, t.state) for t in s.trials]
    # Turn it into the file version 1 wrote: no directions / vals columns, no reports.
    con = sqlite3.connect(path)
    con.execute("DROP TABLE reports")
    con.execute("DROP TABLE queue")
    con.execute("ALTER TABLE studies DROP COLUMN directions")
    con.execute("ALTER TABLE trials DROP COLUMN vals")
    con.execute("ALTER TABLE trials DROP COLUMN enqueued")
    con.execute("ALTER TABLE studies DROP COLUMN initial_state")
    con.execute("ALTER TABLE trials DROP COLUMN heartbeat_at")
    con.execute("ALTER TABLE trials DROP COLUMN user_attrs")
    con.execute("UPDATE jaxhpo_meta SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()
    with Study.load(str(path)) as s:
        assert [(t.number, t.params, t.value, t.state) for t in s.trials] == before
        assert not s.multi_objective and s.best_value == min(v for _, _, v, st in before if st == "complete")
        s.optimize(lambda p: p["a"], num_trials=2, progress=False)
        assert len(s.trials) == 8
        # a study of several objectives can live in the upgraded file too
        with Study(SPACE, STRATEGY, maximize=MAXIMIZE, storage=s.storage, name="mo") as mo:
            mo.optimize(objective, num_trials=6, progress=False)
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM jaxhpo_meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION) == "8"
    con.close()


def test_plot_points_for_study_and_result(stored, tmp_path):
    pytest.importorskip("matplotlib")
    from jaxhpo import plot

    path, trials = stored
    with Study.load(str(path)) as s:
        fig = plot.pareto_front(s, tmp_path / "front.png")
        n_front = len(s.best_trials)
    counts = {c.get_label(): len(c.get_offsets()) for c in fig.axes[0].collections}
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert counts["Pareto front"] == n_front
    assert counts["infeasible"] == sum(not t.feasible for t in done)
    assert sum(counts.values()) == len(done)
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"

    def vec(p):
        return jnp.stack([p["a"], -(1.0 - jnp.sqrt(p["a"])) - p["b"], 0.15 - p["a"]])

    res = jaxhpo.minimize(vec, SPACE, STRATEGY, num_generations=3, key=0, maximize=MAXIMIZE, history="all")
    fig = plot.pareto_front(res)
    counts = {c.get_label(): len(c.get_offsets()) for c in fig.axes[0].collections}
    vals = res.history.values.reshape(-1, 3)
    assert sum(counts.values()) == 18 and counts["infeasible"] == int(np.sum(vals[:, 2] > 0))
    # every front row of the result is drawn as a front point (repeats of a point count each time)
    assert counts["Pareto front"] >= len(res.pareto_values)
    assert "maximised" in fig.axes[0].get_ylabel() and "minimised" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="one objective"):
        plot.pareto_front(Study(SPACE, jaxhpo.RandomSearch(SPACE, 4)))
    with pytest.raises(ValueError, match="objectives must be"):
        plot.pareto_front(res, objectives=(0, 0))


def test_cli_run_show_plot(tmp_path, capsys):
    (tmp_path / "obj.py").write_text(
        "import math\n"
        "def objective(p):\n"
        "    return [p['a'], (1 - math.sqrt(p['a'])) + p['b'], 0.15 - p['a']]\n")
    (tmp_path / "mo.toml").write_text(
        'name = "mo"\nobjective = "obj.py:objective"\nnum_trials = 18\nmaximize = [false, false]\n'
        'strategy = { name = "nsga2", popsize = 6, num_objectives = 2, num_constraints = 1 }\n'
        'output = "out"\n[space]\na = { type = "float", low = 0.0, high = 1.0 }\n'
        'b = { type = "float", low = 0.0, high = 1.0 }\n'
        'k = { type = "categorical", choices = ["x", "y"] }\n')
    assert cli_study.main(["run", str(tmp_path / "mo.toml"), "--no-progress"]) == 0
    db = tmp_path / "out" / "study.db"
    summary = json.loads((tmp_path / "out" / "best.json").read_text())
    assert (tmp_path / "out" / "plots" / "pareto_front.png").is_file()
    capsys.readouterr()
    assert cli_study.main(["show", str(db), "--all"]) == 0
    text = capsys.readouterr().out
    with Study.load(str(db)) as s:
        front, _ = s.pareto_front()
        hv = s.hypervolume()
    assert [f["trial"] for f in summary["pareto_front"]] == [t.number for t in front]
    assert f"Pareto front: {len(front)} trials, hypervolume {hv:.6g}" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  trial"))
    shown = [int(line.split()[1]) for line in lines[start + 2:start + 2 + len(front)]]
    assert shown == [t.number for t in front]
    assert "f0 (min)" in text and "g0" in text
    assert cli_study.main(["plot", str(db), "--kind", "pareto_front", "--output", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "pareto_front.png").is_file()
    assert cli_study.main(["plot", str(db), "--kind", "history", "--output", str(tmp_path / "p")]) == 2
    assert "2 objectives; --kind history shows one value per trial: use --kind pareto_front" in capsys.readouterr().err


def test_importance_takes_a_numpy_integer_objective(stored):
    from jaxhpo.study.importance import param_importance

    path, trials = stored
    one = param_importance(space=SPACE, trials=trials, objective=1)
    assert param_importance(space=SPACE, trials=trials, objective=np.int64(1)) == one
    with pytest.raises(ValueError, match=r"pass objective= an index in \[0, 2\)"):
        param_importance(space=SPACE, trials=trials, objective=np.int64(2))


def test_add_trial_refuses_what_is_no_vector_of_real_numbers():
    # A bool beside a number made a float64 array: recorded as 1.0 and told.
    s = Study(SPACE, STRATEGY, seed=3)
    params = {"a": 0.5, "b": 0.5, "k": "x"}
    for bad in ((True, 2.0, 0.0), ("1.0", 2.0, 0.0), (1 + 2j, 2.0, 0.0)):
        with pytest.raises(TypeError, match="add_trial: value must be a real number"):
            s.add_trial(params, bad)
    with pytest.raises(ValueError, match="add_trial: value must be 3 numbers"):
        s.add_trial(params, (1.0, 2.0))
    assert s.trials == []
    # an objective returning one fails its trial instead, a JAX comparison's 0-d bool too
    s.optimize(lambda p: (True, 2.0, 0.0), num_trials=1, progress=False)
    s.optimize(lambda p: (jnp.asarray(p["a"]) > 2.0, 2.0, 0.0), num_trials=1, progress=False)
    ran = [t for t in s.trials if t.state != "waiting"]
    assert [t.state for t in ran] == ["failed"] * 2
    assert all("not real numbers" in t.error for t in ran)


def test_the_hypervolume_of_fronts_of_new_sizes_compiles_one_program_per_power_of_two():
    from jaxhpo import pareto
    from jaxhpo.pareto import _hypervolume_program

    rng = np.random.default_rng(0)
    counts = []
    for n in (2, 3, 5, 6):  # fronts of 2 to 6 points, all padded to 8 rows
        s = Study(SPACE, STRATEGY, seed=3, maximize=MAXIMIZE)
        s.ask()
        a = np.sort(rng.uniform(0.0, 1.0, n))  # f1 = a minimised, f2 = a maximised: a front of n
        s.tell([(float(v), float(v), -1.0) for v in a] + [(2.0, -1.0, -1.0)] * (6 - n))
        assert len(s.best_trials) == n
        front = np.array([t.values for t in s.best_trials]) * np.array([1.0, -1.0])
        assert s.hypervolume([2.0, -1.0]) == pytest.approx(float(pareto.hypervolume(front, [2.0, 1.0])), rel=1e-6)
        counts.append(_hypervolume_program._cache_size())
    assert len(set(counts)) == 1  # (it compiled a few dozen eager kernels for every new size)
