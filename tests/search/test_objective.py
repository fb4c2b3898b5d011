from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_search.errors import ConfigError
from melanoma_search.metrics import partial_auc
from melanoma_search.search.objective import load_objective
from melanoma_search.train import FoldResult, RunResult


@pytest.mark.parametrize("name,directions", [("cv_auc", ("maximize",)), ("holdout_auc", ("maximize",)),
                                             ("pauc", ("maximize",)), ("auc_vs_cost", ("maximize", "minimize"))])
def test_builtin_objectives(name: str, directions: tuple[str, ...]) -> None:
    objective = load_objective(name)
    assert objective.directions == directions
    assert objective.reports == (len(directions) == 1)


def test_cv_auc_trains_every_fold() -> None:
    assert list(load_objective("cv_auc").folds(5)) == [0, 1, 2, 3, 4]
    assert list(load_objective("holdout_auc").folds(5)) == [0]


def test_a_dropped_in_objective_file(tmp_path: Path) -> None:
    (tmp_path / "worst_fold.py").write_text(
        "DIRECTIONS = ('maximize',)\nMETRIC_NAMES = ('worst_fold_auc',)\n"
        "def folds(n):\n    return list(range(n))\n"
        "def score(result):\n    return min(result.fold_aucs)\n"
    )
    objective = load_objective("worst_fold", search_dirs=[tmp_path])
    assert objective.metric_names == ("worst_fold_auc",)


def test_broken_or_missing_objectives(tmp_path: Path) -> None:
    (tmp_path / "half.py").write_text("DIRECTIONS = ('maximize',)\n")
    with pytest.raises(ConfigError, match="must define METRIC_NAMES, folds, score"):
        load_objective("half", search_dirs=[tmp_path])
    (tmp_path / "boom.py").write_text("raise RuntimeError('oops')\n")
    with pytest.raises(ConfigError, match="boom.py failed to import"):
        load_objective("boom", search_dirs=[tmp_path])
    with pytest.raises(ConfigError, match="no objective 'nope' .* available: boom, half"):
        load_objective("nope", search_dirs=[tmp_path])


def _run(oofs: list[pd.DataFrame]) -> RunResult:
    folds = [FoldResult(fold=int(oof["fold"].iloc[0]), checkpoint="swa", best_epoch=1, best_epoch_auc=0.5, auc=0.5,
                        oof=oof, test=None, history=[], lr=1e-3, seconds=1.0, images_per_s=1.0) for oof in oofs]
    return RunResult(folds=folds, classes=(), device="cpu", seconds=1.0, peak_memory_mb=0.0)


def test_the_pauc_objective_scores_the_mean_of_the_folds_partial_aucs() -> None:
    rng = np.random.default_rng(0)
    oofs = []
    for fold in range(3):
        target = (rng.random(60) < 0.3).astype(float)
        oofs.append(pd.DataFrame({"image_name": [f"{fold}-{i}" for i in range(60)], "target": target,
                                  "pred": target * 0.4 + rng.random(60), "fold": fold}))
    objective = load_objective("pauc")
    each = [partial_auc(oof["target"], oof["pred"]) for oof in oofs]
    assert objective.score(_run(oofs)) == (pytest.approx(np.mean(each)),)
    assert objective.report_each == "fold" and list(objective.folds(3)) == [0, 1, 2]
    assert objective.metric.name == "pauc@0.8" and load_objective("cv_auc").metric.name == "auc"


def test_fold_models_that_rank_perfectly_on_different_scales_score_one() -> None:
    """cv_auc is the mean of the folds' AUCs (Forman and Scholz 2010): two fold models that each rank their rows
    perfectly score 1.0 whatever their scales, where d4b4a5f's pooled AUC of the raw scores penalised the
    configuration for its fold models' calibration (here to 0.75)."""
    target = np.tile([0.0, 0.0, 1.0, 0.0], 15)
    low = pd.DataFrame({"image_name": [f"a{i}" for i in range(60)], "target": target, "fold": 0,
                        "pred": 0.05 + 0.1 * target + np.linspace(0, 0.05, 60)})  # all in [0.05, 0.2]
    high = low.assign(image_name=[f"b{i}" for i in range(60)], fold=1, pred=0.7 + low["pred"])  # all in [0.75, 0.9]
    result = _run([low, high])
    pooled = pd.concat([low, high])
    assert roc_auc_score(pooled["target"], pooled["pred"]) == 0.75
    assert load_objective("cv_auc").score(result) == (1.0,) and result.auc == 1.0
    assert result.pauc() == pytest.approx(0.2)  # a perfect ranking's partial AUC above 80 % sensitivity
