"""auc_vs_cost: two objectives, fold-0 AUC up and training seconds down — a Pareto front in the dashboard.

For picking a model that is good *and* affordable (a bigger EfficientNet at a larger size is rarely free). The cost
is the training passes alone (``RunResult.train_seconds``): the image cache decode, paid once by whichever trial
first needs a size, and validation / TTA prediction would otherwise make the same configuration cost more or less
depending on when it ran.
"""

from __future__ import annotations

from melanoma_search.train import RunResult

DIRECTIONS = ("maximize", "minimize")
METRIC = "auc"  # what the blend chooses members by and the export reports (melanoma_search.metrics)
METRIC_NAMES = ("holdout_auc", "train_seconds")


def folds(n_folds: int) -> list[int]:
    return [0]


def score(result: RunResult) -> tuple[float, float]:
    return result.auc, result.train_seconds
