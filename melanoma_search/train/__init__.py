"""Training one configuration: config schema, the loop, LR finder, schedules, samplers, TTA.

``python -m melanoma_search.train --config FILE.yaml [--set key=value ...]`` runs it from the command line.
"""

from __future__ import annotations

from melanoma_search.train.config import TrainConfig, apply_overrides, load_config, parse_config
from melanoma_search.train.loop import EpochStats, FoldResult, RunResult, fit, fit_fold, prepare_for, resolve_device

__all__ = [
    "EpochStats",
    "FoldResult",
    "RunResult",
    "TrainConfig",
    "apply_overrides",
    "fit",
    "fit_fold",
    "load_config",
    "parse_config",
    "prepare_for",
    "resolve_device",
]
