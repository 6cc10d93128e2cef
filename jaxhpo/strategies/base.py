"""The strategy protocol: pure ``init`` / ``ask`` / ``tell`` / ``best`` over the cube.

A strategy object holds only static configuration (the space, ``popsize`` and
settings that fix shapes or code paths). Everything that changes, and every
numeric hyperparameter of the strategy, lives in its state, a pytree of
arrays, so a whole search can be jitted, scanned, and vmapped over keys or
over the strategy's own hyperparameters.

Strategies compare and hash by their settings: a second instance with the same
settings hits every jit cache the first one filled.

Every state is a NamedTuple with at least the fields

  ``params``      the strategy's hyperparameters (a dict of arrays),
  ``best_x``      ``(dim,)`` best cube point told so far,
  ``best_value``  ``()`` its value (``inf`` until a finite value is told),
  ``generation``  ``()`` int32, number of ``tell`` calls so far.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import pareto
from .._keys import check_key
from .._traced import check_returned_like, is_traced
from ..space import Space
from ._checks import check_concrete_params, check_param_kind

__all__ = ["Strategy", "compiled", "check_popsize", "initial_best", "first_argmin", "counting_dtype", "float32_values"]


_MAX_POPSIZE = 2**31 - 1


def check_popsize(popsize: Any, minimum: int = 1, name: str = "popsize") -> int:
    if isinstance(popsize, bool) or not isinstance(popsize, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {popsize!r}")
    if popsize < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {popsize}")
    if popsize > _MAX_POPSIZE:  # rows are indexed by int32 (argmin, ranks, gathers)
        raise ValueError(f"{name} must be <= 2**31 - 1 (rows are indexed in int32), got {popsize}")
    return int(popsize)


def compiled(strategy: "Strategy", method: str, *args: Any) -> Any:
    """``strategy.method(*args)`` as one compiled program, cached per equal strategy.

    ``ask`` and ``tell`` called op by op (a Python loop over generations)
    would trace each ``lax.cond`` / ``while_loop`` of a strategy anew, and
    their branches, closures made in each call, would compile again every
    generation (a GP-BO tell: seconds); ``init`` op by op compiles a dozen
    small programs. Inside a jitted search this is one more call in the
    traced program, inlined.

    Strategies are static arguments, keyed by ``==`` and ``hash``: by their
    settings for jaxhpo's classes, by identity for others (see ``Strategy``).
    """
    return _compiled(strategy, method, *args)


@partial(jax.jit, static_argnums=(0, 1))
def _compiled(strategy: Any, method: str, *args: Any) -> Any:
    return getattr(strategy, method)(*args)


def initial_best(dim: int) -> dict[str, jax.Array]:
    """The common state fields before anything is told."""
    return dict(
        best_x=jnp.full((dim,), 0.5, jnp.float32),
        best_value=jnp.array(jnp.inf, jnp.float32),
        generation=jnp.array(0, jnp.int32),
    )


def check_cube_points(x: Any, where: str = "tell") -> None:
    """Refuse points off the unit cube where ``x`` is concrete and held by this
    process (a strategy would store them as its population or best point, and
    ask from them); ``where`` names the call. A traced ``x``, or a global array
    over several processes, is not read."""
    if isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True):
        return
    host = np.asarray(x)
    if host.dtype.kind not in "fiu" or host.ndim != 2:
        return  # the shape check names it
    outside = ~(np.isfinite(host) & (host >= 0) & (host <= 1))
    if outside.any():
        row, col = map(int, np.argwhere(outside)[0])
        raise ValueError(f"{where}: x must hold points of the unit cube (finite, in [0, 1]) as ask returns them; "
                         f"x[{row}, {col}] = {float(host[row, col])!r}")


def float32_values(values: Any, num_objectives: int | None = None) -> jax.Array:
    """Objective values as float32, the dtype strategies rank in (also under x64).

    A finite value beyond float32's range becomes its largest finite value of
    that sign (a result, the worst there is), not ``inf`` (a failure);
    values that differ only past float32's 7 digits tie. With
    ``num_objectives``, the columns of ``(n, k)`` values past them are
    constraints: a positive one below float32's smallest normal becomes it,
    a violation still (``pareto.violations_kept``).
    """
    big = float(np.finfo(np.float32).max)
    if not isinstance(values, (jax.Array, jax.core.Tracer)):
        # Host values (Python floats, NumPy float64) are clipped before they become
        # arrays: without x64, jnp.asarray would round 1e39 to inf first.
        host = np.asarray(values)
        if host.dtype.kind not in "biuf":  # (checked here: jnp.asarray's error for text names nothing)
            raise TypeError(f"values must be real numbers, got dtype {host.dtype}")
        # Integers too: without x64, jnp.asarray would wrap 2**32 to 0.
        values = host_float32_values(host, num_objectives) if host.dtype.kind in "iuf" else host
    values = jnp.asarray(values)
    if not (jnp.issubdtype(values.dtype, jnp.floating) or jnp.issubdtype(values.dtype, jnp.integer)):
        raise TypeError(f"values must be real numbers, got dtype {values.dtype}")
    if jnp.issubdtype(values.dtype, jnp.floating) and float(jnp.finfo(values.dtype).max) > big:
        values = jnp.where(jnp.isfinite(values), jnp.clip(values, -big, big), values)
    if num_objectives is not None:  # before the cast: float32 holds no 1e-50
        values = pareto.constraint_columns_kept(values, num_objectives)
    return values.astype(jnp.float32)


def host_float32_values(values: Any, num_objectives: int | None = None) -> np.ndarray:
    """``float32_values`` of host floats, on the host (no device program runs)."""
    values = np.asarray(values, np.float64)
    big = float(np.finfo(np.float32).max)
    if num_objectives is not None and values.ndim == 2 and values.shape[1] > num_objectives:
        tiny = float(np.finfo(np.float32).tiny)
        g = values[:, num_objectives:]
        values = np.concatenate([values[:, :num_objectives], np.where((g > 0) & (g < tiny), tiny, g)], axis=1)
    return np.where(np.isfinite(values), np.clip(values, -big, big), values).astype(np.float32)


# From this many values on, ``first_argmin`` takes two plain reductions.
_TWO_PASS_ARGMIN = 2048


def counting_dtype(n: int) -> jnp.dtype:
    """The dtype to sum ``n`` flags or reduce ``n`` indices in: float32 where
    exact (``n <= 2**24``), else int32. XLA:CPU splits an integer reduction
    into several passes of reduce-windows; a float one runs as one library
    kernel."""
    return jnp.float32 if n <= 2**24 else jnp.int32


def first_argmin(values: jax.Array) -> jax.Array:
    """Index of the first minimum of a 1-D array without NaN (int32 scalar); ``jnp.argmin``'s result.

    Long arrays take two plain reductions, the minimum and then the least
    index that holds it, which XLA:CPU vectorises; ``jnp.argmin``'s reduction
    over (value, index) pairs is not (random search at 10^6 points: 6% more
    evaluations per second; GA at popsize 4096: 10%). The indices are
    reduced in ``counting_dtype``.
    """
    n = values.shape[0]
    if n < _TWO_PASS_ARGMIN:
        return jnp.argmin(values).astype(jnp.int32)
    low = jnp.min(values)
    index = jnp.min(jnp.where(values == low, jnp.arange(n, dtype=counting_dtype(n)), n - 1))
    return index.astype(jnp.int32)


def _on_device(value: Any) -> bool:
    """Whether ``value`` holds a jax array or a tracer (a list of them too)."""
    return any(isinstance(v, (jax.Array, jax.core.Tracer)) for v in jax.tree_util.tree_leaves(value))


def strongly_typed(tree: Any) -> Any:
    """``tree`` with weakly typed leaves (and Python numbers) made strongly typed,
    of the same dtype: a state's leaves keep one type from call to call."""
    def strong(a: Any) -> Any:
        if isinstance(a, (bool, int, float, complex)):
            a = jnp.asarray(a)
        aval = getattr(a, "aval", None)
        return jnp.asarray(a, a.dtype) if getattr(aval, "weak_type", False) else a

    return jax.tree_util.tree_map(strong, tree)


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


class Strategy:
    """Base class. Subclasses implement ``default_params``, ``_init``, ``_ask``, ``_tell``.

    ``run``, ``minimize``, ``Study`` and the op-by-op ``init`` / ``ask`` /
    ``tell`` share compiled programs between equal strategies. jaxhpo's own
    classes compare and hash by their public attributes (their settings). A
    class defined elsewhere (a user's strategy, or a subclass of a built-in
    one) compares by identity, since its ``_ask`` / ``_tell`` may read
    private attributes or settings that cannot be hashed: each instance
    compiles its own programs. Such a class may define ``__eq__`` and
    ``__hash__`` over everything its methods read to share them.

    Attributes:
      space: the ``Space`` searched.
      popsize: number of points per ``ask``.
    """

    # Whether ``tell`` changes what later ``ask`` calls propose. Where it does
    # not (random and quasi-random points), callers may ask for several
    # batches before telling any (e.g. Hyperband running brackets side by side).
    adaptive: bool = True

    # Whether points that are not the strategy's own proposals may take the
    # place of some of them (``inject``): false where the proposals are a
    # fixed set that must all be evaluated (a grid).
    accepts_points: bool = True

    # Whether asking again before telling gives new points drawn as the first
    # were (random and quasi-random points, TPE's draws from its model), so
    # that several asks may fill one batch of work before any tell.
    independent_asks: bool = False

    def __init__(self, space: Space, popsize: int):
        if not isinstance(space, Space):
            raise TypeError(f"space must be a jaxhpo.Space, got {type(space).__name__}")
        self.space = space
        self.popsize = check_popsize(popsize)

    # ------------------------------------------------------- identity
    def _settings(self) -> tuple:
        return tuple(sorted((k, _freeze(v)) for k, v in vars(self).items() if not k.startswith("_")))

    def _by_settings(self) -> bool:
        return type(self).__module__.startswith("jaxhpo.")

    def __eq__(self, other: object) -> bool:
        if not self._by_settings():
            return self is other
        return type(self) is type(other) and self._settings() == other._settings()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        if not self._by_settings():
            return object.__hash__(self)
        return hash((type(self).__name__, self._settings()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._settings() if k != "space")
        return f"{type(self).__name__}({inner})"

    @property
    def dim(self) -> int:
        """Number of cube coordinates (the space's ``dim``)."""
        return self.space.dim

    def sized_for(self, num_evaluations: int) -> "Strategy":
        """The strategy ``minimize`` runs for a search of ``num_evaluations``:
        itself, unless a setting left at its default is better fitted to the
        budget (``GPBO``'s capacity). ``Result.strategy`` is the one that ran."""
        return self

    # ------------------------------------------------------- protocol
    def default_params(self) -> dict[str, jax.Array]:
        """The strategy's numeric hyperparameters as arrays (vmap over them freely)."""
        return {}

    def param_checks(self) -> dict[str, Callable[[Any], Any]]:
        """``name -> check(value)`` for the hyperparameters in ``default_params``
        that have a rule (each raises a ValueError naming itself)."""
        return {}

    def check_params(self, params: dict[str, Any] | None) -> None:
        """ValueError for unknown names in ``params`` or concrete values that break
        their rule; traced values (``vmap`` over params) cannot be inspected and pass."""
        if params is None:
            return
        if not isinstance(params, Mapping):
            raise TypeError(f"{type(self).__name__} params must be a dict of settings (see default_params()), "
                            f"got {type(params).__name__}")
        unknown = set(params) - set(self.default_params())
        if unknown:
            raise ValueError(
                f"{type(self).__name__} params has unknown key(s) {sorted(unknown)}; "
                f"known: {sorted(self.default_params())}"
            )
        defaults = self.default_params()
        for name, value in params.items():
            if is_traced(value):
                continue  # vmapped over: its batch axis is vmap's
            shape = np.shape(value)
            if jnp.shape(defaults[name]) == () and shape != ():  # array settings check their own shapes
                raise ValueError(f"{type(self).__name__} params[{name!r}] must be a scalar (to search over "
                                 f"several values, vmap over params), got shape {shape}")
            check_param_kind(f"{type(self).__name__} params[{name!r}]", value, defaults[name])
        check_concrete_params(params, self.param_checks())

    def init(self, key: jax.Array, params: dict[str, Any] | None = None) -> NamedTuple:
        """Initial state. ``params`` defaults to ``default_params()``; ``key`` a
        ``jax.random`` key or an integer seed."""
        key = check_key(key, allow_seed=True)
        self.check_params(params)
        defaults = self.default_params()
        params = defaults if params is None else {**defaults, **params}
        # Host values convert on the host: an eager conversion compiles a program.
        params = {k: (jnp.asarray if _on_device(v) else np.asarray)(v, jnp.asarray(defaults[k]).dtype)
                  for k, v in params.items()}
        return compiled(self, "_strong_init", key, params)

    def _strong_init(self, key: jax.Array, params: dict[str, jax.Array]) -> NamedTuple:
        state = self._init(key, params)
        self._check_initial_state(state)
        # A weakly typed leaf (jnp.full(n, 0.5)) would come back strongly typed
        # from the first tell, and every program would compile twice.
        return strongly_typed(state)

    def _check_initial_state(self, state: Any) -> None:
        """What ``ask`` and ``tell`` read of every state: a NamedTuple with
        ``best_x (dim,)``, ``best_value ()`` and ``generation ()`` (a user's
        ``_init`` that returned a dict failed later, naming an attribute)."""
        what = f"{type(self).__name__}._init"
        fields = ("best_x", "best_value", "generation")
        if not (isinstance(state, tuple) and hasattr(state, "_replace")) or not all(hasattr(state, f) for f in fields):
            raise TypeError(f"{what} must return a NamedTuple state with the fields best_x, best_value and "
                            f"generation (jaxhpo.strategies.base.initial_best(dim) makes them), got "
                            f"{type(state).__name__}")
        want = {"best_x": (self.dim,), "best_value": (), "generation": ()}
        for f, shape in want.items():
            if jnp.shape(getattr(state, f)) != shape:
                raise ValueError(f"{what} must return a state whose {f} has shape {shape}, got "
                                 f"{jnp.shape(getattr(state, f))}")

    def ask(self, key: jax.Array, state: NamedTuple) -> tuple[jax.Array, NamedTuple]:
        """Propose a population.

        Args:
          key: a ``jax.random`` key or an integer seed.
        Returns:
          ``x`` of shape ``(popsize, dim)`` in ``[0, 1]``, and the new state.
        """
        return compiled(self, "_clipped_ask", check_key(key, allow_seed=True), state)

    def _check_own_state(self, what: str, state: Any) -> Any:
        """Refuse a state that is not this strategy's: another type, structure or
        leaf shapes than its ``init`` makes (another strategy's, or this class's over
        another space, popsize or capacity), which would fail deep inside ``_ask``
        or ``_tell``, or be read as garbage. Runs where ``ask`` and ``tell`` are
        traced, so once per compiled program. Returns what ``init`` makes
        (``ShapeDtypeStruct`` leaves)."""
        defaults = self.default_params()
        params = getattr(state, "params", None)
        params = defaults if params is None else params  # (a user's state may keep none)
        if not isinstance(params, Mapping) or set(params) != set(defaults):
            raise TypeError(f"{what}: state must be a state of this {type(self).__name__} (what its init, ask and "
                            f"tell return), got {type(state).__name__}")
        want = jax.eval_shape(lambda k: self._strong_init(k, defaults), jax.random.key(0))
        got_paths, got_def = jax.tree_util.tree_flatten_with_path(state)
        want_leaves, want_def = jax.tree_util.tree_flatten(want)
        if got_def != want_def:
            raise TypeError(f"{what}: state must be a state of this {type(self).__name__} (what its init, ask and "
                            f"tell return), got {type(state).__name__} of another structure")
        for (path, got), w in zip(got_paths, want_leaves):
            if jnp.shape(got) != w.shape:
                raise ValueError(f"{what}: state{jax.tree_util.keystr(path)} has shape {jnp.shape(got)}; this "
                                 f"{type(self).__name__}'s init makes {w.shape} there: the state is another "
                                 "strategy's (another space, popsize or capacity; a minimize result's state "
                                 "belongs to Result.strategy)")
        return want

    def _clipped_ask(self, key: jax.Array, state: NamedTuple) -> tuple[jax.Array, NamedTuple]:
        name = type(self).__name__
        self._check_own_state("ask", state)
        out = self._ask(key, state)
        if not isinstance(out, tuple) or len(out) != 2 or not isinstance(out[0], (jax.Array, np.ndarray)):
            # (a bare x, or (state, x), would unpack row by row or fail in NumPy, naming nothing)
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
            first = f" whose first item is a {type(out[0]).__name__}" if isinstance(out, tuple) and out else ""
            raise TypeError(f"{name}._ask must return (x, state): the points (popsize, dim) and the new state, "
                            f"got {got}{first}")
        x, new = out
        if jnp.shape(x) != (self.popsize, self.dim) or not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise TypeError(f"{name}._ask must return x of shape (popsize, dim) = {(self.popsize, self.dim)} "
                            f"(floats in the cube), got {jnp.shape(x)} {jnp.result_type(x)}")
        return jnp.clip(x, 0.0, 1.0).astype(jnp.float32), self._returned_state(f"{name}._ask", state, new)

    @staticmethod
    def _returned_state(what: str, old: NamedTuple, new: Any) -> NamedTuple:
        """``new``, a state ``what`` returned for ``old``, checked to be of
        ``old``'s type, structure, shapes and dtypes, strongly typed."""
        if type(new) is not type(old):
            raise TypeError(f"{what} must return a state of the type it was given ({type(old).__name__}), "
                            f"got {type(new).__name__}")
        check_returned_like(what, "a state like the one it was given", "state", old, new)
        return strongly_typed(new)

    def valid(self, state: NamedTuple) -> jax.Array:
        """Which rows of the latest ``ask`` are real proposals, shape ``(popsize,)``.

        Always all ``True`` except for strategies with a finite supply of
        points (a grid) whose last batch is padded; padded rows are ignored
        by ``tell`` and never become best.
        """
        return jnp.ones((self.popsize,), bool)

    def inject(self, state: NamedTuple, x: jax.Array, injected: jax.Array) -> NamedTuple:
        """Let rows of ``x`` replace the latest ``ask``'s proposals; call it between ``ask`` and ``tell``.

        Args:
          state: the state returned by the latest ``ask``.
          x: ``(popsize, dim)`` the points that will be told: the proposals,
            with the ``injected`` rows replaced by other cube points (a
            user's configurations to try, a warm start).
          injected: ``(popsize,)`` bool, the replaced rows.
        Returns:
          the state to ``tell`` ``x`` to. Strategies that learn from the
          points they are told (most) need nothing and return ``state``;
          those that learn from their own samples (CMA-ES) re-express the
          injected rows in their sampling coordinates.
        """
        if not self.accepts_points:
            raise ValueError(f"{type(self).__name__} evaluates a fixed set of points; other points "
                             "cannot take their place")
        self._told_points(x, "inject")
        dtype = getattr(injected, "dtype", None)
        shape, dtype = jnp.shape(injected), np.asarray(injected).dtype if dtype is None else dtype
        if shape != (self.popsize,) or dtype != bool:
            raise ValueError(f"inject: injected must be a ({self.popsize},) bool array (the replaced rows), got "
                             f"shape {shape} and dtype {dtype}")
        return state

    def _told_points(self, x: Any, where: str = "tell") -> jax.Array:
        """``x`` given to ``tell`` (or ``where``) as ``(popsize, dim)`` float32,
        refused if off the cube where it is concrete (every ``tell``, also those
        that override this one)."""
        check_cube_points(x, where)
        x = jnp.asarray(x, jnp.float32)
        if x.shape != (self.popsize, self.dim):
            raise ValueError(
                f"{where}: x must have shape (popsize, dim) = {(self.popsize, self.dim)}, got {x.shape}"
            )
        return x

    def tell(self, state: NamedTuple, x: jax.Array, values: jax.Array) -> NamedTuple:
        """Learn from evaluated points.

        Args:
          x: ``(popsize, dim)`` the points of the latest ``ask``: finite,
            in ``[0, 1]`` (checked where ``x`` is concrete; ``space.encode``
            maps configurations found elsewhere into the cube).
          values: ``(popsize,)`` real objective values, minimised. Non-finite
            values are failed evaluations: they are passed on as ``+inf``, so
            they rank last and never become best.
        """
        x = self._told_points(x)
        values = float32_values(values)
        if values.shape != (self.popsize,):
            raise ValueError(f"tell: values must have shape ({self.popsize},), got {values.shape}")
        return compiled(self, "_tell_checked", state, x, values)

    def _tell_checked(self, state: NamedTuple, x: jax.Array, values: jax.Array) -> NamedTuple:
        """``tell`` of checked arguments (``x`` float32 ``(popsize, dim)``, ``values``
        float32 in the strategy's shape), the part that ``compiled`` runs."""
        self._check_own_state("tell", state)
        ok = jnp.isfinite(values) & self.valid(state)
        values = jnp.where(ok, values, jnp.inf)
        new = self._returned_state(f"{type(self).__name__}._tell", state, self._tell(state, x, values))
        i = first_argmin(values)
        better = values[i] < state.best_value
        return new._replace(
            best_x=jnp.where(better, x[i], state.best_x),
            best_value=jnp.where(better, values[i], state.best_value),
            generation=state.generation + 1,
        )

    def best(self, state: NamedTuple) -> tuple[jax.Array, jax.Array]:
        """``(x_best (dim,), value_best ())``: the best point told so far."""
        return state.best_x, state.best_value

    # ------------------------------------------------------- to implement
    def _init(self, key: jax.Array, params: dict[str, jax.Array]) -> NamedTuple:
        raise NotImplementedError

    def _ask(self, key: jax.Array, state: NamedTuple) -> tuple[jax.Array, NamedTuple]:
        raise NotImplementedError

    def _tell(self, state: NamedTuple, x: jax.Array, values: jax.Array) -> NamedTuple:
        """``values`` arrive sanitised: failed evaluations are ``+inf``."""
        return state
