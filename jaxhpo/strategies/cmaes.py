"""CMA-ES in the unit cube: full covariance, separable, IPOP restarts.

The algorithm and its default constants are those of Hansen's tutorial
("The CMA Evolution Strategy: A Tutorial", 2016, Table 1): weighted
recombination of the best ``mu = lambda // 2`` of ``lambda`` samples with
log weights, cumulative step-size adaptation (CSA), rank-one and rank-mu
covariance updates with the ``h_sigma`` stall, and a lazily refreshed
eigendecomposition. ``c_mu`` is the tutorial's
``2 (mu_eff - 2 + 1/mu_eff) / ((n + 2)^2 + mu_eff)`` (pycma adds 0.25 to the
numerator). The step size changes by at most a factor ``e`` a generation
(the CSA exponent is capped at 1, as pycma's ``max_delta_log_sigma``; the
tutorial has no cap). The separable variant (Ros & Hansen, 2008) keeps only the
diagonal of the covariance and learns it ``(n + 2) / 3`` times faster.
``active=True`` adds the tutorial's negative weights (active CMA, pycma's
default); the default is the classic update with positive weights only.

Everything (termination tests, restarts, growing populations) happens inside
the jitted state; there is no Python control flow between generations.

Design notes
------------

**Bounds.** CMA-ES samples an unbounded Gaussian; the cube is handled by a
boundary *transformation* (the piecewise linear-quadratic map that pycma
uses by default, ``BoundTransform``). The strategy lives in an unbounded
"genotype" space; a genotype ``g`` is evaluated at the cube point
``to_cube(g)``, which is the identity on ``[0.05, 0.95]``, quadratic near the
faces and mirrored periodically beyond them. CMA-ES therefore runs, exactly
and without any change, on the composed function ``f(to_cube(g))``: every
update uses the samples actually drawn from ``N(m, sigma^2 C)`` and the
ranking of what was actually evaluated. Clipping the samples instead and
updating from the clipped points would feed the update points that were not
drawn from the distribution (biasing mean and covariance towards the faces);
a penalty would need a weight adapted to the scale of ``f``. Optima on a
face are reached too: ``to_cube`` touches the face ``0`` at ``g = -0.05``
with zero slope, so ``f(to_cube(g))`` has an ordinary smooth minimum there.
Because ``to_cube`` is periodic (period 2.2), the mean is
shifted back by whole periods after each update, which changes nothing in
the search but keeps it near the cube (and keeps float32 precise).

``ask`` returns ``to_cube(m + sigma * C^(1/2) z)``; it keeps the standard
normal ``z`` in the state, and ``tell`` updates from those ``z`` (the ``x``
given to ``tell`` serves only to track the best point). ``C^(1/2)`` is the
symmetric square root ``B D B^T``: unlike ``B D`` it does not depend on the
signs or the order of the eigenvectors, so the same key gives the same
samples whatever eigen solver runs, and ``C^(-1/2) y = z`` exactly.

**Growing populations in fixed shapes.** ``ask`` always returns ``popsize``
rows, all of them real proposals (``valid`` is all ``True``). IPOP's
population ``lambda = popsize * 2**k`` is gathered over ``2**k`` consecutive
ask/tell rounds from the same distribution, into a buffer of
``max_popsize`` rows; the CMA update runs when the buffer holds the whole
population. So a bigger population costs more rounds, never wasted rows:
the width of each evaluation batch stays what the user chose for the
hardware. (The alternative, asking ``max_popsize`` rows and masking the
unused ones, would evaluate up to ``2**max_doublings`` times more points than
needed.) After ``max_doublings`` doublings, restarts keep the largest
population. The buffer costs ``max_popsize * dim`` numbers of state.

**Failed evaluations.** They rank last. The recombination weights of failed
samples are set to zero and the remaining weights renormalised to sum to
one; the evolution paths are normalised with the ``mu_eff`` of the weights
actually used, so they keep their unit scale under random selection. A
generation in which every sample failed leaves mean, paths, step size and
covariance unchanged; once every sample of ``10 + ceil(30 n / lambda)``
generations in a row has failed, the ``infeasible`` test ends the run (with
IPOP, a restart from a uniformly random mean: a start inside a region where
the objective fails moves on instead of resampling it until the stagnation
test fires, some 120 generations later).

**Termination** (tested after every CMA generation; with IPOP each one
restarts from a uniformly random mean with ``sigma0``, ``C = I`` and twice
the population; without restarts the state freezes):

  ``tolfun``      range of the best values of the last
                  ``10 + ceil(30 n / lambda)`` generations and of all current
                  values below ``params["tolfun"]``;
  ``tolx``        ``sigma * max(|p_c|, sqrt(diag C)) < params["tolx"]``;
  ``stagnation``  over the last ``120 + ceil(30 n / popsize)`` generations,
                  the median of the newest 30% of the best and of the median
                  values is not better than that of the oldest 30%;
  ``condition``   ``cond(C) > params["max_condition"]`` (or an eigenvalue
                  that is not positive, i.e. the covariance is numerically
                  exhausted);
  ``no_effect_axis``   adding ``0.1 sigma`` along a principal axis leaves
                  the mean unchanged;
  ``no_effect_coord``  adding ``0.2 sigma sqrt(C_ii)`` to a coordinate leaves
                  the mean unchanged;
  ``tolupsigma``  ``sigma / sigma0 > 1e20 * max sqrt(eig C)``;
  ``infeasible``  every sample of the last ``10 + ceil(30 n / lambda)``
                  generations (tolfun's window) failed.

``state.stop_reason`` holds the bits (``STOP_REASONS``) of the latest
termination. Arithmetic runs in the default float type: float32, or float64
under ``jax.experimental.enable_x64``.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _linalg as linalg
from ..space import Space
from ._checks import check_real
from ._variation import normal
from .base import Strategy, check_popsize, initial_best

__all__ = [
    "CMAES", "SepCMAES", "CMAESState", "STOP_REASONS", "cmaes_constants",
    "default_popsize", "to_cube", "from_cube",
]

# Termination criteria, in the order of their bit in ``state.stop_reason``.
STOP_REASONS = ("tolfun", "tolx", "stagnation", "condition", "no_effect_axis",
                "no_effect_coord", "tolupsigma", "infeasible")
_BIT = {name: 1 << i for i, name in enumerate(STOP_REASONS)}

# Width of the quadratic zone of the boundary transformation, on each face.
_MARGIN = 0.05
_PERIOD = 2.0 * (1.0 + 2.0 * _MARGIN)


def _float():
    """The default float type: float32, or float64 under enable_x64."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def default_popsize(dim: int) -> int:
    """Hansen's default population size ``4 + floor(3 ln n)``."""
    return 4 + int(math.floor(3.0 * math.log(dim)))


def to_cube(g: jax.Array) -> jax.Array:
    """Genotype -> cube point, elementwise, any shape.

    The identity on ``[a, 1 - a]`` (``a = 0.05``), quadratic on
    ``[-a, a]`` and ``[1 - a, 1 + a]`` (continuously differentiable, flat at
    ``-a`` and ``1 + a`` where it touches the faces), mirrored beyond and
    periodic with period ``2 (1 + 2a)``. Always in ``[0, 1]``.
    """
    a = _MARGIN
    u = jnp.mod(g + a, _PERIOD)  # in [0, period)
    u = jnp.where(u > 1.0 + 2.0 * a, _PERIOD - u, u)  # mirror: in [0, 1 + 2a]
    y = u - a  # in [-a, 1 + a]
    low = (y + a) ** 2 / (4.0 * a)
    high = 1.0 - (y - 1.0 - a) ** 2 / (4.0 * a)
    return jnp.clip(jnp.where(y < a, low, jnp.where(y > 1.0 - a, high, y)), 0.0, 1.0)


def from_cube(x: jax.Array) -> jax.Array:
    """Cube point -> the genotype in ``[-a, 1 + a]`` that ``to_cube`` maps to it."""
    a = _MARGIN
    x = jnp.clip(x, 0.0, 1.0)
    low = -a + jnp.sqrt(4.0 * a * x)
    high = 1.0 + a - jnp.sqrt(4.0 * a * (1.0 - x))
    return jnp.where(x < a, low, jnp.where(x > 1.0 - a, high, x))


def nearest_genotype(x: jax.Array, m: jax.Array) -> jax.Array:
    """The genotype nearest to ``m`` that ``to_cube`` maps to the cube point ``x``, elementwise.

    ``to_cube`` is periodic and mirrored, so every cube value has two
    preimages per period: ``y`` and its mirror ``period - y - 2a`` (``y`` =
    ``from_cube(x)``), each shifted by whole periods.
    """
    y = from_cube(x)
    direct = y + _PERIOD * jnp.round((m - y) / _PERIOD)
    mirror = _PERIOD - y - 2.0 * _MARGIN
    mirror = mirror + _PERIOD * jnp.round((m - mirror) / _PERIOD)
    return jnp.where(jnp.abs(direct - m) <= jnp.abs(mirror - m), direct, mirror)


def _fold(m: jax.Array) -> jax.Array:
    """Shift a genotype by whole periods into ``[0.5 - period/2, 0.5 + period/2)``."""
    return 0.5 + jnp.mod(m - 0.5 + 0.5 * _PERIOD, _PERIOD) - 0.5 * _PERIOD


def cmaes_constants(dim: int, lam: Any, num_weights: int | None = None,
                    separable: bool = False, active: bool = False,
                    dtype: Any = None) -> dict[str, jax.Array]:
    """Default strategy constants of the tutorial for population size ``lam``.

    Args:
      dim: the dimension ``n`` (static).
      lam: population size ``lambda >= 2``; a Python int or a traced int32
        scalar (IPOP changes it inside the jitted state).
      num_weights: length of the returned weight vector (static), at least
        ``lam``; defaults to ``lam`` (which must then be a Python int).
      separable: the diagonal variant: ``c_1`` and ``c_mu`` are multiplied
        by ``(n + 2) / 3`` (Ros & Hansen, 2008).
      active: also return the negative weights of active CMA (the
        tutorial's eq. 53): ranks past ``(lam + 1) / 2`` get
        ``ln((lam + 1) / 2) - ln i`` scaled so that they sum to
        ``-min(alpha_mu, alpha_mu_eff, alpha_posdef)``.
      dtype: float type (default float32, float64 under enable_x64).
    Returns:
      dict of scalars: ``mu``, ``mu_eff``, ``c_sigma``, ``d_sigma``, ``c_c``,
      ``c_1``, ``c_mu``, ``chi_n`` (``E||N(0, I)||``), ``eigen_interval``
      (generations between eigendecompositions), and ``weights`` of shape
      ``(num_weights,)``: ``ln((lam + 1) / 2) - ln i`` for ranks
      ``i = 1..mu``, normalised to sum 1, zero after rank ``mu`` (negative
      there with ``active``), zero from rank ``lam`` on.
    """
    return _constants(jnp, dim, lam, num_weights, separable, active, _float() if dtype is None else dtype)


def _constants(xp: Any, dim: int, lam: Any, num_weights: int | None, separable: bool, active: bool,
               dtype: Any) -> dict:
    """``cmaes_constants`` computed with the array module ``xp``: ``jax.numpy``
    (traceable), or ``numpy`` for the static table of IPOP's levels (op by op
    in JAX each level's weight vector, a shape of its own, compiled every
    operation anew: ~100 compiles on a search's first call)."""
    if num_weights is None:
        num_weights = int(lam)
    n = float(dim)
    lam = xp.asarray(lam, xp.int32)
    lam_f = lam.astype(dtype)
    mu = lam // 2
    rank = xp.arange(num_weights)
    w_raw = xp.log((lam_f + 1.0) / 2.0) - xp.log(rank.astype(dtype) + 1.0)
    w_raw = xp.where(rank < lam, w_raw, 0.0).astype(dtype)
    w = xp.where(rank < mu, w_raw, 0.0).astype(dtype)
    w = w / w.sum()
    mu_eff = 1.0 / xp.sum(w**2)
    c_sigma = (mu_eff + 2.0) / (n + mu_eff + 5.0)
    d_sigma = 1.0 + 2.0 * xp.maximum(0.0, xp.sqrt((mu_eff - 1.0) / (n + 1.0)) - 1.0) + c_sigma
    c_c = (4.0 + mu_eff / n) / (n + 4.0 + 2.0 * mu_eff / n)
    alpha_cov = 2.0
    c_1 = alpha_cov / ((n + 1.3) ** 2 + mu_eff)
    c_mu = xp.minimum(1.0 - c_1, alpha_cov * (mu_eff - 2.0 + 1.0 / mu_eff)
                      / ((n + 2.0) ** 2 + alpha_cov * mu_eff / 2.0))
    if separable:
        c_1 = xp.minimum(1.0, c_1 * (n + 2.0) / 3.0)
        c_mu = xp.minimum(1.0 - c_1, c_mu * (n + 2.0) / 3.0)
    if active:
        neg = xp.where((rank >= mu) & (w_raw < 0), w_raw, 0.0).astype(dtype)
        mu_eff_neg = xp.sum(neg) ** 2 / xp.sum(neg**2)
        # c_mu is 0 for the smallest populations (mu_eff = 1): both ratios are
        # then +inf, their limit, without NumPy's divide-by-zero warning.
        some = c_mu > 0
        per_c_mu = xp.where(some, 1.0 / xp.where(some, c_mu, 1.0), xp.inf)
        alpha = xp.minimum(xp.minimum(1.0 + c_1 * per_c_mu, 1.0 + 2.0 * mu_eff_neg / (mu_eff + 2.0)),
                           (1.0 - c_1 - c_mu) * per_c_mu / n)
        w = w + alpha * neg / xp.sum(xp.abs(neg))
    chi_n = math.sqrt(n) * (1.0 - 1.0 / (4.0 * n) + 1.0 / (21.0 * n * n))
    interval = xp.maximum(1, xp.floor(1.0 / (10.0 * n * (c_1 + c_mu))).astype(xp.int32))
    return dict(weights=w.astype(dtype), mu=mu, mu_eff=mu_eff, c_sigma=c_sigma,
                d_sigma=d_sigma, c_c=c_c, c_1=c_1, c_mu=c_mu,
                chi_n=xp.asarray(chi_n, dtype), eigen_interval=interval)


class CMAESState(NamedTuple):
    """State of ``CMAES`` (``n = dim``, ``N = max_popsize``, ``L`` = history length).

    ``C`` is ``(n, n)`` (``(n,)``, the diagonal, for the separable variant);
    ``B`` (eigenvectors) and ``sqrt_C`` (``B diag(D) B^T``) are ``None`` for it.
    """

    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    mean: jax.Array          # (n,) genotype mean
    sigma: jax.Array         # () step size
    C: jax.Array             # (n, n) covariance, or (n,) its diagonal
    B: Any                   # (n, n) eigenvectors of C (columns) or None
    D: jax.Array             # (n,) square roots of the eigenvalues of C
    sqrt_C: Any              # (n, n) symmetric square root of C, or None
    p_sigma: jax.Array       # (n,) conjugate evolution path
    p_c: jax.Array           # (n,) evolution path
    z: jax.Array             # (N, n) standard normal samples of this generation
    values: jax.Array        # (N,) their values (+inf until told)
    next_mean: jax.Array     # (n,) uniform cube point drawn at ask: the mean of a restart
    slot: jax.Array          # () int32, ask/tell rounds gathered in this generation
    doublings: jax.Array     # () int32, k in lambda = popsize * 2**k
    iteration: jax.Array     # () int32, CMA generations completed, all runs
    run_iteration: jax.Array  # () int32, CMA generations since the latest (re)start
    eigen_iteration: jax.Array  # () int32, run_iteration of the latest eigendecomposition
    history: jax.Array       # (2, L) best (row 0) and median (row 1) value per generation, newest first
    restarts: jax.Array      # () int32
    stop_reason: jax.Array   # () int32 bits of STOP_REASONS, latest termination
    stopped: jax.Array       # () bool, terminated and frozen (restarts=None only)


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def _nested_shape(v: Any) -> tuple[int, ...]:
    """The shape of an array, or of (nested) lists of numbers or traced values
    (which NumPy cannot read)."""
    if isinstance(v, (list, tuple)):
        return (len(v),) + (_nested_shape(v[0]) if len(v) else ())
    return tuple(jnp.shape(v))


class CMAES(Strategy):
    """CMA-ES (Hansen, 2016) over the unit cube, with optional IPOP restarts.

    Args:
      space: the ``Space``.
      popsize: points per ``ask`` (``lambda`` of the first run); default
        ``4 + floor(3 ln n)``; at least 2.
      sigma0: initial step size in cube units (the default of
        ``params["sigma0"]``). The default 1/6 is Optuna's (its
        CmaEsSampler's range / 6): at the 50-200 evaluations of a tuning run
        it roughly halves the median regret of pycma's usual 0.3 on
        Hartmann-6, Ackley-10 and Rosenbrock-10 (16 seeds); IPOP's restarts
        then widen the search when the first run stalls.
      x0: initial mean, a cube point of length ``dim`` (the default of
        ``params["x0"]``); ``None`` is the centre of the cube.
      restarts: ``"ipop"`` (restart with a random mean and twice the
        population whenever a termination criterion fires; Auger & Hansen,
        2005) or ``None`` (stop adapting and keep sampling the final
        distribution; ``state.stopped`` tells). ``False`` is read as
        ``None`` (a config file's way to say it: TOML has no null).
      max_doublings: with ``"ipop"``, the population grows to at most
        ``popsize * 2**max_doublings`` (the buffer size ``max_popsize``).
      separable: the separable (diagonal-covariance) CMA-ES of Ros & Hansen
        (2008): linear time and space per sample, for separable or very
        high-dimensional problems.
      active: active CMA: the worse half of the population also updates the
        covariance, with the tutorial's negative weights (faster on
        ill-conditioned problems; pycma's default). Off by default: the
        classic update with the positive weights only. Failed samples get no
        weight of either sign.

    ``ask`` returns ``(popsize, dim)`` cube points. With IPOP a population of
    ``popsize * 2**k`` is gathered over ``2**k`` rounds (see the module notes);
    ``state.doublings``, ``state.restarts`` and ``population_size(state)`` tell
    where the search is.

    ``default_params()`` (vmap over them freely): ``sigma0`` ``()``, ``x0``
    ``(dim,)``, ``tolfun`` ``()`` (1e-12), ``tolx`` ``()`` (1e-12, cube units),
    ``max_condition`` ``()`` (1e14).
    """

    def __init__(self, space: Space, popsize: int | None = None, sigma0: float = 1.0 / 6.0, *,
                 x0: Any = None, restarts: str | None = "ipop", max_doublings: int = 6,
                 separable: bool = False, active: bool = False):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
        if popsize is None:
            popsize = default_popsize(space.dim)
        popsize = check_popsize(popsize, minimum=2)
        super().__init__(space, popsize)
        self.sigma0 = _check_positive("sigma0", sigma0)
        if x0 is not None:
            try:
                arr = np.asarray(x0, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"x0 must be a sequence of {space.dim} numbers, got {x0!r}") from None
            if arr.shape != (space.dim,):
                raise ValueError(f"x0 must have shape ({space.dim},) (one cube coordinate per "
                                 f"parameter), got shape {arr.shape}")
            if not np.all((arr >= 0) & (arr <= 1)):
                raise ValueError(f"x0 must be a cube point with coordinates in [0, 1], got {x0!r}")
            x0 = tuple(float(v) for v in arr)
        self.x0 = x0
        if restarts is False:  # (a config file's way to say None: TOML has no null)
            restarts = None
        if restarts not in ("ipop", None):
            raise ValueError(f"restarts must be 'ipop' or None (or False), got {restarts!r}")
        self.restarts = restarts
        if isinstance(max_doublings, bool) or not isinstance(max_doublings, numbers.Integral):
            raise TypeError(f"max_doublings must be an integer, got {max_doublings!r}")
        if not 0 <= max_doublings <= 16:
            raise ValueError(f"max_doublings must be in [0, 16], got {max_doublings}")
        self.max_doublings = int(max_doublings) if restarts == "ipop" else 0
        if not isinstance(separable, (bool, np.bool_)):
            raise TypeError(f"separable must be a bool, got {separable!r}")
        self.separable = bool(separable)
        if not isinstance(active, (bool, np.bool_)):
            raise TypeError(f"active must be a bool, got {active!r}")
        self.active = bool(active)

    # ------------------------------------------------------------ sizes
    @property
    def max_popsize(self) -> int:
        """Largest population: ``popsize * 2**max_doublings`` (rows of the sample buffer)."""
        return self.popsize * 2**self.max_doublings

    @property
    def history_length(self) -> int:
        """Generations looked back by the stagnation test: ``120 + ceil(30 n / popsize)``."""
        return 120 + math.ceil(30 * self.dim / self.popsize)

    def population_size(self, state: CMAESState) -> jax.Array:
        """Current ``lambda = popsize * 2**doublings`` (int32 scalar)."""
        return jnp.int32(self.popsize) * jnp.left_shift(jnp.int32(1), state.doublings)

    def constants(self, state: CMAESState) -> dict[str, jax.Array]:
        """The constants (``cmaes_constants``) of the current population size.

        ``weights`` has ``max_popsize`` entries (zero from rank ``lambda`` on).
        """
        return cmaes_constants(self.dim, self.population_size(state), self.max_popsize,
                               self.separable, self.active, state.sigma.dtype)

    def _level_constants(self, dtype) -> list[dict[str, np.ndarray]]:
        """``cmaes_constants`` of every population size IPOP reaches, as numpy constants.

        Entry ``j`` is for ``lambda = popsize * 2**j``, its weights of length
        ``lambda``. Computed once per setting: recomputing a weight vector of
        ``max_popsize`` entries every generation (a log per entry) cost more
        than the rest of a generation at large populations.
        """
        return _level_constants(self.dim, self.popsize, self.max_doublings, self.separable,
                                self.active, np.dtype(dtype).name)

    # ------------------------------------------------------------ protocol
    def default_params(self):
        dt = _float()
        x0 = np.full(self.dim, 0.5) if self.x0 is None else np.asarray(self.x0)
        return {
            "sigma0": jnp.asarray(self.sigma0, dt),
            "x0": jnp.asarray(x0, dt),
            "tolfun": jnp.asarray(1e-12, dt),
            "tolx": jnp.asarray(1e-12, dt),
            "max_condition": jnp.asarray(1e14, dt),
        }

    def param_checks(self):
        return {
            "sigma0": lambda v: _check_positive("sigma0", v),
            "x0": lambda v: check_real("x0", v, 0.0, 1.0),
            "tolfun": lambda v: check_real("tolfun", v, 0.0, math.inf),
            "tolx": lambda v: check_real("tolx", v, 0.0, math.inf),
            "max_condition": lambda v: check_real("max_condition", v, 1.0, math.inf, low_open=True),
        }

    def check_params(self, params):
        super().check_params(params)
        x0 = (params or {}).get("x0")
        if x0 is None:
            return
        shape = _nested_shape(x0)
        if shape != (self.dim,):
            raise ValueError(f"params x0 must have shape ({self.dim},) (one cube coordinate per "
                             f"parameter), got shape {shape}")

    def _fresh_run(self, params, mean_cube, doublings):
        """The fields that a (re)start sets: mean at ``mean_cube``, ``sigma0``, ``C = I``."""
        n, dt = self.dim, params["sigma0"].dtype
        eye = jnp.eye(n, dtype=dt)
        return dict(
            mean=from_cube(jnp.asarray(mean_cube, dt)),
            sigma=params["sigma0"],
            C=jnp.ones((n,), dt) if self.separable else eye,
            B=None if self.separable else eye,
            D=jnp.ones((n,), dt),
            sqrt_C=None if self.separable else eye,
            p_sigma=jnp.zeros((n,), dt),
            p_c=jnp.zeros((n,), dt),
            slot=jnp.array(0, jnp.int32),
            doublings=jnp.asarray(doublings, jnp.int32),
            run_iteration=jnp.array(0, jnp.int32),
            eigen_iteration=jnp.array(0, jnp.int32),
            history=jnp.full((2, self.history_length), jnp.inf, dt),
        )

    def _init(self, key, params):
        n, dt = self.dim, params["sigma0"].dtype
        x0 = jnp.broadcast_to(params["x0"], (n,))
        return CMAESState(
            params=params,
            z=jnp.zeros((self.max_popsize, n), dt),
            values=jnp.full((self.max_popsize,), jnp.inf, dt),
            next_mean=jnp.full((n,), 0.5, dt),
            iteration=jnp.array(0, jnp.int32),
            restarts=jnp.array(0, jnp.int32),
            stop_reason=jnp.array(0, jnp.int32),
            stopped=jnp.array(False),
            **self._fresh_run(params, x0, 0),
            **initial_best(n),
        )

    def _ask(self, key, state):
        n, dt = self.dim, state.sigma.dtype
        # One draw for the samples and the restart mean: on the CPU every
        # random call is a rolled loop of its own, a large share of a small
        # generation's cost.
        ipop = self.restarts == "ipop"
        z = normal(key, (self.popsize + ipop, n), dt)
        if ipop:
            # The extra row, through the normal CDF, is a uniform cube point.
            z, next_mean = z[:-1], 0.5 * (1.0 + jax.lax.erf(z[-1] * math.sqrt(0.5)))
            state = state._replace(next_mean=next_mean)
        # y = C^(1/2) z with the symmetric root (C^(1/2) is symmetric: z @ C^(1/2) = (C^(1/2) z^T)^T).
        y = z * state.D if self.separable else _matmul(z, state.sqrt_C)
        x = to_cube(state.mean + state.sigma * y)
        start = state.slot * self.popsize
        zbuf = jax.lax.dynamic_update_slice(state.z, z, (start, jnp.int32(0)))
        return x, state._replace(z=zbuf)

    def _tell(self, state, x, values):
        dt = state.sigma.dtype
        start = state.slot * self.popsize
        vbuf = jax.lax.dynamic_update_slice(state.values, values.astype(dt), (start,))
        slot = state.slot + 1
        rounds = jnp.left_shift(jnp.int32(1), state.doublings)
        state = state._replace(values=vbuf, slot=slot)
        if self.max_doublings == 0:  # one round per generation: always complete
            new = self._generation(state)
        else:
            new = jax.lax.cond(slot >= rounds, self._generation, _without_buffers, state)
        # The sample buffers only enter the branches above, never leave them:
        # a branch's outputs are copied, and at large populations copying
        # max_popsize rows every round cost more than the update itself.
        return new._replace(z=state.z, values=vbuf)

    def inject(self, state, x, injected):
        """Re-express the ``injected`` rows of ``x`` as samples of the current distribution.

        Each injected cube point becomes a genotype (a coordinate left as
        proposed keeps the one sampled; another takes the one nearest the
        mean that maps to it), then ``z = C^(-1/2) (g - mean) / sigma``, its
        norm clipped to ``sqrt(n) + 2n / (n + 2)`` (Hansen, 2011, "Injecting
        external solutions into CMA-ES"): a point far outside the
        distribution moves the mean and the paths as much as an unusually
        long sample would, no more. The other rows, and injected rows equal
        to their proposal, keep their samples.
        """
        super().inject(state, x, injected)
        n, dt = self.dim, state.sigma.dtype
        start = state.slot * self.popsize
        own = jax.lax.dynamic_slice(state.z, (start, jnp.int32(0)), (self.popsize, n))
        g_own = state.mean + state.sigma * (own * state.D if self.separable else _matmul(own, state.sqrt_C))
        # As ask returned them: near a face several genotypes map to one cube value.
        kept = jnp.asarray(x, jnp.float32) == jnp.clip(to_cube(g_own), 0.0, 1.0).astype(jnp.float32)
        g = jnp.where(kept, g_own, nearest_genotype(jnp.asarray(x, dt), state.mean))
        y = (g - state.mean) / state.sigma
        tiny = jnp.finfo(dt).tiny
        if self.separable:
            z = y / jnp.maximum(state.D, tiny)
        else:
            z = _matmul(_matmul(y, state.B) / jnp.maximum(state.D, tiny), state.B.T)
        limit = math.sqrt(n) + 2.0 * n / (n + 2.0)
        norm = jnp.sqrt(jnp.sum(z * z, axis=1, keepdims=True))
        z = z * jnp.minimum(1.0, limit / jnp.maximum(norm, tiny))
        replaced = jnp.asarray(injected, bool) & ~jnp.all(kept, axis=1)
        z = jnp.where(replaced[:, None], z.astype(dt), own)
        return state._replace(z=jax.lax.dynamic_update_slice(state.z, z, (start, jnp.int32(0))))

    # ------------------------------------------------------------ one generation
    def _generation(self, s: CMAESState) -> CMAESState:
        """The CMA update of a complete population, then termination and restart.

        Returns the new state without its sample buffers (``z`` and
        ``values`` are ``None``; ``_tell`` puts them back).
        """
        if self.restarts != "ipop":
            # Without restarts a terminated search freezes (``_update`` leaves
            # a stopped state as it is); later generations only keep the
            # buffers cycling.
            return _without_buffers(self._update(s))
        s2 = _without_buffers(self._update(s))
        stop = s2.stopped
        doublings = jnp.minimum(s.doublings + 1, self.max_doublings)
        fresh = self._fresh_run(s.params, s.next_mean, doublings)
        return s2._replace(**{f: jnp.where(stop, fresh[f], getattr(s2, f)) if fresh[f] is not None
                              else None for f in fresh},
                           restarts=s2.restarts + stop.astype(jnp.int32), stopped=jnp.array(False))

    def _update(self, s: CMAESState) -> CMAESState:
        """One CMA generation and the termination tests; ``stopped`` says whether one fired.

        A state that has ``stopped`` already is left unchanged. The update is
        computed all the same and discarded through the selects that guard
        against failed generations: on the CPU a generation costs about one
        unit per kernel, and a branch around the update (its outputs copied
        back into the loop state) or a select per field costs more kernels
        than it saves.
        """
        n, dt = self.dim, s.sigma.dtype
        p = s.params
        levels = self._level_constants(dt)
        # The scalar constants of the current population size: one row of a
        # small static table (no control flow without restarts).
        k = {name: (jnp.asarray(np.stack([lv[name] for lv in levels]))[s.doublings]
                    if len(levels) > 1 else jnp.asarray(levels[0][name]))
             for name in levels[0] if name != "weights"}
        lam = self.population_size(s)

        # One branch per population size (a plain call without restarts): the
        # ranking and the weighted sums cost what the current lambda needs, not
        # the whole buffer's max_popsize rows (a top_k over 64x the population
        # dominated a generation at popsize 256).
        branches = [functools.partial(self._select, j, levels[j]["weights"])
                    for j in range(self.max_doublings + 1)]
        sel = jax.lax.switch(s.doublings, branches, s.values, s.z)
        z_w, zz, w_neg_sum, mu_eff, ok, gen_best, gen_median, gen_worst = sel
        y_w = z_w * s.D if self.separable else _matmul(s.sqrt_C, z_w[:, None])[:, 0]
        mean = s.mean + s.sigma * y_w

        cs, ds, cc = k["c_sigma"], k["d_sigma"], k["c_c"]
        c1, cmu, chi_n = k["c_1"], k["c_mu"], k["chi_n"]
        p_sigma = (1.0 - cs) * s.p_sigma + jnp.sqrt(cs * (2.0 - cs) * mu_eff) * z_w
        ps_norm = jnp.linalg.norm(p_sigma)
        g = (s.run_iteration + 1).astype(dt)
        h_sigma = (ps_norm / jnp.sqrt(1.0 - (1.0 - cs) ** (2.0 * g))
                   < (1.4 + 2.0 / (n + 1.0)) * chi_n).astype(dt)
        p_c = (1.0 - cc) * s.p_c + h_sigma * jnp.sqrt(cc * (2.0 - cc) * mu_eff) * y_w
        delta_h = (1.0 - h_sigma) * cc * (2.0 - cc)
        # Positive weights sum to 1; negative ones are rescaled by n / ||C^(-1/2) y||^2
        # = n / ||z||^2 (the tutorial's w_i°), which bounds their effect per sample.
        decay = 1.0 + c1 * delta_h - c1 - cmu * (1.0 + w_neg_sum)
        if self.separable:
            rank_mu = zz * s.D**2
            C = decay * s.C + c1 * p_c**2 + cmu * rank_mu
        else:
            rank_mu = _matmul(_matmul(s.sqrt_C, zz), s.sqrt_C)  # sum_i w_i y_i y_i^T
            C = decay * s.C + c1 * jnp.outer(p_c, p_c) + cmu * rank_mu
            C = 0.5 * (C + C.T)
        # The exponent is capped at 1 (sigma at most e-fold per generation), a
        # guard against a huge first step that the default damping makes rare.
        sigma = s.sigma * jnp.exp(jnp.minimum(1.0, (cs / ds) * (ps_norm / chi_n - 1.0)))
        # An update that went non-finite is discarded (and ends the run as a
        # condition failure) rather than kept.
        broken = ~(jnp.all(jnp.isfinite(C)) & jnp.all(jnp.isfinite(mean)) & jnp.isfinite(sigma))
        frozen = s.stopped
        live = ~frozen
        ok = ok & ~broken & live

        def keep(new, old):
            return jnp.where(ok, new, old)

        step = live.astype(jnp.int32)
        s2 = s._replace(mean=keep(_fold(mean), s.mean), p_sigma=keep(p_sigma, s.p_sigma),
                        p_c=keep(p_c, s.p_c), C=keep(C, s.C), sigma=keep(sigma, s.sigma),
                        run_iteration=s.run_iteration + step, iteration=s.iteration + step,
                        slot=jnp.array(0, jnp.int32))
        s2 = self._refresh_eigen(s2, k["eigen_interval"], live)

        # The best and the median value per generation, shifted in at column 0
        # (column i: i generations ago). A shift register rather than a ring
        # buffer: the termination tests then read static slices, where a ring
        # buffer needs a gather by age, which costs more than the copy.
        newest = jnp.stack([gen_best, gen_median]).astype(dt)[:, None]
        shifted = jnp.concatenate([newest, s2.history[:, :-1]], axis=1)
        s2 = s2._replace(history=jnp.where(live, shifted, s2.history))

        reason = self._termination(s2, p, lam, gen_best, gen_worst)
        reason |= jnp.where(broken, jnp.int32(_BIT["condition"]), jnp.int32(0))
        stop = (reason != 0) & live
        # The next population's rounds overwrite values[:lambda] before the
        # next update reads them, so the buffer needs no reset.
        return s2._replace(stopped=frozen | stop, stop_reason=jnp.where(stop, reason, s.stop_reason))

    def _select(self, doublings: int, weights, values, z):
        """Ranking and weighted sums of a population of ``lambda = popsize * 2**doublings``.

        Args:
          doublings: the population's doublings (static).
          weights: ``(lambda,)`` numpy recombination weights (``cmaes_constants``).
          values: ``(N,)``, the first ``lambda`` this population's (failed: +inf).
          z: ``(N, n)`` their standard normal samples.
        Returns:
          ``(z_w (n,), zz, w_neg_sum (), mu_eff (), ok (), best (), median (), worst ())``:
          ``z_w = sum_i w_i z_i`` over the selected ranks; ``zz`` the
          covariance weights' ``sum_i w_i z_i z_i^T`` ``(n, n)`` (separable:
          its diagonal ``(n,)``); ``ok`` whether any selected value is finite.
        """
        n = self.dim
        lam = self.popsize * 2**doublings
        # Failed (+inf) rank last. Positive weights stop at rank mu <= lambda / 2
        # and the median sits at rank lambda / 2, so without active CMA the best
        # lambda // 2 + 1 ranks are all that is needed; top_k finds them much
        # faster than a full sort on the CPU.
        ranks = lam if self.active else lam // 2 + 1
        neg_top, top = jax.lax.top_k(-values[:lam], ranks)
        v_top = -neg_top
        z_top = z[top]
        finite = jnp.isfinite(v_top)
        w_nominal = jnp.asarray(weights[:ranks])
        w = jnp.where(finite & (w_nominal > 0), w_nominal, 0.0)
        w_sum = w.sum()
        ok = w_sum > 0
        w = w / jnp.where(ok, w_sum, 1.0)
        # Negative (active) weights of failed samples are dropped, not moved:
        # the negative mass only shrinks, which keeps C positive definite.
        w_neg = jnp.where(finite & (w_nominal < 0), w_nominal, 0.0)
        # mu_eff of the weights actually used: keeps the paths at unit scale under
        # random selection when failed samples lost their weight.
        mu_eff = jnp.where(ok, 1.0 / jnp.sum(w**2), 1.0)
        z_w = _matmul(w[None, :], z_top)[0]  # (n,) = C^(-1/2) y_w
        # Positive weights sum to 1; negative ones are rescaled by n / ||C^(-1/2) y||^2
        # = n / ||z||^2 (the tutorial's w_i°), which bounds their effect per sample.
        w_cov = w + w_neg * n / jnp.maximum(jnp.sum(z_top**2, axis=1), 1e-12)
        if self.separable:
            zz = w_cov @ z_top**2
        else:
            zz = _matmul((z_top * w_cov[:, None]).T, z_top)
        lo, hi = v_top[(lam - 1) // 2], v_top[lam // 2]
        median = jnp.where(jnp.isfinite(lo) & jnp.isfinite(hi), lo / 2 + hi / 2, hi)  # (halves: no overflow)
        return z_w, zz, w_neg.sum(), mu_eff, ok, v_top[0], median, jnp.max(values[:lam])

    def _refresh_eigen(self, s: CMAESState, interval, live) -> CMAESState:
        """Lazy eigendecomposition of ``C``, every ``interval`` generations while ``live``."""
        if self.separable:
            return s._replace(D=jnp.sqrt(jnp.maximum(s.C, 0.0)))

        def decompose(s):
            evals, B = linalg.eigh(s.C)
            # Keep D positive whatever rounding did. An eigenvalue clamped here
            # makes cond(C) = max_condition, which the condition test reports.
            floor = jnp.max(evals) / s.params["max_condition"]
            D = jnp.sqrt(jnp.maximum(evals, jnp.maximum(floor, jnp.finfo(evals.dtype).tiny)))
            sqrt_C = _matmul(B * D, B.T)
            return s._replace(B=B, D=D, sqrt_C=0.5 * (sqrt_C + sqrt_C.T),
                              eigen_iteration=s.run_iteration)

        due = live & (s.run_iteration - s.eigen_iteration >= interval)
        return jax.lax.cond(due, decompose, lambda s: s, s)

    def _termination(self, s, p, lam, best, worst) -> jax.Array:
        """Bits of the termination criteria that hold after this generation."""
        n, dt = self.dim, s.sigma.dtype
        L = self.history_length
        reason = jnp.int32(0)

        def flag(cond, name):
            return jnp.where(cond, jnp.int32(_BIT[name]), jnp.int32(0))

        # TolFun: range of the best values of the recent generations and of
        # all current values (best and worst of them: a failure makes it inf).
        # The window is longest for the first population: a static slice of
        # that length holds it (masked when IPOP has grown the population).
        # Once run_iteration >= window every entry in it is from this run.
        window = 10 + jnp.ceil(30.0 * n / lam.astype(dt)).astype(jnp.int32)
        longest = min(L, 10 + math.ceil(30 * n / self.popsize))
        recent_best = s.history[0, :longest]
        if self.max_doublings:
            recent = jnp.arange(longest) < window
            hi_recent = jnp.max(jnp.where(recent, recent_best, -jnp.inf))
            lo_recent = jnp.min(jnp.where(recent, recent_best, jnp.inf))
        else:
            hi_recent, lo_recent = jnp.max(recent_best), jnp.min(recent_best)
        hi, lo = jnp.maximum(hi_recent, worst), jnp.minimum(lo_recent, best)
        tolfun = (s.run_iteration >= window) & (hi - lo < p["tolfun"])
        reason |= flag(tolfun, "tolfun")
        # A generation's best is +inf only where all its samples failed.
        reason |= flag((s.run_iteration >= window) & (lo_recent == jnp.inf), "infeasible")

        # TolX.
        diag = s.C if self.separable else jnp.diagonal(s.C)
        sd = jnp.sqrt(jnp.maximum(diag, 0.0))
        reason |= flag(jnp.all(s.sigma * jnp.maximum(jnp.abs(s.p_c), sd) < p["tolx"]), "tolx")

        # Stagnation: medians of the oldest and newest 30% of the window, all
        # four from one top_k.
        q = max(1, int(0.3 * L))
        # rows: oldest best, oldest median, newest best, newest median
        med = _medians(jnp.concatenate([s.history[:, L - q:], s.history[:, :q]]))
        stag = (s.run_iteration >= L) & (med[2] >= med[0]) & (med[3] >= med[1])
        reason |= flag(stag, "stagnation")

        # Condition number of C, from the latest eigendecomposition. Eigenvalues
        # that rounding made non-positive were clamped to max / max_condition
        # there, so they fire this test too (the 1e-4 absorbs that rounding).
        ev = s.D**2
        cond = jnp.max(ev) >= p["max_condition"] * jnp.min(ev) * (1.0 - 1e-4)
        reason |= flag(cond | ~jnp.all(jnp.isfinite(s.C)), "condition")

        # NoEffectAxis / NoEffectCoord.
        if self.separable:
            axes = jnp.diag(0.1 * s.sigma * s.D)
        else:
            axes = (0.1 * s.sigma * s.B * s.D).T  # row i: 0.1 sigma d_i b_i
        no_axis = jnp.any(jnp.all(s.mean[None, :] + axes == s.mean[None, :], axis=1))
        reason |= flag(no_axis, "no_effect_axis")
        no_coord = jnp.any(s.mean + 0.2 * s.sigma * sd == s.mean)
        reason |= flag(no_coord, "no_effect_coord")

        # TolUpSigma: sigma grew far beyond what the covariance explains.
        reason |= flag(s.sigma > 1e20 * p["sigma0"] * jnp.max(s.D), "tolupsigma")
        reason |= jnp.where(jnp.all(jnp.isfinite(s.mean)) & jnp.isfinite(s.sigma),
                            jnp.int32(0), jnp.int32(_BIT["condition"]))
        return reason


@functools.lru_cache(maxsize=64)
def _level_constants(dim: int, popsize: int, max_doublings: int, separable: bool, active: bool,
                     dtype: str) -> list[dict[str, np.ndarray]]:
    return [{name: np.asarray(v) for name, v in
             _constants(np, dim, popsize * 2**j, None, separable, active, np.dtype(dtype)).items()}
            for j in range(max_doublings + 1)]


# Products up to this many multiply-adds run as one elementwise-and-reduce
# kernel: on the CPU a library matrix product has a fixed cost of its own that
# dominates at the sizes of a small CMA-ES (n = 10: several per generation).
_SMALL_MATMUL = 1 << 14


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` for 2-D ``a`` ``(p, q)`` and ``b`` ``(q, r)``."""
    p, q = a.shape
    r = b.shape[1]
    if p * q * r <= _SMALL_MATMUL:
        return jnp.sum(a[:, :, None] * b[None, :, :], axis=1)
    return a @ b


def _without_buffers(s: CMAESState) -> CMAESState:
    return s._replace(z=None, values=None)


def _medians(x: jax.Array) -> jax.Array:
    """Medians of the rows of ``x`` ``(r, q)``, shape ``(r,)`` (``+inf`` counts as a value).

    One ``top_k`` of the ``q // 2 + 1`` smallest per row: on the CPU it is a
    single custom call, several times faster here than a sort or than
    counting comparisons (whose reductions XLA:CPU splits into slow
    reduce-windows).
    """
    q = x.shape[-1]
    neg, _ = jax.lax.top_k(-x, q // 2 + 1)
    small = -neg  # ascending, the q // 2 + 1 smallest
    return small[..., -1] if q % 2 else 0.5 * (small[..., -1] + small[..., -2])


class SepCMAES(CMAES):
    """Separable CMA-ES (Ros & Hansen, 2008): ``CMAES`` with a diagonal covariance.

    Same arguments as ``CMAES``; ``separable`` is always ``True`` (accepted,
    so that stored settings rebuild it).
    """

    def __init__(self, space: Space, popsize: int | None = None, sigma0: float = 1.0 / 6.0, *,
                 x0: Any = None, restarts: str | None = "ipop", max_doublings: int = 6,
                 active: bool = False, separable: bool = True):
        if separable is not True:
            raise ValueError(f"SepCMAES is separable; got separable={separable!r} (use CMAES)")
        super().__init__(space, popsize, sigma0, x0=x0, restarts=restarts,
                         max_doublings=max_doublings, separable=True, active=active)
