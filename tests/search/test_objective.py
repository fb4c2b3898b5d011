from __future__ import annotations

from pathlib import Path

import pytest

from melanoma_search.errors import ConfigError
from melanoma_search.search.objective import load_objective


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


def test_the_pauc_objective_scores_the_pooled_out_of_fold_partial_auc() -> None:
    import numpy as np
    import pandas as pd

    from melanoma_search.metrics import partial_auc
    from melanoma_search.train import FoldResult, RunResult

    rng = np.random.default_rng(0)
    folds = []
    for fold in range(3):
        target = (rng.random(60) < 0.3).astype(float)
        oof = pd.DataFrame({"image_name": [f"{fold}-{i}" for i in range(60)], "target": target,
                            "pred": target * 0.4 + rng.random(60), "fold": fold})
        folds.append(FoldResult(fold=fold, checkpoint="swa", best_epoch=1, best_epoch_auc=0.5, auc=0.5, oof=oof,
                                test=None, history=[], lr=1e-3, seconds=1.0, images_per_s=1.0))
    result = RunResult(folds=folds, classes=(), device="cpu", seconds=1.0, peak_memory_mb=0.0)
    objective = load_objective("pauc")
    pooled = pd.concat([f.oof for f in folds])
    assert objective.score(result) == (pytest.approx(partial_auc(pooled["target"], pooled["pred"])),)
    assert objective.report_each == "fold" and list(objective.folds(3)) == [0, 1, 2]
