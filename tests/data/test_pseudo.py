"""Pseudo-labelled rows join training only: never a validation fold, weighted, refused when they clash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma_search.data.config import PseudoConfig
from melanoma_search.data.prepare import prepare_data
from melanoma_search.data.pseudo import PSEUDO_SOURCE
from melanoma_search.errors import DataError


def _pseudo_csv(root: Path, names: list[str], targets: list[float], out: Path) -> Path:
    pd.DataFrame({"image_name": names, "image_path": [str(root / "images" / f"{n}.jpg") for n in names],
                  "target": targets, "confidence": [abs(2 * t - 1) for t in targets],
                  "agreement": 1.0}).to_csv(out, index=False)
    return out


def test_pseudo_rows_only_train_with_their_weight_and_soft_targets(synthetic_dir: Path, tmp_path: Path) -> None:
    test_names = pd.read_csv(synthetic_dir / "test.csv")["image_name"].tolist()
    targets = np.linspace(0.05, 0.95, len(test_names)).round(3).tolist()
    file = _pseudo_csv(synthetic_dir, test_names, targets, tmp_path / "pseudo.csv")
    config = PseudoConfig(file=str(file), weight=0.3, min_confidence=0.5)
    data = prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=config)
    table = data.table
    pseudo = table[table["source"].eq(PSEUDO_SOURCE)]
    kept = [t for t in targets if abs(2 * t - 1) >= 0.5]
    assert len(pseudo) == len(kept) and pseudo["target"].tolist() == pytest.approx(kept)  # soft, filtered
    assert (pseudo["fold"] == -1).all() and (pseudo["split"] == "train").all()  # training folds only
    labelled = table[table["source"].ne(PSEUDO_SOURCE)]
    assert (pseudo["loss_weight"] == 0.3).all() and (labelled["loss_weight"] == 1).all()
    assert pseudo["class_index"].eq(-1).all()
    assert not set(pseudo["patient_id"]) & set(labelled["patient_id"])
    hard = prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=config.model_copy(update={"soft": False}))
    assert set(hard.table.loc[hard.table.source.eq(PSEUDO_SOURCE), "target"]) <= {0.0, 1.0}


def test_bad_pseudo_files_are_refused_by_name(synthetic_dir: Path, tmp_path: Path) -> None:
    train_names = pd.read_csv(synthetic_dir / "labels.csv")["image_name"].head(2).tolist()
    clash = _pseudo_csv(synthetic_dir, train_names, [0.9, 0.1], tmp_path / "clash.csv")
    with pytest.raises(DataError, match=r"2 pseudo-labelled image\(s\) are labelled training images too"):
        prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=PseudoConfig(file=str(clash)))
    test_names = pd.read_csv(synthetic_dir / "test.csv")["image_name"].head(2).tolist()
    wrong = _pseudo_csv(synthetic_dir, test_names, [1.5, 0.2], tmp_path / "wrong.csv")
    with pytest.raises(DataError, match=r"'target' must be a probability in \[0, 1\]"):
        prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=PseudoConfig(file=str(wrong)))
    pd.DataFrame({"image_name": test_names, "target": [0.5, 0.5]}).to_csv(tmp_path / "bare.csv", index=False)
    with pytest.raises(DataError, match="lacks column.* confidence: not a pseudo-label file"):
        prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=PseudoConfig(file=str(tmp_path / "bare.csv")))
    with pytest.raises(DataError, match="data.pseudo.file: no such file"):
        prepare_data(root=str(synthetic_dir), n_folds=3, pseudo=PseudoConfig(file=str(tmp_path / "none.csv")))
