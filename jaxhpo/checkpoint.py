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
from .loop import check_state
from .strategies.base import Strategy
from .study.serialize import state_from_bytes, state_to_bytes

__all__ = ["save_state", "load_state"]


def save_state(path: str | os.PathLike, state: Any) -> None:
    """Write a strategy state to ``path``, replacing the file in one step.

    Args:
      path: the file (its folder must exist).
      state: a strategy state (``run``'s, ``Result.state``); under
        ``jax.distributed`` every process holds a full copy and may write it.
    """
    path = os.fspath(path)
    data = state_to_bytes(host_local(state))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
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


def load_state(path: str | os.PathLike, strategy: Strategy) -> Any:
    """Read back a state ``save_state`` wrote, for ``strategy`` (the one it belongs to).

    Raises:
      jaxhpo.study.serialize.StateFormatError: the file does not hold a
        state of ``strategy`` (another strategy, space, popsize or
        capacity), or is not a state file;
      jaxhpo.study.serialize.StateChecksumError: its bytes changed after
        they were written.
    """
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a jaxhpo strategy (the one the state belongs to), "
                        f"got {type(strategy).__name__}")
    with open(os.fspath(path), "rb") as f:
        data = f.read()
    template = jax.eval_shape(lambda k: strategy.init(k), jax.random.key(0))
    return check_state(strategy, state_from_bytes(data, template))
