"""Training one configuration: its config and key-path codec, the fold loop, results, LR finder, schedules.

``python -m melanoma_search.train --config FILE.yaml [--set key=value ...]`` runs it from the command line.
"""

from __future__ import annotations

from melanoma_search.train.config import TrainConfig, apply_overrides, load_config, parse_config, set_path
from melanoma_search.train.device import resolve_device
from melanoma_search.train.fold import fit_fold
from melanoma_search.train.loop import fit, prepare_for
from melanoma_search.train.results import EpochStats, FoldResult, RunResult

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
    "set_path",
]
