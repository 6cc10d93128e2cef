"""Cost of one hypergradient against one training run of the same length T.

Problem: a 32-64-10 tanh MLP, full-batch SGD with momentum on 512 synthetic
samples, hyperparameters learning rate and weight decay (n = 2 scalars).
For each T: wall time and process CPU time (medians of repeats, the
methods interleaved so that a shared machine's load hits them alike; compile
excluded) and compiled temporary memory
(``jax.jit(...).lower(...).compile().memory_analysis()``) of

* ``train``: one training run of T steps (``rollout``), then the validation loss;
* ``reverse``: ``unrolled(mode="reverse")`` (default
  ``step_policy="contractions"``: each step's input state and weight
  gradients kept, the step's activations recomputed in the backward pass);
* ``reverse-carry``: ``step_policy="carry"`` (only the input state kept, the
  whole step recomputed);
* ``reverse-all``: ``step_policy="all"`` (every residual kept, no recomputation);
* ``reverse+ckpt``: the default with ``checkpoint_every = round(sqrt(T))``;
* ``forward``: ``unrolled(mode="forward")``.

Targets (issue 5): reverse within 4x the training run's time; forward
within (n + 1) = 3x. The CPU-time ratio is the fairer one on a loaded machine.

Run:  python -m benchmarks.hypergrad_cost [--steps 100 400 1600] [--repeats 5] [--quick]
(``--quick``: T = 20 and 40, 2 repeats, a smoke run)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._common import parse_args, print_table, write_results
from jaxhpo.hypergrad import rollout, unrolled


def problem(seed=0, n=512, d=32, hidden=64, classes=10):
    rng = np.random.default_rng(seed)
    X = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    W = rng.normal(size=(d, classes))
    y = jnp.asarray(np.argmax(np.asarray(X) @ W + rng.normal(size=(n, classes)), axis=1), jnp.int32)
    Xv = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    yv = jnp.asarray(np.argmax(np.asarray(Xv) @ W + rng.normal(size=(n, classes)), axis=1), jnp.int32)
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"w1": jax.random.normal(k1, (d, hidden)) / d ** 0.5, "b1": jnp.zeros(hidden),
              "w2": jax.random.normal(k2, (hidden, classes)) / hidden ** 0.5, "b2": jnp.zeros(classes)}

    def loss(p, X, y):
        out = jnp.tanh(X @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()

    def step(state, h, t):
        p, v = state
        g = jax.grad(loss)(p, X, y)
        v = jax.tree_util.tree_map(lambda vi, gi, pi: 0.9 * vi + gi + h["wd"] * pi, v, g, p)
        return jax.tree_util.tree_map(lambda pi, vi: pi - h["lr"] * vi, p, v), v

    def val_loss(state, h):
        return loss(state[0], Xv, yv)

    state0 = (params, jax.tree_util.tree_map(jnp.zeros_like, params))
    hp = {"lr": jnp.float32(0.05), "wd": jnp.float32(1e-4)}
    return step, val_loss, state0, hp


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description="time and memory of one hypergradient vs one training run")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400, 1600])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="T = 20 and 40, 2 repeats (smoke run)")
    args = parse_args(ap, argv)
    if args.quick:
        args.steps, args.repeats = [20, 40], 2
    step, val_loss, state0, hp = problem()
    n_hp = 2
    rows = []
    for T in args.steps:
        k = max(1, round(math.sqrt(T)))
        fns = {
            "train": lambda h, s, T=T: val_loss(rollout(step, h, s, T), h),
            "reverse": unrolled(step, val_loss, T, mode="reverse"),
            "reverse-carry": unrolled(step, val_loss, T, mode="reverse", step_policy="carry"),
            "reverse-all": unrolled(step, val_loss, T, mode="reverse", step_policy="all"),
            "reverse+ckpt": unrolled(step, val_loss, T, mode="reverse", checkpoint_every=k),
            "forward": unrolled(step, val_loss, T, mode="forward"),
        }
        compiled, temp = {}, {}
        for name, fn in fns.items():
            compiled[name] = jax.jit(fn).lower(hp, state0).compile()
            mem = compiled[name].memory_analysis()
            temp[name] = int(mem.temp_size_in_bytes) if mem is not None else -1
            jax.block_until_ready(compiled[name](hp, state0))  # warm-up
        wall = {name: [] for name in fns}
        cpu = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, c in compiled.items():
                w, p = _timed(lambda: jax.block_until_ready(c(hp, state0)))
                wall[name].append(w)
                cpu[name].append(p)
        med = lambda xs: statistics.median(xs)
        base_w, base_c, base_m = med(wall["train"]), med(cpu["train"]), temp["train"]
        for name in fns:
            w, p = med(wall[name]), med(cpu[name])
            rows.append({
                "T": T, "method": name, "checkpoint_every": k if name == "reverse+ckpt" else "",
                "time_s": w, "time_ratio": w / base_w, "cpu_s": p, "cpu_ratio": p / base_c,
                "temp_MiB": temp[name] / 2 ** 20,
                "mem_ratio": temp[name] / base_m if base_m > 0 else float("nan"),
                "raw_wall_s": wall[name], "raw_cpu_s": cpu[name],
            })
            print(f"T={T:5d} {name:13s} wall {w * 1e3:9.2f} ms ({w / base_w:5.2f}x)  "
                  f"cpu {p * 1e3:9.2f} ms ({p / base_c:5.2f}x)  {temp[name] / 2 ** 20:8.3f} MiB", flush=True)
    print_table(rows, ["T", "method", "checkpoint_every", "time_s", "time_ratio", "cpu_s", "cpu_ratio",
                       "temp_MiB", "mem_ratio"],
                title=f"one hypergradient (n = {n_hp} hyperparameters) vs one training run, "
                      f"backend {jax.default_backend()}")
    write_results("hypergrad_cost", rows, extra={"num_hparams": n_hp, "targets": {
        "reverse_time_ratio_max": 4.0, "forward_time_ratio_max": n_hp + 1.0}})
    return rows


if __name__ == "__main__":
    main()
