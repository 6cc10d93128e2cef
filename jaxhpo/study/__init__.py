"""The host-side study: ask/tell for any Python objective, durable storage,
resume after a crash, progress reports.

``Study`` drives a jaxhpo strategy one configuration at a time for
objectives that are not JAX functions (scikit-learn models, training
scripts, simulators); ``storage="sqlite:///study.db"`` makes it durable and
shareable between processes; a ``pruner`` stops unpromising trials early
from the intermediate values they ``report``.
"""

from .progress import PlainProgress, progress_bar, report_every
from .pruners import (HyperbandPruner, MedianPruner, NopPruner, PatientPruner, PercentilePruner, Pruner,
                      SuccessiveHalvingPruner, ThresholdPruner, TrialPruned)
from .serialize import StateChecksumError, StateFormatError, state_from_bytes, state_to_bytes
from .specs import STRATEGY_NAMES, build_strategy, resolve_strategy, space_from_spec, space_to_spec
from .storage import SCHEMA_VERSION, SQLiteStorage, StorageError, open_storage
from .study import Study, report, set_user_attr, should_prune
from .trial import TRIAL_STATES, Trial, TrialState

__all__ = [
    "Study", "Trial", "TrialState", "TRIAL_STATES",
    "report", "should_prune", "set_user_attr", "TrialPruned",
    "Pruner", "NopPruner", "MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "HyperbandPruner",
    "ThresholdPruner", "PatientPruner",
    "SQLiteStorage", "StorageError", "open_storage", "SCHEMA_VERSION",
    "state_to_bytes", "state_from_bytes", "StateFormatError", "StateChecksumError",
    "space_to_spec", "space_from_spec", "resolve_strategy", "build_strategy", "STRATEGY_NAMES",
    "progress_bar", "PlainProgress", "report_every",
]
