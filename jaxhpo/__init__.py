"""jaxhpo: hyperparameter optimisation for JAX.

Search spaces map to the unit cube; strategies are pure ``init`` / ``ask`` /
``tell`` functions over batched arrays; a whole search compiles to one
``lax.scan``.
"""

from . import hypergrad
from . import training
from .cv import cross_validate, fold_scores, kfold_masks, masks_from_splits
from .datasets import load_iris
from .datasets_digits import load_digits
# ``jaxhpo.evaluate`` is the function; what else its module offers is here too
# (``import jaxhpo.evaluate as m`` gives the function, not the module).
from .evaluate import auto_chunk_size, evaluate, host_local
from .loop import Result, Trace, minimize, run
from .checkpoint import load_state, save_state
from .compile_cache import use_compile_cache
from .space import Categorical, Float, Int, Space
from .pareto import hypervolume
from .strategies import (
    CMAES, GPBO, MOTPE, NSGA2, TPE, DifferentialEvolution, SepCMAES, GeneticAlgorithm, GridSearch, LocalSearch, QuasiRandom, RandomSearch,
    Strategy,
)
from .training import Trainer, hyperband, hyperband_schedule, pbt, successive_halving
from .study import SQLiteStorage, StorageError, Study, Trial, TrialPruned, TrialState

__version__ = "0.1.0"

__all__ = [
    "Categorical", "Float", "Int", "Space",
    "Strategy", "GridSearch", "QuasiRandom", "RandomSearch", "TPE",
    "CMAES", "SepCMAES", "DifferentialEvolution", "GeneticAlgorithm", "LocalSearch", "NSGA2", "MOTPE", "GPBO", "hypervolume",
    "use_compile_cache",
    "evaluate", "run", "minimize", "Result", "Trace", "auto_chunk_size", "host_local", "save_state", "load_state",
    "hypergrad", "training", "Trainer", "hyperband", "hyperband_schedule", "successive_halving", "pbt",
    "load_digits",
    "Study", "Trial", "TrialState", "TrialPruned", "SQLiteStorage", "StorageError",
    "kfold_masks", "cross_validate", "fold_scores", "masks_from_splits", "load_iris",
]
