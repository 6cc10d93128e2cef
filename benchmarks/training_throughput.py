"""Training many MLP configurations on digits: jaxhpo against Optuna and hand-written JAX.

The task: a one-hidden-layer ReLU MLP on the digits training split (1078
images, 64 features, 10 classes), ``STEPS`` full-batch Adam steps per
configuration; searched: width ``Int(8, 128)`` and learning rate
``Float(1e-3, 1e-1, log)``; a configuration's result is its validation
cross-entropy. Every arm trains the same configurations: those Optuna's
first study proposed, in its order (repeated beyond its trials), so the
same FLOPs (TPE proposes wider networks than a uniform draw). Measured, in
one run, configurations trained per second:

* ``jaxhpo bucketed``: ``jaxhpo.training.train_bucketed`` with
  ``MLPClassifierTrainer``: the population sorted by width, cut into chunks
  of ``--chunk`` members (16 by default), each chunk one compiled program
  on the narrowest of a few fixed bucket widths that holds its widest member
  (masks for the remainder), vmapped (``--chunk-size 0``; ``1``: one member
  at a time, ``lax.map``). Cold (compilation included: every compiled program is
  dropped first, ``jax.clear_caches()``, since trainers that compare equal
  share programs and each bucket's program fits every population size), on
  ``bucket_count(n)`` buckets (``--buckets``: a fixed count): each program
  compiled costs about 8 widest members' training here, so a small
  population gets few buckets; and warm, on ``--warm-buckets`` (8) buckets
  compiled beforehand: programs reused over populations cost no compile,
  so the count that wastes the fewest FLOPs.
* ``jaxhpo masked``: the whole population vmapped on the max-width masked
  network (``init_rung`` + ``continue_rung``), warm.
* ``optuna TPE``: one trial at a time, each a jitted JAX training with the
  width as a true array shape, so every new width compiles (what users do
  today). Compilation is part of its cost by construction.
* ``optuna TPE (warm)``: the same study again (same seed, same widths),
  every width's program already compiled: Optuna's cost without compiling.
* ``optuna TPE masked (warm)``: TPE over one jitted masked max-width network
  (what a user who masks writes), compiled beforehand.
* hand-written JAX, warm: ``vmap`` over masked max-width networks, ``lax.map``
  over them, a Python loop calling one jitted masked network per
  configuration, a Python loop calling each configuration's bucket's
  jitted network (the same bucket widths as jaxhpo's warm row), and
  jaxhpo's bucketing written by hand (sorted by width, chunks of
  ``--chunk`` vmapped, each at the bucket of its widest member).

Ratios to Optuna compare like with like: rows that compile (``cold``,
Optuna's first study and its estimate) against Optuna's first study, warm
rows against its warm study.

Every row has wall seconds and process CPU seconds (all threads; less
sensitive to other processes' load on a shared machine than wall time).

Large populations: ``--baseline-max N`` times the hand-written baselines
and ``jaxhpo masked`` on the first ``N`` configurations only (their cost is
linear in the count; the rows say so). Optuna runs ``--optuna-trials``
trials per study; its row for each size up to that is the time to the end
of the study's trial of that number (TPE proposes trial by trial, so these
are the studies of each size). For a size beyond it an extra row
extrapolates *in Optuna's favour*: every further trial is assumed to
compile nothing and to cost the warm study's mean trial (the true cost is
higher while new widths appear, up to the 121 possible).

Run: ``python -m benchmarks.training_throughput [--sizes 64] [--steps 200]
[--optuna-trials 64] [--baseline-max N] [--repeats 1] [--quick]`` (the defaults; the
results page's table: ``--sizes 64 256 1024 --optuna-trials 1024 --baseline-max 256
--repeats 1``). On a shared machine timings are
noisy: other processes' load shows up directly in every figure.
"""

from __future__ import annotations

import argparse
import gc
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import parse_args, print_table, write_results
from jaxhpo.datasets_digits import digits_split
from jaxhpo.training import MLPClassifierTrainer, bucket_count, train_bucketed, width_buckets
from jaxhpo.training.trainer import continue_rung, init_rung

MAX_WIDTH = 128
SPLIT = digits_split(0)
XT, YT = jnp.asarray(SPLIT["X_train"]), jnp.asarray(SPLIT["y_train"])
XV, YV = jnp.asarray(SPLIT["X_val"]), jnp.asarray(SPLIT["y_val"])


def _block(x):
    return jax.block_until_ready(x)


# --------------------------------------------------------------- hand-written JAX
def _init_params(key, width_alloc, width):
    # Drawn at the largest width and cut: a unit's weights do not depend on
    # the allocated width, so every hand-written form trains the same models.
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (64, MAX_WIDTH))[:, :width_alloc] * jnp.sqrt(2.0 / 64),
            "b1": jnp.zeros(width_alloc),
            "w2": jax.random.normal(k2, (MAX_WIDTH, 10))[:width_alloc] * jnp.sqrt(1.0 / width), "b2": jnp.zeros(10)}


def _loss(p, X, y, mask):
    h = jax.nn.relu(X @ p["w1"] + p["b1"]) * mask
    return optax.softmax_cross_entropy_with_integer_labels(h @ p["w2"] + p["b2"], y).mean()


def _train_one(key, width, lr, steps, width_alloc):
    """One configuration on a ``width_alloc``-wide network masked to ``width``."""
    mask = (jnp.arange(width_alloc) < width).astype(jnp.float32)
    p = _init_params(key, width_alloc, width)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    s = tx.init(p)

    def body(_, c):
        p, s = c
        u, s = tx.update(jax.grad(_loss)(p, XT, YT, mask), s, p)
        return optax.apply_updates(p, u), s

    p, _ = jax.lax.fori_loop(0, steps, body, (p, s))
    return _loss(p, XV, YV, mask)


def hand_vmap(steps):
    return jax.jit(jax.vmap(lambda k, w, lr: _train_one(k, w, lr, steps, MAX_WIDTH)))


def hand_lax_map(steps):
    return jax.jit(lambda k, w, lr: jax.lax.map(lambda a: _train_one(*a, steps, MAX_WIDTH), (k, w, lr)))


def hand_loop(steps):
    one = jax.jit(lambda k, w, lr: _train_one(k, w, lr, steps, MAX_WIDTH))
    return lambda keys, widths, lrs: [one(keys[i], widths[i], lrs[i]) for i in range(len(widths))]


# Module level: every population size shares the bucket programs.
@partial(jax.jit, static_argnames=("steps", "alloc"))
def _bucket_run(key, width, lr, steps, alloc):
    return _train_one(key, width, lr, steps, alloc)


def hand_bucket_loop(steps, buckets):
    """A Python loop, each configuration on the narrowest of ``buckets`` that
    holds it (one jitted network per bucket width, masked within it): the
    hand-written form of jaxhpo's bucketing."""
    def run(keys, widths, lrs):
        allocs = [next(b for b in buckets if b >= w) for w in np.asarray(widths).tolist()]
        return [_bucket_run(keys[i], widths[i], lrs[i], steps=steps, alloc=a) for i, a in enumerate(allocs)]

    return run


@partial(jax.jit, static_argnames=("steps", "alloc"))
def _bucket_vmap(keys, widths, lrs, steps, alloc):
    return jax.vmap(lambda k, w, lr: _train_one(k, w, lr, steps, alloc))(keys, widths, lrs)


def hand_vmap_buckets(steps, buckets, chunk):
    """The members sorted by width and cut into chunks of ``chunk`` (the last
    padded), each chunk vmapped on the narrowest of ``buckets`` that holds its
    widest member (one jitted program per bucket width): jaxhpo's bucketing,
    written by hand."""
    def run(keys, widths, lrs):
        w = np.asarray(widths)
        order = np.argsort(w, kind="stable")
        parts = []
        for s in range(0, len(w), chunk):
            part = order[s:s + chunk]
            b = next(b for b in buckets if b >= w[part].max())
            j = jnp.asarray(np.concatenate([part, np.full(chunk - len(part), part[-1])]))
            parts.append((part, _bucket_vmap(keys[j], widths[j], lrs[j], steps=steps, alloc=b)))
        out = np.empty(len(w), np.float32)
        for part, losses in parts:  # read once everything is queued
            out[part] = np.asarray(losses)[:len(part)]
        return out

    return run


# --------------------------------------------------------------------- optuna
# Module level, so that a second study reuses what the first compiled (as a
# user's module-level jit would). Initialisation is inside the compiled
# program: done eagerly it compiles again for every new shape.
@partial(jax.jit, static_argnames=("width", "steps"))
def _true_shape_run(key, lr, width, steps):
    return _true_shape_train(key, _init_params(key, width, width), lr, steps)


@partial(jax.jit, static_argnames="steps")
def _masked_run(key, width, lr, steps):
    return _train_one(key, width, lr, steps, MAX_WIDTH)


def optuna_tpe(num_trials, steps, seed, masked=False):
    """TPE one configuration at a time. Returns ``(walls, cpus, distinct, configs)``:
    wall and CPU seconds from the study's start to the end of each trial
    (``(num_trials,)`` each), the distinct widths met by each trial, and
    each trial's ``(width, learning_rate)``. The width is a true array
    shape (every new width compiles), or with ``masked`` a mask on one
    max-width network (one compiled program). TPE proposes trial by trial,
    so a study's first ``n`` trials are those of a study of ``n`` trials:
    one study times every prefix."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        width = trial.suggest_int("width", 8, MAX_WIDTH)
        lr = jnp.float32(trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True))
        key = jax.random.key(trial.number)
        if masked:
            return float(_masked_run(key, jnp.int32(width), lr, steps))
        return float(_true_shape_run(key, lr, width, steps))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    seen, walls, cpus, distinct, configs = set(), [], [], [], []
    t0, c0 = time.perf_counter(), time.process_time()

    def callback(study, trial):
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        seen.add(trial.params["width"])
        distinct.append(len(seen))
        configs.append((trial.params["width"], trial.params["learning_rate"]))

    study.optimize(objective, n_trials=num_trials, callbacks=[callback])
    return walls, cpus, distinct, configs


def _true_shape_train(key, p, lr, steps):
    mask = jnp.ones(p["b1"].shape, jnp.float32)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    s = tx.init(p)

    def body(_, c):
        p, s = c
        u, s = tx.update(jax.grad(_loss)(p, XT, YT, mask), s, p)
        return optax.apply_updates(p, u), s

    p, _ = jax.lax.fori_loop(0, steps, body, (p, s))
    return _loss(p, XV, YV, mask)


# --------------------------------------------------------------------- jaxhpo
def make_trainer(width, steps):
    return MLPClassifierTrainer(SPLIT["X_train"], SPLIT["y_train"], SPLIT["X_val"], SPLIT["y_val"],
                                max_width=width, max_depth=1, optimizers=("adam",), steps_per_unit=steps,
                                num_classes=10)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--optuna-trials", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16,
                    help="members per bucketed program (16, default; on a GPU pass a few hundred); a chunk "
                         "trains at the bucket that holds its widest member")
    ap.add_argument("--buckets", type=int, default=0,
                    help="number of bucket widths for the cold rows; 0 (default): bucket_count(population)")
    ap.add_argument("--warm-buckets", type=int, default=8,
                    help="number of bucket widths for the warm rows (compiled beforehand) and the hand-written "
                         "bucketed loop")
    ap.add_argument("--chunk-size", type=int, default=0,
                    help="within a chunk, members trained at once (lax.map over vmapped groups); 0 (default): "
                         "the whole chunk vmapped; 1: one at a time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hand", action="store_true", help="skip the hand-written baselines")
    ap.add_argument("--repeats", type=int, default=1, help="warm timings: the median of this many runs")
    ap.add_argument("--baseline-max", type=int, default=None,
                    help="time the hand-written baselines and jaxhpo masked on at most this many configurations")
    ap.add_argument("--quick", action="store_true",
                    help="16 configurations of 20 steps, 4 Optuna trials (smoke run)")
    args = parse_args(ap, argv, rivals=("optuna",))
    if args.quick:
        args.sizes, args.steps, args.optuna_trials = [16], 20, 4
    args.chunk_size = args.chunk_size or None  # 0: vmap the whole chunk
    steps = args.steps
    warm_buckets = width_buckets(MAX_WIDTH, args.warm_buckets)
    cold_buckets = {n: width_buckets(MAX_WIDTH, args.buckets or bucket_count(n)) for n in args.sizes}
    rows = []

    def add(method, n, seconds, note="", cpu=None, population=None, repeats=None, warm=True):
        rows.append(dict(method=method, warm=warm, population=population or n, configs=n, seconds=seconds,
                         seconds_each=repeats or [seconds],
                         configs_per_s=n / seconds, ms_per_config=1000 * seconds / n,
                         cpu_ms_per_config=None if cpu is None else 1000 * cpu / n, note=note))
        print(f"  {method:<26} n={n:<5} {seconds:8.2f} s  {n / seconds:8.2f} configs/s"
              + ("" if cpu is None else f"  cpu {cpu:8.2f} s"), flush=True)

    def timed(fn, repeats=1):
        """``fn()``'s output, the median wall and CPU seconds over ``repeats``
        calls, and every call's wall seconds."""
        walls, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return out, float(np.median(walls)), float(np.median(cpus)), walls

    # JAX's own first-use costs (backend, the first dispatch) fall on no arm.
    _block(jax.jit(lambda x: x + 1)(jnp.ones(3)))
    # Optuna first. Each study's prefixes give its rows for the sizes it covers.
    optuna_base = {}  # (warm, configs) -> the Optuna row a jaxhpo row is compared with
    studies = (("optuna TPE (1 at a time)", False, False, "{d} distinct widths compiled"),
               # The same study again (same seed, so the same widths): every
               # program is compiled, as for jaxhpo's warm rows.
               ("optuna TPE (warm)", True, False, "second study: every width already compiled"),
               # What a user who masks writes: one max-width network, compiled once (excluded here).
               ("optuna TPE masked (warm)", True, True, f"one masked network at width {MAX_WIDTH}"))
    prefixes = sorted({n for n in args.sizes if n < args.optuna_trials} | {args.optuna_trials})
    for method, warm, masked, note in studies:
        if masked:
            _block(_masked_run(jax.random.key(0), jnp.int32(8), jnp.float32(0.01), steps))
        walls, cpus, distinct, configs = optuna_tpe(args.optuna_trials, steps, args.seed, masked=masked)
        if not warm:
            proposed = configs  # what every other arm trains
        elif not masked:
            warm_trial_s = walls[-1] / len(walls)  # a trial with nothing to compile
        for n in prefixes:
            add(method, n, walls[n - 1], note.format(d=distinct[n - 1]), cpus[n - 1], warm=warm)
            if not masked:
                optuna_base.setdefault((warm, n), rows[-1])
    optuna_row = optuna_base[(False, args.optuna_trials)]
    optuna_warm_row = optuna_base[(True, args.optuna_trials)]
    # Optuna's studies leave a large heap: Python's collector then walks it
    # often during the many small calls that follow, which slowed every later
    # arm's first timings by up to 1.8x. Moved out of the collector's way.
    gc.collect()
    gc.freeze()

    for n in args.sizes:
        key = jax.random.key(args.seed + n)
        # Optuna's first study's configurations, in its order (repeated past
        # its trials): every arm trains the same widths, so the same FLOPs.
        # (TPE proposes wider networks than a uniform draw as it learns that
        # width helps: mean 80 against 68 over the first 64.)
        chosen = [proposed[i % len(proposed)] for i in range(n)]
        hp = {"width": jnp.asarray([c[0] for c in chosen], jnp.int32),
              "learning_rate": jnp.asarray([c[1] for c in chosen], jnp.float32)}
        keys = jax.random.split(jax.random.fold_in(key, 1), n)
        widths, lrs = hp["width"], hp["learning_rate"]
        mean_w = float(np.mean(np.asarray(widths)))

        def bucketed(buckets):
            out = train_bucketed(lambda w: make_trainer(w, steps), keys, hp, 1, buckets=buckets, chunk=args.chunk,
                                 chunk_size=args.chunk_size)
            return out.losses

        if n > args.optuna_trials:
            est = optuna_row["seconds"] + (n - args.optuna_trials) * warm_trial_s
            add("optuna TPE (est., favoured)", n, est,
                f"{args.optuna_trials} measured + {n - args.optuna_trials} x {1000 * warm_trial_s:.0f} ms "
                "(the warm study's mean trial: no further compiles assumed)", warm=False)
            optuna_base[(False, n)] = rows[-1]

        # Cold: nothing compiled. An equal trainer shares the programs an
        # earlier size compiled (one per bucket, whatever the population).
        jax.clear_caches()
        losses, t, c, each = timed(lambda: bucketed(cold_buckets[n]))
        add("jaxhpo bucketed (cold)", n, t,
            f"buckets {cold_buckets[n]}, chunk {args.chunk}, chunk_size {args.chunk_size}; compile included", c,
            repeats=each, warm=False)
        if cold_buckets[n] != warm_buckets:
            bucketed(warm_buckets)  # compiled beforehand
        losses, t, c, each = timed(lambda: bucketed(warm_buckets), args.repeats)
        add("jaxhpo bucketed (warm)", n, t, f"buckets {warm_buckets}; mean width {mean_w:.0f}", c, repeats=each)
        assert np.all(np.isfinite(losses))

        # Baselines whose cost is linear in the count: optionally timed on a prefix.
        b = n if args.baseline_max is None else min(n, args.baseline_max)
        sub = "" if b == n else f"; timed on the first {b} of {n}"
        bkeys, bhp = keys[:b], {k: v[:b] for k, v in hp.items()}
        tr = make_trainer(MAX_WIDTH, steps)

        def masked():
            return _block(continue_rung(tr, init_rung(tr, bkeys, bhp), bhp, np.int32(1))[1])

        masked()
        masked_losses, t, c, each = timed(masked, args.repeats)
        # Bucketed and masked training compute the same models (a member's
        # initial weights do not depend on the network's width): the losses
        # differ by the order of floating-point sums, which Adam's first,
        # sign-like steps amplify on tiny gradients (1e-4 after one step).
        gap = float(np.max(np.abs(np.asarray(masked_losses) - losses[:b]) / np.maximum(np.abs(losses[:b]), 1e-6)))
        add("jaxhpo masked (warm)", b, t, f"all at width {MAX_WIDTH}{sub}; losses within {gap:.1e} "
            "relative of bucketed", c, population=n, repeats=each)

        if not args.skip_hand:
            bw, blr = widths[:b], lrs[:b]
            for name, fn in (("hand vmap masked", hand_vmap(steps)), ("hand lax.map masked", hand_lax_map(steps)),
                             ("hand loop masked", hand_loop(steps))):
                one = name == "hand loop masked"
                _block(fn(bkeys[:1] if one else bkeys, bw[:1] if one else bw, blr[:1] if one else blr))
                _, t, c, each = timed(lambda: _block(fn(bkeys, bw, blr)), args.repeats)
                add(name, b, t, f"all at width {MAX_WIDTH}, warm{sub}", c, population=n, repeats=each)
            loop = hand_bucket_loop(steps, warm_buckets)
            for width in warm_buckets:  # each bucket compiled
                _block(_bucket_run(bkeys[0], jnp.int32(width), blr[0], steps=steps, alloc=width))
            bucket_losses, t, c, each = timed(lambda: _block(loop(bkeys, bw, blr)), args.repeats)
            # The same models as the masked loop's (initial weights drawn alike).
            masked_ref = np.asarray(_block(hand_loop(steps)(bkeys, bw, blr)))
            gap = float(np.max(np.abs(np.asarray(bucket_losses) - masked_ref) / np.maximum(np.abs(masked_ref), 1e-6)))
            add("hand loop bucketed", b, t, f"each at its own bucket width, warm{sub}; losses within {gap:.1e} "
                "relative of hand loop masked", c, population=n, repeats=each)
            vloop = hand_vmap_buckets(steps, warm_buckets, args.chunk)
            for width in warm_buckets:  # each bucket compiled
                one = jnp.zeros(args.chunk, jnp.int32)
                _block(_bucket_vmap(bkeys[one], jnp.full(args.chunk, width, jnp.int32), blr[one], steps=steps,
                                    alloc=width))
            vbucket_losses, t, c, each = timed(lambda: vloop(bkeys, bw, blr), args.repeats)
            gap = float(np.max(np.abs(vbucket_losses - masked_ref) / np.maximum(np.abs(masked_ref), 1e-6)))
            add("hand vmap bucketed", b, t, f"sorted chunks of {args.chunk} vmapped, warm{sub}; "
                f"losses within {gap:.1e} relative of hand loop masked", c, population=n, repeats=each)

    # Cold rows against Optuna's first study, warm rows against its second
    # (compiling on both sides or on neither), each at the same number of
    # configurations where Optuna ran that many (else its estimate, or its
    # warm rate over all its trials).
    for r in rows:
        n = r["population"]
        base = optuna_base.get((r["warm"], n), optuna_warm_row if r["warm"] else optuna_row)
        r["x_optuna"] = r["configs_per_s"] / base["configs_per_s"]
        if r["cpu_ms_per_config"] is not None and base["cpu_ms_per_config"] is not None:
            r["cpu_x_optuna"] = base["cpu_ms_per_config"] / r["cpu_ms_per_config"]
    print_table(rows, ["method", "warm", "population", "configs", "seconds", "configs_per_s", "ms_per_config",
                       "cpu_ms_per_config", "x_optuna", "cpu_x_optuna", "note"],
                title=f"digits MLP, {steps} full-batch Adam steps per configuration, width in [8, {MAX_WIDTH}] "
                      f"({jax.default_backend()})")
    write_results("training_throughput", rows, extra=dict(steps=steps, sizes=args.sizes, warm_buckets=list(warm_buckets),
                                                            cold_buckets={n: list(b) for n, b in cold_buckets.items()},
                                                            chunk=args.chunk, max_width=MAX_WIDTH),
                  packages=("optuna",))


if __name__ == "__main__":
    main()
