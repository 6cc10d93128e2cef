"""Keep compiled programs on disk between processes (JAX's persistent cache).

A search compiles once per process: TPE's or GP-BO's ``minimize`` spends a
few seconds compiling on a CPU before its first evaluation, and Optuna,
which compiles nothing, starts at once. With the cache on, a second process
loads the programs instead. ``use_compile_cache()`` is what the ``jaxhpo``
program does at start; a script calls it before its first search.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["compile_cache_dir", "use_compile_cache", "MIN_COMPILE_SECONDS", "MAX_CACHE_BYTES"]

# Programs that compile faster than this are not worth a file in the cache.
# Loading one takes ~7 ms on a CPU; a search's bookkeeping programs compile in
# 20-60 ms each (a fresh process's Hyperband search on digits: 1.5 s with
# those cached against 1.7 s at a threshold of 0.2 s; JAX's default is 1 s).
MIN_COMPILE_SECONDS = 0.02

# The folder's default bound: the least recently used programs go first. A
# search's programs take 50-100 kB each on a CPU: a gigabyte holds thousands.
MAX_CACHE_BYTES = 2**30


def compile_cache_dir() -> Path:
    """The default cache folder: ``$JAXHPO_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/jaxhpo/xla``, else ``~/.cache/jaxhpo/xla``."""
    if os.environ.get("JAXHPO_CACHE_DIR"):
        return Path(os.environ["JAXHPO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxhpo" / "xla"


def use_compile_cache(directory: str | os.PathLike | None = None, *,
                      max_bytes: int | None = MAX_CACHE_BYTES) -> Path:
    """Turn on JAX's persistent compilation cache for this process.

    Programs that take longer than ``MIN_COMPILE_SECONDS`` to compile are
    written to ``directory`` (default ``compile_cache_dir()``) and loaded by
    later processes that compile the same program (same code, shapes, JAX
    version and device). A cache folder already chosen
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is kept when
    ``directory`` is not given, and so is a threshold set in the
    environment (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``).

    Args:
      directory: the cache folder.
      max_bytes: the folder's bound (JAX's ``jax_compilation_cache_max_size``):
        past it, the programs least recently used are deleted. ``None``: no
        bound.

    Returns:
      The folder in use.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
        raise TypeError(f"max_bytes must be an int (bytes) or None (no bound), got {type(max_bytes).__name__}")
    if max_bytes is not None and max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive (bytes) or None (no bound), got {max_bytes}")
    chosen = jax.config.jax_compilation_cache_dir
    if directory is not None and not str(directory):
        raise ValueError("directory must name a folder for the compilation cache, got ''")
    if directory is None:
        folder = Path(chosen) if chosen else compile_cache_dir()
    else:
        folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"directory must be a folder for the compilation cache, got the file {str(folder)!r}")
    bound = -1 if max_bytes is None else max_bytes
    if (chosen and Path(chosen) != folder) or jax.config.jax_compilation_cache_max_size != bound:
        # JAX opens its cache at the first compile and keeps that folder and
        # bound: reopen it at the next compile with the new ones.
        compilation_cache.reset_cache()
    jax.config.update("jax_compilation_cache_max_size", bound)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return folder
