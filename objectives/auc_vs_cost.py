"""auc_vs_cost: two objectives, fold-0 AUC up and training seconds down — a Pareto front in the dashboard.

For picking a model that is good *and* affordable (a bigger EfficientNet at a larger size is rarely free).
"""

from __future__ import annotations

from melanoma_search.train import RunResult

DIRECTIONS = ("maximize", "minimize")
METRIC_NAMES = ("holdout_auc", "train_seconds")


def folds(n_folds: int) -> list[int]:
    return [0]


def score(result: RunResult) -> tuple[float, float]:
    return result.auc, result.seconds
