"""Honest stage-two scores: trees trained on the other folds' rows score each held-out fold.

The folds are the image study's own, grouped by patient, so the image scores a tree reads are already out of fold
(no image model saw the row) and the tree that scores a row never saw it, its patient or its label. Each held-out
fold is scored by ``seeds`` trees (the same parameters, another seed), each ranked among its own predictions of the
fold and averaged: the stage-two out-of-fold score, on one fold learner's scale. The fitted trees are the shipped
model: a new row is scored by every fold learner, each ranked against its own held-out predictions (as the image
members' fold models are), and combined like the image fold models
(:func:`~melanoma_search.ensemble.scale.combine_folds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from melanoma_search.ensemble.scale import combine_folds, percentiles
from melanoma_search.stage_two.learners import Learner

__all__ = ["CrossFit", "FoldLearners", "cross_fit"]


@dataclass
class FoldLearners:
    """The fitted trees: one per held-out fold and seed, each with its raw predictions of its held-out fold."""

    learner: Learner
    params: dict[str, Any]
    columns: list[str]
    models: dict[tuple[int, int], Any] = field(default_factory=dict)
    references: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    @property
    def folds(self) -> list[int]:
        return sorted({fold for fold, _ in self.models})

    def per_fold(self, features: pd.DataFrame) -> np.ndarray:
        """(rows, folds): each fold learner's score of new rows, its seeds' percentiles among their own held-out
        predictions averaged."""
        table = features[self.columns]
        columns = []
        for fold in self.folds:
            seeds = [key for key in self.models if key[0] == fold]
            columns.append(np.mean([percentiles(self.learner.predict(self.models[key], table), self.references[key])
                                    for key in seeds], axis=0))
        return np.stack(columns, axis=1)

    def score(self, features: pd.DataFrame) -> np.ndarray:
        """New rows' stage-two score: the fold learners combined."""
        return combine_folds(self.per_fold(features))

    def importance(self) -> pd.Series:
        """Each feature's share of the trees' total importance (gain where the library gives it), over every tree."""
        totals = np.zeros(len(self.columns))
        for model in self.models.values():
            totals += _importance(model, len(self.columns))
        return pd.Series(totals / max(totals.sum(), 1e-12), index=self.columns).sort_values(ascending=False)


def _importance(model: Any, width: int) -> np.ndarray:
    if hasattr(model, "feature_importance"):  # LightGBM
        return np.asarray(model.feature_importance(importance_type="gain"), dtype=float)
    if hasattr(model, "get_score"):  # XGBoost: features it never split on are absent
        scores = model.get_score(importance_type="total_gain")
        return np.array([scores.get(f"f{i}", 0.0) for i in range(width)], dtype=float)
    return np.asarray(model.get_feature_importance(), dtype=float)  # CatBoost


@dataclass
class CrossFit:
    oof: np.ndarray
    """Each row's stage-two score from the trees that never saw its fold."""
    learners: FoldLearners


def cross_fit(features: pd.DataFrame, target: np.ndarray, folds: np.ndarray, *, learner: Learner,
              params: dict[str, Any], seeds: Sequence[int] = (0, 1, 2)) -> CrossFit:
    """Fit ``learner`` on every fold but one, for each fold and seed, and score the held-out fold."""
    target, folds = np.asarray(target, dtype=float), np.asarray(folds)
    fitted = FoldLearners(learner=learner, params=dict(params), columns=list(features.columns))
    oof = np.zeros(len(target))
    for fold in np.unique(folds):
        held_out = folds == fold
        ranks = []
        for seed in seeds:
            model = learner.fit(features.loc[~held_out], target[~held_out], params, int(seed))
            raw = learner.predict(model, features.loc[held_out])
            fitted.models[(int(fold), int(seed))] = model
            fitted.references[(int(fold), int(seed))] = raw
            ranks.append(percentiles(raw, raw))
        oof[held_out] = np.mean(ranks, axis=0)
    return CrossFit(oof=oof, learners=fitted)
