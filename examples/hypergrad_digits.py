"""Learn an MLP's learning rate and weight decay by hypergradients, from 16 poor starts.

Data: scikit-learn's 8x8 digits (1797 images, 10 classes), split 1000 train /
400 validation / 397 test. Model: 64-64-10 tanh MLP, full-batch SGD with
momentum 0.9 and L2 weight decay, ``T`` steps. Hyperparameters:
``lr`` in [1e-4, 1] and ``wd`` in [1e-6, 1e-1], both log-scaled.

* Random search: 64 configurations, each one training run of ``T`` steps;
  score = validation cross-entropy after the run.
* Hypergradients: 16 members started from poor settings (``lr`` in
  [1e-4, 1e-3], ``wd`` in [1e-2, 1e-1]). Each member trains *once*: every
  ``K`` steps of training are unrolled, and the hypergradient of the
  validation loss after those ``K`` steps with respect to (logit-scaled) lr
  and wd updates the hyperparameters by Adam (``jaxhpo.hypergrad.
  gradient_tune`` with the model as the carry, ``unrolled`` for the
  window). Score = validation cross-entropy at the end of the run.

Costs are reported as wall time (both compiled, vmapped over the members,
compile excluded) and in training-run equivalents.

Run:  python examples/hypergrad_digits.py [--steps 400] [--window 20]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxhpo
from jaxhpo.hypergrad import gradient_tune, rollout, unrolled

SPACE = jaxhpo.Space(lr=jaxhpo.Float(1e-4, 1.0, log=True), wd=jaxhpo.Float(1e-6, 1e-1, log=True))
MOMENTUM = 0.9
HIDDEN = 64


def data(seed=0):
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    perm = np.random.default_rng(seed).permutation(len(X))
    X, y = X[perm], y[perm].astype(np.int32)
    return (X[:1000], y[:1000]), (X[1000:1400], y[1000:1400]), (X[1400:], y[1400:])


def init_params(key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (64, HIDDEN)) / 8.0,
        "b1": jnp.zeros(HIDDEN),
        "w2": jax.random.normal(k2, (HIDDEN, 10)) / HIDDEN ** 0.5,
        "b2": jnp.zeros(10),
    }


def logits(p, X):
    return jnp.tanh(X @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def xent(p, X, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(p, X), y).mean()


def accuracy(p, X, y):
    return jnp.mean(jnp.argmax(logits(p, X), -1) == y)


def make(train, val):
    Xt, yt = (jnp.asarray(a) for a in train)
    Xv, yv = (jnp.asarray(a) for a in val)

    def step(state, h, t):
        # SGD with heavy-ball momentum and coupled L2 weight decay.
        params, vel = state
        g = jax.grad(xent)(params, Xt, yt)
        g = jax.tree_util.tree_map(lambda gi, pi: gi + h["wd"] * pi, g, params)
        vel = jax.tree_util.tree_map(lambda v, gi: MOMENTUM * v + gi, vel, g)
        params = jax.tree_util.tree_map(lambda pi, v: pi - h["lr"] * v, params, vel)
        return params, vel

    def val_loss(state, h):
        return xent(state[0], Xv, yv)

    return step, val_loss


def initial_state(key):
    p = init_params(key)
    return p, jax.tree_util.tree_map(jnp.zeros_like, p)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400, help="training steps T per run")
    ap.add_argument("--window", type=int, default=20, help="steps K per hypergradient")
    ap.add_argument("--search", type=int, default=64, help="random-search configurations")
    ap.add_argument("--popsize", type=int, default=16, help="hypergradient members")
    ap.add_argument("--outer-lr", type=float, default=0.3, help="Adam step on logit(lr), logit(wd)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.steps % args.window:
        ap.error("--steps must be a multiple of --window")

    train, val, test = data(args.seed)
    step, val_loss = make(train, val)
    T, K = args.steps, args.window
    model_key = jax.random.key(args.seed)
    state0 = initial_state(model_key)  # the same initial weights for every run

    # ------------------------------------------------ random search, 64 runs
    def train_run(config):
        s = rollout(step, config, state0, T)
        return val_loss(s, config), s

    run_all = jax.jit(jax.vmap(train_run))
    u = SPACE.sample(jax.random.key(args.seed + 1), args.search)
    configs = SPACE.decode(u)
    jax.block_until_ready(run_all(configs))  # compile
    t0 = time.perf_counter()
    rs_vals, rs_states = jax.block_until_ready(run_all(configs))
    rs_time = time.perf_counter() - t0
    rs_vals = np.asarray(rs_vals)
    rs_vals = np.where(np.isfinite(rs_vals), rs_vals, np.inf)
    i = int(np.argmin(rs_vals))
    rs_best = SPACE.to_python({k: v[i] for k, v in configs.items()})
    rs_test = float(accuracy(jax.tree_util.tree_map(lambda a: a[i], rs_states[0]), *test))

    # ------------------------------------- hypergradients, 16 poor starts
    window = unrolled(step, val_loss, K, mode="reverse", return_state=True)

    def objective(config, state):
        # K more steps of this member's training run, and the exact
        # hypergradient of the validation loss after them.
        value, grads, new_state = window(config, state)
        return (value, grads), new_state

    g = np.sqrt(args.popsize).astype(int)
    lr0 = np.geomspace(1e-4, 1e-3, g)
    wd0 = np.geomspace(1e-2, 1e-1, args.popsize // g)
    poor = SPACE.encode({"lr": np.repeat(lr0, len(wd0)).astype(np.float32),
                         "wd": np.tile(wd0, len(lr0)).astype(np.float32)})
    carry0 = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (poor.shape[0],) + a.shape), state0)
    opt = optax.adam(args.outer_lr)
    tune = lambda: gradient_tune(objective, SPACE, init=poor, num_steps=T // K, optimizer=opt,
                                 carry=carry0, has_grad=True)
    tune()  # compile
    t0 = time.perf_counter()
    res = tune()
    hg_time = time.perf_counter() - t0
    final_vals = np.asarray(res.state["final_values"])
    j = int(np.argmin(np.where(np.isfinite(final_vals), final_vals, np.inf)))
    hg_final = SPACE.to_python(SPACE.decode(jnp.asarray(res.state["final_x"][j])))
    hg_test = float(accuracy(jax.tree_util.tree_map(lambda a: a[j], res.state["carry"][0]), *test))
    poor_start = SPACE.to_python(SPACE.decode(jnp.asarray(poor)))

    # One plain training run of T steps at each poor start, for reference.
    poor_vals = np.asarray(run_all(SPACE.decode(jnp.asarray(poor)))[0])

    # Cost in training-run equivalents: measured per-run wall time of the
    # vmapped random search sets the unit.
    unit = rs_time / args.search
    print(f"digits: train {len(train[1])}, val {len(val[1])}, test {len(test[1])}; "
          f"MLP 64-{HIDDEN}-10, SGD momentum {MOMENTUM}, T = {T} full-batch steps")
    print(f"\nrandom search ({args.search} configurations, one run each):")
    print(f"  best validation loss {rs_vals[i]:.4f} at lr={rs_best['lr']:.3g}, wd={rs_best['wd']:.3g}; "
          f"test accuracy {rs_test:.3f}")
    print(f"  training cost: {args.search} runs = {args.search * T} steps, {rs_time:.2f} s")
    print(f"\nhypergradients ({poor.shape[0]} members from poor starts, one run each, "
          f"hypergradient every {K} steps):")
    print(f"  poor starts: lr in [{lr0.min():.0e}, {lr0.max():.0e}], wd in [{wd0.min():.0e}, {wd0.max():.0e}]; "
          f"best validation loss of a plain run at a poor start {np.nanmin(poor_vals):.4f}")
    print(f"  best final validation loss {final_vals[j]:.4f}, member {j} "
          f"(started lr={poor_start[j]['lr']:.2g}, wd={poor_start[j]['wd']:.2g}; "
          f"ended lr={hg_final['lr']:.3g}, wd={hg_final['wd']:.3g}); test accuracy {hg_test:.3f}")
    print(f"  median final validation loss over members {np.median(final_vals):.4f}; "
          f"members below the random search's best: {int((final_vals <= rs_vals[i]).sum())}/{len(final_vals)}")
    print(f"  training cost: {poor.shape[0]} runs = {poor.shape[0] * T} steps (plus the backward passes), "
          f"{hg_time:.2f} s = {hg_time / unit:.1f} random-search run equivalents")
    print(f"\ncost ratio (hypergradients / random search, wall time): {hg_time / rs_time:.2f}")
    return {"rs_best": float(rs_vals[i]), "hg_best": float(final_vals[j]), "rs_time": rs_time, "hg_time": hg_time}


if __name__ == "__main__":
    main()
