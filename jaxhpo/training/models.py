"""Architectures as hyperparameters with fixed shapes: masks on a max-size network.

``vmap`` needs every member of a population to have the same array shapes,
but width and depth change shapes. The pattern: allocate the largest network
of the search once, and realise a member's width and depth by masks, so that
the masked network computes exactly what the small network would:

* width ``w``: hidden units ``j >= w`` are multiplied by 0. Their outgoing
  weights then see a zero input and their incoming weights a zero gradient,
  so they neither affect the output nor learn.
* depth ``d``: hidden layer ``l >= d`` passes its input through unchanged
  (``h = where(l < d, layer(h), h)``), so the output layer reads layer
  ``d - 1``'s activations.
* sparsity ``s``: magnitude pruning keeps, per weight matrix, the largest
  ``1 - s`` share of the *active* weights (those inside the width mask) and
  zeroes the rest in the forward pass.

Every mask is built from traced hyperparameters, so members of different
architectures run in one vmapped program. The cost is the max-size network's
FLOPs for every member; to spend fewer, group members by width into a few
compiled shapes (``jaxhpo.training.buckets``). The same pattern serves other
models: channels of a convolution, heads of attention, experts.

Initialisation is scaled by the member's true fan-in (``width``, not
``max_width``), so a masked member starts with the weight scale a small
network of its width would have, and its active weights depend on its key
and width only, not on ``max_width``: a configuration starts from the same
weights, and trains to the same model, whether it is masked to the search's
largest network, placed in a width bucket, or retrained alone at its true
width.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..strategies._checks import check_concrete_params, check_int, check_real
from .trainer import check_positive_int

__all__ = ["MaskedMLP", "magnitude_mask", "slice_params", "dense_mlp_apply"]


# Columns of a weight matrix are drawn in tiles of this many, each from its own key.
_TILE = 8


def _unit_normals(keys: jax.Array, units: int, cols: list[int]) -> list[jax.Array]:
    """One ``(units, c)`` float32 standard-normal matrix per key and ``c`` in
    ``cols``, whose entry ``[i, j]`` depends only on its key, ``i`` and
    ``j``: the top-left block of a larger draw equals a smaller draw (as
    entries of ``jax.random.normal(key, shape)`` do not).

    Row ``i`` (hidden unit ``i``) gets ``fold_in(key, i)``, and each tile of
    ``_TILE`` columns of a row ``fold_in(row key, tile)``. Every matrix's
    tiles go through one batched ``fold_in`` and one batched draw, so the
    program holds a fixed few random-number kernels however many matrices
    there are (each is large to compile on a CPU).
    """
    tiles = [-(-c // _TILE) for c in cols]
    row_keys = jax.vmap(lambda k: jax.vmap(lambda i: jax.random.fold_in(k, i))(jnp.arange(units)))(keys)
    tile_matrix = np.concatenate([np.full(units * t, m) for m, t in enumerate(tiles)])
    tile_row = np.concatenate([np.repeat(np.arange(units), t) for t in tiles])
    tile_index = np.concatenate([np.tile(np.arange(t), units) for t in tiles]).astype(np.int32)
    draws = jax.vmap(lambda k, t: jax.random.normal(jax.random.fold_in(k, t), (_TILE,), jnp.float32))(
        row_keys[tile_matrix, tile_row], tile_index)
    out, start = [], 0
    for c, t in zip(cols, tiles):
        out.append(draws[start:start + units * t].reshape(units, t * _TILE)[:, :c])
        start += units * t
    return out


# A concrete sparsity is checked; a traced one is clipped inside the mask.
_SPARSITY_CHECK = {"sparsity": lambda v: check_real("sparsity", v, 0.0, 1.0)}


def magnitude_mask(w: jax.Array, sparsity: jax.Array, active: jax.Array | None = None) -> jax.Array:
    """Which weights magnitude pruning keeps (jit-able, differentiable-free).

    Args:
      w: ``(...)`` weights.
      sparsity: ``()`` share in ``[0, 1]`` of the active weights to zero (a
        traced value outside is clipped; a concrete one raises ``ValueError``).
      active: ``(...)`` bool (broadcast to ``w``'s shape), the weights that
        exist (the width mask); all by default.
    Returns:
      ``(...)`` bool: active weights whose magnitude is at least the
      ``k``-th smallest active magnitude, ``k = floor(sparsity * num_active)``
      (ties kept); inactive weights are ``False``. A product within float32's
      rounding of a whole number counts as that number, so ``k`` is what the
      sparsity as written gives: ``float32(0.21)`` is ``0.2099999934``, yet of
      300 weights it prunes 63, as ``0.7`` of 10 prunes 7.
    """
    w = jnp.asarray(w)
    if jnp.ndim(sparsity) != 0:
        raise ValueError(f"sparsity must be a scalar (), got shape {jnp.shape(sparsity)}")
    check_concrete_params({"sparsity": sparsity}, _SPARSITY_CHECK)
    if active is None:
        active = jnp.ones(w.shape, bool)
    else:
        try:
            fits = jnp.broadcast_shapes(jnp.shape(active), w.shape) == w.shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"active must have w's shape {w.shape}, got {jnp.shape(active)}")
        if jnp.result_type(active) != jnp.bool_:  # (an integer's & below is bitwise: 2 & True is 0)
            raise TypeError(f"active must be a bool array, got dtype {jnp.result_type(active)} "
                            "(a unit mask of 0s and 1s: compare it, mask > 0)")
        active = jnp.broadcast_to(active, w.shape)  # (counted below entry by entry)
    mag = jnp.where(active, jnp.abs(w), jnp.inf).reshape(-1)
    num_active = jnp.sum(active)
    n = num_active.astype(jnp.float32)
    s = jnp.clip(sparsity, 0.0, 1.0)
    share = s * n
    whole = jnp.round(share)
    # The sparsity's rounding to float32 moves the product by at most n ulp(s) / 2
    # from the product as written, the product's own rounding by ulp(share) / 2;
    # the floor of the rounded product alone came one short or one over, by the
    # side the roundings fell. (Twice those bounds, no more: a product further
    # from a whole number is a fraction as written.)
    ulp_s = jnp.nextafter(s, jnp.asarray(2.0, s.dtype)) - s
    ulp_share = jnp.nextafter(share, jnp.asarray(jnp.inf, share.dtype)) - share
    near = jnp.abs(share - whole) <= n * ulp_s + ulp_share
    k = jnp.where(near, whole, jnp.floor(share)).astype(jnp.int32)
    # Inactive entries sort last (+inf), so position k is the k-th smallest active one.
    ordered = jnp.sort(mag)
    thresh = jnp.where(k >= num_active, jnp.inf, ordered[jnp.minimum(k, mag.size - 1)])
    return active & (jnp.abs(w) >= thresh) & (k < num_active)


class MaskedMLP:
    """A ReLU MLP of up to ``max_depth`` hidden layers of up to ``max_width`` units.

    Parameters (``init``): ``w_in (in_dim, W)``, ``b_in (W,)``, ``w_hidden
    (max_depth - 1, W, W)``, ``b_hidden (max_depth - 1, W)``, ``w_out (W,
    out_dim)``, ``b_out (out_dim,)`` with ``W = max_width``. Hashable by its
    sizes, so equal models share compiled code.

    Args:
      in_dim, out_dim: input features and outputs.
      max_width: the widest hidden layer of the search.
      max_depth: the most hidden layers of the search (>= 1).
    """

    def __init__(self, in_dim: int, out_dim: int, max_width: int, max_depth: int = 1):
        self.in_dim = check_positive_int(in_dim, "in_dim", 1)
        self.out_dim = check_positive_int(out_dim, "out_dim", 1)
        self.max_width = check_positive_int(max_width, "max_width", 1)
        self.max_depth = check_positive_int(max_depth, "max_depth", 1)

    def _key(self):
        return (self.in_dim, self.out_dim, self.max_width, self.max_depth)

    def __eq__(self, other):
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self):
        return hash(("MaskedMLP",) + self._key())

    def __repr__(self):
        return "MaskedMLP(in_dim={}, out_dim={}, max_width={}, max_depth={})".format(*self._key())

    def init(self, key: jax.Array, width: Any = None) -> dict:
        """Parameters, He-scaled by the true fan-in (``width`` ``()``; ``max_width`` if None).

        The weights of hidden unit ``j`` of layer ``l`` depend only on
        ``key``, ``l`` and ``j``, not on ``max_width`` or ``max_depth``: the
        active block of two models' parameters for the same key, width and
        depth is the same.
        """
        W = self.max_width
        check_concrete_params({"width": width if width is not None else W},
                              {"width": lambda v: check_int("width", v, 1, W)})
        width = jnp.asarray(W if width is None else width, jnp.float32)
        nh = self.max_depth - 1
        # One key per matrix, by index (not split, whose keys depend on their
        # count): the input layer, the output layer, each hidden layer.
        keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(2 + nh, dtype=jnp.int32))
        # Rows are hidden units: w_in is drawn transposed.
        w_in, w_out, *w_hidden = _unit_normals(keys, W, [self.in_dim, self.out_dim] + [W] * nh)
        w_hidden = jnp.stack(w_hidden) if nh else jnp.zeros((0, W, W), jnp.float32)
        return {
            "w_in": w_in.T * jnp.sqrt(2.0 / self.in_dim),
            "b_in": jnp.zeros((W,), jnp.float32),
            "w_hidden": w_hidden * jnp.sqrt(2.0 / width),
            "b_hidden": jnp.zeros((nh, W), jnp.float32),
            "w_out": w_out * jnp.sqrt(1.0 / width),
            "b_out": jnp.zeros((self.out_dim,), jnp.float32),
        }

    def unit_mask(self, width: Any) -> jax.Array:
        """``(max_width,)`` float32: 1 for the first ``width`` hidden units."""
        return (jnp.arange(self.max_width) < width).astype(jnp.float32)

    def prune_masks(self, params: dict, width: Any, depth: Any, sparsity: Any) -> dict:
        """Magnitude-pruning masks (float32, shaped like the weights) for one member.

        Computed on the current weights and held constant (``stop_gradient``),
        so pruned weights get no gradient from the loss.
        """
        u = self.unit_mask(width) > 0
        act_in = jnp.broadcast_to(u[None, :], params["w_in"].shape)
        act_h = u[None, :, None] & u[None, None, :] & (jnp.arange(1, self.max_depth) < depth)[:, None, None]
        act_out = jnp.broadcast_to(u[:, None], params["w_out"].shape)
        w = jax.lax.stop_gradient(params)
        m_h = jax.vmap(lambda a, b: magnitude_mask(a, sparsity, b))(w["w_hidden"], act_h) if self.max_depth > 1 \
            else jnp.zeros(params["w_hidden"].shape, bool)
        return {
            "w_in": magnitude_mask(w["w_in"], sparsity, act_in).astype(jnp.float32),
            "w_hidden": m_h.astype(jnp.float32),
            "w_out": magnitude_mask(w["w_out"], sparsity, act_out).astype(jnp.float32),
        }

    def apply(self, params: dict, x: jax.Array, width: Any = None, depth: Any = None,
              sparsity: Any = None) -> jax.Array:
        """Outputs of one member.

        Args:
          params: from ``init`` (no population axis; ``vmap`` for one).
          x: ``(batch, in_dim)`` inputs.
          width: ``()`` int hidden units per layer, ``1..max_width`` (traced).
          depth: ``()`` int hidden layers, ``1..max_depth`` (traced).
          sparsity: ``()`` float share of weights pruned by magnitude, or None.
        Returns:
          ``(batch, out_dim)`` float32, equal to the ``width`` x ``depth``
          network's outputs (``dense_mlp_apply`` of ``slice_params``).
        """
        width = self.max_width if width is None else width
        depth = self.max_depth if depth is None else depth
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != self.in_dim:
            raise ValueError(f"x must have shape (batch, in_dim) = (batch, {self.in_dim}), got {jnp.shape(x)}")
        if jnp.shape(params["w_in"]) != (self.in_dim, self.max_width):
            raise ValueError(f"params must come from this model's init: w_in has shape "
                             f"{jnp.shape(params['w_in'])}, expected {(self.in_dim, self.max_width)}")
        for name, value in (("width", width), ("depth", depth)):
            if jnp.ndim(value) != 0:  # one member's: vmap for a population
                raise ValueError(f"{name} must be a scalar (), got shape {jnp.shape(value)}")
        check_concrete_params({"width": width, "depth": depth},
                              {"width": lambda v: check_int("width", v, 1, self.max_width),
                               "depth": lambda v: check_int("depth", v, 1, self.max_depth)})
        u = self.unit_mask(width)
        w_in, w_h, w_out = params["w_in"], params["w_hidden"], params["w_out"]
        if sparsity is not None:
            m = self.prune_masks(params, width, depth, sparsity)
            w_in, w_h, w_out = w_in * m["w_in"], w_h * m["w_hidden"], w_out * m["w_out"]
        h = jax.nn.relu(x @ w_in + params["b_in"]) * u

        def layer(h, args):
            l, w, b = args
            # An inactive layer is the identity: the output reads layer depth - 1.
            return jnp.where(l < depth, jax.nn.relu(h @ w + b) * u, h), None

        if self.max_depth > 1:
            h, _ = jax.lax.scan(layer, h, (jnp.arange(1, self.max_depth), w_h, params["b_hidden"]))
        return h @ w_out + params["b_out"]


def slice_params(params: dict, width: int, depth: int) -> list[tuple[jax.Array, jax.Array]]:
    """The small network inside a masked one: ``[(w, b), ...]``, ``depth + 1`` layers.

    Python ints ``width``, ``depth``: shapes ``(in, width)``, ``(width, width)``
    x ``depth - 1``, ``(width, out)``.
    """
    layers = [(params["w_in"][:, :width], params["b_in"][:width])]
    for l in range(depth - 1):
        layers.append((params["w_hidden"][l, :width, :width], params["b_hidden"][l, :width]))
    layers.append((params["w_out"][:width], params["b_out"]))
    return layers


def dense_mlp_apply(layers: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    """A plain ReLU MLP with true shapes: ``(batch, in) -> (batch, out)``."""
    h = x
    for w, b in layers[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = layers[-1]
    return h @ w + b
