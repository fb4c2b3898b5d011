"""cv_auc: out-of-fold ROC AUC over all K patient-grouped folds (primary-source rows only), the mean of the folds'.

The honest score of a configuration: K models per trial, each scored on rows it never trained on, so the ranking
does not hang on one fold's noise (a fold of ~160 melanomas moves an AUC by about 0.015). Trials report after each fold
(``REPORT = "fold"``, step k after k fold models): the mean AUC of the folds so far, which the pruner compares with
other trials' on the same folds, so a poor configuration stops after its first fold model and a finished trial is a
member already bagged over every fold (the export needs no refit for it). Fold AUCs are recorded per trial too.
"""

from __future__ import annotations

from melanoma_search.train import RunResult

DIRECTIONS = ("maximize",)
METRIC = "auc"  # what the blend chooses members by and the export reports (melanoma_search.metrics)
METRIC_NAMES = ("cv_auc",)
REPORT = "fold"


def folds(n_folds: int) -> list[int]:
    return list(range(n_folds))


def score(result: RunResult) -> float:
    return result.auc
