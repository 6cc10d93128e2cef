"""Width buckets: a few compiled shapes instead of masking every member to the maximum.

Masking (``jaxhpo.training.models``) makes every member pay the max-size
network's FLOPs. Where FLOPs are the limit (a CPU), a population whose widths
range over ``[16, 256]`` wastes about half its time on masked units. Here the
population is sorted by width and cut into chunks of ``chunk`` members; a
chunk runs on the smallest bucket network at least as wide as its widest
member, with masks only for the small remainder. Chunks have one fixed size
(the last is padded by repeating a member) and buckets are a fixed short
list, so at most ``len(buckets)`` programs are ever compiled, and a second
call with the same buckets compiles nothing.

More buckets waste fewer FLOPs but compile more programs: ``bucket_count``
picks the number for a population from what one program's compile costs.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._keys import check_member_keys
from ..evaluate import check_chunk_size
from .trainer import (_population_size, check_population_hparams, check_positive_int, check_trainer, fresh_rung,
                      trainer_has_aux)

__all__ = ["width_buckets", "bucket_count", "train_bucketed", "BucketedResult"]


def width_buckets(max_width: int, num: int = 8, multiple: int = 8) -> tuple[int, ...]:
    """``num`` evenly spaced widths up to ``max_width``, each a multiple of ``multiple``.

    e.g. ``width_buckets(256, 8)`` is ``(32, 64, ..., 256)``. The largest is
    always ``max_width``. Fewer than ``num`` where rounding to multiples
    makes some equal: ``width_buckets(64, 16)`` is the 8 multiples of 8,
    ``width_buckets(10, 4)`` is ``(8, 10)``.
    """
    for name, v in (("max_width", max_width), ("num", num), ("multiple", multiple)):
        check_positive_int(v, name)
    out = {min(max_width, max(multiple, int(-(-max_width * (i + 1) // num) + multiple - 1) // multiple * multiple))
           for i in range(num)}
    return tuple(sorted(out | {int(max_width)}))


def bucket_count(population: int, compile_cost: float = 8.0, most: int = 8) -> int:
    """How many evenly spaced width buckets a population of ``population`` members trained once should get.

    A model of the two costs, with widths spread evenly up to the largest
    bucket and a member's training time growing with its width: ``k`` even
    buckets train each member at about ``W / (2k)`` more width than its own,
    i.e. ``population / (2k)`` trainings of a widest member in all, and
    compile ``k`` programs, each ``compile_cost`` such trainings. The count
    returned is the ``k`` in ``[1, most]`` that minimises the sum,
    ``k * compile_cost + population / (2k)``, near
    ``sqrt(population / (2 * compile_cost))``.

    Args:
      population: members to train.
      compile_cost: one bucket program's compile time in trainings of one
        member at the largest width. About 8 for the digits MLP's 200 Adam
        steps on a CPU (0.8-1.1 s of compile, 0.10-0.16 s per widest member;
        ``benchmarks/training_throughput.py``); a short training or a
        vmapped chunk on a GPU makes it large (fewer buckets, down to one
        masked network), a long training small (more buckets). Programs
        reused over several populations compile once: divide it by the
        number of populations.
      most: the largest count returned.
    Returns:
      an int in ``[1, most]``, for ``width_buckets(max_width, num)``.
    """
    population = check_positive_int(population, "population")
    most = check_positive_int(most, "most")
    if (isinstance(compile_cost, bool) or not isinstance(compile_cost, numbers.Real)
            or not math.isfinite(compile_cost) or compile_cost <= 0):
        raise ValueError(f"compile_cost must be a finite number > 0 (a compile, in trainings of one widest "
                         f"member), got {compile_cost!r}")

    def cost(k: int) -> float:
        return k * float(compile_cost) + population / (2.0 * k)

    # The cost is convex in k: the best integer is next to the real minimiser.
    real = min(max(math.sqrt(population / (2.0 * float(compile_cost))), 1.0), float(most))
    return min({max(1, math.floor(real)), min(most, math.ceil(real))}, key=lambda k: (cost(k), k))


@dataclasses.dataclass
class BucketedResult:
    """The outcome of ``train_bucketed`` for ``n`` members.

    Attributes:
      losses: ``(n,)`` float32 in the members' order (``inf``: failed).
      groups: one ``(index (c,), bucket width, trainer, states)`` per chunk;
        ``states`` has a leading ``(c,)`` axis and the bucket's shapes; padding
        rows are already dropped.
      aux: for trainers with ``has_aux``, each member's auxiliary output (the
        pytree ``evaluate`` returns, leading ``(n,)`` axis, members' order,
        numpy arrays); ``None`` otherwise.
    """

    losses: np.ndarray
    groups: list
    aux: Any = None


def _check_holds(trainer: Any, width: int) -> None:
    """Refuse a bucket's trainer whose masked network (``trainer.model``, a
    ``MaskedMLP``) is narrower than the bucket: it would train the bucket's
    widest members narrower, silently (a mask stops at the network's width)."""
    most = getattr(getattr(trainer, "model", None), "max_width", None)
    if isinstance(most, numbers.Integral) and most < width:
        raise ValueError(f"make_trainer({width}) gives a network of max_width {most}: a bucket's trainer must "
                         f"hold the bucket's width ({width})")


def train_bucketed(make_trainer: Callable[[int], Any], keys: jax.Array, hparams: dict, num_steps: int, *,
                   size: str = "width", buckets: Sequence[int], chunk: int = 16,
                   chunk_size: int | None = None) -> BucketedResult:
    """Train ``n`` members from scratch for ``num_steps`` units, grouped into width buckets.

    Args:
      make_trainer: ``bucket_width -> trainer`` (e.g.
        ``MLPClassifierTrainer.with_max_width``) on a network of that
        width; equal widths must give equal (hashing) trainers so compiled
        programs are shared. A ``MaskedMLP`` trainer (``trainer.model``)
        narrower than its bucket is refused.
      keys: ``(n,)`` init keys.
      hparams: dict name -> ``(n,)`` decoded hyperparameters; ``hparams[size]``
        the width of each member.
      num_steps: budget units per member.
      size: the hyperparameter that sets the width.
      buckets: increasing bucket widths; the last must hold the widest member.
      chunk: members per compiled program (a chunk trains at the bucket
        that holds its widest member; a population smaller than ``chunk``
        is one chunk of its own size). The default, 16 vmapped, trains the
        digits MLP 1.2-1.5x faster than one member at a time on a 2-core CPU
        (the members' first layers are one matrix product with the shared
        inputs, and a step's fixed costs are paid once per chunk); a chunk
        much larger than the members per bucket trains many at the bucket
        above theirs (``benchmarks/training_throughput.py``). On a GPU, a
        few hundred.
      chunk_size: within a chunk, train at most this many at once
        (``lax.map`` over vmapped groups); ``None``: the whole chunk vmapped.
    Returns:
      a ``BucketedResult``.
    """
    if not callable(make_trainer):
        raise TypeError("make_trainer must be callable: bucket width -> trainer")
    chunk = check_positive_int(chunk, "chunk")
    num_steps = check_positive_int(num_steps, "num_steps", 0)
    try:
        buckets = tuple(buckets)
    except TypeError:
        raise TypeError(f"buckets must be a sequence of increasing positive widths, got {buckets!r}") from None
    if (not buckets or any(isinstance(b, bool) or not isinstance(b, numbers.Integral) for b in buckets)
            or list(buckets) != sorted(set(buckets)) or buckets[0] < 1):
        raise ValueError(f"buckets must be increasing positive integer widths, got {buckets!r}")
    buckets = tuple(int(b) for b in buckets)
    if not isinstance(hparams, Mapping):
        raise TypeError(f"hparams must be a dict name -> (n,) array, got {type(hparams).__name__}")
    if size not in hparams:
        raise ValueError(f"size {size!r} is not a key of hparams ({sorted(hparams)})")
    chunk_size = check_chunk_size(chunk_size)
    n = _population_size(hparams)
    if n < 1:
        raise ValueError("hparams must hold at least one member, got a population of 0")
    check_member_keys("keys", keys, n)
    chunk = min(chunk, n)  # no padding copies beyond the population
    widths = np.asarray(hparams[size])
    if not np.all(np.isfinite(widths) & (widths == np.round(widths))):
        bad = widths[~(np.isfinite(widths) & (widths == np.round(widths)))][0]
        raise ValueError(f"hparams[{size!r}] must be whole widths, got {bad!r}")
    if widths.min() < 1:
        raise ValueError(f"hparams[{size!r}] must be widths >= 1, got {int(widths.min())}")
    if widths.max() > buckets[-1]:
        raise ValueError(f"buckets' largest width {buckets[-1]} is below the widest member ({int(widths.max())})")
    order = np.argsort(widths, kind="stable")
    hp = {k: jnp.asarray(v) for k, v in hparams.items()}
    trainers: dict[int, Any] = {}
    pending = []
    for start in range(0, n, chunk):
        idx = order[start:start + chunk]
        real = len(idx)
        if real < chunk:  # one compiled shape per bucket: pad with the last member
            idx = np.concatenate([idx, np.full(chunk - real, idx[-1])])
        b = next(b for b in buckets if b >= widths[idx].max())
        if b not in trainers:
            trainers[b] = check_trainer(make_trainer(b), "make_trainer(width)")
            _check_holds(trainers[b], b)
            if len(trainers) == 1:  # before anything trains; the widths are checked above
                check_population_hparams(trainers[b], {k: v for k, v in hparams.items() if k != size})
            if trainer_has_aux(trainers[b]) != trainer_has_aux(next(iter(trainers.values()))):
                raise ValueError("make_trainer must give trainers that all have has_aux or all not; "
                                 f"width {b}'s differs from the first's")
        jidx = jnp.asarray(idx)
        # Dispatch is asynchronous: every chunk is queued before any result is read.
        states, out = fresh_rung(trainers[b], keys[jidx], {k: v[jidx] for k, v in hp.items()},
                                 np.int32(num_steps), chunk_size)
        losses, aux = out if trainer_has_aux(trainers[b]) else (out, None)
        # Checked as each chunk is queued (shapes are known before results):
        # every bucket's aux must stack into one array per leaf.
        form = jax.tree_util.tree_map(lambda a: (a.shape[1:], a.dtype), aux)
        if pending and form != pending[0][-1]:
            raise ValueError(f"the trainers of every bucket width must return aux of one structure, shape and "
                             f"dtype; width {b}'s is {form}, width {pending[0][1]}'s {pending[0][-1]}")
        pending.append((idx[:real], b, trainers[b], states, losses, aux, real, form))
    all_losses = np.full(n, np.inf, np.float32)
    groups, auxes = [], []
    for idx, b, tr, states, losses, aux, real, _ in pending:
        all_losses[idx] = np.asarray(losses)[:real]
        auxes.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:real], aux))
        if real < chunk:
            states = jax.tree_util.tree_map(lambda a: a[:real], states)
        groups.append((idx, b, tr, states))
    all_aux = None
    if auxes[0] is not None:
        # The chunks hold the members in ``order``: concatenated, put back in the members' order.
        all_aux = jax.tree_util.tree_map(lambda *parts: np.concatenate(parts)[np.argsort(order)], *auxes)
    return BucketedResult(losses=all_losses, groups=groups, aux=all_aux)
