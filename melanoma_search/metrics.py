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
    "AUC",
    "DEFAULT_MIN_TPR",
    "PairedDifference",
    "RankMetric",
    "auc_standard_error",
    "bootstrap_draws",
    "fold_mean",
    "lesions_per_cancer",
    "paired_auc_difference",
    "partial_auc",
    "rank_metric",
    "resampled_unit",
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


def fold_mean(metric: Callable[[np.ndarray, np.ndarray], float], target: ArrayLike, score: ArrayLike,
              folds: ArrayLike | None) -> float:
    """``metric`` of each fold's rows, averaged over the folds (NaN when no fold has both classes).

    Out-of-fold rows are scored by different fold models, each on its own scale: pooling their raw scores into one
    AUC mixes the scales and penalises a configuration for its fold models' disagreement in calibration, not for
    how they rank (Forman and Scholz, SIGKDD Explorations 12(1), 2010, recommend the mean of the per-fold figures).
    A fold lacking a class (a resample can drop its melanomas) is left out of the mean; ``folds=None``: one fold.
    """
    target, score = np.asarray(target, dtype=np.float64), np.asarray(score, dtype=np.float64)
    labels = np.zeros(len(target)) if folds is None else np.asarray(folds)
    values = []
    for fold in np.unique(labels):
        rows = labels == fold
        if 0 < target[rows].sum() < rows.sum():
            values.append(float(metric(target[rows], score[rows])))
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class RankMetric:
    """What a study is judged by, of out-of-fold scores: the mean over folds of a rank metric of (labels, scores).

    One owner, so the objective a trial returns, the figure it records, the blend's choice of members and the
    export's and card's headline are the same number. ``name``: how it is recorded in a study (``auc``,
    ``pauc@0.8``); ``label``: how it is printed.
    """

    name: str
    label: str
    per_fold: Callable[[np.ndarray, np.ndarray], float]

    def __call__(self, target: ArrayLike, score: ArrayLike, folds: ArrayLike | None = None) -> float:
        return fold_mean(self.per_fold, target, score, folds)


def _auc(target: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic of the scores' ranks (ties count half): scikit-learn's value, without
    its input checks, which cost about 20 times the arithmetic where a blend's greedy selection and the BBC-CV
    bootstrap call it hundreds of thousands of times."""
    from scipy.stats import rankdata

    positive = np.asarray(target, dtype=np.float64) > 0.5
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both melanoma and benign rows")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


#: ROC AUC, the SIIM-ISIC 2020 metric.
AUC = RankMetric(name="auc", label="AUC", per_fold=_auc)


def rank_metric(name: str) -> RankMetric:
    """The metric recorded as ``name``: ``auc``, or ``pauc@T`` (partial AUC above sensitivity T, ISIC 2024's at
    0.8). An objective name (a study recorded before the metric was) is read the way stage two always read it:
    one naming ``pauc`` is judged by the partial AUC above 80 %, any other by AUC."""
    if name == "auc":
        return AUC
    if name.startswith("pauc@"):
        try:
            floor = float(name.removeprefix("pauc@"))
        except ValueError:
            raise ValueError(f"metric {name!r}: pauc@T needs a number T, e.g. pauc@0.8") from None
        if not 0.0 <= floor < 1.0:
            raise ValueError(f"metric {name!r}: the sensitivity floor must be in [0, 1)")
        return RankMetric(name=f"pauc@{floor:g}", label=f"pAUC above {floor:.0%} sensitivity",
                          per_fold=lambda target, score: partial_auc(target, score, min_tpr=floor))
    if "pauc" in name:
        return rank_metric(f"pauc@{DEFAULT_MIN_TPR:g}")
    return AUC


def resampled_unit(groups: ArrayLike | None) -> str:
    """What a bootstrap over ``groups`` resamples, in words for the output and the card."""
    return "images" if groups is None else "patients"


def bootstrap_draws(n: int, *, groups: ArrayLike | None = None, resamples: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``resamples`` bootstrap samples of ``n`` rows: whole groups resampled where ``groups`` is
    given (a patient's lesions move together: one patient's images are not independent evidence, Obuchowski,
    Biometrics 1997), single rows otherwise."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(resamples)]
    codes, _ = pd.factorize(pd.Series(np.asarray(groups)).astype(str), sort=True)
    members = pd.Series(np.arange(n)).groupby(codes).apply(np.asarray).tolist()
    count = len(members)
    return [np.concatenate([members[i] for i in rng.integers(0, count, count)]) for _ in range(resamples)]


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
                          seed: int = 0, metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc_score,
                          groups: ArrayLike | None = None) -> PairedDifference:
    """How much better ``ours`` ranks the images than ``theirs``, and how sure that is.

    Two ensembles scored on the same images have AUCs that move together with the sample, so their difference is
    far less noisy than either AUC's own standard error suggests (about 0.03 on 242 images): the bootstrap resamples
    images, each with both scores, to say by how much; with ``groups`` (patient ids) it resamples whole patients
    (:func:`bootstrap_draws`). ``metric``: another score of (labels, scores), e.g. :func:`partial_auc`.
    Percentile intervals; resamples lacking a class are skipped.
    """
    target, ours, theirs = (np.asarray(a, dtype=np.float64) for a in (target, ours, theirs))
    if not len(target) == len(ours) == len(theirs):
        raise ValueError("a paired difference needs both score sets on the same images")

    def difference(rows: np.ndarray | slice) -> float:
        return float(metric(target[rows], ours[rows]) - metric(target[rows], theirs[rows]))

    draws = bootstrap_draws(len(target), groups=groups, resamples=resamples, seed=seed)
    boot = np.array([difference(d) for d in draws if 0 < target[d].sum() < len(d)])
    low, high = np.percentile(boot, [2.5, 97.5])
    return PairedDifference(difference=difference(slice(None)), standard_error=float(boot.std(ddof=1)),
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
