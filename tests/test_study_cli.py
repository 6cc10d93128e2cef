"""The study commands: run CONFIG (TOML/JSON/YAML), show, plot; config errors."""

import json
from pathlib import Path

import pytest

from jaxhpo import cli_study
from jaxhpo.study import Study
from jaxhpo.study.config import load_config, parse_config

OBJECTIVE = '''
def objective(p):
    return (p["x"] - 0.25) ** 2 + (0.0 if p["kind"] == "b" else 1.0)
'''

SPACE = {
    "x": {"type": "float", "low": -1.0, "high": 1.0},
    "n": {"type": "int", "low": 1, "high": 4},
    "kind": {"type": "categorical", "choices": ["a", "b"]},
}

TOML = '''
name = "demo"
objective = "obj.py:objective"
num_trials = 12
seed = 3
strategy = { name = "random", popsize = 4 }
output = "out"

[space]
x = { type = "float", low = -1.0, high = 1.0 }
n = { type = "int", low = 1, high = 4 }
kind = { type = "categorical", choices = ["a", "b"] }
'''


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    return tmp_path


def test_run_toml_writes_results_plots_and_resumes(folder, capsys):
    cfg = folder / "demo.toml"
    cfg.write_text(TOML)
    assert cli_study.main(["run", str(cfg), "--no-progress"]) == 0
    out = folder / "out"
    best = json.loads((out / "best.json").read_text())
    assert best["trials"] == {"complete": 12}
    study = Study.load(str(out / "study.db"))
    assert best["best_value"] == study.best_value and best["best_params"] == study.best_params
    assert len((out / "trials.csv").read_text().splitlines()) == 13
    assert {p.name for p in (out / "plots").iterdir()} == {
        "history.png", "parallel_coordinates.png", "slice.png", "importance.png"}
    study.close()
    # the budget is the study's total: a rerun does nothing more, a bigger one continues
    assert cli_study.main(["run", str(cfg), "--no-progress", "--no-plots"]) == 0
    assert json.loads((out / "best.json").read_text())["trials"] == {"complete": 12}
    cfg.write_text(TOML.replace("num_trials = 12", "num_trials = 20"))
    assert cli_study.main(["run", str(cfg), "--no-progress", "--no-plots"]) == 0
    assert json.loads((out / "best.json").read_text())["trials"] == {"complete": 20}
    capsys.readouterr()

    assert cli_study.main(["show", str(out / "study.db"), "--top", "3"]) == 0
    shown = capsys.readouterr().out
    assert "study 'demo'" in shown and "'complete': 20" in shown
    table = shown.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("rank"))
    assert len(table) - header - 2 == 3
    best20 = json.loads((out / "best.json").read_text())
    assert table[header + 2].split()[:3] == ["1", str(best20["best_trial"]), f"{best20['best_value']:.6g}"]

    assert cli_study.main(["plot", str(out / "study.db"), "--output", str(folder / "pics")]) == 0
    assert len(list((folder / "pics").glob("*.png"))) == 4


def test_an_interrupt_while_the_study_starts_is_reported(folder, capsys, monkeypatch):
    # Ctrl-C while the strategy compiles (inside Study): the message and status 130, no traceback.
    import jaxhpo.study

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    cfg = folder / "demo.toml"
    cfg.write_text(TOML)
    monkeypatch.setattr(jaxhpo.study, "Study", interrupted)
    assert cli_study.main(["run", str(cfg), "--no-progress"]) == 130
    assert "interrupted before any trial of this run" in capsys.readouterr().err


def test_run_on_a_storage_it_may_not_write_fails_with_a_message(folder, capsys, monkeypatch):
    import os

    from jaxhpo.study import storage as storage_module
    cfg = folder / "demo.toml"
    cfg.write_text(TOML.replace("num_trials = 12", "num_trials = 4"))
    assert cli_study.main(["run", str(cfg), "--no-progress", "--no-plots"]) == 0
    cfg.write_text(TOML.replace("num_trials = 12", "num_trials = 8"))
    capsys.readouterr()
    real_access = os.access
    monkeypatch.setattr(storage_module.os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    assert cli_study.main(["run", str(cfg), "--no-progress", "--no-plots"]) == 2
    assert "jaxhpo run: error: storage" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_configs(folder, fmt):
    data = {"objective": "obj.py:objective", "space": SPACE, "num_generations": 2,
            "strategy": {"name": "RandomSearch", "popsize": 3}, "maximize": True}
    path = folder / f"c.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(data))
    else:
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    assert cfg.name == "c" and cfg.maximize and cfg.strategy.popsize == 3
    assert cfg.output == folder / "c_results" and cfg.storage == str(folder / "c_results" / "study.db")
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots"]) == 0
    study = Study.load(cfg.storage)
    assert study.generation == 2 and len(study.trials) == 6 and study.maximize
    study.close()


def test_trials_csv_tells_a_none_label_from_an_inactive_parameter(folder):
    import csv

    space = {"model": {"type": "categorical", "choices": ["linear", "tree"]},
             "reg": {"type": "categorical", "choices": [None, "l2"], "when": {"model": "linear"}},
             "x": {"type": "float", "low": -1.0, "high": 1.0}, "kind": {"type": "categorical", "choices": ["b"]}}
    data = {"objective": "obj.py:objective", "space": space, "num_trials": 4,
            "strategy": {"name": "random", "popsize": 4},
            "enqueue": [{"model": "linear", "reg": None, "x": 0.0, "kind": "b"},
                        {"model": "tree", "x": 0.0, "kind": "b"}]}
    path = folder / "none.json"
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots"]) == 0
    with open(folder / "none_results" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["params_reg"] for r in rows[:2]] == ["None", ""]


def test_trials_csv_and_show_keep_labels_that_read_as_none_inactive_or_quoted_apart(tmp_path, capsys):
    # (a label "None" and a None label gave the same cell, a label "" read as
    # inactive, show printed a label "-" as inactive and broke its table at a
    # newline)
    import csv

    from jaxhpo import Categorical, Float, RandomSearch, Space
    kinds = [None, "None", "-", "on", "new\nline", "'q'"]
    space = Space(kind=Categorical(kinds), lab=Categorical(["", "x"], when={"kind": "on"}), x=Float(0.0, 1.0))
    study = Study(space, RandomSearch(space, 7), storage=str(tmp_path / "l.db"), name="s")
    for k in kinds:
        study.enqueue_trial({"kind": k, "x": 0.5} if k != "on" else {"kind": k, "lab": "", "x": 0.5})
    study.enqueue_trial({"kind": "on", "lab": "x", "x": 0.5})
    study.optimize(lambda p: p["x"], num_trials=7, progress=False)
    cli_study._write_results(study, tmp_path / "out")
    with open(tmp_path / "out" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [(r["params_kind"], r["params_lab"]) for r in rows]
    stored = [(t.params["kind"], t.params.get("lab", "inactive")) for t in study.trials]
    assert len(set(cells)) == len(set(stored)) == 7
    assert cells[:2] == [("None", ""), ("'None'", "")] and cells[3] == ("on", "''")
    study.close()
    assert cli_study.main(["show", str(tmp_path / "l.db"), "--all"]) == 0
    table = capsys.readouterr().out.splitlines()
    body = table[table.index(next(line for line in table if line.startswith("--"))) + 1:]
    assert len(body) == 7 and sum(" '-' " in line for line in body) == 1
    # labels of other types whose text a str label shares
    from jaxhpo.cli_study import label_text
    mixed = [1, "1", True, "True", (1, 2), "(1, 2)", 1.5, "1.5", "adam", " 1"]
    assert len({str(label_text(v)) for v in mixed}) == len(mixed)
    assert [label_text(v) for v in ("adam", "1", 1)] == ["adam", "'1'", 1]


def test_enqueued_configurations_run_first_and_once(folder):
    data = {"objective": "obj.py:objective", "space": SPACE, "num_trials": 4,
            "strategy": {"name": "random", "popsize": 2}, "enqueue": [{"x": 0.25, "kind": "b"}]}
    path = folder / "q.json"
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots"]) == 0
    data["num_trials"] = 6  # a rerun continues; the configuration is not queued again
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots"]) == 0
    with Study.load(str(folder / "q_results" / "study.db")) as study:
        tried = [t for t in study.trials if t.params["x"] == 0.25 and t.params["kind"] == "b"]
        assert [t.number for t in tried] == [0] and study.best_value == 0.0


def test_output_leaves_a_storage_the_config_names_and_a_file_as_output_is_an_error(folder, capsys):
    data = {"objective": "obj.py:objective", "space": SPACE, "num_trials": 2,
            "strategy": {"name": "random", "popsize": 2}, "storage": "shared/study.db"}
    path = folder / "s.json"
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots", "--output", str(folder / "o")]) == 0
    assert (folder / "shared" / "study.db").exists() and not (folder / "o" / "study.db").exists()
    # --storage as a URL in a folder not made yet: made, as for a path.
    url = f"sqlite:///{folder / 'new' / 'deeper' / 'x.db'}"
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots", "--storage", url]) == 0
    assert (folder / "new" / "deeper" / "x.db").exists()
    (folder / "afile").write_text("")
    capsys.readouterr()
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots", "--output", str(folder / "afile")]) == 2
    assert "jaxhpo run: error: --output " in capsys.readouterr().err  # (the option's value, not the config's)
    # an explicit null storage is no storage named: it follows --output
    data["storage"] = None
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots", "--output", str(folder / "o2")]) == 0
    assert (folder / "o2" / "study.db").exists()
    # the default storage lives in the output folder: the same rule, named
    data.pop("storage")
    path.write_text(json.dumps(data))
    assert cli_study.main(["run", str(path), "--no-progress", "--no-plots", "--output", str(folder / "afile")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _error(folder, capsys, data, fmt="json"):
    path = folder / f"bad.{fmt}"
    path.write_text(json.dumps(data) if isinstance(data, dict) else data)
    assert cli_study.main(["run", str(path), "--no-progress"]) == 2
    return capsys.readouterr().err


def test_config_errors_are_clear(folder, capsys):
    good = {"objective": "obj.py:objective", "space": SPACE, "num_trials": 4}
    assert "unknown strategy 'simulated_annealing'" in _error(
        folder, capsys, {**good, "strategy": "simulated_annealing"})
    # the abstract base class is no strategy to run (it failed inside the study, with a traceback)
    assert "unknown strategy 'Strategy'" in _error(folder, capsys, {**good, "strategy": {"name": "Strategy",
                                                                                           "popsize": 2}})
    assert "grid sizes must be a mapping" in _error(
        folder, capsys, {**good, "strategy": {"name": "grid", "sizes": [3]}})
    # before anything runs or is written: a pruner with several objectives
    mo = {**good, "strategy": {"name": "nsga2", "popsize": 4, "num_objectives": 2}, "pruner": "median",
          "output": "mo_out"}
    assert "pruner: a study of 2 objectives cannot be pruned" in _error(folder, capsys, mo)
    assert not (folder / "mo_out").exists()
    assert "unknown key(s) ['trials']" in _error(folder, capsys, {**good, "trials": 3})
    assert "'objective' is required" in _error(folder, capsys, {"space": SPACE, "num_trials": 4})
    assert "config space.x.type" in _error(folder, capsys, {**good, "space": {"x": {"type": "real"}}})
    assert "space.x: Float needs low < high" in _error(
        folder, capsys, {**good, "space": {"x": {"type": "float", "low": 1, "high": 0}}})
    assert "RandomSearch needs popsize" in _error(folder, capsys, {**good, "strategy": {"name": "random"}})
    assert "has no setting(s) ['sigma']" in _error(
        folder, capsys, {**good, "strategy": {"name": "random", "popsize": 2, "sigma": 1}})
    assert "give a budget" in _error(folder, capsys, {k: v for k, v in good.items() if k != "num_trials"})
    assert "no attribute 'nope'" in _error(folder, capsys, {**good, "objective": "obj.py:nope"})
    assert "cannot import" in _error(folder, capsys, {**good, "objective": "no_such_module_xyz:f"})
    assert "num_trials must be an integer >= 1" in _error(folder, capsys, {**good, "num_trials": 0})
    assert "config: n_jobs must be an integer >= 1 or -1, got None" in _error(folder, capsys, {**good, "n_jobs": None})
    assert "config: seed must be an integer in [0, 4294967295]" in _error(folder, capsys, {**good, "seed": 2**40})
    from jaxhpo.study.config import parse_config

    assert parse_config({**good, "n_jobs": -1}, folder).n_jobs == -1
    assert "timeout must be a positive number" in _error(folder, capsys, {**good, "timeout": float("nan")})
    assert "enqueue[0]: parameter 'x' = 3 is outside" in _error(folder, capsys, {**good, "enqueue": [{"x": 3}]})
    assert "enqueue must be a list of tables" in _error(folder, capsys, {**good, "enqueue": {"x": 0}})
    assert "GridSearch evaluates a fixed set of points" in _error(
        folder, capsys, {**good, "strategy": {"name": "grid", "num": 2}, "enqueue": [{"x": 0}]})
    assert "invalid JSON" in _error(folder, capsys, "{not json")
    assert "invalid TOML" in _error(folder, capsys, "a = = 1", fmt="toml")
    assert "unknown format '.ini'" in _error(folder, capsys, "x", fmt="ini")
    assert cli_study.main(["run", str(folder / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (folder / "adir.toml").mkdir()
    assert cli_study.main(["run", str(folder / "adir.toml")]) == 2
    assert "config file" in (err := capsys.readouterr().err) and "is a folder, not a file" in err
    (folder / "binary.toml").write_bytes(b"\xff\xfe x = 1")
    assert cli_study.main(["run", str(folder / "binary.toml")]) == 2
    assert "binary.toml: not UTF-8 text" in capsys.readouterr().err
    (folder / "broken.py").write_text("def objective(p)\n    return 1.0\n")
    assert "running" in _error(folder, capsys, {**good, "objective": "broken.py:objective"})
    (folder / "raising.py").write_text("raise RuntimeError('no GPU here')\n")
    assert "RuntimeError: no GPU here" in _error(folder, capsys, {**good, "objective": "raising.py:objective"})


def test_yaml_numbers_in_exponent_notation_are_numbers(folder):
    # YAML 1.1 (PyYAML) reads 1e-3 as text; configs take YAML 1.2's floats.
    pytest.importorskip("yaml")
    path = folder / "sci.yaml"
    path.write_text("objective: obj.py:objective\nnum_trials: 2\nspace:\n"
                    "  x: {type: float, low: -1e0, high: 1E+0}\n"
                    "  lr: {type: float, low: 1e-3, high: .1, log: true}\n"
                    "  n: {type: int, low: 1, high: 3}\n"
                    "  name: {type: categorical, choices: [1e5x, abc]}\n")
    cfg = load_config(path)
    assert (cfg.space.dims["lr"].low, cfg.space.dims["x"].low) == (0.001, -1.0)
    assert cfg.space.dims["n"].high == 3 and isinstance(cfg.space.dims["n"].high, int)
    assert cfg.space.dims["name"].choices == ("1e5x", "abc")


def test_show_and_plot_refuse_bad_files(tmp_path, capsys):
    junk = tmp_path / "junk.db"
    junk.write_text("hello")
    assert cli_study.main(["show", str(junk)]) == 2
    assert "not an SQLite database" in capsys.readouterr().err
    assert cli_study.main(["plot", str(tmp_path / "none.db")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_storage_url_is_relative_to_the_config_and_show_takes_it(folder, monkeypatch, capsys):
    cfg = folder / "url.toml"
    cfg.write_text(TOML.replace('output = "out"', 'output = "out"\nstorage = "sqlite:///url.db"'))
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli_study.main(["run", str(cfg), "--no-progress", "--no-plots"]) == 0
    assert (folder / "url.db").is_file() and not (elsewhere / "url.db").exists()
    monkeypatch.chdir(folder)
    capsys.readouterr()
    assert cli_study.main(["show", "sqlite:///url.db", "--top", "2"]) == 0
    assert "trials {'complete': 12}" in capsys.readouterr().out
    # --objective only picks the objective of an importance plot of several objectives
    assert cli_study.main(["plot", "url.db", "--kind", "importance", "--objective", "7"]) == 2
    assert "--objective picks the objective" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_study.main(["show", "url.db", "--top", "-1"])
    assert "--top: must be a positive integer" in capsys.readouterr().err


def test_a_file_objective_imports_its_neighbours(tmp_path, monkeypatch):
    # as `python obj.py` would: a module beside the objective's file imports
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "jaxhpo_test_helper_mod.py").write_text("OFFSET = 0.25\n")
    (proj / "obj.py").write_text("import jaxhpo_test_helper_mod as h\n\n"
                                 "def objective(p):\n    return (p['x'] - h.OFFSET) ** 2\n")
    (proj / "c.toml").write_text(TOML.replace('output = "out"', 'output = "out"\nnum_trials = 4')
                                 .replace("num_trials = 12\n", ""))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", list(__import__("sys").path))
    assert cli_study.main(["run", str(proj / "c.toml"), "--no-progress", "--no-plots"]) == 0


def test_show_names_the_way_to_read_a_study_whose_space_json_cannot_hold(tmp_path, capsys):
    from jaxhpo import Categorical, Float, RandomSearch, Space
    space = Space(x=Float(0.0, 1.0), shape=Categorical([(32, 32), (64, 64)]))
    study = Study(space, RandomSearch(space, 2), storage=str(tmp_path / "t.db"), name="s")
    study.optimize(lambda p: p["x"], num_trials=2, progress=False)
    study.close()
    assert cli_study.main(["show", str(tmp_path / "t.db")]) == 2
    err = capsys.readouterr().err
    assert "the command line cannot open it" in err and "Study.load(" in err and "pass space=" not in err


def test_reading_a_missing_file_creates_nothing(tmp_path):
    from jaxhpo.study import StorageError

    for call in (lambda: Study.load(str(tmp_path / "typo.db")), lambda: Study.names(f"sqlite:///{tmp_path}/typo.db")):
        with pytest.raises(StorageError, match="does not exist"):
            call()
    assert not (tmp_path / "typo.db").exists()


def test_add_subcommands_hooks_into_a_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="jaxhpo")
    sub = parser.add_subparsers(dest="command")
    cli_study.add_subcommands(sub)
    args = parser.parse_args(["show", "x.db", "--top", "4"])
    assert args.func is cli_study.cmd_show and args.top == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])


def test_parse_config_defaults():
    cfg = parse_config({"objective": "m:f", "space": SPACE, "num_trials": 3}, base_dir="/tmp/x")
    assert cfg.strategy.popsize == 8 and type(cfg.strategy).__name__ == "RandomSearch"
    assert cfg.seed == 0 and not cfg.maximize and cfg.n_jobs == 1
    assert cfg.output == Path("/tmp/x/study_results")


def test_user_attributes_reach_trials_csv_and_show(tmp_path, capsys):
    import csv

    import jaxhpo
    from jaxhpo import Float, RandomSearch, Space

    space = Space(x=Float(0.0, 1.0))

    def objective(p):
        jaxhpo.study.set_user_attr("accuracy", 1.0 - p["x"])
        jaxhpo.study.set_user_attr("curve", [p["x"], 2 * p["x"]])
        jaxhpo.study.set_user_attr("x", "1" if p["x"] < 0.5 else 1)  # a text and a number that read alike
        jaxhpo.study.set_user_attr("never", None)
        return p["x"]

    with Study(space, RandomSearch(space, 4), storage=str(tmp_path / "a.db"), name="s", seed=1) as study:
        study.optimize(objective, num_trials=4, progress=False)
        cli_study._write_results(study, tmp_path / "out")
        trials = {t.number: t for t in study.trials}
    assert {type(t.user_attrs["x"]) for t in trials.values()} == {str, int}
    with open(tmp_path / "out" / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        t = trials[int(r["number"])]
        # every attribute as JSON: the text "1" and the number 1 apart, None apart from unset
        assert {k[len("user_attrs_"):]: json.loads(v) for k, v in r.items() if k.startswith("user_attrs_")} \
            == t.user_attrs
    assert cli_study.main(["show", str(tmp_path / "a.db"), "--all"]) == 0
    table = capsys.readouterr().out.splitlines()
    header = next(line for line in table if line.startswith("rank"))
    # attributes apart from parameters (one named x), scalars only, never-set ones left out
    assert header.split()[-3:] == ["x", "attr:accuracy", "attr:x"] and "curve" not in header
    rows = table[table.index(header) + 2:]
    for row, t in zip(rows, sorted(trials.values(), key=lambda t: t.value)):
        assert row.split()[-2:] == [f"{t.user_attrs['accuracy']:.6g}", "'1'" if t.params["x"] < 0.5 else "1"]


def test_show_and_plot_open_a_study_of_a_strategy_defined_in_a_script(tmp_path, capsys):
    # A strategy class from the user's script (module __main__) cannot be
    # rebuilt by the jaxhpo program; show and plot read its trials anyway.
    from jaxhpo import Float, RandomSearch, Space

    class AroundBest(RandomSearch):
        pass

    AroundBest.__module__ = "__main__"
    space = Space(x=Float(-1.0, 1.0))
    study = Study(space, AroundBest(space, 2), storage=str(tmp_path / "t.db"), name="mine")
    study.optimize(lambda p: p["x"] ** 2, num_trials=4, progress=False)
    best = study.best_trial.value
    study.close()
    assert cli_study.main(["show", str(tmp_path / "t.db")]) == 0
    out = capsys.readouterr().out
    assert "strategy AroundBest(" in out and "{'complete': 4}" in out and f"{best:.6g}" in out
    assert cli_study.main(["plot", str(tmp_path / "t.db"), "--kind", "history", "--output", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "history.png").is_file()


def test_a_cache_folder_that_is_a_file_is_a_warning_not_a_traceback(tmp_path, monkeypatch, capsys):
    from jaxhpo import cli

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("JAXHPO_CACHE_DIR", str(tmp_path / "afile"))
    assert cli.main(["show", str(tmp_path / "missing.db")], compile_cache=True) == 2
    err = capsys.readouterr().err
    assert "jaxhpo: warning: compiled programs are not kept on disk this run ($JAXHPO_CACHE_DIR=" in err
    assert "does not exist" in err
