from __future__ import annotations

from pathlib import Path

import pytest

from melanoma_search.errors import ConfigError
from melanoma_search.search.objective import load_objective


@pytest.mark.parametrize("name,directions", [("cv_auc", ("maximize",)), ("holdout_auc", ("maximize",)),
                                             ("auc_vs_cost", ("maximize", "minimize"))])
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
