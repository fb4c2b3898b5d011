"""What a study records about itself for the stages after the search: the study attributes, each spelled here once.

A run writes these into the study (so they travel with its storage to any worker, node or later export) and the
export, the student rounds and the dashboards read them back. Each name has this one owner, and each value one
reader and one writer here, so a renamed attribute cannot leave a stale reader elsewhere:

``spec``          the study spec as the run resolved it (the export reads its ``export:`` defaults);
``objective``     the objective's name; ``data``: where the dataset came from;
``metric``        the objective's rank metric of out-of-fold scores (``auc``, ``pauc@0.8``): what the export's blend
                  chooses members by and reports;
``artifact_dir``  the artifact store of the trials (student rounds share their first study's);
``weights``       trial number -> the folder of its kept weights (rewritten when a trial leaves the top k);
``cv_auc``        trial number -> out-of-fold AUC (mean of the folds') after a refit (a finished trial's own
                  attributes are read-only in Optuna, so the study holds them);
``first_step``    the step a trial's first report is made at: 1 (a step counts the fold models, or epochs, done, so a
                  pruner's ``min_resource: 1`` is the first fold); 0 in a study that reported before this was
                  recorded, kept so its old and new trials stay comparable at each step;
``student``       a noisy-student round's lineage (its round and teacher);
``study_key``     the random id that keys the study's folder (:func:`melanoma_search.search.study.study_folder`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from melanoma_search.metrics import RankMetric

__all__ = [
    "ARTIFACT_DIR",
    "CV_AUC",
    "DATA",
    "FIRST_STEP",
    "KEPT_WEIGHTS",
    "METRIC",
    "OBJECTIVE",
    "SPEC",
    "STUDENT",
    "STUDY_KEY",
    "artifact_dir",
    "cv_aucs",
    "export_section",
    "first_step",
    "kept_weights",
    "lineage",
    "metric",
    "record_cv_aucs",
    "set_kept_weights",
    "settle_first_step",
    "stage_two_name",
    "stage_two_section",
]

SPEC = "spec"
OBJECTIVE = "objective"
METRIC = "metric"
DATA = "data"
ARTIFACT_DIR = "artifact_dir"
KEPT_WEIGHTS = "weights"
CV_AUC = "cv_auc"
STUDENT = "student"
STUDY_KEY = "study_key"
FIRST_STEP = "first_step"


def metric(study: optuna.Study) -> RankMetric:
    """The rank metric the study's trials were judged by (its objective's ``METRIC``); a study recorded before the
    metric was is read from its objective's name (``pauc*``: partial AUC above 80 %, else AUC)."""
    from melanoma_search.metrics import rank_metric

    return rank_metric(str(study.user_attrs.get(METRIC) or study.user_attrs.get(OBJECTIVE) or "auc"))


def first_step(study: optuna.Study) -> int:
    """The step of a trial's first report (see :func:`settle_first_step`)."""
    return int(study.user_attrs.get(FIRST_STEP, 1))


def settle_first_step(study: optuna.Study, *, created: bool) -> int:
    """Record the study's first report step once: 1 for a new study (step k = k fold models, or epochs, done, the
    resource a pruner's ``min_resource`` counts); 0 for a study whose trials already reported from 0 before the step
    was recorded, because a pruner compares trials step by step and a study mixing the two would compare fold k
    with fold k + 1."""
    if FIRST_STEP in study.user_attrs:
        return first_step(study)
    reported = not created and any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    step = 0 if reported else 1
    study.set_user_attr(FIRST_STEP, step)
    return step


def kept_weights(study: optuna.Study) -> dict[int, Path]:
    """Trial number -> the folder holding its kept weights (only the study's ``top_k_weights`` trials have one)."""
    return {int(number): Path(folder) for number, folder in study.user_attrs.get(KEPT_WEIGHTS, {}).items()}


def set_kept_weights(study: optuna.Study, kept: Mapping[int, Path]) -> None:
    study.set_user_attr(KEPT_WEIGHTS, {str(number): str(folder) for number, folder in sorted(kept.items())})


def cv_aucs(study: optuna.Study) -> dict[int, float]:
    """Trial number -> the out-of-fold AUC (mean of the folds') a refit measured for it."""
    return {int(number): float(value) for number, value in study.user_attrs.get(CV_AUC, {}).items()}


def record_cv_aucs(study: optuna.Study, values: Mapping[int, float]) -> None:
    """Add refitted trials' out-of-fold AUCs to those the study holds."""
    merged = {**cv_aucs(study), **{int(n): float(v) for n, v in values.items()}}
    study.set_user_attr(CV_AUC, {str(n): round(v, 5) for n, v in sorted(merged.items())})


def export_section(study: optuna.Study) -> dict[str, Any]:
    """The ``export:`` section of the spec the run recorded (empty for a study no run of this tool made)."""
    return dict(study.user_attrs.get(SPEC, {}).get("export", {}))


def stage_two_section(study: optuna.Study) -> dict[str, Any]:
    """The ``stage_two:`` section of the spec the run recorded (empty: stage two off unless asked)."""
    return dict(study.user_attrs.get(SPEC, {}).get("stage_two", {}))


def stage_two_name(study_name: str) -> str:
    """The stage-two study of an image study, kept in its storage."""
    return f"{study_name}-stage-two"


def artifact_dir(study: optuna.Study, *, storage_dir: Path) -> Path:
    """The artifact store the run recorded, else ``<storage_dir>/<study>/artifacts``."""
    recorded = study.user_attrs.get(ARTIFACT_DIR)
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return storage_dir / study.study_name / "artifacts"


def lineage(study: optuna.Study) -> dict[str, Any] | None:
    """A noisy-student round's round and teacher (``None`` for a study trained on labels alone)."""
    value = study.user_attrs.get(STUDENT)
    return dict(value) if isinstance(value, dict) else None
