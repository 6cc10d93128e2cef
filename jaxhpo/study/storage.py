"""Durable study storage in one SQLite file (Python's ``sqlite3``, no server).

Layout (schema version ``SCHEMA_VERSION``):

* ``jaxhpo_meta``: ``schema_version`` and the writer, so foreign and future
  files are recognised before anything is written to them.
* ``studies``: one row per study name: space and strategy specs, seed,
  direction (``maximize``; for several objectives also ``directions``, a
  JSON list of booleans, one per objective), the number of tells done (``generation``), the strategy state
  after the last tell (``state``), the initial state (``initial_state``,
  from which the told generations replayed rebuild a damaged ``state``) and
  whether the current generation has been proposed (``proposed``). The
  state after an ask is not stored: asking again with the generation's key
  rebuilds it.
* ``generations``: the cube points of every proposed generation.
* ``trials``: one row per configuration: number, generation, row, params,
  state, value, error, worker, timestamps. A running trial's worker signals
  that it is alive by ``heartbeat_at`` (see ``beat``), so that other
  workers tell a trial still running from one whose worker died
  (``requeue_dead``'s ``stale_after``). Studies of several objectives
  leave ``value`` empty and keep the objective values, then the constraint
  values, as a JSON list in ``vals`` (user's signs). A trial that took a
  queued configuration's place keeps it in ``enqueued`` (JSON), what
  ``enqueue_trial(skip_if_exists=True)`` compares with. ``user_attrs``: what
  the objective recorded beside its value (``Study.set_user_attr``), a
  JSON dict.
* ``reports``: the intermediate values a trial reported while running
  (``step``, ``value``; a non-finite value is stored as NULL), what pruners
  decide from. A trial sent back to waiting loses its reports (and its
  ``user_attrs``): it runs again from the start.
* ``queue``: configurations a user asked to be tried (``Study.enqueue_trial``;
  a JSON dict of any subset of the parameters) or evaluated elsewhere
  (``Study.add_trial``: every parameter, and the ``outcome`` with any user
  attributes as JSON), oldest first; the next generation proposed takes
  them in place of proposals and deletes them, in the transaction that
  stores it.

Older files are upgraded in place on opening: version 1 (single objective
only) gets the two nullable columns of version 2 (its rows keep their
meaning: ``directions`` and ``vals`` empty, one objective), version 2 gets
the empty ``reports`` table of version 3, version 3 the empty ``queue``
table of version 4, version 4 the nullable ``trials.enqueued`` of version 5
(empty in its rows: which of them came from the queue was not recorded),
version 5 the nullable ``studies.initial_state`` of version 6 (empty in its
rows: a damaged state of such a study cannot be rebuilt), version 6 the
nullable ``trials.heartbeat_at`` of version 7 (empty: a trial running then
counts from its start until its worker's next beat), version 7 the nullable
``trials.user_attrs`` of version 8 (empty: no attributes).

Every change runs inside a ``BEGIN IMMEDIATE`` transaction: SQLite takes the
write lock at the start, so two processes never both claim one trial and a
process killed mid-transaction leaves nothing half-written. The file uses
write-ahead logging (WAL), so readers do not block the writer; with
``synchronous=NORMAL`` a committed trial survives the death of the process
(not necessarily a power cut: use ``synchronous="FULL"`` for that).

Server databases: this class is the only place that speaks SQL, and it uses
only portable statements (``SELECT ... FOR UPDATE`` would replace ``BEGIN
IMMEDIATE``). A team that outgrows one machine can subclass it over a
PostgreSQL connection (``psycopg``) with the same tables, or share one SQLite
file on a single machine that all workers reach; SQLite over network file
systems is not safe because their locks are unreliable.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
from typing import Any, Iterator

from ..strategies._checks import check_real

__all__ = ["SQLiteStorage", "StorageError", "open_storage", "SCHEMA_VERSION"]

SCHEMA_VERSION = 8
# Versions this code opens; older ones are upgraded in place (``_MIGRATIONS``).
_READABLE_VERSIONS = (1, 2, 3, 4, 5, 6, 7, 8)
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables every readable version has; ``reports`` arrives with version 3, ``queue`` with 4.
_TABLES = ("jaxhpo_meta", "studies", "generations", "trials")

_REPORTS_SCHEMA = (
    "CREATE TABLE reports (trial_id INTEGER NOT NULL REFERENCES trials(id), study_id INTEGER NOT NULL, "
    "step INTEGER NOT NULL, value REAL, PRIMARY KEY (trial_id, step))",
    "CREATE INDEX reports_by_step ON reports (study_id, step)",
)

_QUEUE_SCHEMA = (
    "CREATE TABLE queue (id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(id), "
    "params TEXT NOT NULL, outcome TEXT, created_at REAL NOT NULL)",
)

_SCHEMA = """
CREATE TABLE jaxhpo_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    space TEXT NOT NULL,
    strategy TEXT NOT NULL,
    seed INTEGER NOT NULL,
    maximize INTEGER NOT NULL,
    popsize INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    next_number INTEGER NOT NULL,
    state BLOB NOT NULL,
    proposed INTEGER NOT NULL DEFAULT 0,
    exhausted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    directions TEXT,
    initial_state BLOB
);
CREATE TABLE generations (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    generation INTEGER NOT NULL,
    x BLOB NOT NULL,
    rows INTEGER NOT NULL,
    dim INTEGER NOT NULL,
    created_at REAL NOT NULL,
    told_at REAL,
    PRIMARY KEY (study_id, generation)
);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    number INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    value REAL,
    error TEXT,
    owner TEXT,
    host TEXT,
    pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    vals TEXT,
    enqueued TEXT,
    heartbeat_at REAL,
    user_attrs TEXT,
    UNIQUE (study_id, number),
    UNIQUE (study_id, generation, idx)
);
CREATE INDEX trials_by_state ON trials (study_id, state, number);
CREATE INDEX trials_by_generation ON trials (study_id, generation, state);
""" + ";\n".join(_REPORTS_SCHEMA + _QUEUE_SCHEMA) + ";\n"

_TRIAL_COLUMNS = ("number, generation, idx, params, state, value, error, created_at, "
                  "started_at, finished_at, host, pid, id, owner, vals, user_attrs")

# Version -> statements that bring a file of that version to the next one.
_MIGRATIONS = {
    1: ("ALTER TABLE studies ADD COLUMN directions TEXT",
        "ALTER TABLE trials ADD COLUMN vals TEXT"),
    2: _REPORTS_SCHEMA,
    3: _QUEUE_SCHEMA,
    4: ("ALTER TABLE trials ADD COLUMN enqueued TEXT",),
    5: ("ALTER TABLE studies ADD COLUMN initial_state BLOB",),
    6: ("ALTER TABLE trials ADD COLUMN heartbeat_at REAL",),
    7: ("ALTER TABLE trials ADD COLUMN user_attrs TEXT",),
}


class StorageError(ValueError):
    """The storage cannot be used: not a database, a foreign or damaged one, a
    newer schema, an unsupported URL, or a lock held too long."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists but is not ours, or cannot tell
        return True
    # A killed process that its parent has not reaped yet (a zombie) still
    # answers the signal; on Linux its state says it is gone.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


def _parse_url(storage: str) -> str:
    if "://" not in storage:
        return storage
    scheme, _, rest = storage.partition("://")
    if scheme != "sqlite":
        raise StorageError(
            f"storage {storage!r}: only 'sqlite:///path.db' (or a plain file path) is supported; "
            "several machines need a server database, see jaxhpo.study.storage's docstring"
        )
    if not rest.startswith("/"):
        raise StorageError(f"storage {storage!r} must look like 'sqlite:///relative.db' or 'sqlite:////abs.db'")
    path = rest[1:]
    if not path:
        raise StorageError(f"storage {storage!r} names no file")
    return path


def storage_path(storage: str | os.PathLike) -> str:
    """The file a ``"sqlite:///file.db"`` URL or a path names."""
    return os.fspath(storage) if isinstance(storage, os.PathLike) else _parse_url(storage)


def open_storage(storage: Any, *, timeout: float = 60.0, must_exist: bool = False) -> "SQLiteStorage":
    """``None`` (in memory), an ``SQLiteStorage``, ``"sqlite:///file.db"`` or a path -> storage.

    ``must_exist``: a file that does not exist is a ``StorageError`` (for
    reading a study), not a new empty database."""
    if storage is None:
        return SQLiteStorage(":memory:", timeout=timeout)
    if isinstance(storage, SQLiteStorage):
        return storage
    if isinstance(storage, os.PathLike) or isinstance(storage, str) and storage:
        path = storage_path(storage)
        if must_exist and not os.path.exists(path):
            raise StorageError(f"storage {storage!r}: file {path!r} does not exist")
        return SQLiteStorage(path, timeout=timeout, create=not must_exist)
    raise TypeError(
        f"storage must be None, 'sqlite:///path.db', a file path or an SQLiteStorage, got {storage!r}"
    )


def _check_file(path: str) -> None:
    """Refuse anything that is not empty and not an SQLite file, before SQLite touches it."""
    if not os.path.exists(path):
        return
    if os.path.isdir(path):
        raise StorageError(f"storage {path!r} is a directory, not a database file")
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise StorageError(
            f"storage {path!r} is not an SQLite database (it starts with {head[:8]!r}); "
            "jaxhpo keeps studies in SQLite files and will not overwrite this one"
        )


class SQLiteStorage:
    """Studies in one SQLite file (or in memory, ``path=":memory:"``).

    Thread-safe: one connection guarded by a lock, so ``n_jobs`` worker
    threads share it. Processes each open their own.

    Args:
      path: file path, or ``":memory:"``.
      timeout: seconds to wait for another process's write lock.
      synchronous: SQLite's ``synchronous`` pragma, ``"NORMAL"`` (survives a
        killed process) or ``"FULL"`` (also survives a power cut).
      create: make the file a jaxhpo database where it is new or empty;
        ``False``: refuse it instead (reading a study creates nothing).
    """

    def __init__(self, path: str, *, timeout: float = 60.0, synchronous: str = "NORMAL", create: bool = True):
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = path
        self.timeout = check_real("SQLiteStorage timeout", timeout, 0.0)
        self.host = socket.gethostname()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self.read_only = False
        if path != ":memory:":
            _check_file(path)
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise StorageError(f"storage {path!r}: directory {parent!r} does not exist")
            # A file this process may read but not write (or whose folder it may
            # not write, where WAL keeps its side files): readable, never changed.
            self.read_only = os.path.exists(path) and not (
                os.access(path, os.W_OK) and os.access(parent, os.W_OK))
        try:
            conn = self._connect_read_only() if self.read_only else sqlite3.connect(
                path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StorageError(f"storage {path!r} cannot be opened: {e}") from None
        self._conn = conn
        deadline, pause = time.monotonic() + self.timeout, 0.005
        while True:
            try:
                self._set_up(create, synchronous)
                return
            except sqlite3.OperationalError as e:
                # Workers opening one new file together: SQLite answers a
                # journal-mode switch that meets another connection with "locked"
                # at once, whatever the busy timeout. Wait as the timeout says.
                if ("locked" in str(e) or "busy" in str(e)) and time.monotonic() < deadline:
                    time.sleep(pause)
                    pause = min(2 * pause, 0.25)
                    continue
                self.close()
                if "locked" in str(e) or "busy" in str(e):
                    raise StorageError(f"storage {path!r} stayed locked by another connection for "
                                       f"{self.timeout} s (the timeout): {e}") from None
                raise StorageError(f"storage {path!r} is not a usable jaxhpo database: {e}") from None
            except sqlite3.DatabaseError as e:
                self.close()
                raise StorageError(f"storage {path!r} is not a usable jaxhpo database: {e}") from None
            except StorageError:
                self.close()
                raise

    def _set_up(self, create: bool, synchronous: str) -> None:
        conn, path = self._conn, self.path
        # Looked at before anything is written: another program's database, or
        # (create=False) an empty one, is refused unchanged, journal mode included.
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "jaxhpo_meta" not in tables:
            raise StorageError(f"storage {path!r} is an SQLite database of something else (tables "
                               f"{sorted(tables)}); jaxhpo will not write into it")
        if not tables and not create:  # a new file is an empty database
            raise StorageError(f"storage {path!r} holds no jaxhpo study (an empty database)")
        if path != ":memory:" and not self.read_only:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        self._init_schema()

    def _connect_read_only(self) -> sqlite3.Connection:
        """A read-only connection; ``immutable`` where SQLite cannot share the file's
        WAL index (no ``-shm`` beside it, and none may be made in the folder)."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path))
        for mode in ("?mode=ro", "?immutable=1"):
            conn = sqlite3.connect(uri + mode, uri=True, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return conn
            except sqlite3.OperationalError:
                conn.close()
                if mode != "?mode=ro":
                    raise
        raise AssertionError("unreachable")

    @property
    def url(self) -> str:
        return "sqlite:///" + self.path

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    def __reduce__(self) -> Any:
        raise TypeError("an SQLiteStorage cannot be pickled or copied: it holds an open connection and locks. "
                        f"In another process, open the file again: SQLiteStorage({self.path!r})")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ plumbing
    @contextlib.contextmanager
    def transaction(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: ``BEGIN IMMEDIATE`` (write) or a read snapshot.

        Commits on success, rolls back on any exception; SQLite errors come
        out as ``StorageError`` naming the file.
        """
        with self._lock:
            c = self._conn
            if c is None:
                raise StorageError(f"storage {self.path!r} is closed")
            if write and self.read_only:
                raise StorageError(
                    f"storage {self.path!r} is read-only for this process (it may not write the file or "
                    "its folder): its studies can be read (Study.load, jaxhpo show / plot), not changed")
            try:
                c.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.DatabaseError as e:
                raise StorageError(self._explain(e)) from None
            except BaseException:
                # An interrupt raised as the BEGIN returned: its transaction (and a
                # write lock on the file) must not outlive this call.
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
            try:
                yield c
            except BaseException as exc:
                try:
                    c.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StorageError(self._explain(exc)) from None
                raise
            else:
                try:
                    c.execute("COMMIT")
                except sqlite3.DatabaseError as e:
                    try:
                        c.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                    raise StorageError(self._explain(e)) from None

    def _explain(self, e: Exception) -> str:
        msg = str(e)
        if "locked" in msg or "busy" in msg:
            return f"storage {self.path!r} stayed locked by another process for {self.timeout:g} s ({msg})"
        return f"storage {self.path!r} is damaged or not a jaxhpo database ({msg})"

    def _init_schema(self) -> None:
        with self.transaction(write=not self.read_only) as c:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "jaxhpo_meta" not in tables:
                if self.read_only and not tables:
                    raise StorageError(f"storage {self.path!r} holds no study and is read-only for this process")
                if tables:
                    raise StorageError(
                        f"storage {self.path!r} is an SQLite database of something else (tables "
                        f"{sorted(tables)}); jaxhpo will not write into it"
                    )
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT INTO jaxhpo_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                c.execute("INSERT INTO jaxhpo_meta VALUES ('created_by', 'jaxhpo')")
                return
            row = c.execute("SELECT value FROM jaxhpo_meta WHERE key='schema_version'").fetchone()
            if row is None:
                raise StorageError(f"storage {self.path!r} has no schema version; it is damaged")
            if row[0] not in [str(v) for v in _READABLE_VERSIONS]:
                raise StorageError(
                    f"storage {self.path!r} has schema version {row[0]}; this jaxhpo reads version "
                    f"{SCHEMA_VERSION} (and upgrades {', '.join(str(v) for v in _READABLE_VERSIONS[:-1])})"
                )
            version = int(row[0])
            later = (("reports",) if version >= 3 else ()) + (("queue",) if version >= 4 else ())
            missing = [t for t in _TABLES + later if t not in tables]
            if missing:
                raise StorageError(f"storage {self.path!r} lacks table(s) {missing}; it is damaged")
            if self.read_only and version < SCHEMA_VERSION:
                raise StorageError(f"storage {self.path!r} has schema version {version} and is read-only for "
                                   f"this process; open it once with write access to upgrade it to "
                                   f"{SCHEMA_VERSION}")
            # Inside this write transaction: the upgrade happens whole or not at all.
            while version < SCHEMA_VERSION:
                for stmt in _MIGRATIONS[version]:
                    c.execute(stmt)
                version += 1
                c.execute("UPDATE jaxhpo_meta SET value=? WHERE key='schema_version'", (str(version),))

    # ------------------------------------------------------------ studies
    # Every method below takes ``c``, the connection of an open transaction,
    # so that ``Study`` can make several of them one atomic step.
    @staticmethod
    def study_names(c: sqlite3.Connection) -> list[str]:
        return [r[0] for r in c.execute("SELECT name FROM studies ORDER BY id")]

    @staticmethod
    def get_study(c: sqlite3.Connection, name: str) -> dict | None:
        cur = c.execute("SELECT * FROM studies WHERE name=?", (name,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row))

    @staticmethod
    def study_progress(c: sqlite3.Connection, study_id: int) -> tuple[int, bool, bool]:
        """``(generation, proposed, exhausted)`` without the state blobs."""
        return c.execute(
            "SELECT generation, proposed, exhausted FROM studies WHERE id=?", (study_id,)
        ).fetchone()

    @staticmethod
    def create_study(c: sqlite3.Connection, name: str, space: str, strategy: str, seed: int,
                     maximize: bool, popsize: int, state: bytes, directions: str | None = None) -> int:
        """``directions``: JSON list of per-objective ``maximize`` flags, ``None`` for one objective."""
        now = time.time()
        cur = c.execute(
            "INSERT INTO studies (name, space, strategy, seed, maximize, popsize, generation, "
            "next_number, state, proposed, exhausted, created_at, updated_at, directions, initial_state) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, 0, 0, ?, ?, ?, ?)",
            (name, space, strategy, seed, int(maximize), popsize, state, now, now, directions, state),
        )
        return cur.lastrowid

    @staticmethod
    def load_state(c: sqlite3.Connection, study_id: int) -> bytes:
        return c.execute("SELECT state FROM studies WHERE id=?", (study_id,)).fetchone()[0]

    @staticmethod
    def load_initial_state(c: sqlite3.Connection, study_id: int) -> bytes | None:
        """The state the study started from; ``None`` for a study made before schema 6."""
        return c.execute("SELECT initial_state FROM studies WHERE id=?", (study_id,)).fetchone()[0]

    @staticmethod
    def add_generation(c: sqlite3.Connection, study_id: int, generation: int, x: bytes, rows: int,
                       dim: int, trials: list[tuple[int, str, str | None]]) -> list[int]:
        """Record a proposed generation and its trials (``(row, params_json,
        enqueued_json or None)``) as waiting."""
        now = time.time()
        c.execute("INSERT INTO generations VALUES (?, ?, ?, ?, ?, ?, NULL)",
                  (study_id, generation, x, rows, dim, now))
        first = c.execute("SELECT next_number FROM studies WHERE id=?", (study_id,)).fetchone()[0]
        numbers = list(range(first, first + len(trials)))
        c.executemany(
            "INSERT INTO trials (study_id, number, generation, idx, params, state, created_at, enqueued) "
            "VALUES (?, ?, ?, ?, ?, 'waiting', ?, ?)",
            [(study_id, n, generation, idx, params, now, enqueued)
             for n, (idx, params, enqueued) in zip(numbers, trials)],
        )
        c.execute("UPDATE studies SET proposed=1, next_number=?, updated_at=? WHERE id=?",
                  (first + len(trials), now, study_id))
        return numbers

    @staticmethod
    def set_exhausted(c: sqlite3.Connection, study_id: int) -> None:
        c.execute("UPDATE studies SET exhausted=1, updated_at=? WHERE id=?", (time.time(), study_id))

    @staticmethod
    def get_generation_x(c: sqlite3.Connection, study_id: int, generation: int) -> tuple[bytes, int, int]:
        return c.execute("SELECT x, rows, dim FROM generations WHERE study_id=? AND generation=?",
                         (study_id, generation)).fetchone()

    @staticmethod
    def save_tell(c: sqlite3.Connection, study_id: int, generation: int, state: bytes) -> None:
        """The tell of ``generation`` is done: store the new state, move on."""
        now = time.time()
        c.execute("UPDATE generations SET told_at=? WHERE study_id=? AND generation=?",
                  (now, study_id, generation))
        c.execute("UPDATE studies SET generation=?, state=?, proposed=0, updated_at=? WHERE id=?",
                  (generation + 1, state, now, study_id))

    @staticmethod
    def replace_state(c: sqlite3.Connection, study_id: int, generation: int, old: bytes, new: bytes) -> bool:
        """Store ``new`` as the state after ``generation`` tells in place of
        ``old``, unless the study has moved on or the state changed since
        (then ``False``, nothing written)."""
        return c.execute("UPDATE studies SET state=? WHERE id=? AND generation=? AND state=?",
                         (new, study_id, generation, old)).rowcount == 1

    # -------------------------------------------------------------- queue
    @staticmethod
    def enqueue(c: sqlite3.Connection, study_id: int, params: str, outcome: str | None = None) -> None:
        """Queue a configuration to run, or with its ``outcome`` (JSON) one evaluated elsewhere."""
        c.execute("INSERT INTO queue (study_id, params, outcome, created_at) VALUES (?, ?, ?, ?)",
                  (study_id, params, outcome, time.time()))

    @staticmethod
    def queued(c: sqlite3.Connection, study_id: int, limit: int = -1) -> list[tuple[int, str, str | None]]:
        """``(id, params_json, outcome_json)`` of the queued configurations, oldest
        first (``limit < 0``: all); ``outcome`` is ``None`` for one to run."""
        return c.execute("SELECT id, params, outcome FROM queue WHERE study_id=? ORDER BY id LIMIT ?",
                         (study_id, limit)).fetchall()

    @staticmethod
    def record_added(c: sqlite3.Connection, study_id: int, generation: int, idx: int, state: str,
                     value: float | None, error: str | None, vals: str | None,
                     user_attrs: str | None = None) -> None:
        """A trial of a just proposed generation was evaluated elsewhere: finished as it is created."""
        c.execute("UPDATE trials SET state=?, value=?, error=?, vals=?, user_attrs=?, started_at=created_at, "
                  "finished_at=created_at WHERE study_id=? AND generation=? AND idx=?",
                  (state, value, error, vals, user_attrs, study_id, generation, idx))

    @staticmethod
    def enqueued_configs(c: sqlite3.Connection, study_id: int) -> list[tuple[str, str | None]]:
        """``(params_json, enqueued_json or None)`` of every trial of the study."""
        return c.execute("SELECT params, enqueued FROM trials WHERE study_id=?", (study_id,)).fetchall()

    @staticmethod
    def dequeue(c: sqlite3.Connection, ids: list[int]) -> None:
        c.executemany("DELETE FROM queue WHERE id=?", [(i,) for i in ids])

    # ------------------------------------------------------------- trials
    def requeue_dead(self, c: sqlite3.Connection, study_id: int, stale_after: float | None,
                     live_owners: Any = None) -> int:
        """Running trials of dead processes on this host (or, with
        ``stale_after``, whose worker has not signalled for that many seconds:
        neither claimed nor beaten, see ``beat``) go back to waiting; with
        ``live_owners`` (a container of owner ids), this process's trials go
        back exactly when their owner is not in it (a closed or discarded
        ``Study`` object): a live owner here is known alive, whatever its
        beats (a long call holding the GIL delays them). Returns how many."""
        rows = c.execute("SELECT id, host, pid, started_at, owner, heartbeat_at FROM trials "
                         "WHERE study_id=? AND state='running'", (study_id,)).fetchall()
        now, me, ids = time.time(), os.getpid(), []
        for tid, host, pid, started, owner, beaten in rows:
            heard = max((t for t in (started, beaten) if t is not None), default=None)
            stale = stale_after is not None and heard is not None and now - heard > stale_after
            if host == self.host and pid == me and live_owners is not None:
                gone = owner not in live_owners
            else:
                gone = stale or (host == self.host and pid is not None and pid != me and not _pid_alive(pid))
            if gone:
                ids.append((tid,))
        if ids:
            c.executemany("UPDATE trials SET state='waiting', owner=NULL, host=NULL, pid=NULL, "
                          "started_at=NULL, heartbeat_at=NULL, user_attrs=NULL WHERE id=? AND state='running'",
                          ids)
            c.executemany("DELETE FROM reports WHERE trial_id=?", ids)
        return len(ids)

    def claim(self, c: sqlite3.Connection, study_id: int, generation: int, n: int, owner: str) -> list[tuple]:
        """Mark up to ``n`` waiting trials of ``generation`` as running for ``owner``."""
        rows = c.execute(
            f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study_id=? AND state='waiting' AND generation=? "
            "ORDER BY number LIMIT ?", (study_id, generation, n)).fetchall()
        if not rows:
            return []
        now, ids = time.time(), [r[12] for r in rows]
        c.executemany(
            "UPDATE trials SET state='running', owner=?, host=?, pid=?, started_at=?, heartbeat_at=NULL WHERE id=?",
            [(owner, self.host, os.getpid(), now, i) for i in ids])
        marks = ",".join("?" * len(ids))
        return c.execute(f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE id IN ({marks}) ORDER BY number",
                         ids).fetchall()

    @staticmethod
    def beat(c: sqlite3.Connection, study_id: int, owner: str) -> int:
        """Mark ``owner``'s running trials of the study alive now (their
        ``heartbeat_at``); returns how many it marked."""
        return c.execute("UPDATE trials SET heartbeat_at=? WHERE study_id=? AND owner=? AND state='running'",
                         (time.time(), study_id, owner)).rowcount

    @staticmethod
    def release(c: sqlite3.Connection, claims: list[tuple[int, float]]) -> None:
        """Running trials go back to waiting (an interrupted worker), their reports and
        user attributes dropped.

        ``claims``: ``(trial id, started_at)`` as claimed; a trial since
        requeued and claimed again by another run is left to that run.
        """
        running = [(i,) for i, started in claims
                   if c.execute("SELECT state, started_at FROM trials WHERE id=?", (i,)).fetchone()
                   == ("running", started)]
        c.executemany("UPDATE trials SET state='waiting', owner=NULL, host=NULL, pid=NULL, started_at=NULL, "
                      "heartbeat_at=NULL, user_attrs=NULL WHERE id=?", running)
        c.executemany("DELETE FROM reports WHERE trial_id=?", running)

    @staticmethod
    def finish(c: sqlite3.Connection, trial_id: int, state: str, value: float | None,
               error: str | None, vals: str | None = None, claim: tuple | None = None) -> bool:
        """Record the outcome of a running trial; ``False`` if it was not running
        (under ``claim``, ``(owner, started_at)`` as claimed, when given: a trial
        since released and claimed again belongs to that claim).

        ``vals``: JSON list of a multi-objective trial's values (else ``None``).
        """
        sql = "UPDATE trials SET state=?, value=?, error=?, finished_at=?, vals=? WHERE id=? AND state='running'"
        args: tuple = (state, value, error, time.time(), vals, trial_id)
        if claim is not None:
            sql += " AND owner IS ? AND started_at IS ?"
            args += tuple(claim)
        return c.execute(sql, args).rowcount == 1

    @staticmethod
    def count(c: sqlite3.Connection, study_id: int, states: tuple[str, ...],
              generation: int | None = None) -> int:
        marks = ",".join("?" * len(states))
        if generation is None:
            return c.execute(f"SELECT COUNT(*) FROM trials WHERE study_id=? AND state IN ({marks})",
                             (study_id, *states)).fetchone()[0]
        return c.execute(
            f"SELECT COUNT(*) FROM trials WHERE study_id=? AND generation=? AND state IN ({marks})",
            (study_id, generation, *states)).fetchone()[0]

    @staticmethod
    def generation_values(c: sqlite3.Connection, study_id: int, generation: int) -> list[tuple]:
        """``(row, state, value, vals)`` of every trial of ``generation``."""
        return c.execute("SELECT idx, state, value, vals FROM trials WHERE study_id=? AND generation=?",
                         (study_id, generation)).fetchall()

    @staticmethod
    def trials(c: sqlite3.Connection, study_id: int, states: tuple[str, ...] | None = None,
               number: int | None = None) -> list[tuple]:
        sql = f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study_id=?"
        args: list[Any] = [study_id]
        if states is not None:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        if number is not None:
            sql += " AND number=?"
            args.append(number)
        return c.execute(sql + " ORDER BY number", args).fetchall()

    @staticmethod
    def best_trial(c: sqlite3.Connection, study_id: int, maximize: bool) -> tuple | None:
        order = "DESC" if maximize else "ASC"
        return c.execute(
            f"SELECT {_TRIAL_COLUMNS} FROM trials WHERE study_id=? AND state='complete' "
            f"ORDER BY value {order}, number ASC LIMIT 1", (study_id,)).fetchone()

    # ------------------------------------------------------------ user attributes
    @staticmethod
    def set_user_attrs(c: sqlite3.Connection, trial_id: int, attrs: str) -> None:
        """Replace a trial's user attributes (a JSON dict)."""
        c.execute("UPDATE trials SET user_attrs=? WHERE id=?", (attrs, trial_id))

    # ------------------------------------------------------------ reports
    @staticmethod
    def add_report(c: sqlite3.Connection, study_id: int, trial_id: int, step: int, value: float) -> bool:
        """Record a running trial's value at ``step``; ``False`` if that step is already reported."""
        if c.execute("SELECT 1 FROM reports WHERE trial_id=? AND step=?", (trial_id, step)).fetchone():
            return False
        c.execute("INSERT INTO reports VALUES (?, ?, ?, ?)",
                  (trial_id, study_id, step, value if math.isfinite(value) else None))
        return True

    @staticmethod
    def trial_reports(c: sqlite3.Connection, trial_id: int) -> list[tuple[int, float | None]]:
        """``(step, value)`` of one trial in step order; ``None`` for a non-finite value."""
        return c.execute("SELECT step, value FROM reports WHERE trial_id=? ORDER BY step", (trial_id,)).fetchall()

    @staticmethod
    def study_reports(c: sqlite3.Connection, study_id: int,
                      number: int | None = None) -> list[tuple[int, int, float | None]]:
        """``(trial number, step, value)`` of every report of the study (or of trial
        ``number``), by number then step."""
        sql = ("SELECT t.number, r.step, r.value FROM reports r JOIN trials t ON t.id = r.trial_id "
               "WHERE r.study_id=?")
        args: list[Any] = [study_id]
        if number is not None:
            sql += " AND t.number=?"
            args.append(number)
        return c.execute(sql + " ORDER BY t.number, r.step", args).fetchall()

    @staticmethod
    def reports_at(c: sqlite3.Connection, study_id: int, step: int, exclude_trial: int, *,
                   state: str, exact: bool) -> list[tuple[int, float | None]]:
        """``(trial number, value)`` per other trial in ``state``: its report at ``step``
        (``exact``), else at its first reported step ``>= step``."""
        # One index seek per trial for its first step at or past ``step`` (the
        # primary key), not a scan of every later report.
        first = "r.step = ?" if exact else \
            "r.step = (SELECT MIN(r2.step) FROM reports r2 WHERE r2.trial_id = t.id AND r2.step >= ?)"
        sql = (f"SELECT t.number, r.value FROM trials t JOIN reports r ON r.trial_id = t.id AND {first} "
               "WHERE t.study_id=? AND t.state=? AND t.id<>?")
        return c.execute(sql, (step, study_id, state, exclude_trial)).fetchall()

    @staticmethod
    def finished_trials(c: sqlite3.Connection, study_id: int) -> list[tuple[int, int, str, float]]:
        """``(id, number, state, finished_at)`` of the study's finished trials."""
        return c.execute("SELECT id, number, state, finished_at FROM trials WHERE study_id=? "
                         "AND state IN ('complete', 'failed', 'pruned')", (study_id,)).fetchall()

    @staticmethod
    def reports_of(c: sqlite3.Connection, trial_ids: list[int]) -> list[tuple[int, int, float | None]]:
        """``(trial id, step, value)`` of the given trials, by trial then step."""
        out: list[tuple] = []
        for i in range(0, len(trial_ids), 500):  # SQLite limits the parameters of one statement
            chunk = trial_ids[i:i + 500]
            out += c.execute(f"SELECT trial_id, step, value FROM reports WHERE trial_id IN "
                             f"({','.join('?' * len(chunk))}) ORDER BY trial_id, step", chunk).fetchall()
        return out
