"""Exact hypergradients for continuous hyperparameters.

* ``unrolled``: differentiate a validation loss through ``T`` training steps,
  reverse mode (with rematerialisation) or forward mode.
* ``implicit``: differentiate an inner solution by the implicit function
  theorem (CG or Neumann inverse-Hessian-vector products).
* ``hypergradient_descent``: an optax transformation that adapts its own
  learning rate online (Baydin et al., 2018).
* ``gradient_tune``: gradient-based tuning of a ``Space``'s continuous
  dimensions for a vmapped population of starting points.
* ``meta_gradient``: hyperparameters shared by a batch of tasks (an
  initialisation, per-parameter learning rates), by hypergradients through
  every task's inner training.
"""

from .implicit import METHODS, conjugate_gradient, implicit, neumann
from .meta import meta_gradient
from .online import HypergradientState, hypergradient_descent
from .tuning import float_mask, gradient_tune
from .unrolled import AUTO_FORWARD_MAX, MODES, STEP_POLICIES, contractions_saveable, rollout, unrolled

__all__ = [
    "unrolled", "rollout", "contractions_saveable", "AUTO_FORWARD_MAX", "MODES", "STEP_POLICIES",
    "implicit", "conjugate_gradient", "neumann", "METHODS",
    "hypergradient_descent", "HypergradientState",
    "gradient_tune", "float_mask",
    "meta_gradient",
]
