"""Nested cross-fitting never sees a held-out label: a held-out fold's scores do not move when its labels change,
and labels with no signal score as chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.stage_two.crossfit import cross_fit
from melanoma_search.stage_two.learners import get_learner
from melanoma_search.stage_two.study import StageTwoData, fit_trial

PARAMS = {"num_leaves": 7, "learning_rate": 0.1, "rounds": 60, "min_child_samples": 10, "feature_fraction": 1.0,
          "bagging_fraction": 1.0, "lambda_l2": 1.0}


def _table(seed: int = 0, n: int = 600) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = (rng.random(n) < 0.3).astype(float)
    features = pd.DataFrame({"signal": target + rng.normal(0, 1, n), "noise": rng.normal(0, 1, n)})
    features.loc[rng.random(n) < 0.1, "signal"] = np.nan  # missing values stay missing
    return features, target, np.arange(n) % 3


def _data(target: np.ndarray, features: pd.DataFrame, folds: np.ndarray) -> StageTwoData:
    """Rows with patients (four lesions each, a patient's lesions in one fold), metadata and an image score."""
    n = len(target)
    patient = np.array([f"P{(i // 3) * 4 + k}" for i, k in zip(range(n), np.arange(n) % 3, strict=True)])
    rows = pd.DataFrame({"patient_id": patient, "sex": np.where(np.arange(n) % 2, "male", "female"),
                         "age_approx": 40.0 + (np.arange(n) % 7) * 5, "site": "torso",
                         "size": features["noise"].to_numpy()}, index=[f"i{i}" for i in range(n)])
    images = pd.DataFrame({"m1": features["signal"].fillna(0).rank(pct=True).to_numpy()}, index=rows.index)
    return StageTwoData(rows=rows, images=images, target=target, folds=folds, columns=("size",))


def test_a_held_out_folds_scores_never_read_its_labels() -> None:
    """The whole path (every feature group, then the trees): a feature made from labels, or a tree trained on the
    held-out rows, would move the held-out fold's scores when its labels change."""
    features, target, folds = _table()
    groups = ("image", "metadata", "tabular", "patient")
    honest = fit_trial(_data(target, features, folds), learner="lightgbm", params=PARAMS, groups=groups, seeds=2)
    scrambled = target.copy()
    scrambled[folds == 1] = 1 - scrambled[folds == 1]  # fold 1's labels, every one flipped
    again = fit_trial(_data(scrambled, features, folds), learner="lightgbm", params=PARAMS, groups=groups, seeds=2)
    assert np.array_equal(again.oof[folds == 1], honest.oof[folds == 1])  # a leak would move these
    assert not np.array_equal(again.oof[folds == 0], honest.oof[folds == 0])  # fold 1 trains the others' trees
    assert roc_auc_score(target, honest.oof) > 0.65  # and it learned the signal


def test_labels_without_signal_score_as_chance() -> None:
    features, target, folds = _table(seed=1)
    shuffled = np.random.default_rng(2).permutation(target)
    fitted = cross_fit(features, shuffled, folds, learner=get_learner("lightgbm"), params=PARAMS, seeds=(0,))
    assert abs(roc_auc_score(shuffled, fitted.oof) - 0.5) < 0.07


def test_the_fitted_fold_learners_score_new_rows_on_their_held_out_scale() -> None:
    features, target, folds = _table(seed=3)
    fitted = cross_fit(features, target, folds, learner=get_learner("lightgbm"), params=PARAMS, seeds=(0, 1))
    learners = fitted.learners
    assert sorted(learners.models) == [(f, s) for f in range(3) for s in (0, 1)]
    per_fold = learners.per_fold(features.iloc[:50])
    assert per_fold.shape == (50, 3) and ((per_fold >= 0) & (per_fold <= 1)).all()
    new = learners.score(features.iloc[:50])
    assert roc_auc_score(target[:50], new) > 0.7  # (these rows were trained on by 2 of 3: not an honest figure)
    assert learners.importance()["signal"] > learners.importance()["noise"]
