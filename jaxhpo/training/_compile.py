"""Compiler options for jaxhpo's training programs on a CPU.

XLA:CPU hands a training step's matrix products to a library (Eigen /
oneDNN) and compiles the rest (elementwise kernels, the loops) through LLVM.
At LLVM optimisation level 1 instead of XLA's default those programs compile
about a third faster and run as fast, since the products, not the
elementwise kernels, bound them (the digits MLP's blocked training program:
2.5 s of compile instead of 3.0-8 s, the same 2.8-3.2 ms per member-unit;
``benchmarks/hyperband_vs_random.py``'s first search in a fresh process
5.4-5.8 s instead of 7.9-8.2 s). Elementwise-bound programs (a cheap
objective over millions of points) do run ~10% slower at level 1, so only the
training programs (and the gathers of their states) take these options, and
only on a CPU.

``CPU_COMPILER_OPTIONS`` is read at every call: ``clear()`` it to compile
training programs with XLA's defaults (a trainer whose step is mostly
elementwise arithmetic, trained long enough that compiling does not matter).

The searches' bookkeeping programs (sampling a bracket's configurations and
init keys, telling the sampler) run once per bracket on a few thousand
numbers at most, but their random-bit generation is long straight-line
code that LLVM optimises slowly: they take ``SMALL_PROGRAM_OPTIONS``
(level 0) on a CPU, which halves their compile (Hyperband's sampling
program: 0.6 CPU s instead of 1.3).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax

__all__ = ["CPU_COMPILER_OPTIONS", "SMALL_PROGRAM_OPTIONS", "training_jit", "small_program_jit"]

CPU_COMPILER_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 1}
SMALL_PROGRAM_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 0}


class training_jit:
    """``jax.jit(fn, **jit_kwargs)``, with ``CPU_COMPILER_OPTIONS`` (or
    ``cpu_options``) where the program runs on a CPU (the ``mesh`` keyword's
    devices, else the default backend). Calls and ``lower`` as a jitted
    function's. ``check(arguments)``, where given, sees the bound arguments
    (a dict name -> value) of every call first, on the host, so that a
    concrete bad value is refused before it is traced and lost."""

    def __init__(self, fn: Callable, *, cpu_options: dict[str, Any] | None = None,
                 check: Callable[[dict], None] | None = None, **jit_kwargs: Any):
        self._fn = fn
        self._check = check
        self._cpu_options = CPU_COMPILER_OPTIONS if cpu_options is None else cpu_options
        self._signature = inspect.signature(fn)
        self._jit_kwargs = jit_kwargs
        self._variants: dict = {}
        functools.update_wrapper(self, fn)

    def _variant(self, args: tuple, kwargs: dict) -> Callable:
        arguments = self._signature.bind(*args, **kwargs).arguments
        if self._check is not None:
            self._check(arguments)
        mesh = arguments.get("mesh")
        platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
        # Called inside another trace (vmapped seeds, a user's jit), the
        # outermost jit compiles the program and its options rule.
        nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((args, kwargs)))
        options = tuple(sorted(self._cpu_options.items())) if platform == "cpu" and not nested else ()
        if options not in self._variants:
            extra = {"compiler_options": dict(options)} if options else {}
            self._variants[options] = jax.jit(self._fn, **self._jit_kwargs, **extra)
        return self._variants[options]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._variant(args, kwargs)(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> Any:
        return self._variant(args, kwargs).lower(*args, **kwargs)

    def _cache_size(self) -> int:
        """Programs compiled so far, over every variant (a jitted function's count)."""
        return sum(f._cache_size() for f in self._variants.values())


def small_program_jit(fn: Callable, **jit_kwargs: Any) -> training_jit:
    """``training_jit`` with ``SMALL_PROGRAM_OPTIONS``: for programs whose
    compile, not their run, is the cost (see the module docstring). Use as
    ``small_program_jit(fn, ...)`` or ``partial(small_program_jit, ...)``."""
    return training_jit(fn, cpu_options=SMALL_PROGRAM_OPTIONS, **jit_kwargs)
