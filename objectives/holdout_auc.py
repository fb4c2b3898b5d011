"""holdout_auc: validation ROC AUC on fold 0 alone, the fast proxy of cv_auc (one model per trial).

With ~117 melanomas in a 2020 fold, differences under ~0.01 are noise: confirm the winners with cv_auc.
"""

from __future__ import annotations

from melanoma_search.train import RunResult

DIRECTIONS = ("maximize",)
METRIC = "auc"  # what the blend chooses members by and the export reports (melanoma_search.metrics)
METRIC_NAMES = ("holdout_auc",)


def folds(n_folds: int) -> list[int]:
    return [0]


def score(result: RunResult) -> float:
    return result.auc
