"""SQLite storage: resume, crash (SIGKILL) safety, sharing between processes, bad files."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxhpo
from jaxhpo.study import (SCHEMA_VERSION, SQLiteStorage, StateChecksumError, StateFormatError, StorageError, Study,
                          TrialState)

sys.path.insert(0, str(Path(__file__).parent))
from test_study import SPACE, Center, f  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def make_study(storage, name="s"):
    """The study every process of these tests opens: value-dependent proposals."""
    return Study(SPACE, Center(SPACE, 4), seed=7, storage=storage, name=name)


def _child(code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}", JAX_PLATFORMS="cpu")
    prelude = "import sys, time, os, json\nfrom test_study_storage import make_study, f\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(db: Path) -> dict:
    """number -> (params, value, state) of finished trials, read with plain sqlite3."""
    if not db.exists():
        return {}
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute("SELECT number, params, value, state FROM trials "
                           "WHERE state IN ('complete', 'failed')").fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        rows = []
    finally:
        con.close()
    return {n: (json.loads(p), v, s) for n, p, v, s in rows}


def test_reopen_resumes_and_load_rebuilds(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    s = make_study(url)
    s.optimize(f, num_trials=6, progress=False)  # stops inside generation 1
    before = [(t.number, t.params, t.value, t.state) for t in s.trials]
    s.close()
    s2 = make_study(url)
    assert [(t.number, t.params, t.value, t.state) for t in s2.trials] == before
    s2.optimize(f, num_trials=6, progress=False)
    loaded = Study.load(url)
    assert type(loaded.strategy) is Center and repr(loaded.strategy) == repr(Center(SPACE, 4)) and loaded.space == SPACE and loaded.seed == 7
    ref = make_study(None)
    ref.optimize(f, num_trials=12, progress=False)
    assert [t.params for t in loaded.trials] == [t.params for t in ref.trials]
    assert loaded.best_value == ref.best_value and loaded.generation == ref.generation == 3
    assert Study.names(url) == ["s"]
    with pytest.raises(ValueError, match="seed 7, not 8"):
        Study(SPACE, Center(SPACE, 4), seed=8, storage=url, name="s")
    with pytest.raises(ValueError, match="strategy"):
        Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=7, storage=url, name="s")
    with pytest.raises(ValueError, match="no study named 'zz'"):
        Study.load(url, "zz")
    other = Study(SPACE, jaxhpo.RandomSearch(SPACE, 4), seed=7, storage=url, name="other")
    other.close()
    with pytest.raises(ValueError, match="name is required"):
        Study.load(url)
    loaded.close()
    s2.close()


def test_sigkill_mid_run_loses_and_reruns_nothing(tmp_path):
    db = tmp_path / "crash.db"
    child = _child("""
        def slow(p):
            time.sleep(0.03)
            return f(p)
        make_study(sys.argv[1]).optimize(slow, max_trials=40, progress=False)
    """, str(db))
    deadline = time.time() + 120
    while len(_finished(db)) < 14:
        assert child.poll() is None, child.stderr.read()
        assert time.time() < deadline, "child made no progress"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    done_before = _finished(db)
    assert 14 <= len(done_before) < 40

    evaluated = []

    def counting(p):
        evaluated.append(p)
        return f(p)

    study = make_study(str(db))
    assert study.get_trials((TrialState.RUNNING,)) == [] or True  # requeued lazily on the next claim
    study.optimize(counting, max_trials=40, progress=False)
    trials = study.trials
    assert [t.number for t in trials] == list(range(40))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for n, (params, value, _) in done_before.items():  # nothing finished was lost or changed
        assert trials[n].params == params and trials[n].value == value
    assert len(evaluated) == 40 - len(done_before)  # nothing finished was run again
    assert not any(p == params for p in evaluated for params, _, _ in done_before.values())

    ref = make_study(None)
    ref.optimize(f, max_trials=40, progress=False)
    assert [t.params for t in trials] == [t.params for t in ref.trials]
    assert [t.value for t in trials] == [t.value for t in ref.trials]
    study.close()


def test_two_processes_share_a_study(tmp_path):
    db = tmp_path / "shared.db"
    code = """
        db, me, log = sys.argv[1], sys.argv[2], sys.argv[3]
        study = make_study(db)
        open(os.path.join(os.path.dirname(db), "ready_" + me), "w").close()
        while len([n for n in os.listdir(os.path.dirname(db)) if n.startswith("ready_")]) < 2:
            time.sleep(0.01)
        out = open(log, "w")
        def logged(p):
            out.write(json.dumps(p) + "\\n"); out.flush()
            time.sleep(0.01)
            return f(p)
        study.optimize(logged, max_trials=32, progress=False)
    """
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    children = [_child(code, str(db), name, str(log)) for name, log in zip("ab", logs)]
    for c in children:
        _, err = c.communicate(timeout=180)
        assert c.returncode == 0, err
    ran = [json.loads(line) for log in logs for line in log.read_text().splitlines()]
    per_process = [len(log.read_text().splitlines()) for log in logs]
    assert min(per_process) > 0, per_process  # both took part
    study = make_study(str(db))
    trials = study.trials
    assert [t.number for t in trials] == list(range(32))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len(ran) == 32  # nothing ran twice ...
    key = lambda p: json.dumps(p, sort_keys=True)  # noqa: E731
    assert sorted(map(key, ran)) == sorted(key(t.params) for t in trials)  # ... or was lost
    assert len({t.worker for t in trials}) == 2
    ref = make_study(None)
    ref.optimize(f, max_trials=32, progress=False)
    assert [t.params for t in ref.trials] == [t.params for t in trials]
    study.close()


def test_a_file_locked_while_workers_open_it_is_waited_for(tmp_path, monkeypatch):
    # Workers opening one new file together: SQLite may refuse another's
    # journal-mode switch with "locked" at once, without its busy timeout.
    real, calls = SQLiteStorage._set_up, []

    def flaky(self, *args):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(self, *args)

    monkeypatch.setattr(SQLiteStorage, "_set_up", flaky)
    SQLiteStorage(str(tmp_path / "a.db")).close()
    assert len(calls) == 3

    def locked(self, *args):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SQLiteStorage, "_set_up", locked)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"stayed locked by another connection for 0.2 s"):
        SQLiteStorage(str(tmp_path / "b.db"), timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 5.0

    def broken(self, *args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SQLiteStorage, "_set_up", broken)
    with pytest.raises(StorageError, match="is not a usable jaxhpo database: disk I/O error"):
        SQLiteStorage(str(tmp_path / "c.db"))


def test_not_a_database(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("these are my notes, not a database\n")
    with pytest.raises(StorageError, match="not an SQLite database"):
        make_study(str(p))
    assert p.read_text().startswith("these are my notes")  # untouched


def test_foreign_sqlite_database(tmp_path):
    p = tmp_path / "app.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    before = p.read_bytes()
    with pytest.raises(StorageError, match=r"something else \(tables \['users'\]\)"):
        make_study(f"sqlite:///{p}")
    with pytest.raises(StorageError, match=r"something else"):
        Study.load(str(p))
    # Refused unchanged: not even its journal mode.
    assert p.read_bytes() == before and not (tmp_path / "app.db-wal").exists()
    # An empty file is read as no study, and stays empty.
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(StorageError, match="holds no jaxhpo study"):
        Study.load(str(empty))
    assert empty.read_bytes() == b""


def test_damaged_database(tmp_path):
    p = tmp_path / "d.db"
    make_study(str(p)).close()
    data = bytearray(p.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    p.write_bytes(bytes(data))
    for wal in (tmp_path / "d.db-wal", tmp_path / "d.db-shm"):
        if wal.exists():
            wal.unlink()
    with pytest.raises(StorageError, match="damaged|not a usable"):
        make_study(str(p))


def test_newer_schema_and_missing_tables(tmp_path):
    p = tmp_path / "v.db"
    SQLiteStorage(str(p)).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE jaxhpo_meta SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match=f"schema version 99; this jaxhpo reads version {SCHEMA_VERSION}"):
        make_study(str(p))
    q = tmp_path / "t.db"
    SQLiteStorage(str(q)).close()
    con = sqlite3.connect(q)
    con.execute("DROP TABLE trials")
    con.commit()
    con.close()
    with pytest.raises(StorageError, match=r"lacks table\(s\) \['trials'\]"):
        make_study(str(q))


def test_bad_storage_arguments(tmp_path):
    with pytest.raises(StorageError, match="only 'sqlite:///path.db'"):
        make_study("postgresql://host/db")
    with pytest.raises(StorageError, match="does not exist"):
        make_study(str(tmp_path / "missing" / "x.db"))
    with pytest.raises(StorageError, match="directory"):
        make_study(str(tmp_path))
    with pytest.raises(TypeError, match="storage"):
        make_study(12)
    with pytest.raises(ValueError, match=r"SQLiteStorage timeout must lie in \[0"):
        SQLiteStorage(str(tmp_path / "t.db"), timeout=-1)
    with pytest.raises(TypeError, match="SQLiteStorage timeout must be a real number"):
        SQLiteStorage(str(tmp_path / "t.db"), timeout="x")
    assert isinstance(StorageError("x"), ValueError)


def test_a_killed_worker_not_yet_reaped_counts_as_dead():
    import os
    import subprocess
    import sys
    import time
    from jaxhpo.study.storage import _pid_alive
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs /proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        for _ in range(200):  # until it has exited: a zombie while this parent does not wait
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.05)
        assert not _pid_alive(child.pid)
        assert _pid_alive(os.getpid())
    finally:
        child.wait()


def test_a_study_file_this_process_may_not_write_is_read_not_changed(tmp_path, monkeypatch, capsys):
    """Shared results on a read-only mount or another user's file: Study.load and
    ``jaxhpo show`` read it; anything that would write names the rule."""
    import hashlib

    from jaxhpo import cli_study
    from jaxhpo.study import storage as storage_module

    path = tmp_path / "done.db"
    with make_study(str(path)) as s:
        s.optimize(lambda p: p["x"], num_trials=4, progress=False)
        want = [(t.number, t.value) for t in s.trials]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    real_access = os.access
    monkeypatch.setattr(storage_module.os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    study = Study.load(str(path))
    assert study.storage.read_only and [(t.number, t.value) for t in study.trials] == want
    assert study.best_value == min(v for _, v in want)
    with pytest.raises(StorageError, match="read-only for this process"):
        study.optimize(lambda p: p["x"], num_trials=1, progress=False)
    study.close()
    assert cli_study.main(["show", str(path)]) == 0 and "'complete': 4" in capsys.readouterr().out
    with pytest.raises(StorageError, match="no study 'other' and is read-only"):
        Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), storage=str(path), name="other")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_a_space_stored_with_its_conditions_in_another_order_reopens(tmp_path):
    # Files written before conditions were kept in their parents' order hold
    # when= as it was given (a set in any order): the same space in other words.
    import json
    import sqlite3

    import jaxhpo
    space = jaxhpo.Space(opt=jaxhpo.Categorical(["sgd", "nesterov", "adam"]),
                         mom=jaxhpo.Float(0.0, 0.99, when={"opt": ["sgd", "nesterov"]}))
    path = str(tmp_path / "old.db")
    with Study(space, jaxhpo.RandomSearch(space, 2), seed=0, storage=path, name="s") as s:
        s.optimize(lambda p: p.get("mom", 0.0), num_trials=2, progress=False)
    con = sqlite3.connect(path)
    spec = json.loads(con.execute("SELECT space FROM studies").fetchone()[0])
    spec["mom"]["when"]["opt"] = ["nesterov", "sgd"]
    con.execute("UPDATE studies SET space=?", (json.dumps(spec),))
    con.commit()
    con.close()
    with Study(space, jaxhpo.RandomSearch(space, 2), seed=0, storage=path, name="s") as s:
        assert len(s.trials) == 2
    other = jaxhpo.Space(opt=jaxhpo.Categorical(["sgd", "nesterov", "adam"]),
                         mom=jaxhpo.Float(0.0, 0.99, when={"opt": ["sgd"]}))
    with pytest.raises(ValueError, match="was created with space"):
        Study(other, jaxhpo.RandomSearch(other, 2), seed=0, storage=path, name="s")


def _damage_state(path, offset, flip=0x10):
    con = sqlite3.connect(path)
    state = bytearray(con.execute("SELECT state FROM studies").fetchone()[0])
    state[offset] ^= flip
    con.execute("UPDATE studies SET state=?", (bytes(state),))
    con.commit()
    con.close()


def test_a_damaged_stored_state_is_rebuilt_from_the_told_generations(tmp_path):
    # The stored strategy state carries a digest: a flipped bit is not read as
    # another state. The initial state and every told generation's points and
    # values are stored too, so the study replays them and goes on exactly as
    # an undamaged one, whatever params the reopening process gives.
    cmaes = jaxhpo.CMAES(SPACE, 4)

    def start(storage):
        s = Study(SPACE, cmaes, seed=7, storage=storage, name="s", params={"sigma0": 0.05})
        s.enqueue_trial({"x": 0.3, "lr": 0.01, "n": 1, "kind": "b"})  # an injected row is replayed too
        s.optimize(f, num_trials=12, progress=False)
        return s

    ref = start(None)
    ref_state = ref.state
    ref.optimize(f, num_trials=8, progress=False)
    for i, offset in enumerate((-24, 3)):  # a leaf's bytes (before the 16-byte digest); the magic
        path = tmp_path / f"a{i}.db"
        start(str(path)).close()
        _damage_state(path, offset)
        with Study.load(str(path)) as s:  # the default params: sigma0 1/6
            with pytest.warns(RuntimeWarning, match="fails its checksum.*rebuilt it from the 3 told generations"):
                state = s.state
            for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(ref_state)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the rebuilt state was written back: no second rebuild
            with Study.load(str(path)) as s:
                for a, b in zip(jax.tree_util.tree_leaves(s.state), jax.tree_util.tree_leaves(ref_state)):
                    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
                s.optimize(f, num_trials=8, progress=False)
                assert [t.params for t in s.trials] == [t.params for t in ref.trials]
    ref.close()
    # A file made before initial states were stored cannot be rebuilt: it says so.
    path = tmp_path / "old.db"
    start(str(path)).close()
    _damage_state(path, -24)
    con = sqlite3.connect(path)
    con.execute("UPDATE studies SET initial_state=NULL")
    con.commit()
    con.close()
    with Study.load(str(path)) as s:
        with pytest.raises(StateChecksumError, match="made before jaxhpo stored initial states"):
            s.state
    # Intact bytes of another layout (an older jaxhpo's CMA-ES state had other
    # fields): named, with what still works and what to do.
    from jaxhpo.study.serialize import state_to_bytes
    con = sqlite3.connect(path)
    con.execute("UPDATE studies SET state=?", (state_to_bytes(jaxhpo.RandomSearch(SPACE, 4).init(0)),))
    con.commit()
    con.close()
    with Study.load(str(path)) as s:
        assert len(s.trials) == 12
        with pytest.raises(StateFormatError, match=r"study 's': its stored CMAES state does not fit .*older "
                                                   r"jaxhpo.*add_trial"):
            s.optimize(f, num_trials=1, progress=False)


def test_a_study_and_its_storage_refuse_pickling_and_copying_by_name(tmp_path):
    import copy
    import pickle

    study = Study(SPACE, jaxhpo.RandomSearch(SPACE, 2), storage=str(tmp_path / "p.db"))
    for obj, word in ((study, "a Study cannot be pickled"), (study.storage, "an SQLiteStorage cannot be pickled")):
        for copier in (pickle.dumps, copy.deepcopy, copy.copy):
            with pytest.raises(TypeError, match=word):
                copier(obj)
    study.close()
