"""Stage two: gradient-boosted trees over the image models' out-of-fold scores, the patient's metadata, the
dataset's own per-lesion columns and the patient's other lesions (the ISIC 2024 design), searched by Optuna.

``features`` is the table of feature groups, ``learners`` the table of tree learners (LightGBM, XGBoost, CatBoost),
``crossfit`` the honest nested cross-fitting on the image study's patient-grouped folds, ``study`` the stage-two
study and the like-for-like comparison with the blend, ``model`` stage two as it ships in an ensemble folder and
scores new rows. ``export`` runs it (``export --stage-two``, or a spec's ``stage_two: {enabled: true}``).
"""

from __future__ import annotations

from melanoma_search.stage_two.crossfit import CrossFit, FoldLearners, cross_fit
from melanoma_search.stage_two.features import (
    FeatureGroup,
    Inputs,
    build_features,
    get_group,
    list_groups,
    register_group,
)
from melanoma_search.stage_two.learners import Learner, get_learner, list_learners, register_learner
from melanoma_search.stage_two.model import StageTwo
from melanoma_search.stage_two.study import Choice, StageTwoData, ablation, choose, fit_trial, run_study

__all__ = [
    "Choice",
    "CrossFit",
    "FeatureGroup",
    "FoldLearners",
    "Inputs",
    "Learner",
    "StageTwo",
    "StageTwoData",
    "ablation",
    "build_features",
    "choose",
    "cross_fit",
    "fit_trial",
    "get_group",
    "get_learner",
    "list_groups",
    "list_learners",
    "register_group",
    "register_learner",
    "run_study",
]
