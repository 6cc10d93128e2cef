"""Training many MLP configurations on digits: jaxhpo against Optuna and hand-written JAX.

The task: a one-hidden-layer ReLU MLP on the digits training split (1078
images, 64 features, 10 classes), ``STEPS`` full-batch Adam steps per
configuration; searched: width ``Int(8, 128)`` and learning rate
``Float(1e-3, 1e-1, log)``; a configuration's result is its validation
cross-entropy. Measured, in one run, configurations trained per second:

* ``jaxhpo bucketed``: ``jaxhpo.training.train_bucketed`` with
  ``MLPClassifierTrainer``: the population sorted by width, cut into chunks
  of ``--chunk`` members, each chunk one compiled program on the narrowest of
  a few fixed bucket widths that holds it (masks for the remainder). Within a
  chunk ``--chunk-size`` members train at once: 1 on a CPU (``lax.map``; XLA's
  batched matmuls are slower there than one at a time), the whole chunk
  (vmap) on a GPU. Warm (compiled once per bucket beforehand)
  and cold (compilation included, a fresh trainer).
* ``jaxhpo masked``: the whole population vmapped on the max-width masked
  network (``init_rung`` + ``continue_rung``), warm.
* ``optuna TPE``: one trial at a time, each a jitted JAX training with the
  width as a true array shape, so every new width compiles (what users do
  today). Compilation is part of its cost by construction.
* hand-written JAX, warm: ``vmap`` over masked max-width networks, ``lax.map``
  over them, and a Python loop calling one jitted masked network per
  configuration.

Run: ``python -m benchmarks.training_throughput [--sizes 64 256] [--steps 200]
[--optuna-trials 64]``. On a shared machine timings are noisy: other
processes' load shows up directly in every figure.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import print_table, write_results
from jaxhpo import Float, Int, Space
from jaxhpo.datasets_digits import digits_split
from jaxhpo.training import MLPClassifierTrainer, train_bucketed, width_buckets
from jaxhpo.training.trainer import continue_rung, init_rung

MAX_WIDTH = 128
SPACE = Space(width=Int(8, MAX_WIDTH), learning_rate=Float(1e-3, 1e-1, log=True))
SPLIT = digits_split(0)
XT, YT = jnp.asarray(SPLIT["X_train"]), jnp.asarray(SPLIT["y_train"])
XV, YV = jnp.asarray(SPLIT["X_val"]), jnp.asarray(SPLIT["y_val"])


def _block(x):
    return jax.block_until_ready(x)


# --------------------------------------------------------------- hand-written JAX
def _init_params(key, width_alloc, width):
    k1, k2 = jax.random.split(key)
    return {"w1": jax.random.normal(k1, (64, width_alloc)) * jnp.sqrt(2.0 / 64), "b1": jnp.zeros(width_alloc),
            "w2": jax.random.normal(k2, (width_alloc, 10)) * jnp.sqrt(1.0 / width), "b2": jnp.zeros(10)}


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


# --------------------------------------------------------------------- optuna
def optuna_tpe(num_trials, steps, seed):
    """TPE one configuration at a time; the width is a true shape (recompiles per width)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # One jitted function; a new width is a new shape, so jit compiles again.
    train = jax.jit(lambda key, p, lr: _true_shape_train(key, p, lr, steps))

    def objective(trial):
        width = trial.suggest_int("width", 8, MAX_WIDTH)
        lr = trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True)
        key = jax.random.key(trial.number)
        p = _init_params(key, width, width)
        return float(train(key, p, jnp.float32(lr)))

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=num_trials)
    return time.perf_counter() - t0, len({t.params["width"] for t in study.trials})


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
    ap.add_argument("--chunk", type=int, default=8, help="members per bucketed program")
    ap.add_argument("--buckets", type=int, default=8, help="number of bucket widths")
    ap.add_argument("--chunk-size", type=int, default=1,
                    help="within a chunk, members trained at once (lax.map); 1 (default) suits a CPU, where batched matmuls run slower than one at a time; on a GPU pass 0 to vmap the whole chunk")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-hand", action="store_true", help="skip the hand-written baselines")
    args = ap.parse_args(argv)
    args.chunk_size = args.chunk_size or None  # 0: vmap the whole chunk
    steps = args.steps
    buckets = width_buckets(MAX_WIDTH, args.buckets)
    rows = []

    def add(method, n, seconds, note=""):
        rows.append(dict(method=method, configs=n, seconds=seconds, configs_per_s=n / seconds,
                         ms_per_config=1000 * seconds / n, note=note))
        print(f"  {method:<22} n={n:<5} {seconds:8.2f} s  {n / seconds:8.2f} configs/s", flush=True)

    # Optuna first: per-configuration cost, independent of the population size.
    t, distinct = optuna_tpe(args.optuna_trials, steps, args.seed)
    add("optuna TPE (1 at a time)", args.optuna_trials, t, f"{distinct} distinct widths compiled")

    for n in args.sizes:
        key = jax.random.key(args.seed + n)
        x = SPACE.sample(key, n)
        hp = SPACE.decode(x)
        keys = jax.random.split(jax.random.fold_in(key, 1), n)
        widths, lrs = hp["width"], hp["learning_rate"]
        mean_w = float(np.mean(np.asarray(widths)))

        # jaxhpo, cold: a trainer whose programs were never compiled (distinct data digest via steps).
        def bucketed(steps_):
            out = train_bucketed(lambda w: make_trainer(w, steps_), keys, hp, 1, buckets=buckets,
                                 chunk=args.chunk, chunk_size=args.chunk_size)
            return out.losses

        t0 = time.perf_counter()
        losses = bucketed(steps)
        add("jaxhpo bucketed (cold)", n, time.perf_counter() - t0,
            f"buckets {buckets}, chunk {args.chunk}, chunk_size {args.chunk_size}; compile included")
        t0 = time.perf_counter()
        losses = bucketed(steps)
        add("jaxhpo bucketed (warm)", n, time.perf_counter() - t0, f"mean width {mean_w:.0f}")
        assert np.all(np.isfinite(losses))

        tr = make_trainer(MAX_WIDTH, steps)

        def masked():
            return _block(continue_rung(tr, init_rung(tr, keys, hp), hp, np.int32(1))[1])

        masked()
        t0 = time.perf_counter()
        masked()
        add("jaxhpo masked (warm)", n, time.perf_counter() - t0, f"all at width {MAX_WIDTH}")

        if not args.skip_hand:
            for name, fn in (("hand vmap masked", hand_vmap(steps)), ("hand lax.map masked", hand_lax_map(steps)),
                             ("hand loop masked", hand_loop(steps))):
                _block(fn(keys[:1] if name == "hand loop masked" else keys, widths[:1] if name == "hand loop masked"
                          else widths, lrs[:1] if name == "hand loop masked" else lrs))
                t0 = time.perf_counter()
                _block(fn(keys, widths, lrs))
                add(name, n, time.perf_counter() - t0, f"all at width {MAX_WIDTH}, warm")

    optuna_rate = rows[0]["configs_per_s"]
    for r in rows:
        r["x_optuna"] = r["configs_per_s"] / optuna_rate
    print_table(rows, ["method", "configs", "seconds", "configs_per_s", "ms_per_config", "x_optuna", "note"],
                title=f"digits MLP, {steps} full-batch Adam steps per configuration, width in [8, {MAX_WIDTH}] "
                      f"({jax.default_backend()})")
    write_results("training_throughput", rows, extra=dict(steps=steps, sizes=args.sizes, buckets=list(buckets),
                                                            chunk=args.chunk, max_width=MAX_WIDTH),
                  packages=("optuna",))


if __name__ == "__main__":
    main()
