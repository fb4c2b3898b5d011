"""Scores on one scale: each fold model's output as its percentile among its own out-of-fold predictions.

AUC only reads the order of scores, so members are blended by rank (the "rank then blend" of the 2020 winners). The
rank of a score is taken against a fixed reference, not against the batch being scored, so one image gets the same
score alone, in a batch, or in the export's test set, and any monotone transform of a model changes nothing.

The reference of a fold model is the out-of-fold predictions *of that model* (its validation fold). A member bagged
over K folds is the mean of its K fold models' percentiles. Ranking the mean of the K raw probabilities against the
pooled out-of-fold predictions instead, as before, mixes two scales: an average of K models is squeezed towards the
middle compared with one model's predictions, and fold models that disagree in calibration (one fold's model
outputs 0.1 where another's outputs 0.6 for the same kind of image) put their mean at a percentile that neither of
them would give. Out-of-fold rows are scored by exactly one fold model, so they are that model's percentile within
its own fold: the blend's weights, its calibration and its out-of-fold AUC are read on the scale new images get.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["fold_percentiles", "oof_percentiles", "percentiles", "weighted_mean"]


def percentiles(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each score's percentile in [0, 1] among ``reference`` (ties count half), a stable monotone map."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(ref, scores, side="left")
    at_or_below = np.searchsorted(ref, scores, side="right")
    return (below + at_or_below) / (2.0 * max(len(ref), 1))


def _reference(reference: pd.DataFrame, fold: int) -> np.ndarray:
    """Fold ``fold``'s out-of-fold predictions; all of them when the reference has no such fold (an ensemble
    exported before fold models were ranked one by one, or a test table without per-fold columns)."""
    if "fold" in reference and fold in set(reference["fold"]):
        return reference.loc[reference["fold"] == fold, "pred"].to_numpy(np.float64)
    return reference["pred"].to_numpy(np.float64)


def fold_percentiles(predictions: Mapping[int, np.ndarray], reference: pd.DataFrame) -> np.ndarray:
    """A member's score of new images: the mean over its fold models of each model's percentile among its own
    out-of-fold predictions. ``predictions``: fold -> that fold model's raw scores of the images;
    ``reference``: the member's out-of-fold predictions (``fold``, ``pred``)."""
    if not predictions:
        raise ValueError("a member needs at least one fold model's predictions")
    return np.mean([percentiles(scores, _reference(reference, fold)) for fold, scores in predictions.items()], axis=0)


def oof_percentiles(oof: pd.DataFrame) -> np.ndarray:
    """Each out-of-fold row's percentile among the predictions of the fold model that scored it (row order kept)."""
    out = np.zeros(len(oof))
    folds = oof["fold"].to_numpy() if "fold" in oof else np.zeros(len(oof), dtype=int)
    preds = oof["pred"].to_numpy(np.float64)
    for fold in np.unique(folds):
        rows = folds == fold
        out[rows] = percentiles(preds[rows], preds[rows])
    return out


def weighted_mean(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """The blend: members' scores averaged with their weights (weights need not sum to one; zero ones are
    ignored). The one place a blend is computed, at export and when an ensemble scores new images."""
    used = {name: w for name, w in weights.items() if w > 0}
    total = sum(used.values())
    if total <= 0:
        raise ValueError("blend weights must include a positive weight")
    return np.asarray(sum(np.asarray(scores[name], dtype=np.float64) * (w / total) for name, w in used.items()))
