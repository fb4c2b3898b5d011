"""The search: study specs, objectives, opening studies, running trials, backends, progress output.

``start_run`` is what ``python -m melanoma_search.run`` calls; ``dry_run`` what its ``--dry-run`` prints.
"""

from __future__ import annotations

from melanoma_search.search.backends import Backend, RunOutcome, get_backend, list_backends, register_backend
from melanoma_search.search.objective import Objective, load_objective
from melanoma_search.search.progress import TrialProgress, leaderboard
from melanoma_search.search.spec import EFFICIENTNET_NATIVE_SIZES, StudySpec, load_spec, native_size
from melanoma_search.search.start import RunSummary, dry_run, start_run
from melanoma_search.search.study import build_pruner, build_sampler, open_storage, open_study, redact
from melanoma_search.search.trial import TrialRunner, sample_params, trial_config

__all__ = [
    "EFFICIENTNET_NATIVE_SIZES",
    "Backend",
    "Objective",
    "RunOutcome",
    "RunSummary",
    "StudySpec",
    "TrialProgress",
    "TrialRunner",
    "build_pruner",
    "build_sampler",
    "dry_run",
    "get_backend",
    "leaderboard",
    "list_backends",
    "load_objective",
    "load_spec",
    "native_size",
    "open_storage",
    "open_study",
    "redact",
    "register_backend",
    "sample_params",
    "start_run",
    "trial_config",
]
