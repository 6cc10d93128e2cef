"""Vectorised evaluation of a per-configuration objective over a batch."""

from __future__ import annotations

import functools
import math
import numbers
import os
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._traced import call_traced

__all__ = ["evaluate", "map_population", "shard_population", "population_sharding", "onto_mesh",
           "check_chunk_size", "check_mesh", "auto_chunk_size", "free_memory_bytes", "per_config_bytes",
           "host_local", "DEFAULT_MEMORY_FRACTION", "HOST_FALLBACK_BYTES"]

# Share of the free memory an automatically sized chunk may use: the rest is
# left to the strategy's state, the population, XLA's own buffers and anything
# else the process holds.
DEFAULT_MEMORY_FRACTION = 0.5
# Free memory assumed when neither the device nor the operating system says.
HOST_FALLBACK_BYTES = 2 * 2**30
# Configurations in the probe batches that measure the per-configuration cost.
_PROBE = 256


def _traced_objective(objective: Callable) -> Callable:
    """``objective`` as the searches call it: a concrete-value slip or a
    misspelt name gets jaxhpo's note (``call_traced``)."""
    return lambda config: call_traced("objective", objective, config, config=config)


def check_chunk_size(chunk_size: Any, allow_auto: bool = False) -> int | str | None:
    """``None``, a positive int, or (where ``allow_auto``) the string ``"auto"``."""
    if chunk_size is None:
        return None
    if allow_auto and isinstance(chunk_size, str) and chunk_size == "auto":
        return "auto"
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        rule = "a positive integer, 'auto' or None" if allow_auto else "a positive integer or None"
        raise ValueError(f"chunk_size must be {rule}, got {chunk_size!r}")
    return int(chunk_size)


def check_mesh(mesh: Any, who: str | None = None, optional: bool = True) -> Mesh | None:
    """``mesh`` if it is a ``jax.sharding.Mesh`` (or ``None`` where ``optional``),
    else a ``TypeError`` naming it (and ``who`` called)."""
    if (mesh is None and optional) or isinstance(mesh, Mesh):
        return mesh
    rule = "a jax.sharding.Mesh or None" if optional else "a jax.sharding.Mesh"
    raise TypeError(f"{who + ': ' if who else ''}mesh must be {rule}, got {type(mesh).__name__}")


def _device_list(devices: Any) -> list:
    """``devices`` as a list of ``jax.Device`` (one device alone accepted), else ``TypeError``."""
    if isinstance(devices, jax.Device):
        return [devices]
    try:
        out = list(devices)
    except TypeError:
        out = None
    if isinstance(devices, str) or out is None or not all(isinstance(d, jax.Device) for d in out):
        raise TypeError(f"devices must be a sequence of jax.Device (e.g. jax.devices()), got {devices!r}")
    return out


def _identity(x):
    return x


@functools.lru_cache(maxsize=None)
def _replicator(sharding: NamedSharding) -> Callable:
    """A compiled copy of an array onto ``sharding`` (one per sharding, compiled once per shape)."""
    return jax.jit(_identity, out_shardings=sharding)


def host_local(tree: Any) -> Any:
    """Every ``jax.Array`` leaf as an array this process can read whole.

    Under ``jax.distributed`` the outputs of a program over a mesh that spans
    several processes are global arrays that no process can read with
    ``np.asarray``. A replicated one has a full copy on each local device:
    its first local copy is returned (no communication). A sharded one is
    first replicated by one all-gather program, which every process runs (the
    same program calls this with the same tree everywhere). Leaves already
    fully addressable (every single-process run) are returned as they are.
    """
    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if not x.is_fully_replicated:
            if not isinstance(x.sharding, NamedSharding):
                from jax.experimental import multihost_utils
                return multihost_utils.process_allgather(x, tiled=True)
            x = _replicator(x.sharding.update(spec=PartitionSpec()))(x)
        return x.addressable_data(0)

    return jax.tree_util.tree_map(one, tree)


def _min_over_processes(value: int, devices: Sequence[Any]) -> int:
    """``value`` agreed on by every process that owns one of ``devices`` (their minimum).

    Quantities that fix a compiled program's shapes (a chunk size) must be
    equal in every process of a multi-process program, but free memory is
    measured per host. A no-op when ``devices`` are all this process's.
    """
    if all(d.process_index == jax.process_index() for d in devices):
        return value
    from jax.experimental import multihost_utils
    return int(np.min(multihost_utils.process_allgather(np.asarray(value, np.int64))))


def free_memory_bytes(devices: Sequence[Any] | None = None) -> int:
    """Bytes free on the most loaded of ``devices`` (default: this process's first device).

    Accelerators report ``bytes_limit - bytes_in_use`` through
    ``device.memory_stats()``. Host devices (the CPU backend) report nothing;
    there the figure is the operating system's available physical memory
    (``os.sysconf("SC_AVPHYS_PAGES") * page size``), divided among the host
    devices sharing it, or ``HOST_FALLBACK_BYTES`` where that is unknown. An
    accelerator that reports nothing (some allocators do not) counts
    ``HOST_FALLBACK_BYTES``: the host's memory says nothing of its own.
    Only this process's devices are measured (under ``jax.distributed`` the
    others belong to other hosts).
    """
    devices = _device_list(devices) if devices is not None else [jax.local_devices()[0]]
    if not devices:
        raise ValueError("devices must name at least one device")
    local = [d for d in devices if d.process_index == jax.process_index()]
    devices = local or devices
    free = []
    host_devices = 0
    for d in devices:
        stats = d.memory_stats() if hasattr(d, "memory_stats") else None
        if stats and "bytes_limit" in stats:
            free.append(int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)))
        elif getattr(d, "platform", "cpu") == "cpu":
            host_devices += 1
        else:
            free.append(HOST_FALLBACK_BYTES)
    if host_devices:
        try:
            host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            host = HOST_FALLBACK_BYTES
        if host <= 0:
            host = HOST_FALLBACK_BYTES
        free.append(host // host_devices)
    return max(0, min(free))


def _compiled_bytes(fn: Callable, args: Any) -> int:
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    if stats is None:  # a backend without memory analysis
        return 0
    return int(stats.temp_size_in_bytes + stats.output_size_in_bytes + stats.argument_size_in_bytes)


def _nbytes(aval: Any) -> int:
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:  # a token, say
        return 0
    return math.prod(shape) * getattr(dtype, "itemsize", 8)


def _sub_jaxprs(params: dict) -> list:
    """The programs an equation runs inside it (a scan's body, a cond's branches, a call)."""
    found = []
    for value in params.values():
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if hasattr(v, "jaxpr") and hasattr(v, "consts"):  # a ClosedJaxpr
                found.append(v.jaxpr)
            elif hasattr(v, "eqns"):
                found.append(v)
    return found


def _peak_bytes(jaxpr: Any) -> int:
    """Bytes alive at once when ``jaxpr``'s equations run in order and unfused:
    its inputs, every value from the equation that makes it to its last use,
    and, while an equation runs a program inside it, that program's own peak.
    An upper bound of what a fusing compiler keeps, up to XLA's reordering."""
    def counted(v):
        return hasattr(v, "aval") and not hasattr(v, "val")  # not a literal

    last: dict = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if counted(v):
                last[v] = i
    kept = {v for v in jaxpr.outvars if counted(v)}
    live = sum(_nbytes(v.aval) for v in (*jaxpr.invars, *jaxpr.constvars))
    peak = live
    for i, eqn in enumerate(jaxpr.eqns):
        made = sum(_nbytes(v.aval) for v in eqn.outvars)
        inner = max((_peak_bytes(j) for j in _sub_jaxprs(eqn.params)), default=0)
        peak = max(peak, live + inner + made)
        live += made
        # values made here and never read, and made values read for the last time here, are freed
        ends = [v for v in eqn.outvars if counted(v) and v not in last and v not in kept]
        ends += [v for v in eqn.invars if counted(v) and last.get(v) == i and v not in kept
                 and v not in jaxpr.invars and v not in jaxpr.constvars]
        live -= sum(_nbytes(v.aval) for v in set(ends))
    return peak


def _program_bytes(fn: Callable, args: Any) -> int:
    """Bytes ``fn(*args)`` holds at its peak: the compiled program's figure
    (arguments, outputs and temporaries); on the CPU at least the unfused
    program's peak (``_peak_bytes``), because XLA:CPU runs an objective's
    arithmetic as one fused kernel whose scratch memory its analysis leaves
    out (a 256 x 256 matrix product per configuration measured 8 bytes)."""
    compiled = _compiled_bytes(fn, args)
    if jax.default_backend() != "cpu":
        return compiled
    return max(compiled, _peak_bytes(jax.make_jaxpr(fn)(*args).jaxpr))


# (objective, decode, config structure) -> bytes: bounded, since each entry
# keeps its objective alive, and with it whatever data it closes over.
_PER_CONFIG_CACHE: dict = {}
_PER_CONFIG_CACHE_SIZE = 64


def per_config_bytes(objective: Callable, config: Any, decode: Callable | None = None) -> int:
    """Device memory one more configuration adds to a vmapped evaluation.

    Measured from the compiled program (``memory_analysis``: arguments,
    outputs and temporaries) of ``vmap(objective)`` at two probe batch
    sizes (on the CPU, at least the unfused program's peak, whose fused
    kernels' scratch memory the analysis leaves out); the difference divided
    by the batch difference removes the fixed cost. Nothing is run.

    Args:
      objective: ``f(config) -> value`` for one configuration.
      config: one configuration (a pytree of arrays or ``ShapeDtypeStruct``,
        no batch axis), or, with ``decode``, the shape of one cube point.
      decode: optional map applied to the batch before ``objective`` (e.g.
        ``space.decode``), so its cost counts too.
    Returns:
      bytes per configuration (at least 1).
    """
    if not callable(objective):
        raise TypeError("per_config_bytes: objective must be callable")
    if decode is not None and not callable(decode):
        raise TypeError(f"per_config_bytes: decode must be callable or None, got {type(decode).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten(config)
    try:  # (any JAX dtype: typed keys, bfloat16 included)
        spec = tuple((tuple(jnp.shape(x)), jnp.result_type(x)) for x in leaves)
    except (TypeError, ValueError):
        spec = None
    if not leaves or spec is None:
        raise TypeError("per_config_bytes: config must be one configuration: a pytree of arrays, numbers or "
                        f"jax.ShapeDtypeStruct, got {config!r:.80}")
    # A bound method (space.decode) keys by its object's value: an equal new
    # Space hits the cache (bound methods compare by their object's identity).
    decode_key = (decode.__func__, decode.__self__) if hasattr(decode, "__self__") else decode
    cache_key = (objective, decode_key, treedef, spec)
    try:
        return _PER_CONFIG_CACHE[cache_key]
    except TypeError:  # an unhashable objective: measure every time
        cache_key = None
    except KeyError:
        pass

    def batched(n):
        return [jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct((n, *s), d) for s, d in spec])]

    def fn(batch):
        # (as the search calls it: a concrete-value slip gets jaxhpo's error, not a raw one)
        return jax.vmap(_traced_objective(objective))(decode(batch) if decode is not None else batch)

    small, large = _program_bytes(fn, batched(_PROBE)), _program_bytes(fn, batched(2 * _PROBE))
    per = (large - small) / _PROBE
    if per <= 0:  # no growth measured (e.g. everything aliased): use the average
        per = large / (2 * _PROBE)
    per = max(1, math.ceil(per))
    if cache_key is not None:
        if len(_PER_CONFIG_CACHE) >= _PER_CONFIG_CACHE_SIZE:
            del _PER_CONFIG_CACHE[next(iter(_PER_CONFIG_CACHE))]  # the oldest entry
        _PER_CONFIG_CACHE[cache_key] = per
    return per


def _friendly(chunk: int, n: int) -> int:
    """A chunk size near ``chunk`` (never above) that splits ``n`` evenly if one is close."""
    if chunk >= n:
        return n
    # A divisor of n in [chunk / 2, chunk] leaves no remainder batch, which
    # lax.map would evaluate as one more, differently shaped program.
    for c in range(chunk, max(1, -(-chunk // 2)) - 1, -1):
        if n % c == 0:
            return c
    # Otherwise equal chunks: as many as ``chunk`` needs, none larger.
    return math.ceil(n / math.ceil(n / chunk))


def auto_chunk_size(objective: Callable, config: Any, n: int, *, decode: Callable | None = None,
                    devices: Sequence[Any] | None = None, memory_fraction: float = DEFAULT_MEMORY_FRACTION,
                    free_bytes: int | None = None) -> int:
    """The largest chunk of ``n`` configurations whose evaluation fits in memory.

    The chunk is the number of configurations whose evaluation (measured by
    ``per_config_bytes``) fits in ``memory_fraction`` of the free memory
    (``free_memory_bytes``); it is decided before compiling the search, so it
    is a static shape. With several ``devices`` (a mesh sharding the
    population) each holds ``chunk / len(devices)`` configurations, so the
    budget is that of the most loaded device times their number.

    Args:
      objective: ``f(config) -> value`` for one configuration.
      config: one configuration, or with ``decode`` one cube point
        (arrays or ``ShapeDtypeStruct``; no batch axis).
      n: configurations per evaluation (the population size).
      decode: optional map from a batch of cube points to configurations.
      devices: the devices the evaluation runs on (default: the default one).
        Where they span several processes (``jax.distributed``), each
        measures its own devices and all use the smallest resulting chunk.
      memory_fraction: share of the free memory to use, in ``(0, 1]``.
      free_bytes: free bytes per device, overriding the measurement.
    The measurement sees the memory that grows with the batch between its
    probes of 256 and 512 configurations: where the objective also holds a
    large working set of its own (a reduction over a big closed-over array),
    that fixed part can hide the per-configuration part at those sizes and
    the chunk come out too large; give ``chunk_size`` then.

    Returns:
      an int in ``[1, n]``; ``n`` means no chunking is needed. When smaller,
      it divides ``n`` where a divisor lies within a factor 2 below the
      largest chunk that fits, else it is ``ceil(n / k)`` for the fewest
      chunks ``k`` that fit (a last, smaller remainder chunk is evaluated
      as a program of its own).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"auto_chunk_size: n must be a positive integer, got {n!r}")
    if not callable(objective):
        raise TypeError("auto_chunk_size: objective must be callable")
    if isinstance(memory_fraction, bool) or not isinstance(memory_fraction, numbers.Real) \
            or not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must be a number in (0, 1], got {memory_fraction!r}")
    if free_bytes is not None and (isinstance(free_bytes, bool) or not isinstance(free_bytes, numbers.Real)
                                   or not 0 <= free_bytes < math.inf):
        raise ValueError(f"free_bytes must be a finite number of bytes >= 0 or None, got {free_bytes!r}")
    if decode is not None and not callable(decode):
        raise TypeError(f"auto_chunk_size: decode must be callable or None, got {type(decode).__name__}")
    devices = [jax.local_devices()[0]] if devices is None else _device_list(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    free = free_memory_bytes(devices) if free_bytes is None else int(free_bytes)
    budget = memory_fraction * max(0, free) * len(devices)
    chunk = int(budget // per_config_bytes(objective, config, decode))
    # Under jax.distributed every process must compile the same chunk size.
    chunk = _min_over_processes(max(1, min(int(n), chunk)), devices)
    return _friendly(chunk, int(n))


def population_sharding(mesh: Mesh, ndim: int, axis: int = 0) -> NamedSharding:
    """Axis ``axis`` (the population) of an ``ndim``-d array over all of ``mesh``'s
    devices, the other axes replicated. (No trailing ``None`` in the spec: a
    compiled program's outputs come without, and an input sharded with them
    would compile the program again.)"""
    check_mesh(mesh, "population_sharding", optional=False)
    if not 0 <= axis < ndim:
        raise ValueError(f"population axis {axis} of a {ndim}-d array")
    return NamedSharding(mesh, PartitionSpec(*([None] * axis), tuple(mesh.axis_names)))


def shard_population(tree: Any, mesh: Mesh | None, axis: int = 0) -> Any:
    """Split axis ``axis`` (the population) of every leaf over all of ``mesh``'s devices."""
    check_mesh(mesh, "shard_population")
    if mesh is None:
        return tree
    return jax.tree_util.tree_map(
        lambda a: lax.with_sharding_constraint(a, population_sharding(mesh, a.ndim, axis)), tree)


def onto_mesh(tree: Any, mesh: Mesh | None) -> Any:
    """Arrays committed to devices other than ``mesh``'s (a key made on device 0,
    with a mesh of other devices or of more of them) copied onto it, replicated:
    a compiled program takes all its inputs from one set of devices. Others
    (uncommitted, traced, already sharded over this mesh's devices in its
    order) as they are."""
    check_mesh(mesh, "onto_mesh")
    if mesh is None:
        return tree
    inside, order = set(mesh.devices.flat), list(mesh.devices.flat)

    def place(a):
        if isinstance(a, jax.core.Tracer) or not isinstance(a, jax.Array) or not a.committed:
            return a
        # (the same devices in another order do not do either: XLA assigns them in order)
        on_mesh = isinstance(a.sharding, NamedSharding) and list(a.sharding.mesh.devices.flat) == order
        if on_mesh or (mesh.size == 1 and a.devices() == inside):
            return a
        return jax.device_put(a, NamedSharding(mesh, PartitionSpec()))

    return jax.tree_util.tree_map(place, tree)


def map_population(fn: Callable, args: Any, chunk_size: int | None = None, mesh: Mesh | None = None) -> Any:
    """``jax.vmap(fn)(args)`` over the leading (population) axis of ``args``, or
    ``chunk_size`` rows at a time (a ``lax.map`` over chunks) to bound memory.

    With a ``mesh`` (the population sharded over its ``d`` devices, ``n`` a
    multiple of ``d``) each chunk takes ``max(1, chunk_size // d)`` rows from
    every device: each device works through its own rows, that many at a time.
    (A plain chunked ``lax.map`` would loop over the sharded axis, and every
    device would compute the whole population.)

    Args:
      fn: ``fn(row) -> out`` for one row: a pytree of ``args``' leaves without
        their leading axis.
      args: a pytree of arrays with the same leading axis ``(n, ...)``.
    Returns:
      ``fn``'s outputs with a leading axis ``(n, ...)``.
    """
    chunk_size = check_chunk_size(chunk_size)
    check_mesh(mesh, "map_population")
    if not callable(fn):
        raise TypeError("map_population: fn must be callable")
    shapes = [jnp.shape(a) for a in jax.tree_util.tree_leaves(args)]
    if not shapes or any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError("map_population: args must be a pytree of arrays sharing one leading (population) "
                         f"axis, got leaf shapes {shapes[:8]}")
    n = shapes[0][0]
    d = 1 if mesh is None else mesh.size
    if chunk_size is not None and chunk_size < n and n % d:
        raise ValueError(f"a population of {n} cannot be chunked over the mesh's {d} devices: "
                         f"it must be a multiple of {d}")
    per = n // d  # rows per device
    c = None if chunk_size is None else max(1, chunk_size // d)
    if c is None or c >= per:
        return jax.vmap(fn)(args)
    if d == 1 and c == 1:  # one at a time is a plain lax.map
        return lax.map(fn, args)
    # lax.map's batch_size cannot reshape zero-size leaves (an MLP's empty stack of
    # extra hidden layers); explicit shapes can: whole chunks mapped, the rest vmapped.
    whole = per // c * c
    k = whole // c
    tree_map = jax.tree_util.tree_map

    def rows(a):  # (n, ...) -> (d, per, ...): device i's rows at index i of axis 0
        return a.reshape((d, per) + a.shape[1:])

    def split(a):  # -> (k, d, c, ...): chunk j takes rows j*c .. j*c + c - 1 of every device
        a = jnp.swapaxes(rows(a)[:, :whole].reshape((d, k, c) + a.shape[1:]), 0, 1)
        return shard_population(a, mesh, axis=1)

    out = lax.map(jax.vmap(jax.vmap(fn)), tree_map(split, args))
    out = tree_map(lambda a: jnp.swapaxes(a, 0, 1).reshape((d, whole) + a.shape[3:]), out)
    if whole < per:
        rest = jax.vmap(jax.vmap(fn))(tree_map(lambda a: shard_population(rows(a)[:, whole:], mesh), args))
        out = tree_map(lambda a, b: jnp.concatenate([a, b], axis=1), out, rest)
    return shard_population(tree_map(lambda a: a.reshape((n,) + a.shape[2:]), out), mesh)


def evaluate(objective: Callable[[Any], Any], params: Any, chunk_size: int | str | None = None,
             mesh: Mesh | None = None) -> Any:
    """Evaluate ``objective`` on every configuration of a batch.

    Called outside ``jit`` it runs op by op, tracing ``objective`` afresh (its
    current state) at every call; a chunked evaluation then compiles its loop
    at every call: wrap repeated calls in ``jax.jit`` to compile them once.

    Args:
      objective: ``f(config) -> value`` for one configuration, where ``config``
        is a pytree (usually the dict from ``Space.decode``) of arrays of
        shape ``()``; jax-traceable.
      params: the same pytree with a leading batch axis ``(n, ...)``.
      chunk_size: ``None`` vmaps the whole batch at once; an integer ``c``
        evaluates ``c`` configurations at a time (a ``lax.map`` over chunks),
        bounding memory at the cost of a sequential loop; ``"auto"`` picks
        the largest ``c`` that fits in half the free device memory
        (``auto_chunk_size``; decided from shapes, so it works under ``jit``
        too). Results are the same up to float rounding (a chunk may compile
        to kernels that round differently).
      mesh: a ``jax.sharding.Mesh`` whose devices share the batch (``n`` a
        multiple of their number): each evaluates its own rows, at most
        ``max(1, chunk_size // devices)`` at a time (``map_population``).
    Returns:
      the objective's outputs with a leading axis ``(n, ...)``.
    """
    if not callable(objective):
        raise TypeError("objective must be callable")
    chunk_size = check_chunk_size(chunk_size, allow_auto=True)
    check_mesh(mesh, "evaluate")
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("evaluate: params holds no arrays")
    n = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
    if n is None or any(jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != n for leaf in leaves):
        raise ValueError("evaluate: every array in params needs the same leading batch axis")
    if mesh is not None and n % mesh.size:
        raise ValueError(f"evaluate: the batch ({n}) must be a multiple of the mesh's {mesh.size} devices")
    if chunk_size == "auto":
        one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), params)
        chunk_size = None if n == 0 else auto_chunk_size(  # (an empty batch needs no chunks)
            objective, one, n, devices=None if mesh is None else list(mesh.devices.flat))
    one = _traced_objective(objective)
    # (inputs committed elsewhere, or to the same devices in another order, copied onto the mesh)
    return map_population(one, shard_population(onto_mesh(params, mesh), mesh), chunk_size, mesh)
