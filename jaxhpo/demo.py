"""The iris demo: tune multinomial logistic regression by 5-fold cross-validation.

The task of the classic scikit-learn grid-search example, as one JAX program
per search strategy: hyperparameters ``C`` (log scale) and ``penalty``
(``"l1"`` or ``"l2"``); score = stratified 5-fold cross-validated accuracy.
Each fold standardises the features with its own training statistics (as a
``StandardScaler`` in a pipeline would) and fits the model to scikit-learn's
objective

    mean log-loss over the training samples + penalty(W) / (C * n_train),
    penalty = ||W||_1 ("l1") or ||W||_F^2 / 2 ("l2"), intercept not penalised,

(the same minimiser as ``C * summed log-loss + penalty``; with two classes
the model is still multinomial, two rows of ``W``, whose l2 penalty makes it
scikit-learn's binary model at twice the ``C``) by full-batch
accelerated proximal gradient (FISTA) with a fixed number of steps. Every
configuration and every fold of a search is vmapped into one compiled
program, and ``l1`` and ``l2`` configurations share it.

``run_demo`` returns the figures; ``format_table`` prints them; ``jaxhpo
demo`` on the command line does both.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _linalg as linalg
from ._digest import digest as _digest
from .cv import _check_masks, cross_validate, kfold_masks
from .datasets import load_iris
from .loop import minimize
from ._keys import seed_key
from .space import Categorical, Float, Space
from .strategies import GridSearch, RandomSearch

__all__ = [
    "PENALTIES", "SPACE", "STRATEGY_NAMES", "QUICK_SETTINGS", "standardize", "fit_logreg", "LogRegCV",
    "DemoRow", "run_demo", "format_table",
]

PENALTIES = ("l1", "l2")
SPACE = Space(C=Float(1e-3, 1e3, log=True), penalty=Categorical(list(PENALTIES)))
STRATEGY_NAMES = ("grid", "random", "sobol")
# Smaller budgets for a fast check (``jaxhpo demo --quick``, the tests).
QUICK_SETTINGS = dict(num_configs=8, grid_size=4, num_iters=300)

# Enough FISTA steps for the CV accuracy of every C in [1e-3, 1e3] to settle;
# the fit reaches scikit-learn's optimum to ~1e-5 in the objective for C <= 10.
DEFAULT_ITERS = 1000


# --------------------------------------------------------------------- the model
def standardize(X: jax.Array, weights: jax.Array) -> jax.Array:
    """Centre and scale features with the weighted statistics of the training rows.

    Args:
      X: ``(n, d)`` features.
      weights: ``(n,)`` sample weights (a fold's 0/1 training mask).
    Returns:
      ``(n, d)``: every row transformed with the training mean and (population)
      standard deviation; a feature constant on the training rows is only
      centred (as scikit-learn's ``StandardScaler``).
    """
    w = weights / jnp.sum(weights)
    mean = w @ X
    std = jnp.sqrt(w @ (X - mean) ** 2)
    # Constancy decided exactly: a float32 weighted mean of a constant is off by
    # an ulp, which leaves a std of ~1e-8 that would blow validation rows up.
    train = weights > 0
    constant = jnp.max(jnp.where(train[:, None], X, -jnp.inf), axis=0) == jnp.min(
        jnp.where(train[:, None], X, jnp.inf), axis=0)
    return (X - mean) / jnp.where(constant | (std <= 0), 1.0, std)


def fit_logreg(X: jax.Array, y: jax.Array, weights: jax.Array, C: jax.Array, l1: jax.Array, *,
               num_classes: int, num_iters: int = DEFAULT_ITERS) -> tuple[jax.Array, jax.Array]:
    """Penalised multinomial logistic regression by FISTA (jit-able, vmap-able).

    Minimises ``sum_i w_i logloss_i / sum_i w_i + penalty(W) / (C * sum_i w_i)``
    with ``penalty = ||W||_1`` when ``l1`` else ``||W||_F^2 / 2``; the
    intercept is not penalised. The smooth part (log-loss, plus the l2 term)
    takes gradient steps of size ``1 / L``; the l1 term is handled exactly by
    soft-thresholding. Momentum restarts whenever it points uphill
    (O'Donoghue & Candes' gradient restart), which keeps the strongly convex
    l2 fits converging linearly.

    Args:
      X: ``(n, d)`` features (standardised: the step size assumes nothing,
        but convergence is fastest on well-scaled features).
      y: ``(n,)`` int class indices in ``[0, num_classes)``.
      weights: ``(n,)`` nonnegative sample weights, not all zero.
      C: ``()`` inverse regularisation strength, > 0.
      l1: ``()`` bool (or 0/1), the l1 penalty instead of l2; traced, so one
        program serves both penalties.
      num_classes: ``K``, static.
      num_iters: FISTA steps, static.
    Returns:
      ``(W, b)``: coefficients ``(K, d)`` and intercepts ``(K,)``, float32
      (scikit-learn's ``coef_`` and ``intercept_`` layout); the decision
      function is ``X @ W.T + b``.
    """
    for name, value, low in (("num_classes", num_classes, 2), ("num_iters", num_iters, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    X = jnp.asarray(X, jnp.float32)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    n, d = X.shape
    w = jnp.asarray(weights, jnp.float32)
    if w.shape != (n,) or jnp.shape(y) != (n,):
        raise ValueError(f"weights and y must have shape (n,) = ({n},), got {w.shape} and {jnp.shape(y)}")
    # Concrete values (a call outside jit) are held to the rules; traced ones
    # (a search's configurations) cannot be, and a bad C there fails the trial.
    if not isinstance(y, jax.core.Tracer):
        y_host = np.asarray(y)
        if not np.issubdtype(y_host.dtype, np.integer) or (n and not 0 <= y_host.min() <= y_host.max() < num_classes):
            raise ValueError(f"y must be int class indices in [0, num_classes) = [0, {num_classes})")
    if not isinstance(C, jax.core.Tracer):
        c = np.asarray(C)
        if c.ndim != 0 or not (c.dtype.kind in "iuf" or str(c.dtype) == "bfloat16") or not float(c) > 0:
            raise ValueError(f"C must be a number > 0, got {C!r}")
    if not isinstance(weights, jax.core.Tracer):
        w_host = np.asarray(weights, np.float64)
        if not (np.all(w_host >= 0) and w_host.sum() > 0):
            raise ValueError("weights must be nonnegative sample weights, not all zero")
    n_w = jnp.sum(w)
    # Samples along the last axis: (K, n) logits vectorise over the long axis,
    # several times faster on the CPU than (n, K) with K = 3.
    XT = X.T  # (d, n)
    YT = jax.nn.one_hot(y, num_classes, dtype=jnp.float32).T  # (K, n)
    l1 = jnp.asarray(l1).astype(jnp.float32)
    lam = 1.0 / (jnp.asarray(C, jnp.float32) * n_w)  # penalty weight in the mean-loss scale
    lam_l2, lam_l1 = (1.0 - l1) * lam, l1 * lam

    # Lipschitz constant of the smooth gradient, once per fit: the softmax
    # log-loss Hessian is at most (1/2) I in the logits (Bohning's bound), so
    # in (W, b) it is at most (1/2) lambda_max(weighted second moment of [x, 1]).
    Xb = jnp.concatenate([X, jnp.ones((n, 1), jnp.float32)], axis=1)  # (n, d + 1)
    moment = (Xb * (w / n_w)[:, None]).T @ Xb  # (d + 1, d + 1)
    step = 1.0 / (0.5 * linalg.eigvalsh(moment)[-1] + lam_l2)

    def grad(W, b):
        # d/dlogits of the weighted mean log-loss is w_i (p_i - y_i) / n_w.
        G = (jax.nn.softmax(W @ XT + b[:, None], axis=0) - YT) * (w / n_w)  # (K, n)
        return G @ X + lam_l2 * W, jnp.sum(G, axis=1)

    def prox_step(W, b):
        gW, gb = grad(W, b)
        W = W - step * gW
        # Soft-thresholding: the proximal map of step * lam_l1 * ||W||_1 (zero for l2).
        W = jnp.sign(W) * jnp.maximum(jnp.abs(W) - step * lam_l1, 0.0)
        return W, b - step * gb

    def body(_, carry):
        W, b, VW, Vb, t = carry  # iterate (W, b), extrapolated point (VW, Vb), momentum t
        W1, b1 = prox_step(VW, Vb)
        t1 = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t1
        # Restart when the step from the extrapolated point opposes the momentum.
        restart = jnp.sum((VW - W1) * (W1 - W)) + jnp.sum((Vb - b1) * (b1 - b)) > 0
        beta = jnp.where(restart, 0.0, beta)
        t1 = jnp.where(restart, 1.0, t1)
        return W1, b1, W1 + beta * (W1 - W), b1 + beta * (b1 - b), t1

    W0 = jnp.zeros((num_classes, d), jnp.float32)
    b0 = jnp.zeros((num_classes,), jnp.float32)
    W, b, *_ = jax.lax.fori_loop(0, num_iters, body, (W0, b0, W0, b0, jnp.float32(1.0)))
    return W, b


class LogRegCV:
    """The demo's objective: one configuration -> its mean cross-validated accuracy.

    Hashable by its data and settings, so ``minimize`` (which compiles per
    objective) reuses one compiled search for equal objectives.

    Args:
      X: ``(n, d)`` raw features (each fold standardises with its own
        training statistics).
      y: ``(n,)`` int class indices.
      masks: ``(k, n)`` bool validation masks, or a pair ``(train_masks,
        val_masks)`` (see ``jaxhpo.cv``).
      num_iters: FISTA steps per fit.

    ``LogRegCV(...)(config)`` with ``config = {"C": (), "penalty": () int32}``
    (``SPACE.decode`` of one point) returns ``()`` float32 accuracy in [0, 1].
    """

    def __init__(self, X: Any, y: Any, masks: Any, num_iters: int = DEFAULT_ITERS):
        X = np.asarray(X, np.float32)
        y = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X must have shape (n, d), got {X.shape}")
        if y.shape != X.shape[:1] or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise ValueError(f"y must be nonnegative int class indices of shape ({X.shape[0]},)")
        if len(np.unique(y)) < 2:
            raise ValueError(f"y must hold at least 2 classes to classify, got {np.unique(y).tolist()}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X must be finite (no NaN or inf): a non-finite feature spoils every fold's "
                             "standardisation")
        if isinstance(num_iters, bool) or not isinstance(num_iters, numbers.Integral) or num_iters < 1:
            raise ValueError(f"num_iters must be a positive integer, got {num_iters!r}")
        # cross_validate's rules (rows or a pair, no empty fold), held on the host as a pair
        masks = tuple(np.asarray(m) for m in _check_masks(masks, n=X.shape[0]))
        self.X, self.y, self.masks = X, y.astype(np.int32), masks
        self.num_classes = int(y.max()) + 1
        self.num_iters = int(num_iters)
        self._key = (self.num_iters, _digest(self.X, self.y, *masks))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key == other._key  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key)

    def fit_and_score(self, config: dict, train_w: jax.Array, val_w: jax.Array) -> jax.Array:
        """One fold: fit on ``train_w`` ``(n,)``, return accuracy on ``val_w`` ``(n,)``."""
        X = standardize(jnp.asarray(self.X), train_w)
        y = jnp.asarray(self.y)
        W, b = fit_logreg(X, y, train_w, config["C"], config["penalty"] == PENALTIES.index("l1"),
                          num_classes=self.num_classes, num_iters=self.num_iters)
        correct = (jnp.argmax(X @ W.T + b, axis=-1) == y).astype(jnp.float32)
        return jnp.sum(correct * val_w) / jnp.sum(val_w)

    def __call__(self, config: dict) -> jax.Array:
        return cross_validate(self.fit_and_score, config, self.masks)


# --------------------------------------------------------------------- the demo
@dataclasses.dataclass(frozen=True)
class DemoRow:
    """One strategy's outcome.

    Attributes:
      strategy: ``"grid"``, ``"random"`` or ``"sobol"``.
      num_configs: configurations evaluated (each one = ``k`` fits).
      best_C, best_penalty: the best configuration found.
      cv_accuracy: its mean cross-validated accuracy.
      num_folds: folds of the cross-validation.
      seconds: wall time of the whole search, JIT compilation included.
    """

    strategy: str
    num_configs: int
    best_C: float
    best_penalty: str
    cv_accuracy: float
    num_folds: int
    seconds: float


def _strategy(name: str, popsize: int, grid_size: int):
    if name == "grid":
        return GridSearch(SPACE, sizes={"C": grid_size})
    if name == "random":
        return RandomSearch(SPACE, popsize)
    if name == "sobol":
        from .strategies.quasirandom import QuasiRandom

        return QuasiRandom(SPACE, popsize, method="sobol")
    raise ValueError(f"strategies: unknown strategy {name!r}; choose from {STRATEGY_NAMES}")


def run_demo(*, seed: int = 0, num_configs: int = 32, grid_size: int = 16,
             num_iters: int = DEFAULT_ITERS, num_folds: int = 5,
             strategies: Sequence[str] = STRATEGY_NAMES, masks: Any = None) -> list[DemoRow]:
    """Tune ``C`` and ``penalty`` on iris with each strategy; one compiled program each.

    Args:
      seed: seeds the fold shuffle and the random / quasi-random searches.
      num_configs: configurations per random / quasi-random search, all
        evaluated in one generation.
      grid_size: grid points for ``C`` (log-spaced over ``[1e-3, 1e3]``);
        the grid search evaluates ``2 * grid_size`` configurations.
      num_iters: FISTA steps per fit.
      num_folds: folds of the stratified split.
      strategies: names from ``STRATEGY_NAMES``.
      masks: fold masks to use instead of ``kfold_masks(150, num_folds,
        key, labels=y)``: ``(k, 150)`` bool, or ``(train_masks, val_masks)``.
    Returns:
      one ``DemoRow`` per strategy run, in the order asked.
    """
    for name, value, low in (("seed", seed, 0), ("num_configs", num_configs, 1),
                             ("grid_size", grid_size, 1), ("num_folds", num_folds, 2)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if seed >= 2**64:  # every seed below this makes its own key (seed_key)
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if isinstance(strategies, str):
        raise TypeError("strategies must be a sequence of names, e.g. ('grid', 'random')")
    built = [(name, _strategy(name, num_configs, grid_size)) for name in strategies]
    X, y = load_iris()
    key_folds, key_search = jax.random.split(seed_key(seed))
    if masks is None:
        masks = np.asarray(kfold_masks(len(y), num_folds, key=key_folds, labels=y))
    objective = LogRegCV(X, y, masks, num_iters)
    rows = []
    num_folds = objective.masks[1].shape[0]
    for name, strategy in built:
        start = time.perf_counter()
        # One generation: every configuration and every fold in one vmapped program.
        result = minimize(objective, SPACE, strategy, key=key_search, num_generations=1,
                          maximize=True)
        seconds = time.perf_counter() - start
        rows.append(DemoRow(
            strategy=name,
            num_configs=result.num_evaluations,
            best_C=float(result.best_params["C"]),
            best_penalty=str(result.best_params["penalty"]),
            cv_accuracy=float(result.best_value),
            num_folds=num_folds,
            seconds=seconds,
        ))
    return rows


def format_table(rows: Sequence[DemoRow]) -> str:
    """A readable table of ``run_demo``'s rows."""
    header = ("strategy", "configs", "best C", "penalty", "CV accuracy", "wall time (s)")
    body = [(r.strategy, str(r.num_configs), f"{r.best_C:.4g}", r.best_penalty,
             f"{r.cv_accuracy:.4f}", f"{r.seconds:.2f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    folds = "/".join(sorted({str(r.num_folds) for r in rows})) or "k"
    out = [
        f"iris (150 samples, 3 classes): multinomial logistic regression, C in [1e-3, 1e3] (log), "
        f"penalty in {{l1, l2}}; score = mean {folds}-fold CV accuracy",
        line(header),
        line(["-" * w for w in widths]),
        *(line(b) for b in body),
        "wall time: the whole search, JIT compilation included "
        "(every configuration and fold in one compiled program).",
    ]
    return "\n".join(out)
