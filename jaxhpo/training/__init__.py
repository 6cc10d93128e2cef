"""Training-aware search: the trainer protocol, successive halving, Hyperband, PBT,
and architectures / optimisers as fixed-shape hyperparameters."""

from ._compile import CPU_COMPILER_OPTIONS
from .buckets import bucket_count, train_bucketed, width_buckets
from .classifier import MLPClassifierTrainer
from .hyperband import (MultiFidelityResult, hyperband, hyperband_schedule, level_sizes, padded_work,
                        successive_halving, successive_halving_schedule, survivor_order)
from .models import MaskedMLP, dense_mlp_apply, magnitude_mask, slice_params
from .optimizers import OPTIMIZERS, SwitchOptimizer
from .pbt import PBTResult, explore, exploit_parents, pbt
from .trainer import Trainer, evaluate_population, init_population, train_population

__all__ = [
    "Trainer", "init_population", "train_population", "evaluate_population",
    "hyperband_schedule", "successive_halving_schedule", "successive_halving", "hyperband",
    "MultiFidelityResult", "survivor_order", "level_sizes", "padded_work",
    "pbt", "PBTResult", "explore", "exploit_parents",
    "MaskedMLP", "magnitude_mask", "slice_params", "dense_mlp_apply",
    "OPTIMIZERS", "SwitchOptimizer",
    "MLPClassifierTrainer",
    "bucket_count", "train_bucketed", "width_buckets",
    "CPU_COMPILER_OPTIONS",
]
