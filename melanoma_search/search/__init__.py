"""The search: study specs, objectives, opening studies, running trials, progress output."""

from __future__ import annotations

from melanoma_search.search.objective import Objective, load_objective
from melanoma_search.search.progress import TrialProgress, leaderboard
from melanoma_search.search.spec import EFFICIENTNET_NATIVE_SIZES, StudySpec, load_spec, native_size
from melanoma_search.search.study import build_pruner, build_sampler, open_storage, open_study, redact
from melanoma_search.search.trial import TrialRunner, sample_params, trial_config

__all__ = [
    "EFFICIENTNET_NATIVE_SIZES",
    "Objective",
    "StudySpec",
    "TrialProgress",
    "TrialRunner",
    "build_pruner",
    "build_sampler",
    "leaderboard",
    "load_objective",
    "load_spec",
    "native_size",
    "open_storage",
    "open_study",
    "redact",
    "sample_params",
    "trial_config",
]
