"""The scores this field reports: ROC AUC (SIIM-ISIC 2020) and partial AUC above a true-positive-rate floor (ISIC 2024).

A screening tool is used at high sensitivity: what matters is how few benign lesions are flagged while almost every
melanoma is. ISIC 2024 scored the area under the ROC curve above 80 % TPR, which ranges from 0 to 0.2 (a perfect
ranking scores 0.2, chance 0.02). Two models with the same AUC can differ a lot there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

__all__ = ["DEFAULT_MIN_TPR", "partial_auc"]

#: The ISIC 2024 floor: the area above 80 % sensitivity.
DEFAULT_MIN_TPR = 0.8


def partial_auc(target: ArrayLike, score: ArrayLike, *, min_tpr: float = DEFAULT_MIN_TPR) -> float:
    """Area under the ROC curve where the true-positive rate is at least ``min_tpr``: from 0 to ``1 - min_tpr``.

    Computed as ISIC 2024's scorer does: the labels flipped and the scores negated turn "TPR above the floor" into
    "FPR below ``1 - min_tpr``", scikit-learn's ``roc_auc_score(max_fpr=...)`` gives that area McClish-standardised,
    and the standardisation is undone.
    """
    if not 0.0 <= min_tpr < 1.0:
        raise ValueError(f"min_tpr must be in [0, 1), got {min_tpr}")
    flipped = 1 - np.asarray(target, dtype=np.float64)
    max_fpr = 1.0 - min_tpr
    standardised = roc_auc_score(flipped, -np.asarray(score, dtype=np.float64), max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / (1.0 - 0.5) * (standardised - 0.5))
