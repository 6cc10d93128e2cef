"""Learn an MLP's learning rate and weight decay by hypergradients, from 16 poor starts.

Data: the 8x8 digits shipped with jaxhpo (``jaxhpo.load_digits``, the same
1797 images as scikit-learn's), shuffled by the seed and split 1000 train /
400 validation / 397 test. Model: 64-64-10 tanh MLP, the same initial weights
for every run of a seed, full-batch SGD with heavy-ball momentum 0.9 and L2
weight decay, ``T`` steps per run. Hyperparameters: ``lr`` in [1e-4, 1] and
``wd`` in [1e-6, 1e-1], both log-scaled. Score: validation cross-entropy of
the model at the end of its ``T``-step run.

* Random search: 64 configurations drawn uniformly from the (log) ranges,
  one run of ``T`` steps each at constant hyperparameters; the winner is the
  run with the lowest validation loss.
* Hypergradients, from 16 poor starts (``lr`` in [1e-4, 1e-3], ``wd`` in
  [1e-2, 1e-1], a 4 x 4 grid), in two stages, both
  ``jaxhpo.hypergrad.gradient_tune`` fed exact reverse-mode hypergradients
  by ``jaxhpo.hypergrad.unrolled``, Adam hyper-steps with ``b1 = 0.5``,
  ``b2 = 0.9`` (the hypergradient's size falls by orders of magnitude as a
  model trains; a long second-moment memory would freeze the steps):

  1. Search (online, cheap, greedy): each member trains only ``S = T / 4``
     steps; every ``K = 10`` steps are unrolled, and the hypergradient of the
     validation loss after them moves that member's lr and wd (logit of the
     cube coordinate, i.e. multiplicative steps). This climbs out of the poor
     region in a few windows, but short windows are biased towards small
     learning rates and weight decays (they see only the next ``K`` steps),
     so it stalls near lr ~ 0.5 however long it runs.
  2. Refinement (full horizon): the best member by validation loss (``keep =
     1``) goes on from where it ended. Each of ``R = 4`` rounds is one
     complete ``T``-step run from the initial weights at constant lr and wd,
     unrolled in full: the exact gradient of the very quantity being compared
     (validation loss after ``T`` steps), which carries no short-horizon
     bias, moves lr and wd by one projected Adam step on the cube coordinate
     (``transform="clip"``: steps of a fixed size in log lr / log wd, and the
     upper bound lr = 1, where the optimum lies here, is reachable). The
     winner is the best of these ``R`` runs by validation loss: a model
     trained for ``T`` steps at constant hyperparameters, exactly like a
     random-search run.

Cost, counted for both methods:

* training-step equivalents: a random-search run costs ``T`` steps. Every
  step of the hypergradient method runs inside a reverse-mode hypergradient
  (its forward pass, the recomputation of the step and the transposed,
  second-order pass). The example measures, per seed, what a step costs in
  plain steps for each kind (a ``K``-step window, vmapped over the 16
  members; a full ``T``-step run) and charges ``max(measured, 4)`` per step
  (measured about 3-4 on two CPU cores, so the floor of 4 usually applies).
  Nothing else is free: the search's discarded members are
  counted in full.
* wall time and process CPU time of the compiled computations, compile
  excluded (random search runs one configuration at a time, its fastest way
  on the CPU; the hypergradient members are vmapped).

Both winners are also scored on the 397 test images (cross-entropy and
accuracy), which neither method saw.

Run:  python examples/hypergrad_digits.py [--seeds 0 1 2] [--steps 400]
Writes the raw figures to benchmarks/results/hypergrad_digits.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxhpo
from jaxhpo.hypergrad import gradient_tune, rollout, unrolled

SPACE = jaxhpo.Space(lr=jaxhpo.Float(1e-4, 1.0, log=True), wd=jaxhpo.Float(1e-6, 1e-1, log=True))
MOMENTUM = 0.9
HIDDEN = 64
# A hypergradient step is charged at least this many plain training steps.
MIN_HYPERGRAD_COST = 4.0
RESULTS = Path(os.environ.get("JAXHPO_BENCH_RESULTS", Path(__file__).resolve().parent.parent / "benchmarks" / "results")
               ) / "hypergrad_digits.json"


def data(seed=0):
    """``(train, val, test)``, each ``(X float32 (n, 64) in [0, 1], y int32 (n,))``: 1000 / 400 / 397."""
    X, y = jaxhpo.load_digits()
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
    """``step(state, h, t) -> state`` (one full-batch step) and ``val_loss(state, h) -> ()``."""
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


def poor_starts(popsize=16):
    """``(popsize, 2)`` cube points: a grid over lr in [1e-4, 1e-3] x wd in [1e-2, 1e-1]."""
    g = int(round(np.sqrt(popsize)))
    if g * g != popsize:
        raise ValueError(f"popsize must be a square, got {popsize}")
    lr0, wd0 = np.geomspace(1e-4, 1e-3, g), np.geomspace(1e-2, 1e-1, g)
    return np.asarray(SPACE.encode({"lr": np.repeat(lr0, g).astype(np.float32),
                                    "wd": np.tile(wd0, g).astype(np.float32)}))


def _broadcast(state, n):
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), state)


def _timed(fn):
    """Run ``fn`` once to compile, then once timed; returns ``(result, (wall seconds, process CPU seconds))``."""
    jax.block_until_ready(fn())
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn())
    return out, (time.perf_counter() - t0, time.process_time() - c0)


def _take(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def random_search(step, val_loss, state0, test, *, steps, num, key):
    """``num`` runs of ``steps`` steps at uniformly drawn configurations; the best by validation loss.

    The runs go one at a time through one compiled run: on the CPU that took
    about 0.75x the wall time of vmapping all 64 at once, so the wall time is
    random search's best case.
    """
    configs = SPACE.decode(SPACE.sample(key, num))
    run_one = jax.jit(lambda c: (lambda s: (val_loss(s, c), s[0]))(rollout(step, c, state0, steps)))

    def run_all():
        vals, best, best_params = [], np.inf, None
        for i in range(num):
            v, params = run_one(_take(configs, i))
            v = float(v)  # waits for the run
            vals.append(v if np.isfinite(v) else np.inf)
            if vals[-1] < best:
                best, best_params = vals[-1], params
        return np.asarray(vals), best_params

    (vals, params), secs = _timed(run_all)
    i = int(np.argmin(vals))
    return {
        "val_loss": float(vals[i]),
        "test_loss": float(xent(params, *test)),
        "test_acc": float(accuracy(params, *test)),
        "config": SPACE.to_python(_take(configs, i)),
        "steps": num * steps, "wall_s": secs[0], "cpu_s": secs[1],
        "all_val_losses": vals.tolist(),
    }


def hypergradient_tuning(step, val_loss, state0, test, *, steps, popsize, window, search_steps, search_optimizer,
                         search_transform, keep, rounds, refine_optimizer, refine_transform):
    """Stage 1: ``popsize`` poor starts tuned online for ``search_steps`` steps, a hypergradient every
    ``window`` steps. Stage 2: the best ``keep`` go on; ``rounds`` full ``steps``-step runs each, from the
    initial weights at constant hyperparameters, each giving the exact hypergradient of its final
    validation loss for one more step."""
    dec = lambda x: SPACE.to_python(SPACE.decode(jnp.asarray(x)))

    # ---- stage 1: online search, every member continues one training run.
    win = unrolled(step, val_loss, window, mode="reverse", return_state=True)

    def search_objective(config, state):
        # ``window`` more steps of this member's run, and the exact
        # hypergradient of the validation loss after them.
        value, grads, new_state = win(config, state)
        return (value, grads), new_state

    poor = poor_starts(popsize)
    search, search_s = _timed(lambda: gradient_tune(
        search_objective, SPACE, init=poor, num_steps=search_steps // window, optimizer=search_optimizer,
        carry=_broadcast(state0, popsize), has_grad=True, transform=search_transform))
    search_vals = np.where(np.isfinite(search.state["final_values"]), search.state["final_values"], np.inf)
    chosen = np.argsort(search_vals, kind="stable")[:keep]
    start = np.asarray(search.state["final_x"])[chosen]  # what the chosen members trained with last

    # ---- stage 2: full-horizon hypergradients of constant hyperparameters.
    full = unrolled(step, val_loss, steps, mode="reverse", return_state=True)

    def refine_objective(config, best):
        # One complete T-step run from the initial weights, and the exact
        # gradient of its final validation loss in (lr, wd). The carry only
        # keeps the model of the member's best run so far, for the test set.
        value, grads, state = full(config, state0)
        best_value, best_params = best
        better = value < best_value
        best = (jnp.where(better, value, best_value),
                jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), state[0], best_params))
        return (value, grads), best

    carry0 = (jnp.full((keep,), jnp.inf, jnp.float32), _broadcast(state0[0], keep))
    refine, refine_s = _timed(lambda: gradient_tune(
        refine_objective, SPACE, init=start, num_steps=rounds, optimizer=refine_optimizer, carry=carry0,
        has_grad=True, transform=refine_transform))
    best_vals, best_params = refine.state["carry"]
    j = int(np.argmin(np.asarray(best_vals)))
    params = _take(best_params, j)
    rounds_x = np.asarray(refine.history.x)  # (rounds, keep, dim)
    return {
        "val_loss": float(refine.best_value),
        "test_loss": float(xent(params, *test)),
        "test_acc": float(accuracy(params, *test)),
        "config": refine.best_params,
        "search": {"best_val_loss": float(search_vals.min()), "val_losses": search_vals.tolist(),
                   "chosen_end_configs": [dec(x) for x in start], "wall_s": search_s[0], "cpu_s": search_s[1]},
        "refine": {"val_losses": np.asarray(refine.history.values).tolist(),
                   "configs": [[dec(x) for x in row] for row in rounds_x], "wall_s": refine_s[0],
                   "cpu_s": refine_s[1]},
        "steps": 0,
        # every step below runs inside a reverse-mode hypergradient
        "hypergrad_steps": {"window": popsize * search_steps, "full": keep * rounds * steps},
        "wall_s": search_s[0] + refine_s[0], "cpu_s": search_s[1] + refine_s[1],
    }


def hypergrad_step_cost(step, val_loss, state0, *, num_steps, members, repeats=5):
    """Measured wall time of a reverse-mode hypergradient through ``num_steps`` steps over that of
    ``num_steps`` plain training steps (both vmapped over ``members``, compiled, medians)."""
    hg = jax.jit(jax.vmap(unrolled(step, val_loss, num_steps, mode="reverse")))
    plain = jax.jit(jax.vmap(lambda c, s: val_loss(rollout(step, c, s, num_steps), c)))
    configs = SPACE.decode(SPACE.sample(jax.random.key(0), members))
    states = _broadcast(state0, members)
    fns = {"hg": lambda: hg(configs, states), "plain": lambda: plain(configs, states)}
    times = {k: [] for k in fns}
    for fn in fns.values():
        jax.block_until_ready(fn())
    for _ in range(repeats):  # interleaved, so that load on a shared machine hits both alike
        for k, fn in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[k].append(time.perf_counter() - t0)
    return statistics.median(times["hg"]) / statistics.median(times["plain"])


def run_seed(seed, args):
    """Both methods on one seed (data split, initial weights, random-search draws); a dict of figures."""
    train, val, test = data(seed)
    step, val_loss = make(train, val)
    state0 = initial_state(jax.random.key(seed))  # the same initial weights for every run of this seed
    test = tuple(jnp.asarray(a) for a in test)
    rs = random_search(step, val_loss, state0, test, steps=args.steps, num=args.search,
                       key=jax.random.key(seed + 1))
    adam = lambda lr: optax.adam(lr, b1=args.b1, b2=args.b2)
    hgt = hypergradient_tuning(
        step, val_loss, state0, test, steps=args.steps, popsize=args.popsize, window=args.window,
        search_steps=args.search_steps, search_optimizer=adam(args.search_lr), search_transform="logit",
        keep=args.keep, rounds=args.rounds, refine_optimizer=adam(args.refine_lr), refine_transform="clip")
    # Cost of a step inside each kind of hypergradient, in plain steps.
    measured = {"window": hypergrad_step_cost(step, val_loss, state0, num_steps=args.window, members=args.popsize),
                "full": hypergrad_step_cost(step, val_loss, state0, num_steps=args.steps, members=args.keep,
                                            repeats=3)}
    charged = {k: max(v, MIN_HYPERGRAD_COST) for k, v in measured.items()}
    rs["step_equivalents"] = float(rs["steps"])
    hgt["step_equivalents"] = float(sum(charged[k] * n for k, n in hgt["hypergrad_steps"].items()))
    for r in (rs, hgt):
        r["cost_ratio"] = r["step_equivalents"] / rs["step_equivalents"]
        r["wall_ratio"] = r["wall_s"] / rs["wall_s"]
        r["cpu_ratio"] = r["cpu_s"] / rs["cpu_s"]
    run = jax.jit(jax.vmap(lambda c: val_loss(rollout(step, c, state0, args.steps), c)))
    poor_vals = np.asarray(run(SPACE.decode(jnp.asarray(poor_starts(args.popsize)))))
    return {"seed": seed, "random_search": rs, "hypergradient": hgt, "measured_step_cost": measured,
            "charged_step_cost": charged, "poor_start_best_val_loss": float(np.nanmin(poor_vals))}


def print_seed(res):
    rs, hgt = res["random_search"], res["hypergradient"]
    m, c = res["measured_step_cost"], res["charged_step_cost"]
    print(f"\nseed {res['seed']}: a hypergradient step measured at {m['window']:.2f} (window) / {m['full']:.2f} "
          f"(full run) plain steps, charged {c['window']:.2f} / {c['full']:.2f}; best plain run at a poor start: "
          f"val loss {res['poor_start_best_val_loss']:.3f}")
    cfg = lambda d: f"lr={d['lr']:.3g}, wd={d['wd']:.3g}"
    print(f"  random search winner: {cfg(rs['config'])}")
    print(f"  hypergradients: search best val loss {hgt['search']['best_val_loss']:.4f}, ended at "
          f"{'; '.join(cfg(d) for d in hgt['search']['chosen_end_configs'])}; full-run rounds' val loss "
          f"{np.round(np.min(hgt['refine']['val_losses'], axis=1), 4).tolist()}; winner {cfg(hgt['config'])}")


def print_table(rows):
    header = (f"{'seed':>4}  {'method':<15} {'val loss':>8} {'test loss':>9} {'test acc':>8} "
              f"{'step-equiv':>10} {'ratio':>5} {'wall s':>7} {'ratio':>5} {'cpu s':>7} {'ratio':>5}")
    print("\n" + header)
    print("-" * len(header))
    for res in rows:
        for name, key in (("random search", "random_search"), ("hypergradients", "hypergradient")):
            r = res[key]
            print(f"{res['seed']:>4}  {name:<15} {r['val_loss']:8.4f} {r['test_loss']:9.4f} {r['test_acc']:8.3f} "
                  f"{r['step_equivalents']:10.0f} {r['cost_ratio']:5.2f} {r['wall_s']:7.2f} {r['wall_ratio']:5.2f} "
                  f"{r['cpu_s']:7.2f} {r['cpu_ratio']:5.2f}")
    if len(rows) > 1:
        for name, key in (("random search", "random_search"), ("hypergradients", "hypergradient")):
            mean = lambda f: float(np.mean([res[key][f] for res in rows]))
            print(f"{'mean':>4}  {name:<15} {mean('val_loss'):8.4f} {mean('test_loss'):9.4f} "
                  f"{mean('test_acc'):8.3f} {mean('step_equivalents'):10.0f} {mean('cost_ratio'):5.2f} "
                  f"{mean('wall_s'):7.2f} {mean('wall_ratio'):5.2f} {mean('cpu_s'):7.2f} {mean('cpu_ratio'):5.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="each seed: data split, initial weights, random-search draws")
    ap.add_argument("--steps", type=int, default=400, help="training steps T of every run")
    ap.add_argument("--search", type=int, default=64, help="random-search configurations")
    ap.add_argument("--popsize", type=int, default=16, help="hypergradient members (a square)")
    ap.add_argument("--window", type=int, default=10, help="stage 1: steps K per hypergradient")
    ap.add_argument("--search-steps", type=int, default=None,
                    help="stage 1: training steps S per member (default T / 4, a multiple of --window)")
    ap.add_argument("--search-lr", type=float, default=0.5, help="stage 1: Adam step on logit(cube coordinate)")
    ap.add_argument("--keep", type=int, default=1, help="stage 2: members that go on")
    ap.add_argument("--rounds", type=int, default=4, help="stage 2: full runs (hypergradients) per member")
    ap.add_argument("--refine-lr", type=float, default=0.05, help="stage 2: Adam step on the cube coordinate")
    ap.add_argument("--b1", type=float, default=0.5, help="Adam b1 of the hyper-steps")
    ap.add_argument("--b2", type=float, default=0.9, help="Adam b2 of the hyper-steps")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the raw figures go (JSON)")
    args = ap.parse_args(argv)
    for name in ("steps", "search", "popsize", "window", "rounds"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if math.isqrt(args.popsize) ** 2 != args.popsize:
        ap.error(f"--popsize must be a square (a grid of poor starts), got {args.popsize}")
    if args.search_steps is None:
        args.search_steps = max(args.window, args.steps // 4 // args.window * args.window)
    if args.search_steps % args.window or not 0 < args.search_steps <= args.steps:
        ap.error("--search-steps must be a multiple of --window and at most --steps")
    if not 1 <= args.keep <= args.popsize:
        ap.error("--keep must be in [1, popsize]")

    T = args.steps
    print(f"digits: train 1000, val 400, test 397; MLP 64-{HIDDEN}-10, full-batch SGD momentum {MOMENTUM}, "
          f"T = {T} steps per run; lr in [1e-4, 1], wd in [1e-6, 1e-1] (log)")
    print(f"random search: {args.search} runs at constant hyperparameters.")
    print(f"hypergradients: {args.popsize} poor starts (lr in [1e-4, 1e-3], wd in [1e-2, 1e-1]); stage 1 trains "
          f"each {args.search_steps} steps, a hypergradient every {args.window} steps (Adam {args.search_lr} on "
          f"logit u); stage 2: the best {args.keep} take {args.rounds} full {T}-step runs from the initial weights "
          f"at constant hyperparameters, each an exact hypergradient of its final validation loss "
          f"(Adam {args.refine_lr} on u, projected); winner = best run by validation loss.")
    rows = []
    for seed in args.seeds:
        rows.append(run_seed(seed, args))
        print_seed(rows[-1])
    print_table(rows)

    met = [bool(r["hypergradient"]["val_loss"] <= r["random_search"]["val_loss"]
                and r["hypergradient"]["cost_ratio"] < 1 and r["hypergradient"]["wall_ratio"] < 1) for r in rows]
    print(f"\ncriterion (validation loss <= random search's best, at a smaller cost in step-equivalents and wall "
          f"time) met on {sum(met)}/{len(met)} seeds")
    payload = {
        "example": "hypergrad_digits", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "backend": jax.default_backend(), "jax": jax.__version__},
        "accounting": ("random search: runs x T plain steps. hypergradients: every training step runs inside a "
                       "reverse-mode hypergradient (stage 1: K-step windows; stage 2: full T-step runs) and is "
                       f"charged max(measured ratio, {MIN_HYPERGRAD_COST}) plain steps, the ratio measured per "
                       "kind and seed. Wall and CPU time: compiled computations, compile excluded (random search one "
                       "run at a time, the hypergradient members vmapped)."),
        "criterion_met": met, "seeds": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"raw figures: {args.out}")
    return payload


if __name__ == "__main__":
    main()
