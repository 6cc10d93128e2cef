"""A strategy state saved to a file and read back: checkpoints of a search run in segments.

``run`` / ``minimize`` continue a search from a state (``state=``), and a
search run in segments equals the search run at once, so a long compiled
search survives an interruption when each segment's state is saved::

    state = jaxhpo.load_state(path, strategy) if os.path.exists(path) else None
    while ...:
        state, trace = jaxhpo.run(strategy, f, key, 100, state=state)
        jaxhpo.save_state(path, state)

The file holds the state's leaves without pickle, with a checksum
(``jaxhpo.study.serialize``); reading refuses a file of another strategy or a
damaged one. A save replaces the file in one step (written beside it, synced,
renamed over it), so an interruption during a save leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import jax

from .evaluate import host_local
from .loop import check_state, state_template
from .strategies.base import Strategy
from .study.serialize import state_from_bytes, state_to_bytes

__all__ = ["save_state", "load_state"]


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write a strategy state to ``path``, replacing the file in one step.

    Args:
      path: the file (its folder must exist). A file replaced keeps its
        permissions; a new one gets the usual ones (``0o666`` less the umask).
      state: a strategy state (``run``'s first output, ``Result.state``);
        under ``jax.distributed`` every process holds a full copy and may
        write it.
    """
    _check_is_state(state)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save_state: the folder of {path!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save_state: path {path!r} is a folder; give the path of a file")
    data = state_to_bytes(host_local(state))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes it 0o600
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):  # the rename itself, durable (POSIX)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _umask() -> int:
    """The process's umask, read without changing it where the system tells it
    (``os.umask`` alone sets it, for a moment, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _check_is_state(state: Any) -> None:
    """Refuse what is not a strategy state (a NamedTuple of arrays with a
    generation count) before anything is written: a ``(state, trace)`` pair, a
    ``Result``, ``None``, values being traced."""
    if not (isinstance(state, tuple) and hasattr(state, "_fields") and "generation" in state._fields):
        got = type(state).__name__
        hint = " (run returns (state, trace): save the first)" if type(state) is tuple else \
            " (save its .state)" if got == "Result" else ""
        raise TypeError(f"state must be a strategy state (run's first output, Result.state), got {got}{hint}")
    for leaf in jax.tree_util.tree_leaves(state):
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError("save_state writes on the host: call it outside jit / vmap, on the state a search returned")
        if not hasattr(leaf, "dtype") or getattr(leaf.dtype, "kind", None) == "O":
            raise TypeError(f"state must hold arrays only, got a leaf of type {type(leaf).__name__}")


def load_state(path: str | os.PathLike, strategy: Strategy) -> Any:
    """Read back a state ``save_state`` wrote, for ``strategy`` (the one it belongs to).

    Raises:
      jaxhpo.study.serialize.StateFormatError: the file does not hold a
        state of ``strategy``'s structure and shapes (another strategy, or
        another space, popsize or capacity that changes them; one of the
        same shapes is not told apart), or is not a state file;
      jaxhpo.study.serialize.StateChecksumError: its bytes changed after
        they were written.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo strategy (the one the state belongs to), "
                        f"got {type(strategy).__name__}")
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    return check_state(strategy, state_from_bytes(data, state_template(strategy)))
