"""Plots from a real study are written as non-trivial PNGs; the importance measure works."""

import numpy as np
import pytest

import jaxhpo
from jaxhpo.study import Study
from jaxhpo.study.importance import param_importance

pytest.importorskip("matplotlib")
from jaxhpo import plot  # noqa: E402

SPACE = jaxhpo.Space(
    x=jaxhpo.Float(-1.0, 1.0),
    lr=jaxhpo.Float(1e-4, 1e-1, log=True),
    n=jaxhpo.Int(1, 6),
    kind=jaxhpo.Categorical(["a", "b", "c"]),
)


def objective(p):
    if p["n"] == 6 and p["kind"] == "c":
        raise RuntimeError("unstable")  # some failures, as in real studies
    return 10 * p["x"] ** 2 + 0.01 * np.log10(p["lr"])


@pytest.fixture(scope="module")
def study():
    s = Study(SPACE, jaxhpo.RandomSearch(SPACE, 10), seed=0)
    s.optimize(objective, num_trials=60, progress=False)
    return s


def _is_png(path, min_bytes=8000):
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes


def test_save_plots_writes_four_images(study, tmp_path):
    paths = plot.save_plots(study, tmp_path / "plots")
    assert sorted(p.name for p in paths) == [
        "history.png", "importance.png", "parallel_coordinates.png", "slice.png"]
    for p in paths:
        assert _is_png(p), p
    # a picture of real data: many distinct colours, not a blank canvas
    from matplotlib.image import imread

    img = imread(paths[0])
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50


def test_save_plots_skips_a_plot_it_cannot_draw_with_a_warning_not_silently(tmp_path, recwarn):
    # values spanning more than float64 (finite, so complete trials) are beyond
    # matplotlib's scaling: its error was taken for "nothing to plot yet"
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    s = Study(space, jaxhpo.RandomSearch(space, 3), seed=0)
    for v in (-1e308, 1e308, 0.0):
        s.add_trial({"x": 0.5}, v)
    with pytest.warns(RuntimeWarning, match="plot history skipped"):
        paths = plot.save_plots(s, tmp_path / "huge")
    assert "history.png" not in {p.name for p in paths}
    # nothing reported: the intermediate-values plot is skipped without a word
    recwarn.clear()
    s2 = Study(space, jaxhpo.RandomSearch(space, 3), seed=0)
    s2.optimize(lambda p: p["x"], num_trials=3, progress=False)
    assert {p.name for p in plot.save_plots(s2, tmp_path / "plain")} == {
        "history.png", "importance.png", "parallel_coordinates.png", "slice.png"}
    # all values equal: no importance to draw yet, and nothing to warn about
    s3 = Study(space, jaxhpo.RandomSearch(space, 3), seed=0)
    s3.optimize(lambda p: 1.0, num_trials=3, progress=False)
    assert "importance.png" not in {p.name for p in plot.save_plots(s3, tmp_path / "flat")}
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_each_plot_and_learning_curves(study, tmp_path):
    for fn in (plot.plot_history, plot.plot_parallel_coordinates, plot.plot_slice, plot.plot_importance):
        fig = fn(study, tmp_path / f"{fn.__name__}.png")
        assert fig.axes and _is_png(tmp_path / f"{fn.__name__}.png")
    plot.plot_learning_curves({0: [1.0, 0.5, 0.3], 1: [1.2, 0.9, 0.8]}, tmp_path / "curves.png")
    assert _is_png(tmp_path / "curves.png", 5000)
    with pytest.raises(ValueError, match="curves"):
        plot.plot_learning_curves({})
    with pytest.raises(ValueError, match="unknown parameter"):
        plot.plot_slice(study, params=["nope"])


def test_average_ranks_equal_scipys_and_ties_carry_no_order():
    from scipy.stats import rankdata

    from jaxhpo.study.importance import average_ranks

    rng = np.random.default_rng(0)
    for _ in range(20):  # many ties
        y = rng.integers(0, 5, size=rng.integers(1, 30)).astype(float)
        np.testing.assert_array_equal(average_ranks(y), rankdata(y) - 1)
    flat = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=0)
    flat.optimize(lambda p: 1.0, num_trials=8, progress=False)
    with pytest.raises(ValueError, match="different values"):
        param_importance(flat)
    # A step in x only, with ties on each side: the rest get (almost) nothing.
    step = Study(SPACE, jaxhpo.RandomSearch(SPACE, 8), seed=0)
    step.optimize(lambda p: float(p["x"] > 0.0), num_trials=32, progress=False)
    scores = param_importance(step)
    assert list(scores)[0] == "x" and scores["x"] > 0.5


def test_importance_tells_a_none_choice_from_an_inactive_parameter():
    # only act=None is good; relu and "inactive" (sw off) are equally bad: act's three groups
    # explain every rank, sw's two do not
    space = jaxhpo.Space(sw=jaxhpo.Categorical(["on", "off"]),
                         act=jaxhpo.Categorical([None, "relu"], when={"sw": "on"}), x=jaxhpo.Float(0.0, 1.0))
    s = Study(space, jaxhpo.RandomSearch(space, 16), seed=0)
    s.optimize(lambda p: 0.0 if "act" in p and p["act"] is None else 1.0, num_trials=64, progress=False)
    scores = param_importance(s)
    assert list(scores) == ["act", "sw", "x"] and scores["act"] > 0.6


def test_importance_finds_the_parameter_that_matters(study):
    scores = param_importance(study)
    assert param_importance(study, objective=0) == scores
    with pytest.raises(ValueError, match="one objective; objective= may only be None or 0, got 7"):
        param_importance(study, objective=7)
    assert list(scores)[0] == "x"
    assert scores["x"] > 0.5 and sum(scores.values()) == pytest.approx(1.0)
    empty = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), seed=0)
    with pytest.raises(ValueError, match="at least 2 complete"):
        param_importance(empty)
    with pytest.raises(ValueError, match=r"no complete \(feasible\) trial"):
        plot.plot_history(empty)


def test_parallel_coordinates_join_the_active_axes_and_params_may_be_one_name():
    space = jaxhpo.Space(opt=jaxhpo.Categorical(["sgd", "adam"]), mom=jaxhpo.Float(0.0, 0.9, when={"opt": "sgd"}),
                         n=jaxhpo.Int(1, 64))
    s = Study(space, jaxhpo.RandomSearch(space, 8), seed=0)
    s.optimize(lambda p: p["n"] + p.get("mom", 0.0), num_trials=8, progress=False)
    fig = plot.plot_parallel_coordinates(s)
    lines = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) > 0 and ln.get_linestyle() == "-"]
    drawn = sorted(tuple(np.asarray(ln.get_xdata()).tolist()) for ln in lines if ln.get_alpha() == 0.5)
    adam = sum(t.params["opt"] == "adam" for t in s.trials)
    assert 0 < adam < 8 and drawn.count((0, 2)) == adam and drawn.count((0, 1, 2)) == 8 - adam
    assert plot.plot_slice(s, params="n").axes  # one name, not its letters
    # None as a categorical choice is a value on its axis, not an inactive parameter
    space = jaxhpo.Space(act=jaxhpo.Categorical(["relu", None]), x=jaxhpo.Float(0.0, 1.0))
    s = Study(space, jaxhpo.RandomSearch(space, 8), seed=0)
    s.optimize(lambda p: p["x"], num_trials=8, progress=False)
    assert 0 < sum(t.params["act"] is None for t in s.trials) < 8
    fig = plot.plot_parallel_coordinates(s)
    drawn = [ln for ln in fig.axes[0].lines if ln.get_alpha() == 0.5]
    assert len(drawn) == 8 and all(len(ln.get_xdata()) == 2 for ln in drawn)


def test_history_of_one_constrained_objective_tracks_the_best_feasible_trial():
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    with Study(space, jaxhpo.NSGA2(space, 4, num_objectives=1, num_constraints=1), maximize=True) as s:
        s.optimize(lambda p: (p["x"], p["x"] - 0.5), max_trials=12, progress=False)  # feasible iff x <= 0.5
        assert any(not t.feasible for t in s.trials)
        fig = plot.plot_history(s)
        best_line = fig.axes[0].lines[0].get_ydata()
        assert best_line[-1] == s.best_value <= 0.5


def test_an_irrelevant_parameter_scores_near_zero_not_its_bins_share():
    # 12 studies of 64 random trials; the objective ignores "noise". Uncorrected, eta^2
    # of 8 bins over 64 trials averages (8 - 1) / 63 = 0.11 for it.
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0), noise=jaxhpo.Float(0.0, 1.0))
    shares = []
    for seed in range(12):
        with Study(space, jaxhpo.RandomSearch(space, 64), seed=seed) as s:
            s.optimize(lambda p: p["x"], num_trials=64, progress=False)
            shares.append(param_importance(s)["noise"])
    assert np.median(shares) < 0.03 and max(shares) < 0.2


def test_a_series_of_one_point_is_drawn():
    """A trial that reported once, or a curve of one value, is a one-point line, which
    matplotlib draws as nothing unless it has a marker."""
    space = jaxhpo.Space(x=jaxhpo.Float(0.0, 1.0))
    s = Study(space, jaxhpo.RandomSearch(space, 4), seed=0)

    def once(p):
        jaxhpo.study.report(p["x"], 0)
        return p["x"]

    s.optimize(once, num_trials=4, progress=False)
    fig = plot.plot_intermediate_values(s)
    points = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 1 and ln.get_marker() not in ("None", "", None)]
    assert len(points) >= 4
    fig = plot.plot_learning_curves({0: [0.5], 1: [0.3, 0.2]})
    one = [ln for ln in fig.axes[0].lines if len(ln.get_xdata()) == 1]
    assert len(one) == 1 and one[0].get_marker() not in ("None", "", None)


def test_choices_whose_text_is_alike_are_labelled_apart_and_params_are_checked():
    # 1 and "1", None and "None" read alike as str(); labelled as jaxhpo show writes them
    space = jaxhpo.Space(c=jaxhpo.Categorical([1, "1", None, "None", ""]), x=jaxhpo.Float(0.0, 1.0))
    study = Study(space, jaxhpo.RandomSearch(space, 8), seed=0)
    study.optimize(lambda p: p["x"], num_trials=8, progress=False)
    ticks = [t.get_text() for t in plot.plot_slice(study, params="c").axes[0].get_xticklabels()]
    assert ticks == ["1", "'1'", "None", "'None'", "''"]
    texts = [t.get_text().strip() for t in plot.plot_parallel_coordinates(study).axes[0].texts][:5]
    assert texts == ticks
    for bad in (3, [], [1]):
        with pytest.raises(TypeError, match="params must be a parameter name or a non-empty list of them"):
            plot.plot_slice(study, params=bad)


def test_slices_span_each_range_with_labels_on_a_short_log_range():
    # Log ranges within two decades show no power of ten to label: the
    # bounds and two points between are labelled. Every choice of a
    # categorical is labelled, tried or not.
    space = jaxhpo.Space(lr=jaxhpo.Float(0.02, 0.05, log=True), wide=jaxhpo.Float(1e-5, 1.0, log=True),
                         kind=jaxhpo.Categorical(["a", "b", "c"]))
    s = Study(space, jaxhpo.RandomSearch(space, 4), seed=0)
    s.enqueue_trial({"lr": 0.03, "wide": 0.1, "kind": "a"})
    s.optimize(lambda p: p["lr"] if p["kind"] != "b" else float("nan"), num_trials=6, progress=False)
    fig = plot.plot_slice(s)
    fig.canvas.draw()
    lr, wide, kind = fig.axes
    assert lr.get_xlim()[0] < 0.02 and lr.get_xlim()[1] > 0.05
    labels = [t.get_text() for t in lr.get_xticklabels() if t.get_text()]
    assert labels[0] == "0.02" and labels[-1] == "0.05" and len(labels) == 4
    assert wide.get_xlim()[0] < 1e-5 and wide.get_xlim()[1] > 1.0
    assert len([t for t in wide.get_xticklabels() if t.get_text()]) >= 5  # its powers of ten
    assert [t.get_text() for t in kind.get_xticklabels()] == ["a", "b", "c"]
    assert kind.get_xlim() == (-0.5, 2.5)
