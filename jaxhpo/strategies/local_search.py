"""Greedy hill climbing from the incumbent, with adaptive steps and random restarts."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._traced import is_traced
from ..space import Space
from ._checks import check_int, check_real
from ._mixed import MixedCoords, normal_from_uniform, reflect, uniforms
from .base import Strategy, first_argmin, initial_best

__all__ = ["LocalSearch", "LocalSearchState"]


class LocalSearchState(NamedTuple):
    params: dict
    best_x: jax.Array
    best_value: jax.Array
    generation: jax.Array
    incumbent: jax.Array  # (dim,) the point the climb stands on
    incumbent_value: jax.Array  # () its value; +inf right after (re)start
    step: jax.Array  # () step size in cube units
    stall: jax.Array  # () int32, consecutive generations without improvement
    restarts: jax.Array  # () int32, restarts so far


def _positive(name):
    return lambda v: check_real(name, v, 0.0, 1.0, low_open=True)


def _whole(name: str, value: float) -> float:
    if value != int(value):
        raise ValueError(f"{name} must be a whole number of generations, got {value!r}")
    return value


_CHECKS = {
    "step_init": _positive("step_init"),
    "step_min": _positive("step_min"),
    "step_max": _positive("step_max"),
    "step_grow": lambda v: check_real("step_grow", v, 1.0, 100.0),
    "step_shrink": lambda v: check_real("step_shrink", v, 0.0, 1.0, low_open=True, high_open=True),
    "patience": lambda v: _whole("patience", check_real("patience", v, 1.0, math.inf)),
}


class LocalSearch(Strategy):
    """Greedy hill climbing with adaptive step size and restarts.

    After a (re)start the next ``ask`` samples ``popsize`` uniform points
    (discrete coordinates on bin centres) and the best becomes the incumbent.
    Every other ``ask`` returns ``popsize`` neighbours of the incumbent,
    shape ``(popsize, dim)``:

    * the first ``ceil(popsize / 2)`` are coordinate neighbours: each changes
      one coordinate (consecutive coordinates from a random offset, random
      direction): a continuous one by ``+-step`` (the other way at a face),
      an integer one by ``max(1, round(step * cardinality))`` values, a
      categorical one to another category;
    * the rest are random-direction neighbours: every continuous coordinate
      moves by ``N(0, step^2)`` (reflected into the cube), every integer by
      ``round(N(0, 1) * step * cardinality)`` values, and every categorical
      switches with probability ``min(step, 1/2)``.

    ``tell`` moves the incumbent to the best neighbour only if strictly
    better (a failed, ``+inf`` value never is) and then grows the step by
    ``step_grow`` (up to ``step_max``); otherwise it shrinks it by
    ``step_shrink``. When the step falls below ``step_min`` or ``patience``
    generations in a row bring no improvement, the climb restarts from
    random points with ``step_init``.

    Args:
      space: the ``Space``.
      popsize: neighbours per ``ask``.
      step_init, step_min, step_max: defaults of those params, cube units in
        ``(0, 1]`` with ``step_min <= step_init <= step_max``.
      step_grow: in ``[1, 100]``; step_shrink: in ``(0, 1)``.
      patience: generations without improvement before a restart, ``>= 1``.
    """

    def __init__(self, space: Space, popsize: int = 16, *, step_init: float = 0.1,
                 step_min: float = 1e-4, step_max: float = 0.5, step_grow: float = 1.5,
                 step_shrink: float = 0.7, patience: int = 25):
        super().__init__(space, popsize)
        for name, value in (("step_init", step_init), ("step_min", step_min), ("step_max", step_max),
                            ("step_grow", step_grow), ("step_shrink", step_shrink)):
            setattr(self, name, _CHECKS[name](value))
        self.patience = check_int("patience", patience, 1)
        if not step_min <= step_init <= step_max:
            raise ValueError(
                "step sizes must satisfy step_min <= step_init <= step_max, got "
                f"step_min={step_min}, step_init={step_init}, step_max={step_max}"
            )
        self._mixed = MixedCoords(space)

    def default_params(self):
        return {
            "step_init": jnp.float32(self.step_init),
            "step_min": jnp.float32(self.step_min),
            "step_max": jnp.float32(self.step_max),
            "step_grow": jnp.float32(self.step_grow),
            "step_shrink": jnp.float32(self.step_shrink),
            "patience": jnp.float32(self.patience),
        }

    def param_checks(self):
        return _CHECKS

    def check_params(self, params):
        super().check_params(params)
        if not params or is_traced(params):
            return
        steps = {k: np.asarray(params.get(k, self.default_params()[k]), np.float32)
                 for k in ("step_min", "step_init", "step_max")}
        if not np.all((steps["step_min"] <= steps["step_init"]) & (steps["step_init"] <= steps["step_max"])):
            raise ValueError("params: step sizes must satisfy step_min <= step_init <= step_max, got "
                             + ", ".join(f"{k}={v.tolist()}" for k, v in steps.items()))

    def _init(self, key, params):
        return LocalSearchState(
            params=params,
            incumbent=jnp.full((self.dim,), 0.5, jnp.float32),
            incumbent_value=jnp.array(jnp.inf, jnp.float32),
            step=jnp.asarray(params["step_init"], jnp.float32),
            stall=jnp.array(0, jnp.int32),
            restarts=jnp.array(0, jnp.int32),
            **initial_best(self.dim),
        )

    def _neighbours(self, u, inc, step):
        """``(popsize, dim)`` neighbours of the incumbent ``inc`` ``(dim,)``.

        ``u``: ``(4, popsize, dim + 1)`` uniform draws.
        """
        m, n, d = self._mixed, self.popsize, self.dim
        n_coord = (n + 1) // 2
        rows = jnp.arange(n)
        coord_row = rows < n_coord
        # Coordinate neighbours cycle over the coordinates that can move: one
        # of a single value (Int(k, k), one choice) would repeat the incumbent.
        movable = np.array([j for j, dim in enumerate(self.space.dims.values())
                            if dim.kind == "float" or dim.cardinality > 1] or list(range(d)), np.int32)
        k = movable.size
        offset = jnp.minimum(jnp.floor(u[0, 0, d] * k), k - 1).astype(jnp.int32)
        which = jnp.asarray(movable)[(offset + rows) % k]
        hit = coord_row[:, None] & (jnp.arange(d) == which[:, None])  # (n, d) the changed coordinate
        sign = jnp.where(u[0, :, :1] < 0.5, 1.0, -1.0)
        z = normal_from_uniform(u[1, :, :d])
        base = jnp.broadcast_to(inc, (n, d))

        # Continuous coordinates: +-step (turning back at a face), or a Gaussian step.
        fwd = base + sign * step
        along = jnp.where((fwd < 0.0) | (fwd > 1.0), base - sign * step, fwd)
        cont = jnp.where(hit, jnp.clip(along, 0.0, 1.0),
                         jnp.where(coord_row[:, None], base, reflect(base + step * z)))
        if not m.has_discrete:
            return cont

        card = jnp.asarray(m.card)
        idx = m.index(base)
        # Integers: at least one value along a coordinate, a rounded Gaussian otherwise.
        stepped = m.step_index(idx, sign, jnp.round(step * card))
        top = jnp.maximum(card - 1.0, 0.0)
        drift = jnp.clip(idx + jnp.round(z * step * card), 0.0, top)
        int_idx = jnp.where(hit, stepped, jnp.where(coord_row[:, None], idx, drift))
        # Categoricals: switch along a coordinate, switch with probability step otherwise.
        other = m.other_category(u[2, :, :d], idx)
        switch = u[3, :, :d] < jnp.minimum(step, 0.5)
        cat_idx = jnp.where(hit | (~coord_row[:, None] & switch), other, idx)
        new_idx = jnp.where(jnp.asarray(m.integer), int_idx, cat_idx)
        # Unmoved discrete coordinates keep the incumbent's bits exactly.
        discrete = jnp.where(new_idx != idx, m.centre(new_idx, base), base)
        return jnp.where(jnp.asarray(m.discrete), discrete, cont)

    def _ask(self, key, state):
        n, d = self.popsize, self.dim
        u_start, u_move = uniforms(key, (n, d), (4, n, d + 1))
        start = self._mixed.snap(u_start)  # a (re)start batch: uniform points
        fresh = ~jnp.isfinite(state.incumbent_value)
        x = jnp.where(fresh, start, self._neighbours(u_move, state.incumbent, state.step))
        return x, state

    def _tell(self, state, x, values):
        p = state.params
        # The same index as tell's best-point update computes: XLA merges the two.
        i = first_argmin(values)
        fresh = ~jnp.isfinite(state.incumbent_value)
        better = values[i] < state.incumbent_value  # +inf is never better
        incumbent = jnp.where(better, x[i], state.incumbent)
        value = jnp.where(better, values[i], state.incumbent_value)
        step = jnp.where(better, state.step * p["step_grow"], state.step * p["step_shrink"])
        # A (re)start batch only picks the starting point; it sets no step.
        step = jnp.where(fresh, state.step, jnp.minimum(step, p["step_max"]))
        stall = jnp.where(better | fresh, 0, state.stall + 1)
        restart = ~fresh & ((step < p["step_min"]) | (stall >= p["patience"]))
        return state._replace(
            incumbent=incumbent,
            incumbent_value=jnp.where(restart, jnp.inf, value),
            step=jnp.where(restart, p["step_init"], step),
            stall=jnp.where(restart, 0, stall).astype(jnp.int32),
            restarts=state.restarts + restart.astype(jnp.int32),
        )
