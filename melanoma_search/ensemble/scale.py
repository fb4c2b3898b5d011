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
its own fold.

One difference remains. An out-of-fold row carries *one* fold model's score; a new image gets all K of them,
combined. The fold models disagree, and their mean is both narrower and a better ranker than any one of them (the
disagreement is noise that averaging removes), so a probability map and thresholds fitted on one fold model's
scores promise the wrong rates for the combination: ``sens90`` flags more than 90 % of melanomas (and more benign
lesions), and high scores read as lower probabilities than they are. Matching the two scores' distributions with a
quantile map does not cure it (the combination ranks better: its classes are further apart, not only its spread).

What ships instead (:class:`DeployedScale`): per fold, the members' percentiles are blended as before; the K fold
blends of a new image are combined by averaging their probits (:func:`combine_folds`). How much variance that
averaging removes is measured on images every fold model scores as a new image (the study's unlabelled test split,
else the outside images of ``export --validate``; no label is read): the mean over images of the K probits' variance
around their mean (:func:`averaging_variance`). The out-of-fold rows' probits are then shrunk toward their class's
mean by exactly that variance (:func:`on_deployed_scale`): the combined score's class-conditional distributions,
on which the probability map and the operating points are fitted. It assumes the removed noise is about the same in
both classes and roughly normal in probit space; measured in tests/ensemble/test_scale.py (a simulation) and on
outside images (docs/export.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "EDGE",
    "DeployedScale",
    "averaging_variance",
    "combine_folds",
    "fold_percentiles",
    "oof_percentiles",
    "on_deployed_scale",
    "per_fold_blend",
    "probits",
    "percentiles",
    "weighted_mean",
]


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


#: Percentiles are kept this far from 0 and 1 before their probit is taken (a score outside every reference
#: prediction would otherwise be infinite).
EDGE = 1e-3


def probits(scores: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return np.asarray(ndtri(np.clip(np.asarray(scores, dtype=np.float64), EDGE, 1.0 - EDGE)))


def combine_folds(per_fold: np.ndarray) -> np.ndarray:
    """The deployed score of images scored by K fold models, (images, K) blended percentiles -> (images,): the
    normal CDF of the mean of their probits (for K = 1, the fold blend itself)."""
    from scipy.special import ndtr

    per_fold = np.asarray(per_fold, dtype=np.float64)
    if per_fold.shape[1] == 1:
        return per_fold[:, 0]
    return np.asarray(ndtr(probits(per_fold).mean(axis=1)))


def averaging_variance(per_fold: np.ndarray) -> float | None:
    """What averaging K fold models removes, on images each of them scores as new: the mean over images of the
    variance of their K probits around their mean. ``None`` for one fold model or fewer than 10 images."""
    per_fold = np.asarray(per_fold, dtype=np.float64)
    if per_fold.ndim != 2 or per_fold.shape[1] < 2 or per_fold.shape[0] < 10:
        return None
    return float(probits(per_fold).var(axis=1).mean())


def on_deployed_scale(single: np.ndarray, target: np.ndarray, *, removed: float) -> np.ndarray:
    """Out-of-fold scores of one fold model as the combination of K would score those images: in probit space,
    each class's rows shrunk toward the class's mean until their variance has lost ``removed`` (never below a fifth
    of it: a tiny class's variance is itself uncertain), then back through the normal CDF."""
    from scipy.special import ndtr

    z, target = probits(single), np.asarray(target)
    out = z.copy()
    for label in np.unique(target):
        rows = target == label
        mean, variance = float(z[rows].mean()), float(z[rows].var())
        if variance > 0:
            out[rows] = mean + (z[rows] - mean) * np.sqrt(max(variance - removed, 0.2 * variance) / variance)
    return np.asarray(ndtr(out))


@dataclass(frozen=True)
class DeployedScale:
    """How a new image's K fold models are read on the scale the probability map and thresholds were fitted on:
    the variance their averaging removes, and where it was measured."""

    variance: float
    source: str
    """The images it was measured on (no labels read)."""
    n_images: int
    folds: int

    def to_dict(self) -> dict[str, Any]:
        return {"variance": self.variance, "source": self.source, "n_images": self.n_images, "folds": self.folds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeployedScale:
        return cls(variance=float(data["variance"]), source=str(data["source"]), n_images=int(data["n_images"]),
                   folds=int(data["folds"]))

    @classmethod
    def measure(cls, per_fold: np.ndarray, *, source: str) -> DeployedScale | None:
        variance = averaging_variance(per_fold)
        if variance is None:
            return None
        return cls(variance=variance, source=source, n_images=len(per_fold), folds=int(per_fold.shape[1]))


def per_fold_blend(ranked: Mapping[str, Mapping[int, np.ndarray]], weights: Mapping[str, float]
                   ) -> np.ndarray | None:
    """(images, K): each fold's blend of the members' percentiles of the same images (``ranked``: member -> fold ->
    that fold model's percentile); ``None`` unless every member has the same K fold models (then fold k of one
    member and fold k of another were trained on the same rows, and blend like the out-of-fold rows do)."""
    folds = {tuple(sorted(by_fold)) for name, by_fold in ranked.items() if weights.get(name, 0) > 0}
    if len(folds) != 1:
        return None
    return np.stack([weighted_mean({name: by_fold[k] for name, by_fold in ranked.items()}, weights)
                     for k in next(iter(folds))], axis=1)
