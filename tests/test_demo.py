"""The iris demo: data, the FISTA logistic-regression solver against
scikit-learn, the cross-validated searches, and the command line."""

import functools
import os
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_iris as sklearn_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import jaxhpo
from jaxhpo import cli, demo
from jaxhpo.cv import kfold_masks, masks_from_splits
from jaxhpo.datasets import IRIS_CLASSES, IRIS_FEATURES, load_iris

X, Y = load_iris()
XS = StandardScaler().fit_transform(X.astype(np.float64))  # (150, 4) float64


# ------------------------------------------------------------------------- data
def test_load_iris_matches_sklearn_copy():
    assert X.shape == (150, 4) and X.dtype == np.float32
    assert Y.shape == (150,) and Y.dtype == np.int32
    Xr, yr = sklearn_iris(return_X_y=True)
    np.testing.assert_array_equal(X, Xr.astype(np.float32))
    np.testing.assert_array_equal(Y, yr)
    assert len(IRIS_FEATURES) == 4 and len(IRIS_CLASSES) == 3
    np.testing.assert_array_equal(np.bincount(Y), [50, 50, 50])


def test_standardize_uses_training_rows_only():
    train = np.zeros(150, bool)
    train[::3] = True
    got = np.asarray(demo.standardize(jnp.asarray(X), jnp.asarray(train, jnp.float32)))
    expected = StandardScaler().fit(X[train].astype(np.float64)).transform(X.astype(np.float64))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # A feature constant on the training rows (0.1 there, other values on the
    # rest): only centred, as StandardScaler does. Its float32 weighted mean
    # missed 0.1 by an ulp, and the ~1e-8 std scaled the other rows by 1e7.
    wide = np.c_[X, np.where(train, np.float32(0.1), np.float32(0.7))]
    got = np.asarray(demo.standardize(jnp.asarray(wide), jnp.asarray(train, jnp.float32)))
    expected = StandardScaler().fit(wide[train].astype(np.float64)).transform(wide.astype(np.float64))
    np.testing.assert_allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------- solver
def sk_objective(W, b, C, l1):
    """scikit-learn's objective / (C n): mean log-loss + penalty / (C n), float64."""
    Z = XS @ W.T + b
    Z = Z - Z.max(axis=1, keepdims=True)
    logloss = np.log(np.exp(Z).sum(axis=1)) - Z[np.arange(len(Y)), Y]
    penalty = np.abs(W).sum() if l1 else 0.5 * (W ** 2).sum()
    return logloss.mean() + penalty / (C * len(Y))


# (C, l1): the l1 fits are compared where saga converges tightly in well under a second.
SOLVER_CASES = [(0.1, True), (1.0, True), (0.1, False), (10.0, False)]


@functools.lru_cache(maxsize=None)
def fista_fits():
    """All solver cases as one vmapped program: W (4, 3, 4), b (4, 3)."""
    C = jnp.array([c for c, _ in SOLVER_CASES], jnp.float32)
    l1 = jnp.array([p for _, p in SOLVER_CASES])
    fit = jax.jit(jax.vmap(lambda c, p: demo.fit_logreg(
        jnp.asarray(XS, jnp.float32), jnp.asarray(Y), jnp.ones(150), c, p, num_classes=3)))
    return tuple(np.asarray(a, np.float64) for a in fit(C, l1))


def sklearn_fit(C, l1):
    if l1:
        model = LogisticRegression(C=C, l1_ratio=1.0, solver="saga", tol=1e-8, max_iter=100_000)
    else:
        model = LogisticRegression(C=C, l1_ratio=0.0, solver="lbfgs", tol=1e-10, max_iter=10_000)
    return model.fit(XS, Y)


@pytest.mark.parametrize("case", range(len(SOLVER_CASES)))
def test_fista_reaches_sklearn_optimum(case):
    C, l1 = SOLVER_CASES[case]
    W_all, b_all = fista_fits()
    W, b = W_all[case], b_all[case]
    model = sklearn_fit(C, l1)
    ours, theirs = sk_objective(W, b, C, l1), sk_objective(model.coef_, model.intercept_, C, l1)
    # Our float32 fit is at least as good as scikit-learn's, to float32 accuracy.
    assert ours <= theirs + 1e-6, (ours, theirs)
    assert abs(ours - theirs) < 1e-5 * max(1.0, theirs)
    np.testing.assert_allclose(W, model.coef_, atol=2e-3)
    # The intercept is free up to a shift shared by all classes: compare centred.
    np.testing.assert_allclose(b - b.mean(), model.intercept_ - model.intercept_.mean(), atol=2e-3)
    if l1:
        # Soft-thresholding gives exact zeros, where scikit-learn's l1 fit has them.
        np.testing.assert_array_equal(W == 0, model.coef_ == 0)
        assert (W == 0).any()
    np.testing.assert_array_equal((XS @ W.T + b).argmax(1), model.predict(XS))


def test_fit_logreg_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_iters"):
        demo.fit_logreg(XS, Y, np.ones(150), 1.0, False, num_classes=3, num_iters=0)
    with pytest.raises(ValueError, match="num_classes"):
        demo.fit_logreg(XS, Y, np.ones(150), 1.0, False, num_classes=1)
    with pytest.raises(ValueError, match="weights and y"):
        demo.fit_logreg(XS, Y, np.ones(149), 1.0, False, num_classes=3)
    # Concrete values are held to the documented rules (an out-of-range label
    # was one-hot to zeros and dropped out of the fit; C <= 0 or zero weights gave NaN)
    with pytest.raises(ValueError, match=r"y must be int class indices in \[0, num_classes\)"):
        demo.fit_logreg(XS, np.where(Y == 2, 3, Y), np.ones(150), 1.0, False, num_classes=3)
    for C in (0.0, -1.0, float("nan"), np.ones(1), "1.0", True, None, 1 + 1j):
        with pytest.raises(ValueError, match="C must be a number > 0"):
            demo.fit_logreg(XS, Y, np.ones(150), C, False, num_classes=3)
    for w in (np.zeros(150), -np.ones(150)):
        with pytest.raises(ValueError, match="weights must be nonnegative sample weights, not all zero"):
            demo.fit_logreg(XS, Y, w, 1.0, False, num_classes=3)
    masks = kfold_masks(150, 5, key=0, labels=Y)
    bad_X = np.array(X, np.float32)
    bad_X[0, 0] = np.nan
    with pytest.raises(ValueError, match="X must be finite"):
        demo.LogRegCV(bad_X, Y, masks)
    with pytest.raises(ValueError, match="y must hold at least 2 classes"):
        demo.LogRegCV(X, np.zeros(150, int), masks)


# ------------------------------------------------------------------ the search
GRID_SIZE = 7  # C = 1e-3, 1e-2, ..., 1e3: 14 configurations with both penalties


def test_grid_search_agrees_with_sklearn_gridsearchcv():
    splits = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, Y))
    masks = masks_from_splits(splits, 150)
    (row,) = demo.run_demo(strategies=("grid",), grid_size=GRID_SIZE, masks=masks)
    assert row.num_configs == 2 * GRID_SIZE and row.num_folds == 5

    # The same grid of C values, decoded as the search saw them.
    grid = jaxhpo.GridSearch(demo.SPACE, sizes={"C": GRID_SIZE})
    Cs = np.unique(np.asarray(demo.SPACE.decode(grid._points)["C"])).astype(np.float64)
    assert len(Cs) == GRID_SIZE
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    param_grid = [
        {"logisticregression__C": Cs, "logisticregression__l1_ratio": [1.0],
         "logisticregression__solver": ["saga"]},
        {"logisticregression__C": Cs, "logisticregression__l1_ratio": [0.0],
         "logisticregression__solver": ["lbfgs"]},
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # saga's ConvergenceWarning at the largest C
        search = GridSearchCV(pipe, param_grid, cv=splits, scoring="accuracy").fit(
            X.astype(np.float64), Y)
    assert abs(row.cv_accuracy - search.best_score_) <= 0.02, (row, search.best_score_)

    # Configuration by configuration, too: the same folds, the same model.
    objective = demo.LogRegCV(X, Y, masks)
    params = {"C": jnp.asarray(np.tile(Cs, 2), jnp.float32),
              "penalty": jnp.asarray(np.repeat([0, 1], GRID_SIZE), jnp.int32)}
    ours = np.asarray(jax.jit(jax.vmap(objective))(params))
    theirs = search.cv_results_["mean_test_score"]  # l1 grid first, then l2, C ascending
    assert np.mean(np.abs(ours - theirs)) < 0.01, np.c_[ours, theirs]
    assert row.cv_accuracy == pytest.approx(ours.max(), abs=1e-6)


@functools.lru_cache(maxsize=None)
def quick_rows(seed=0):
    return demo.run_demo(seed=seed, **demo.QUICK_SETTINGS)


def test_run_demo_quick_reports_every_strategy():
    rows = quick_rows()
    assert [r.strategy for r in rows] == list(demo.STRATEGY_NAMES)
    q = demo.QUICK_SETTINGS
    assert [r.num_configs for r in rows] == [2 * q["grid_size"], q["num_configs"], q["num_configs"]]
    for r in rows:
        assert 1e-3 <= r.best_C <= 1e3 and r.best_penalty in demo.PENALTIES
        # Well-tuned logistic regression classifies iris >= 95% correctly.
        assert 0.95 <= r.cv_accuracy <= 1.0
        assert r.num_folds == 5 and r.seconds > 0


def test_reported_accuracy_is_the_objective_at_the_best_configuration():
    (row,) = [r for r in quick_rows() if r.strategy == "random"]
    key_folds, _ = jax.random.split(jax.random.key(0))
    masks = kfold_masks(150, 5, key=key_folds, labels=Y)
    objective = demo.LogRegCV(X, Y, masks, demo.QUICK_SETTINGS["num_iters"])
    config = {"C": jnp.float32(row.best_C), "penalty": jnp.int32(demo.PENALTIES.index(row.best_penalty))}
    assert float(jax.jit(objective)(config)) == pytest.approx(row.cv_accuracy, abs=1e-6)


def test_objective_hashes_by_data_so_searches_reuse_compilation():
    masks = np.asarray(kfold_masks(150, 5))
    a, b = demo.LogRegCV(X, Y, masks, 50), demo.LogRegCV(X.copy(), Y.copy(), masks.copy(), 50)
    assert a == b and hash(a) == hash(b)
    assert a != demo.LogRegCV(X, Y, masks[::-1], 50)
    assert a != demo.LogRegCV(X, Y, masks, 60)


def test_run_demo_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown strategy 'bogus'"):
        demo.run_demo(strategies=("bogus",))
    with pytest.raises(TypeError, match="strategies must be a sequence"):
        demo.run_demo(strategies="grid")
    with pytest.raises(ValueError, match="num_configs"):
        demo.run_demo(num_configs=0)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        demo.run_demo(seed=10**23)
    with pytest.raises(ValueError, match="masks must be bool"):
        demo.LogRegCV(X, Y, np.ones((5, 149), bool))


# ------------------------------------------------------------------------- cli
def test_cli_demo_quick_prints_the_table(capsys):
    quick_rows()  # the same searches: the CLI reuses their compiled programs
    assert cli.main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("strategy"))
    for word in ("configs", "best C", "penalty", "CV accuracy", "wall time"):
        assert word in lines[header]
    body = lines[header + 2: header + 2 + len(demo.STRATEGY_NAMES)]
    assert [line.split()[0] for line in body] == list(demo.STRATEGY_NAMES)
    for line, row in zip(body, quick_rows()):
        cells = line.split()
        assert int(cells[1]) == row.num_configs
        assert cells[3] == row.best_penalty
        assert float(cells[4]) == pytest.approx(row.cv_accuracy, abs=1e-4)
    assert "compilation included" in out
    # Called from Python with arguments, the command line leaves JAX's settings alone.
    assert jax.config.jax_compilation_cache_dir is None


def _grid_table(out):
    """The quick grid search's row of the demo table, less its wall time."""
    return next(line for line in out.splitlines() if line.startswith("grid")).split()[:-1]


def test_cli_keeps_compiled_programs_between_runs(tmp_path):
    # The jaxhpo program keeps compiled programs on disk (JAXHPO_CACHE_DIR):
    # the first run writes them, a second loads them and writes none (a program
    # written again would have another key: the cache would never be hit) and
    # prints the same search; --no-compile-cache writes nothing. Every program
    # is written (a threshold of 0 s), so that none crosses the threshold in
    # one run only, as on a loaded machine; without the suite's XLA_FLAGS, as
    # a user runs it.
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "jaxhpo", "demo", "--quick", "--strategies", "grid"]

    def run(*extra, folder=cache):
        return subprocess.run(cmd[:3] + list(extra) + cmd[3:], env=dict(env, JAXHPO_CACHE_DIR=str(folder)),
                              capture_output=True, text=True, check=True).stdout

    first = run()
    written = {p.name for p in cache.iterdir()}
    assert any(e.startswith("jit__search-") for e in written)
    second = run()
    assert {p.name for p in cache.iterdir()} == written
    assert _grid_table(second) == _grid_table(first)
    run("--no-compile-cache", folder=tmp_path / "unused")
    assert not (tmp_path / "unused").exists()


def test_use_compile_cache_sets_jax_and_keeps_a_chosen_folder(tmp_path):
    # In a fresh process: the call changes JAX's settings for the whole process.
    script = f"""
import jax, jaxhpo
from pathlib import Path
assert jaxhpo.use_compile_cache() == Path({str(tmp_path / "env")!r})
assert jax.config.jax_compilation_cache_dir == {str(tmp_path / "env")!r}
assert jax.config.jax_persistent_cache_min_compile_time_secs == jaxhpo.compile_cache.MIN_COMPILE_SECONDS
assert jax.config.jax_compilation_cache_max_size == jaxhpo.compile_cache.MAX_CACHE_BYTES
assert jaxhpo.use_compile_cache() == Path({str(tmp_path / "env")!r})  # a folder already chosen is kept
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # (tiny programs below)
jax.jit(lambda x: x + 1)(1.0)
assert jaxhpo.use_compile_cache({str(tmp_path / "b")!r}) == Path({str(tmp_path / "b")!r})
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.jit(lambda x: x * 3)(1.0)  # written to the new folder: JAX's cache was reopened there
assert Path({str(tmp_path / "env")!r}).is_dir() and any(Path({str(tmp_path / "b")!r}).iterdir())
for bad in ("", {str(tmp_path / "file")!r}):
    try:
        jaxhpo.use_compile_cache(bad)
    except ValueError as e:
        assert "directory must" in str(e)
    else:
        raise AssertionError(f"{{bad!r}} was taken as the cache folder")
try:
    jaxhpo.use_compile_cache({str(tmp_path / "file")!r})
except ValueError as e:
    assert "directory must be a folder" in str(e)
else:
    raise AssertionError("a file was taken as the cache folder")
for bad, exc in ((0, ValueError), (-5, ValueError), (1.5e9, TypeError), (True, TypeError)):
    try:
        jaxhpo.use_compile_cache(max_bytes=bad)
    except exc as e:
        assert "max_bytes" in str(e)
    else:
        raise AssertionError(f"max_bytes={{bad!r}} was taken")
# A bounded folder: the least recently used programs are deleted past the bound.
small = Path({str(tmp_path / "small")!r})
jaxhpo.use_compile_cache(small, max_bytes=40_000)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
for i in range(40):
    jax.jit(lambda x, i=i: x * i + i)(1.0)
entries = [p for p in small.iterdir() if p.name.endswith("-cache")]
assert 2 <= len(entries) < 40 and sum(p.stat().st_size for p in entries) <= 40_000, entries
"""
    (tmp_path / "file").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    subprocess.run([sys.executable, "-c", script], env=dict(env, JAXHPO_CACHE_DIR=str(tmp_path / "env")),
                   check=True, capture_output=True)


def test_cli_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXHPO_CACHE_DIR", str(tmp_path / "a"))
    assert cli.compile_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("JAXHPO_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.compile_cache_dir() == tmp_path / "xdg" / "jaxhpo" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.compile_cache_dir() == tmp_path / "home" / ".cache" / "jaxhpo" / "xla"


def test_cli_rejects_bad_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--seed", "-1"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--seed", str(2**64)])
    assert e.value.code == 2 and f"--seed: must be < {2**64}" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a pair .train_masks, val_masks., got a sequence of length 3"):
        demo.LogRegCV(X, Y, [np.ones((2, 150), bool)] * 3)
    for value in ("-1", "0"):  # the rule stated is the option's own
        with pytest.raises(SystemExit):
            cli.main(["demo", "--grid-size", value])
        assert f"--grid-size: must be >= 1, got {value}" in capsys.readouterr().err
    assert cli.main(["demo", "--strategies", "grid,bogus"]) == 2
    assert "--strategies" in capsys.readouterr().err


def test_cli_bench_lists_the_suite():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "jaxhpo", "bench"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "random_search_throughput" in out.stdout and "tpe_vs_optuna" in out.stdout
