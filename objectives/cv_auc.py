"""cv_auc: pooled out-of-fold ROC AUC over all K patient-grouped folds (primary-source rows only).

The honest score of a configuration, and the costliest: K models per trial. Fold AUCs are recorded per trial too.
"""

from __future__ import annotations

from melanoma_search.train import RunResult

DIRECTIONS = ("maximize",)
METRIC_NAMES = ("cv_auc",)


def folds(n_folds: int) -> list[int]:
    return list(range(n_folds))


def score(result: RunResult) -> float:
    return result.auc
