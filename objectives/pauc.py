"""pauc: out-of-fold partial AUC above 80 % sensitivity over all K folds, the mean of the folds' (ISIC 2024's
metric, 0 to 0.2).

For a study aimed at the screening end of the ROC curve: two configurations with the same AUC can flag very
different numbers of benign lesions at the sensitivity a clinic works at. Cross-validated and reported fold by fold
like ``cv_auc`` (so trials are pruned between folds on their pAUC). The floor is ``MIN_TPR``: copy this file to
``./objectives/pauc90.py`` with ``MIN_TPR = 0.9`` for another.
"""

from __future__ import annotations

from melanoma_search.train import RunResult

MIN_TPR = 0.8
DIRECTIONS = ("maximize",)
METRIC = f"pauc@{MIN_TPR}"  # the blend chooses members by it too (melanoma_search.metrics)
METRIC_NAMES = ("pauc_80",)
REPORT = "fold"


def folds(n_folds: int) -> list[int]:
    return list(range(n_folds))


def score(result: RunResult) -> float:
    return result.pauc(min_tpr=MIN_TPR)
