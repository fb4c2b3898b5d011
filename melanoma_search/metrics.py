"""The scores this field reports and how sure they are: ROC AUC (SIIM-ISIC 2020), partial AUC above a true-positive-rate
floor (ISIC 2024), an AUC's standard error and the paired difference of two scorings of the same images.

A screening tool is used at high sensitivity: what matters is how few benign lesions are flagged while almost every
melanoma is. ISIC 2024 scored the area under the ROC curve above 80 % TPR, which ranges from 0 to 0.2 (a perfect
ranking scores 0.2, chance 0.02). Two models with the same AUC can differ a lot there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

__all__ = [
    "DEFAULT_MIN_TPR",
    "PairedDifference",
    "auc_standard_error",
    "lesions_per_cancer",
    "paired_auc_difference",
    "partial_auc",
    "top_k_sensitivity",
]

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


def auc_standard_error(auc: float, *, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC from the two class sizes alone."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc))
    return math.sqrt(max(variance, 0.0) / (positives * negatives))


@dataclass(frozen=True)
class PairedDifference:
    """metric(ours) - metric(theirs) on the same images (AUC unless said), with its paired bootstrap standard error
    and 95 % interval."""

    difference: float
    standard_error: float
    low: float
    high: float

    def __str__(self) -> str:
        return (f"{self.difference:+.4f} +-{self.standard_error:.3f} "
                f"(95% {self.low:+.3f} to {self.high:+.3f})")


def paired_auc_difference(target: ArrayLike, ours: ArrayLike, theirs: ArrayLike, *, resamples: int = 2000,
                          seed: int = 0, metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc_score
                          ) -> PairedDifference:
    """How much better ``ours`` ranks the images than ``theirs``, and how sure that is.

    Two ensembles scored on the same images have AUCs that move together with the sample, so their difference is
    far less noisy than either AUC's own standard error suggests (about 0.03 on 242 images): the bootstrap resamples
    images, each with both scores (``scipy.stats.bootstrap``, ``paired=True``), to say by how much. ``metric``:
    another score of (labels, scores), e.g. :func:`partial_auc`.
    """
    from scipy import stats

    target, ours, theirs = (np.asarray(a, dtype=np.float64) for a in (target, ours, theirs))
    if not len(target) == len(ours) == len(theirs):
        raise ValueError("a paired difference needs both score sets on the same images")

    def difference(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float(metric(labels, a) - metric(labels, b))

    boot = stats.bootstrap((target, ours, theirs), difference, paired=True, vectorized=False,
                           n_resamples=resamples, method="percentile", random_state=np.random.default_rng(seed))
    low, high = boot.confidence_interval
    return PairedDifference(difference=difference(target, ours, theirs), standard_error=float(boot.standard_error),
                            low=float(low), high=float(high))


def lesions_per_cancer(target: ArrayLike, score: ArrayLike, *, sensitivity: float) -> float:
    """How many lesions a clinician reviews per melanoma found, flagging from the top score down until
    ``sensitivity`` of the melanomas are flagged (the ISIC 2024 organisers' figure at 80 % and 90 %)."""
    target, score = np.asarray(target, dtype=np.float64), np.asarray(score, dtype=np.float64)
    positives = target.sum()
    if positives == 0:
        raise ValueError("lesions per cancer needs at least one melanoma")
    order = np.argsort(-score, kind="stable")
    found = np.cumsum(target[order])
    needed = int(np.argmax(found >= sensitivity * positives - 1e-9))  # the first position reaching it
    cutoff = score[order][needed]
    flagged = score >= cutoff  # every lesion tied with the last one flagged is reviewed too
    return float(flagged.sum() / max(target[flagged].sum(), 1.0))


def top_k_sensitivity(target: ArrayLike, score: ArrayLike, patient: ArrayLike, *, k: int = 15) -> float:
    """The share of melanomas among their patient's ``k`` highest-scored lesions (ISIC 2024: k = 15), what a
    clinician finds by looking at each patient's top lesions."""
    frame = pd.DataFrame({"target": np.asarray(target, dtype=np.float64), "score": np.asarray(score, np.float64),
                          "patient": np.asarray(patient)})
    if frame["target"].sum() == 0:
        raise ValueError("top-k sensitivity needs at least one melanoma")
    rank = frame.groupby("patient")["score"].rank(ascending=False, method="first")
    return float(frame.loc[rank <= k, "target"].sum() / frame["target"].sum())
