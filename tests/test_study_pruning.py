"""Pruning a Study's trials from their intermediate values: the pruners' rules
against hand-worked cases and against a replay of the stored reports, the
report/should_prune/tell API, failures, threads, crashes and the storage upgrade."""

import sqlite3
import warnings

import numpy as np
import pytest

import jaxhpo
from jaxhpo.study import (HyperbandPruner, MedianPruner, NopPruner, PatientPruner, PercentilePruner, Study,
                          SuccessiveHalvingPruner, ThresholdPruner, TrialPruned, TrialState, report, should_prune)
from jaxhpo.study.pruners import _percentile_worst_last, build_pruner
from jaxhpo.study.storage import SCHEMA_VERSION

SPACE = jaxhpo.Space(rate=jaxhpo.Float(0.05, 1.0, log=True), start=jaxhpo.Float(1.0, 2.0))
RANDOM = jaxhpo.RandomSearch(SPACE, 1)
STEPS = 12


def curve(p, step):
    """A learning curve: decays at ``rate`` from ``start``; curves of different trials cross."""
    return p["start"] * (1.0 - 0.3 * p["rate"]) ** (step + 1)


def pruned_objective(p):
    for step in range(STEPS):
        report(curve(p, step), step)
        if should_prune():
            raise TrialPruned()
    return curve(p, STEPS - 1)


class FakeView:
    """Other trials' reports given directly: ``{number: (complete, {step: value})}``."""

    def __init__(self, trials, trial_number=10**6, maximize=False):
        self.trials, self.trial_number, self.maximize = trials, trial_number, maximize

    def num_complete(self):
        return sum(done for done, _ in self.trials.values())

    def max_complete_step(self):
        steps = [max(reps) for done, reps in self.trials.values() if done and reps]
        return max(steps) if steps else None

    def first_complete_step(self):  # the trials finished in the dict's order
        steps = [max(reps) for done, reps in self.trials.values() if done and reps]
        return steps[0] if steps else None

    def values_at(self, step, *, complete_only, exact, among=None, since=None):
        out = []
        for number, (done, reps) in self.trials.items():
            if complete_only and not done or among is not None and not among(number):
                continue
            if exact:
                if step in reps:
                    out.append(reps[step])
            else:
                later = [s for s in sorted(reps) if s >= step]
                if later:
                    out.append(reps[later[0]])
        return np.asarray(out, np.float64)


def decide(pruner, reports, view):
    steps = np.array(sorted(reports))
    return pruner.should_prune(steps, np.array([reports[s] for s in steps], np.float64), view)


# ----------------------------------------------------------------- rules
def test_threshold_rule_in_the_studys_own_sign():
    loss = ThresholdPruner(upper=10.0, n_warmup_steps=2)
    assert not decide(loss, {0: 50.0}, FakeView({}))  # warm-up
    assert decide(loss, {0: 1.0, 1: 2.0, 2: 11.0}, FakeView({}))
    assert not decide(loss, {0: 1.0, 1: 2.0, 2: 9.0}, FakeView({}))
    assert decide(loss, {0: float("nan")}, FakeView({}))  # diverged: at once
    # a maximised accuracy reaches pruners negated; the bound stays in the user's sign
    accuracy = ThresholdPruner(lower=0.2)
    assert decide(accuracy, {0: -0.1}, FakeView({}, maximize=True))
    assert not decide(accuracy, {0: -0.5}, FakeView({}, maximize=True))
    every3 = ThresholdPruner(upper=1.0, interval_steps=3)
    assert decide(every3, {0: 0.0, 3: 2.0}, FakeView({}))
    assert not decide(every3, {0: 0.0, 3: 0.0, 4: 2.0}, FakeView({}))  # step 4 shares step 3's window


def test_patient_rule_waits_for_patience_then_asks_the_wrapped_pruner():
    patient = PatientPruner(None, patience=2)
    assert not decide(patient, {0: 1.0, 1: 2.0, 2: 3.0}, FakeView({}))  # 3 reports: no "before" yet
    assert decide(patient, {0: 1.0, 1: 2.0, 2: 3.0, 3: 1.5}, FakeView({}))  # best of the last 3 is 1.5 > 1.0
    assert not decide(patient, {0: 1.0, 1: 2.0, 2: 0.9, 3: 1.5}, FakeView({}))
    assert not decide(PatientPruner(None, 2, min_delta=0.6), {0: 1.0, 1: 2.0, 2: 3.0, 3: 1.5}, FakeView({}))
    # stalled, but the wrapped median rule keeps a trial better than the others
    others = FakeView({i: (True, {3: 5.0 + i}) for i in range(5)})
    assert not decide(PatientPruner(MedianPruner(), 2), {0: 1.0, 1: 2.0, 2: 3.0, 3: 1.5}, others)
    assert decide(PatientPruner(MedianPruner(), 2), {0: 8.0, 1: 9.0, 2: 10.0, 3: 9.5}, others)


def test_patient_and_threshold_rules_agree_with_optunas(tmp_path):
    optuna = pytest.importorskip("optuna")
    import datetime
    rng = np.random.default_rng(0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for maximize in (False, True):
        study = optuna.create_study(direction="maximize" if maximize else "minimize")
        sign = -1.0 if maximize else 1.0
        for case in range(200):
            n = int(rng.integers(1, 8))
            values = rng.normal(size=n)
            values[rng.random(n) < 0.1] = np.nan
            reports = {int(s): float(v) for s, v in zip(np.sort(rng.choice(20, n, replace=False)), values)}
            trial = optuna.trial.FrozenTrial(
                number=0, state=optuna.trial.TrialState.RUNNING, value=None,
                datetime_start=datetime.datetime.now(), datetime_complete=None, params={}, distributions={},
                user_attrs={}, system_attrs={}, intermediate_values=reports, trial_id=0)
            patience, delta = int(rng.integers(0, 3)), float(rng.choice([0.0, 0.3]))
            ours = decide(PatientPruner(None, patience, delta), {s: sign * v for s, v in reports.items()},
                          FakeView({}, maximize=maximize))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental; all-NaN slices
                theirs = optuna.pruners.PatientPruner(None, patience, delta).prune(study, trial)
            k = patience + 1
            # A non-finite latest report is pruned here at once; where the reports before the
            # latest k are all non-finite Optuna compares NaN (never prunes).
            if np.isnan(values[-1]):
                assert ours
            elif n <= k or not np.isnan(values[:-k]).all():
                assert ours == theirs, (reports, patience, delta)
            lower, upper = sorted(rng.normal(size=2))
            last = reports[max(reports)]
            if np.isfinite(last):
                ours = decide(ThresholdPruner(lower, upper), {s: sign * v for s, v in reports.items()},
                              FakeView({}, maximize=maximize))
                assert ours == optuna.pruners.ThresholdPruner(lower, upper).prune(study, trial)


def test_every_built_in_pruner_prunes_a_non_finite_report_at_once():
    """As Study.report documents: in warm-up, before patience runs out, before any trial completes."""
    nobody = FakeView({})
    for pruner in (MedianPruner(n_warmup_steps=5), PercentilePruner(10.0, n_startup_trials=9),
                   SuccessiveHalvingPruner(min_resource=4), HyperbandPruner(), HyperbandPruner(1, 9),
                   ThresholdPruner(upper=10.0, n_warmup_steps=5), PatientPruner(None, 3),
                   PatientPruner(MedianPruner(), 0)):
        for bad in (float("nan"), float("inf")):
            assert decide(pruner, {0: bad}, nobody), pruner
            assert decide(pruner, {0: 1.0, 1: 0.5, 2: bad}, nobody), pruner
    assert not decide(NopPruner(), {0: float("nan")}, nobody)


def test_new_pruners_check_their_settings_and_build_by_name():
    with pytest.raises(ValueError, match="needs lower, upper or both"):
        ThresholdPruner()
    with pytest.raises(ValueError, match="lower <= upper"):
        ThresholdPruner(lower=2.0, upper=1.0)
    with pytest.raises(ValueError, match="patience"):
        PatientPruner(None, -1)
    with pytest.raises(TypeError, match="wrapped must be a Pruner"):
        PatientPruner("median", 2)
    built = build_pruner("patient", {"patience": 3, "wrapped": {"name": "median", "n_startup_trials": 2}})
    assert isinstance(built.wrapped, MedianPruner) and built.wrapped.n_startup_trials == 2 and built.patience == 3
    assert build_pruner("patient", {"patience": 1}).wrapped is None
    assert build_pruner("threshold", {"upper": 3}).upper == 3.0


def test_median_rule_on_a_worked_case():
    view = FakeView({i: (True, {0: float(v), 1: float(v) - 0.5}) for i, v in enumerate([1, 2, 3, 4, 5])})
    median = MedianPruner(n_startup_trials=5)
    assert decide(median, {0: 3.5}, view)  # worse than the median 3 at step 0
    assert not decide(median, {0: 2.5}, view)
    # the best value so far counts, not the latest: 2.4 at step 0, 2.6 at step 1 (median 2.5)
    assert not decide(median, {0: 2.4, 1: 2.6}, view)
    assert decide(median, {0: 2.6, 1: 2.7}, view)
    # percentiles other than the median; numpy's linear interpolation (25th of 1..5 is 2)
    assert decide(PercentilePruner(25.0, n_startup_trials=0), {0: 2.1}, view)
    assert not decide(PercentilePruner(25.0, n_startup_trials=0), {0: 1.9}, view)
    # too few complete trials, warm-up steps, a step nobody else reported
    assert not decide(MedianPruner(n_startup_trials=6), {0: 9.0}, view)
    assert not decide(MedianPruner(n_startup_trials=0, n_warmup_steps=1), {0: 9.0}, view)
    assert not decide(MedianPruner(n_startup_trials=0), {7: 9.0}, view)
    assert not decide(MedianPruner(n_startup_trials=0, n_min_trials=6), {0: 9.0}, view)
    # running trials do not count toward the median rule
    running = FakeView({i: (False, {0: 0.0}) for i in range(5)})
    assert not decide(MedianPruner(n_startup_trials=0), {0: 9.0}, running)
    # complete trials' diverged reports rank worst: median of (1, 2, inf, inf, inf) is inf
    diverged = FakeView({i: (True, {0: v}) for i, v in enumerate([1.0, 2.0] + [float("nan")] * 3)})
    assert not decide(MedianPruner(n_startup_trials=0), {0: 9.0}, diverged)
    assert decide(PercentilePruner(25.0, n_startup_trials=0), {0: 2.1}, diverged)  # 25th: 2.0
    assert decide(PercentilePruner(20.0, n_startup_trials=0), {0: 1.9}, diverged)  # 20th: 1.8
    rng = np.random.default_rng(0)
    for _ in range(50):
        vals, q = rng.normal(size=rng.integers(1, 8)), float(rng.uniform(0, 100))
        assert _percentile_worst_last(vals, q) == pytest.approx(np.percentile(vals, q))
    # a diverged latest report is pruned whatever the others did
    assert decide(MedianPruner(n_startup_trials=99), {0: 1.0, 1: float("nan")}, FakeView({}))
    assert not decide(NopPruner(), {0: float("nan")}, view)


def test_interval_steps_decide_once_per_window():
    view = FakeView({i: (True, {s: 0.0 for s in range(10)}) for i in range(3)})
    p = MedianPruner(n_startup_trials=0, n_warmup_steps=2, interval_steps=3)
    # always worse than the others: pruned exactly where a new window of 3 steps after the warm-up opens
    verdicts = [decide(p, {s: 1.0 for s in range(last + 1)}, view) for last in range(10)]
    assert verdicts == [False, False, True, False, False, True, False, False, True, False]
    # reports that skip steps: 2 -> 6 enters the next window and decides, 6 -> 7 stays in it
    assert decide(p, {2: 1.0, 6: 1.0}, view) and not decide(p, {2: 1.0, 6: 1.0, 7: 1.0}, view)


def test_successive_halving_promotes_the_top_third_of_each_rung():
    asha = SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    assert asha.rungs(30) == [1, 3, 9, 27]
    assert SuccessiveHalvingPruner(2, 2, min_early_stopping_rate=1).rungs(20) == [4, 8, 16]
    rivals = FakeView({i: (False, {1: float(v)}) for i, v in enumerate(range(1, 9))})  # 1..8 at rung 1
    # 9 competitors keep 3: values 1, 2 and this one if it is <= 3rd smallest
    assert not decide(asha, {0: 0.0, 1: 2.5}, rivals)
    assert decide(asha, {0: 0.0, 1: 3.5}, rivals)
    # not at a rung: no decision; past a rung reached before: no new decision
    assert not decide(asha, {0: 99.0}, rivals)
    assert not decide(asha, {0: 0.0, 1: 2.5, 2: 99.0}, rivals)
    # the first trial at a rung always passes; the second only if it is better
    assert not decide(asha, {0: 5.0, 1: 5.0}, FakeView({}))
    one = FakeView({0: (True, {1: 1.0})})
    assert decide(asha, {0: 0.0, 1: 1.5}, one) and not decide(asha, {0: 0.0, 1: 0.5}, one)
    # a report that jumps over rungs is judged at each with its value, and
    # a rival's rung value is its first report at or past the rung
    jump = FakeView({0: (True, {0: 5.0, 4: 0.1}), 1: (True, {3: 2.0})})
    assert decide(asha, {0: 1.0, 5: 1.0}, jump)  # at rung 3: rivals 0.1 and 2.0; 1 of 3 promotes
    assert not decide(asha, {0: 1.0, 5: 0.05}, jump)
    # non-finite rivals rank last; a non-finite own value is pruned
    nan_rivals = FakeView({i: (False, {1: float("nan")}) for i in range(5)})
    assert not decide(asha, {1: 100.0}, nan_rivals)
    assert decide(asha, {1: float("inf")}, FakeView({}))


def test_hyperband_brackets_follow_hyperbands_allocation_and_compete_apart():
    hb = HyperbandPruner(min_resource=1, max_resource=27, reduction_factor=3)
    assert hb.num_brackets() == 4  # s_max = 3
    # Hyperband gives its brackets 27, 12, 6 and 4 configurations (R = 27, eta = 3)
    counts = np.bincount([hb.bracket(n) for n in range(49_000)], minlength=4)
    np.testing.assert_allclose(counts / counts.sum(), np.array([27, 12, 6, 4]) / 49, atol=0.01)
    assert [hb.bracket(n) for n in range(50)] == [HyperbandPruner(1, 27, 3).bracket(n) for n in range(50)]
    assert HyperbandPruner(2, 17, 2).num_brackets() == 4 and HyperbandPruner(5, 5, 3).num_brackets() == 1
    by_bracket = {b: [n for n in range(200) if hb.bracket(n) == b][:9] for b in range(4)}
    me = by_bracket[0][0]
    # bracket 0 judges at step 1 among its own trials only: 8 better rivals there prune it,
    # 8 better rivals in bracket 1 do not (they are not judged at step 1 at all)
    same = FakeView({n: (False, {1: 0.0}) for n in by_bracket[0][1:]}, trial_number=me)
    other = FakeView({n: (False, {1: 0.0}) for n in by_bracket[1][:8]}, trial_number=me)
    assert decide(hb, {0: 1.0, 1: 1.0}, same) and not decide(hb, {0: 1.0, 1: 1.0}, other)
    # bracket 1's first rung is at step 3: nothing is decided at step 1
    late = by_bracket[1][0]
    rivals = FakeView({n: (False, {1: 0.0, 3: 0.0}) for n in by_bracket[1][1:]}, trial_number=late)
    assert not decide(hb, {1: 5.0}, rivals) and decide(hb, {1: 5.0, 3: 5.0}, rivals)


def test_hyperband_with_auto_max_resource_waits_for_a_complete_trial():
    auto, fixed = HyperbandPruner(min_resource=1, reduction_factor=3), HyperbandPruner(1, 27, 3)
    assert auto.max_resource == "auto" and auto.num_brackets(27) == fixed.num_brackets() == 4
    running = {n: (False, {1: 0.0, 3: 0.0, 9: 0.0}) for n in range(100, 140)}
    # no complete trial yet: the brackets are unknown and nothing is pruned, however bad
    assert not any(decide(auto, {0: 9.0, s: 9.0}, FakeView(running, trial_number=n))
                   for n in range(20) for s in (1, 3, 9))
    # once a trial completed after reporting steps 0..26, it decides as max_resource=27
    done = {**running, 99: (True, {s: 0.5 for s in range(27)})}
    for n in range(20):
        for s, v in ((1, 9.0), (3, 9.0), (9, 9.0), (1, -1.0)):
            view = FakeView(done, trial_number=n)
            assert decide(auto, {0: 1.0, s: v}, view) == decide(fixed, {0: 1.0, s: v}, view)
            assert auto.bracket(n, 27) == fixed.bracket(n)
    with pytest.raises(ValueError, match="known once a trial completes"):
        auto.num_brackets()


def test_bad_settings_name_the_parameter():
    with pytest.raises(ValueError, match="percentile"):
        PercentilePruner(101.0)
    with pytest.raises(ValueError, match="n_startup_trials"):
        MedianPruner(n_startup_trials=-1)
    with pytest.raises(ValueError, match="interval_steps"):
        MedianPruner(interval_steps=0)
    with pytest.raises(TypeError, match="n_warmup_steps"):
        MedianPruner(n_warmup_steps=1.5)
    with pytest.raises(ValueError, match="reduction_factor"):
        SuccessiveHalvingPruner(reduction_factor=1)
    with pytest.raises(ValueError, match="min_resource"):
        SuccessiveHalvingPruner(min_resource=0)
    with pytest.raises(ValueError, match="max_resource must be >= 3"):
        HyperbandPruner(min_resource=3, max_resource=2)
    for bad in ("AUTO", 10.0):
        with pytest.raises(TypeError, match="max_resource must be an integer or 'auto'"):
            HyperbandPruner(max_resource=bad)
    with pytest.raises(TypeError, match="pruner"):
        Study(SPACE, RANDOM, pruner="median")
    mo_space = jaxhpo.Space(a=jaxhpo.Float(0.0, 1.0))
    with pytest.raises(ValueError, match="pruner"):
        Study(mo_space, jaxhpo.NSGA2(mo_space, 4, num_objectives=2), pruner=MedianPruner())


# ------------------------------------------------- the study end to end
def replay(study):
    """Each trial's stored reports, in run order (one worker: trial numbers are run order)."""
    return [(t.number, t.state, t.intermediate_values) for t in study.trials]


@pytest.mark.parametrize("maximize", [False, True])
def test_median_pruning_in_a_study_matches_a_replay_of_its_reports(maximize):
    sign = -1.0 if maximize else 1.0

    def objective(p):
        for step in range(STEPS):
            report(sign * curve(p, step), step)
            if should_prune():
                raise TrialPruned()
        return sign * curve(p, STEPS - 1)

    study = Study(SPACE, RANDOM, seed=3, maximize=maximize, pruner=MedianPruner(n_startup_trials=3))
    seen = []
    study.optimize(objective, num_trials=24, progress=False, callbacks=[lambda s, t: seen.append(t)])
    assert seen == study.trials  # callbacks get the stored trials, reports and all
    trials = replay(study)
    assert sum(st == TrialState.PRUNED for _, st, _ in trials) >= 5
    for k, (_, state, reps) in enumerate(trials):
        done_before = [r for _, st, r in trials[:k] if st == TrialState.COMPLETE]
        verdicts = []
        for step in sorted(reps):
            mine = [sign * reps[s] for s in reps if s <= step]
            others = [sign * r[step] for r in done_before if step in r]
            verdicts.append(len(done_before) >= 3 and bool(others) and min(mine) > np.median(others))
        # a trial is pruned at its last report, exactly when the rule says so, and never before
        assert not any(verdicts[:-1])
        assert verdicts[-1] == (state == TrialState.PRUNED)
        assert len(reps) == STEPS or state == TrialState.PRUNED
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert t.value == t.intermediate_values[t.last_step]
    # the best trial comes with its reports, as in study.trials
    best = study.best_trial
    assert best.intermediate_values and best == study.trials[best.number]


@pytest.mark.parametrize("kind", ["asha", "hyperband", "hyperband-auto"])
def test_successive_halving_in_a_study_matches_a_replay_of_its_reports(kind):
    if kind == "asha":
        pruner = SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
        bracket = lambda n: 0  # noqa: E731
    else:
        # "auto": trial 0 runs unjudged (nothing complete yet), then max_resource is STEPS
        pruner = HyperbandPruner(min_resource=1, max_resource=STEPS if kind == "hyperband" else "auto",
                                 reduction_factor=2)
        bracket = lambda n: pruner.bracket(n, STEPS)  # noqa: E731
    study = Study(SPACE, RANDOM, seed=4, pruner=pruner)
    study.optimize(pruned_objective, num_trials=20 if kind == "asha" else 40, progress=False)
    assert study.trials[0].state == TrialState.COMPLETE
    trials = replay(study)
    for k, (number, state, reps) in enumerate(trials):
        rungs = [2 ** (bracket(number) + i) for i in range(4)]
        passed = []
        for rung in [r for r in rungs if r <= max(reps)]:
            rivals = [r[rung] for n, _, r in trials[:k] if rung in r and bracket(n) == bracket(number)]
            competing = sorted(rivals + [reps[rung]])
            passed.append(reps[rung] <= competing[max(1, len(competing) // 2) - 1])
        # every rung passed but the last one reached, which decides the trial's fate
        assert all(passed[:-1]) and passed[-1] == (state == TrialState.COMPLETE)
        assert len(reps) == STEPS if state == TrialState.COMPLETE else max(reps) in rungs
    assert sum(st == TrialState.PRUNED for _, st, _ in trials) >= 5
    if kind != "asha":  # the trials spread over the brackets (weights 8, 6, 4 and 4 of 22)
        assert len({bracket(n) for n, _, _ in trials}) == pruner.num_brackets(STEPS) == 4


def test_pruning_saves_steps_and_keeps_the_best_when_curves_do_not_cross():
    def objective(p):  # final order == order at every step: the best trial is never pruned
        for step in range(STEPS):
            report(p["start"] / (step + 1), step)
            if should_prune():
                raise TrialPruned()
        return p["start"] / STEPS

    full = Study(SPACE, RANDOM, seed=5)
    full.optimize(objective, num_trials=30, progress=False)
    for pruner in (MedianPruner(n_startup_trials=2), SuccessiveHalvingPruner()):
        pruned = Study(SPACE, RANDOM, seed=5, pruner=pruner)
        pruned.optimize(objective, num_trials=30, progress=False)
        # random search proposes regardless of values: the same 30 configurations
        assert [t.params for t in pruned.trials] == [t.params for t in full.trials]
        assert pruned.best_value == full.best_value and pruned.best_trial.number == full.best_trial.number
        steps = sum(len(t.intermediate_values) for t in pruned.trials)
        assert steps < 0.6 * 30 * STEPS
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in pruned.trials)


def test_ask_tell_pruning_and_the_strategy_is_told_the_last_report():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, pruner=MedianPruner(n_startup_trials=0))
    a, b = study.ask_trials()
    assert not study.should_prune(a)  # no report yet
    study.report(b, 7.0, 0)
    study.report(b, 6.0, 1)
    study.report(a, 9.0, 0)
    assert not study.should_prune(a)  # nothing complete to compare with
    study.report(a, 5.0, 3)
    study.tell(a, pruned=True)
    study.tell(b, 6.0)
    ta, tb = study.trials
    assert ta.state == TrialState.PRUNED and ta.value == 5.0 and ta.intermediate_values == {0: 9.0, 3: 5.0}
    assert ta.last_step == 3 and tb.state == TrialState.COMPLETE and tb.intermediate_values == {0: 7.0, 1: 6.0}
    # the strategy saw the pruned trial's last report (5.0), better than the complete 6.0
    assert float(study.state.best_value) == 5.0 and study.best_value == 6.0
    # next generation: trial 2 is worse than the complete trial's median at step 0
    c, d = study.ask_trials()
    study.report(c, 8.0, 0)
    assert study.should_prune(c) and not study.should_prune(d)
    rec = study.to_records()[0]
    assert rec["state"] == "pruned" and rec["last_step"] == 3


@pytest.mark.parametrize("strategy", ["NSGA2", "MOTPE"])
def test_a_pruned_trial_of_a_one_objective_vector_study_is_told_its_last_report(strategy):
    # NSGA2 / MOTPE with one objective and no constraint take a pruner; the
    # strategy used to be told NaN (failed) for a pruned trial.
    s = getattr(jaxhpo, strategy)(SPACE, 2, num_objectives=1)
    study = Study(SPACE, s, seed=0, pruner=MedianPruner(n_startup_trials=0))
    a, b = study.ask_trials()
    study.report(a, 5.0, 0)
    study.tell(a, pruned=True)
    study.tell(b, 6.0)
    assert study.trials[0].state == TrialState.PRUNED
    assert float(s.best(study.state)[1]) == 5.0


def test_report_and_tell_errors_name_the_rule():
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    a, b = study.ask_trials()
    study.report(a, 1.0, 0)
    with pytest.raises(ValueError, match="already reported step 0"):
        study.report(a, 2.0, 0)
    # Steps in increasing order: an earlier one after a later one would have a
    # pruner judge a rung again (ASHA pruned a trial it had promoted).
    study.report(a, 1.0, 5)
    with pytest.raises(ValueError, match="already reported step 5; report steps in increasing order, got 2"):
        study.report(a, 9.0, 2)
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 2\*\*63\)"):
        study.report(a, 1.0, -1)
    # Past SQLite's 64-bit integers: named, not an OverflowError from the storage
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 2\*\*63\), got 1180591620717411303424"):
        study.report(a, 1.0, 2**70)
    for call in (lambda: study.report(2**70, 1.0, 0), lambda: study.tell(2**70, 1.0)):
        with pytest.raises(ValueError, match=r"a trial number is an integer in \[0, 2\*\*63\)"):
            call()
    with pytest.raises(ValueError, match=r"number must be a trial number"):
        study.get_trials(number=2**70)
    # A complex value is no real number, returned or told
    with pytest.raises(TypeError, match="value must be a real number"):
        study.report(a, np.complex128(1 + 2j), 1)
    with pytest.raises(ValueError, match="step"):
        study.report(a, 1.0, 1.5)
    with pytest.raises(TypeError, match="value must be a real number"):
        study.report(a, "low", 1)
    with pytest.raises(ValueError, match="no trial 99"):
        study.report(99, 1.0, 1)
    with pytest.raises(ValueError, match="no value"):
        study.tell(a, 1.0, pruned=True)
    with pytest.raises(ValueError, match=r"pruned=True\) takes no error"):
        study.tell(a, pruned=True, error="diverged")
    assert not study.should_prune(a)  # no pruner: never
    study.tell(a, 1.0)
    with pytest.raises(ValueError, match="trial 0 is complete"):
        study.report(a, 1.0, 5)
    with pytest.raises(RuntimeError, match="inside an objective run by Study.optimize"):
        report(1.0, 0)
    with pytest.raises(RuntimeError, match="should_prune"):
        should_prune()


def test_reports_take_zero_dimensional_arrays():
    import jax.numpy as jnp

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 1), seed=0)
    (t,) = study.ask_trials()
    for step, v in enumerate([np.float32(0.5), np.array(0.25), jnp.asarray(0.125), jnp.mean(jnp.ones(3)), 2]):
        study.report(t, v, step)
    with pytest.raises(TypeError, match="value must be a real number"):
        study.report(t, np.ones(2), 9)
    with pytest.raises(TypeError, match="value must be a real number"):
        study.report(t, np.bool_(True), 9)
    study.tell(t, 0.1)
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.25, 2: 0.125, 3: 1.0, 4: 2.0}


def test_a_run_whose_claim_went_stale_reports_nothing_more(tmp_path):
    """Trial 0's worker is not heard from for ``stale_after`` (``a`` marks its
    trials alive every 5 s, its default); another worker takes it over. The first
    run's later reports are dropped (the trial's reports are the new run's), its
    pruning question answers False, and its value, though it arrives first, is
    not recorded: the trial's value is the new run's, as its reports are."""
    import time

    path = str(tmp_path / "stale.db")
    a = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path,
              pruner=MedianPruner(n_startup_trials=0))
    a.storage.host = "elsewhere"  # another host's worker: only staleness frees its trials
    b = Study.load(path, stale_after=0.2)
    taken = []

    def objective(p):
        report(5.0, 0)
        time.sleep(0.3)
        if not taken:
            taken.append(b.ask_trials(1)[0])  # b requeues the stale trial 0 and claims it
            b.report(taken[0], 1.0, 0)
        report(6.0, 1)  # dropped: b holds the trial now
        assert not should_prune()
        return 7.0

    a.optimize(objective, num_trials=1, progress=False)
    t0 = a.trials[0]
    assert taken[0].number == 0 and t0.state == TrialState.RUNNING and t0.intermediate_values == {0: 1.0}
    b.tell(taken[0], 3.0)
    t0 = a.trials[0]
    assert t0.state == TrialState.COMPLETE and t0.value == 3.0 and t0.intermediate_values == {0: 1.0}
    a.close()
    b.close()


def test_a_stale_run_reports_nothing_once_another_run_finished_its_trial(tmp_path):
    # (the stale run's report and should_prune raised "trial 0 is complete")
    import time

    path = str(tmp_path / "stale_done.db")
    a = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path,  # beats every 5 s
              pruner=MedianPruner(n_startup_trials=0))
    a.storage.host = "elsewhere"  # another host's worker: only staleness frees its trials
    b = Study.load(path, stale_after=0.2)

    def objective(p):
        report(5.0, 0)
        time.sleep(0.3)
        taken = b.ask_trials(1)[0]  # b requeues the stale trial 0, claims and finishes it
        b.tell(taken, 3.0)
        report(6.0, 1)
        assert not should_prune()
        return 7.0

    a.optimize(objective, num_trials=1, catch=(), progress=False)
    t0 = a.trials[0]
    assert t0.state == TrialState.COMPLETE and t0.value == 3.0 and t0.intermediate_values == {}
    a.close()
    b.close()


def test_a_live_worker_keeps_its_trial_past_stale_after(tmp_path):
    """A trial running longer than ``stale_after`` is not taken over while its
    worker (here on another host, so only staleness can free it) marks it
    alive; once that worker's study is closed, its untold trial goes stale."""
    import sqlite3
    import time

    path = str(tmp_path / "beats.db")
    a = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path, stale_after=0.2)
    a.storage.host = "elsewhere"
    b = Study.load(path, stale_after=0.2)
    held = a.ask_trials(1)[0]
    time.sleep(0.5)
    assert b.ask_trials(1)[0].number == 1 != held.number
    with sqlite3.connect(path) as con:
        started, beaten = con.execute("SELECT started_at, heartbeat_at FROM trials WHERE number=0").fetchone()
    assert beaten is not None and beaten > started + 0.2
    a.close()
    time.sleep(0.4)
    retaken = b.ask_trials(1)
    assert [t.number for t in retaken] == [0]
    b.tell(retaken[0], 1.0)
    assert b.trials[0].state == TrialState.COMPLETE and b.trials[0].value == 1.0
    b.close()


def test_a_long_trial_of_one_optimize_runs_once_with_stale_after(tmp_path):
    """Two worker threads of one ``optimize`` with ``stale_after`` far below a
    trial's duration: every trial runs once (a claim took the other thread's
    running trial over as stale)."""
    import time

    path = str(tmp_path / "long.db")
    calls = []
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path, stale_after=0.1)

    def objective(p):
        calls.append(p["rate"])
        time.sleep(0.35)
        return p["rate"]

    study.optimize(objective, num_trials=4, n_jobs=2, progress=False)
    assert len(calls) == 4 == len(set(calls))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    study.close()


def test_a_sibling_thread_holding_the_gil_does_not_make_a_live_trial_stale(tmp_path):
    """A long C call holds the GIL, so the heartbeat thread cannot beat; the
    trial's owner is a live study of this process, so it is not stale."""
    import threading

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=str(tmp_path / "gil.db"), stale_after=0.05)
    runs, lock = [], threading.Lock()

    def objective(p):
        with lock:
            runs.append(p["rate"])
        sum(range(10**7))  # holds the GIL for longer than stale_after
        return p["rate"]

    study.optimize(objective, max_trials=12, n_jobs=2, progress=False)
    assert len(runs) == 12 == len(set(runs))
    study.close()


def test_a_trial_claimed_again_by_its_own_optimize_is_not_taken_for_one_asked_by_hand(tmp_path):
    """Another worker took trial T over and died; T waits again and this
    optimize's other thread claims it (a new run). The first run, ending,
    must not drop the new run's claim from the optimize's bookkeeping (it
    raised "asked from this study and not told" and stopped)."""
    import json
    import threading
    import time

    path = str(tmp_path / "again.db")
    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0, storage=path)
    runs, lock = [], threading.Lock()

    def objective(p):
        with lock:
            runs.append(p["rate"])
            first = runs[0] == p["rate"]
            again = runs.count(p["rate"]) > 1
        if first and not again:
            with sqlite3.connect(path) as con:
                (number,) = [n for n, text in con.execute("SELECT number, params FROM trials WHERE state='running'")
                             if json.loads(text)["rate"] == p["rate"]]
                con.execute("UPDATE trials SET state='waiting', owner=NULL, host=NULL, pid=NULL, started_at=NULL "
                            "WHERE number=?", (number,))
            time.sleep(0.3)  # the other thread claims it meanwhile
        elif again:
            time.sleep(0.6)  # still running when the first run ends
        return p["rate"]

    study.optimize(objective, max_trials=4, n_jobs=2, progress=False)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len(runs) == 5 and len(set(runs)) == 4  # the requeued trial ran twice, the others once
    study.close()


def test_non_finite_reports_are_pruned_and_told_as_failures():
    def objective(p):
        report(1.0, 0)
        report(float("nan") if p["rate"] > 0.2 else 0.5, 1)
        if should_prune():
            raise TrialPruned()
        return 0.5

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=1, pruner=MedianPruner(n_startup_trials=99))
    study.optimize(objective, num_generations=2, progress=False)
    for t in study.trials:
        diverged = t.params["rate"] > 0.2
        assert t.state == (TrialState.PRUNED if diverged else TrialState.COMPLETE)
        assert np.isnan(t.intermediate_values[1]) == diverged
        assert (t.value is None) == diverged
    assert any(t.params["rate"] > 0.2 for t in study.trials)


def test_threads_report_to_their_own_trials():
    def objective(p):
        for step in range(4):
            report(p["start"] + step, step)
        return p["start"]

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 6), seed=2)
    study.optimize(objective, num_generations=3, n_jobs=3, progress=False)
    for t in study.trials:
        assert t.intermediate_values == {s: pytest.approx(t.params["start"] + s) for s in range(4)}


def test_an_interrupted_trial_runs_again_from_a_clean_slate(tmp_path):
    path = str(tmp_path / "s.db")
    calls = []

    def interrupted(p):
        report(3.0, 0)
        report(2.0, 1)
        calls.append(p)
        raise KeyboardInterrupt

    with Study(SPACE, RANDOM, seed=0, storage=path, pruner=MedianPruner()) as s:
        with pytest.raises(KeyboardInterrupt):
            s.optimize(interrupted, num_trials=1, progress=False)
        (t,) = s.trials
        assert t.state == TrialState.WAITING and t.intermediate_values == {}
    with Study.load(path, pruner=MedianPruner()) as s:
        assert isinstance(s.pruner, MedianPruner)
        s.optimize(pruned_objective, num_trials=1, progress=False)
        (t,) = s.trials
        assert t.params == calls[0] and t.state == TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(STEPS))


def test_a_version_2_file_is_upgraded_and_takes_reports(tmp_path):
    path = tmp_path / "v2.db"
    with Study(SPACE, RANDOM, seed=0, storage=str(path)) as s:
        s.optimize(lambda p: p["start"], num_trials=2, progress=False)
        before = [(t.number, t.params, t.value) for t in s.trials]
    con = sqlite3.connect(path)
    con.execute("DROP TABLE reports")
    con.execute("DROP TABLE queue")
    con.execute("ALTER TABLE trials DROP COLUMN enqueued")
    con.execute("ALTER TABLE studies DROP COLUMN initial_state")
    con.execute("ALTER TABLE trials DROP COLUMN heartbeat_at")
    con.execute("ALTER TABLE trials DROP COLUMN user_attrs")
    con.execute("UPDATE jaxhpo_meta SET value='2' WHERE key='schema_version'")
    con.commit()
    con.close()
    with Study(SPACE, RANDOM, seed=0, storage=str(path), pruner=SuccessiveHalvingPruner()) as s:
        assert [(t.number, t.params, t.value) for t in s.trials] == before
        s.optimize(pruned_objective, num_trials=3, progress=False)
        assert all(t.intermediate_values for t in s.trials[2:])
    con = sqlite3.connect(path)
    assert con.execute("SELECT value FROM jaxhpo_meta WHERE key='schema_version'").fetchone()[0] == str(
        SCHEMA_VERSION) == "8"
    con.close()


def test_intermediate_values_plot_draws_every_report(tmp_path):
    pytest.importorskip("matplotlib")
    from jaxhpo import plot

    from jaxhpo import cli_study

    study = Study(SPACE, RANDOM, seed=6, pruner=SuccessiveHalvingPruner(), storage=str(tmp_path / "s.db"))
    study.optimize(pruned_objective, num_trials=12, progress=False)
    # the command line draws the same plot from the stored study
    assert cli_study.main(["plot", str(tmp_path / "s.db"), "--kind", "intermediate_values",
                           "--output", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "intermediate_values.png").read_bytes()[:4] == b"\x89PNG"
    fig = plot.plot_intermediate_values(study, tmp_path / "iv.png")
    lines = fig.axes[0].get_lines()
    curves = sorted((tuple(ln.get_xdata()), tuple(ln.get_ydata())) for ln in lines if ln.get_marker() != "x")
    want = sorted((tuple(sorted(t.intermediate_values)), tuple(t.intermediate_values[s] for s in
                                                                sorted(t.intermediate_values)))
                  for t in study.trials)
    assert curves == want
    crosses = [(ln.get_xdata()[0], ln.get_ydata()[0]) for ln in lines if ln.get_marker() == "x"]
    assert sorted(crosses) == sorted((t.last_step, t.value) for t in study.trials if t.state == TrialState.PRUNED)
    assert crosses and (tmp_path / "iv.png").read_bytes()[:4] == b"\x89PNG"
    assert "intermediate_values.png" in [p.name for p in plot.save_plots(study, tmp_path / "all")]
    # the history shows pruned trials at their last reported value
    hist = plot.plot_history(study)
    shown = {c.get_label(): c.get_offsets().tolist() for c in hist.axes[0].collections}
    assert sorted(map(tuple, shown["pruned (last report)"])) == sorted(
        (t.number, t.value) for t in study.trials if t.state == TrialState.PRUNED)
    plain = Study(SPACE, RANDOM, seed=6)
    plain.optimize(lambda p: p["start"], num_trials=2, progress=False)
    with pytest.raises(ValueError, match="no reported intermediate values"):
        plot.plot_intermediate_values(plain)


def test_one_objective_with_constraints_is_pruned_in_its_direction():
    """Minimised, with a constraint: trials whose reports are above the median are pruned
    (not those below it) and never become best."""
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    study = Study(space, jaxhpo.NSGA2(space, 4, num_objectives=1, num_constraints=1), seed=1,
                  pruner=MedianPruner(n_startup_trials=2))

    def objective(p):
        for step in range(3):
            report(p["x"], step)
            if should_prune():
                raise TrialPruned()
        return p["x"], 0.1 - p["x"]  # feasible above 0.1

    study.optimize(objective, num_trials=16, progress=False)
    pruned = [t.params["x"] for t in study.trials if t.state == TrialState.PRUNED]
    done = [t.params["x"] for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and done and np.mean(pruned) > np.mean(done)
    assert study.best_trial.state == TrialState.COMPLETE and study.best_value >= 0.1
    with pytest.raises(ValueError, match="2 objectives cannot be pruned"):
        Study(space, jaxhpo.NSGA2(space, 4, num_objectives=2), pruner=MedianPruner())


def test_a_run_config_names_its_pruner():
    from jaxhpo.study.config import parse_config

    base = {"objective": "m:f", "num_trials": 4, "space": {"a": {"type": "float", "low": 0.0, "high": 1.0}}}
    cfg = parse_config({**base, "pruner": {"name": "asha", "reduction_factor": 4}})
    assert isinstance(cfg.pruner, SuccessiveHalvingPruner) and cfg.pruner.reduction_factor == 4
    assert isinstance(parse_config({**base, "pruner": "median"}).pruner, MedianPruner)
    assert parse_config(base).pruner is None
    hb = parse_config({**base, "pruner": {"name": "hyperband", "max_resource": 27}}).pruner
    assert isinstance(hb, HyperbandPruner) and hb.num_brackets() == 4
    assert parse_config({**base, "pruner": "hyperband"}).pruner.max_resource == "auto"
    with pytest.raises(ValueError, match="pruner must be one of"):
        parse_config({**base, "pruner": "hyperbandit"})
    with pytest.raises(ValueError, match="reduction_factor must be >= 2"):
        parse_config({**base, "pruner": {"name": "asha", "reduction_factor": 1}})
    with pytest.raises(ValueError, match="pruner 'median'.*warmup"):
        parse_config({**base, "pruner": {"name": "median", "warmup": 3}})


def test_the_pruning_example_runs_and_prunes(tmp_path, capsys):
    pytest.importorskip("sklearn")
    from helpers import load_example

    example = load_example("sgd_pruning")
    study = example.main(["--trials", "8", "--storage", str(tmp_path / "sgd.db")])
    trials = study.trials
    assert len(trials) == 8 and any(t.state == TrialState.PRUNED for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(len(t.intermediate_values) == example.EPOCHS and t.value == t.intermediate_values[example.EPOCHS - 1]
               for t in done)
    assert study.best_value == min(t.value for t in done)
    epochs = sum(len(t.intermediate_values) for t in trials)
    assert f"8 trials, {8 - len(done)} pruned, {epochs} of {8 * example.EPOCHS} epochs" in capsys.readouterr().out


def test_the_progress_line_counts_pruned_trials(capsys):
    from jaxhpo.study.progress import PlainProgress

    p = PlainProgress(10, interval=0.0)
    p.update(2, best=0.5, pruned=1)
    p.update(1, failed=1)
    p.close()
    err = capsys.readouterr().err
    assert "trials 3/10" in err and "failed 1  pruned 1" in err
    study = Study(SPACE, RANDOM, seed=7, pruner=SuccessiveHalvingPruner())
    study.optimize(pruned_objective, num_trials=9, progress=True)
    pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
    err = capsys.readouterr().err
    assert pruned and (f"pruned={pruned}" in err or f"pruned {pruned}" in err)  # tqdm's postfix, or the plain line


def test_two_processes_prune_from_one_file(tmp_path):
    from test_study_storage import _child

    db = tmp_path / "shared.db"
    code = """
        from jaxhpo.study import Study, SuccessiveHalvingPruner
        import jaxhpo, test_study_pruning as t
        study = Study(t.SPACE, jaxhpo.RandomSearch(t.SPACE, 4), seed=8, storage=sys.argv[1],
                      pruner=SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
        def slow(p):
            time.sleep(0.01)
            return t.pruned_objective(p)
        # Both processes start optimising together (on a loaded machine one
        # could otherwise finish the study before the other has imported jax).
        open(sys.argv[1] + "." + str(os.getpid()), "w").close()
        while len([n for n in os.listdir(os.path.dirname(sys.argv[1])) if n.startswith("shared.db.")]) < 2:
            time.sleep(0.01)
        study.optimize(slow, max_trials=24, progress=False)
    """
    children = [_child(code, str(db)) for _ in range(2)]
    for c in children:
        _, err = c.communicate(timeout=180)
        assert c.returncode == 0, err
    with Study.load(db) as study:
        trials = study.trials
    assert [t.number for t in trials] == list(range(24))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({t.worker for t in trials}) == 2  # both took part
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(STEPS))
            assert t.value == pytest.approx(curve(t.params, STEPS - 1))
    for t in pruned:
        # stopped at a rung, by a rival that was better there
        rung = t.last_step
        assert rung in (1, 3, 9) and t.value == t.intermediate_values[rung]
        assert any(o.intermediate_values.get(rung, np.inf) < t.value for o in trials if o.number != t.number)


def test_a_study_sees_reports_of_trials_another_study_object_finished(tmp_path):
    path = str(tmp_path / "s.db")
    a = Study(SPACE, jaxhpo.RandomSearch(SPACE, 6), seed=0, storage=path,
              pruner=MedianPruner(n_startup_trials=1))
    b = Study.load(path, pruner=SuccessiveHalvingPruner())
    (probe,) = a.ask_trials(1)
    a.report(probe, 1.0, 0)
    a.report(probe, 1.0, 1)
    assert not a.should_prune(probe)  # nothing complete yet: a has cached no finished trial
    for v in (0.5, 0.7, 0.9, 0.95):  # b finishes four trials, all better than the probe at step 1
        (t,) = b.ask_trials(1)
        b.report(t, v, 1)
        b.tell(t, v)
    assert a.should_prune(probe)  # a now sees b's trials: their median 0.8 < 1.0
    # ASHA at rung 1: four finished rivals, a's running probe and this trial make 6, keeping
    # the best 2; 0.6 is second (without the running probe: 5 keep 1, and it would be pruned)
    (late,) = b.ask_trials(1)
    b.report(late, 0.6, 1)
    assert not b.should_prune(late)
    a.report(probe, 0.55, 2)  # reports past a rung do not change the probe's rung value
    assert not b.should_prune(late)
    a.close()
    b.close()


def test_threshold_pruner_in_a_maximised_study_prunes_by_the_users_bound():
    def accuracy(p):
        for step in range(4):
            report(p["rate"], step)  # an "accuracy" that stays at its rate
            if should_prune():
                raise TrialPruned()
        return p["rate"]

    with Study(SPACE, RANDOM, seed=1, maximize=True, pruner=ThresholdPruner(lower=0.3, n_warmup_steps=1)) as s:
        s.optimize(accuracy, num_trials=12, progress=False)
        for t in s.trials:
            low = t.params["rate"] < 0.3
            assert (t.state == TrialState.PRUNED) == low
            if low:
                assert sorted(t.intermediate_values) == [0, 1]  # stopped at the end of the warm-up
        states = {t.state for t in s.trials}
        assert states == {TrialState.PRUNED, TrialState.COMPLETE} and s.best_value >= 0.3


def test_asha_rivals_at_a_rung_are_the_trials_promoted_into_it():
    # eta = 2, rungs at steps 1, 2, 4. Trials 1 and 2 report at steps 0 and 3: their
    # report at 3 crosses rungs 1 and 2 and prunes them at rung 1, so at rung 2 trial 3
    # meets trial 0 alone (and is pruned) instead of four rivals (and kept).
    curves = [[(s, 1.0) for s in range(5)], [(0, 9.0), (3, 9.0)], [(0, 9.0), (3, 9.0)],
              [(0, 5.0), (2, 5.0), (4, 5.0)]]
    with Study(SPACE, RANDOM, pruner=SuccessiveHalvingPruner(1, 2, 0)) as s:
        outcome = []
        for curve in curves:
            t = s.ask_trials(1)[0]
            for step, value in curve:
                s.report(t, value, step)
                if s.should_prune(t):
                    s.tell(t, pruned=True)
                    outcome.append(f"pruned at {step}")
                    break
            else:
                s.tell(t, curve[-1][1])
                outcome.append("complete")
    assert outcome == ["complete", "pruned at 3", "pruned at 3", "pruned at 2"]  # as Optuna decides


def test_hyperband_auto_max_resource_is_fixed_by_the_first_complete_trial():
    # The first trial to complete reported steps 0..8, a later one 0..26: the layout
    # stays that of max_resource 9 (two brackets), as Optuna fixes it.
    auto, nine = HyperbandPruner(1, "auto", 3), HyperbandPruner(1, 9, 3)
    view = FakeView({0: (True, {s: 1.0 for s in range(9)}), 1: (True, {s: 2.0 for s in range(27)}),
                     **{n: (False, {0: float(n), 3: float(n)}) for n in range(2, 12)}})
    for n in range(12, 40):
        view.trial_number = n
        for v in (0.5, 5.0, 20.0):
            assert decide(auto, {0: v, 3: v}, view) == decide(nine, {0: v, 3: v}, view)


def test_intermediate_values_plot_tells_failed_and_running_trials_from_complete_ones():
    pytest.importorskip("matplotlib")
    from jaxhpo import plot

    def diverging(p):
        for step in range(3):
            report(curve(p, step), step)
        if p["start"] > 1.5:
            raise RuntimeError("diverged")
        return curve(p, 2)

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=1)
    with pytest.warns(RuntimeWarning, match="diverged"):
        study.optimize(diverging, num_trials=4, progress=False)
    (running,) = study.ask_trials(1)
    study.report(running, 1.0, 0)
    states = {t.state for t in study.trials if t.intermediate_values}
    assert {TrialState.COMPLETE, TrialState.FAILED, TrialState.RUNNING} <= states
    ax = plot.plot_intermediate_values(study).axes[0]
    styles = {ln.get_label(): ln.get_linestyle() for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert styles == {"complete": "-", "failed": ":", "running": "--"}
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["complete", "failed", "running"]
