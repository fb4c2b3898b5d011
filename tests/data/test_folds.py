from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma_search.data.folds import EXTERNAL_FOLD, assign_folds, drop_duplicates, read_duplicate_list
from melanoma_search.data.layouts import load_table
from melanoma_search.data.pseudo import PSEUDO_SOURCE
from melanoma_search.errors import DataError


@pytest.fixture(scope="module")
def isic2020(isic2020_csv: Path) -> pd.DataFrame:
    return load_table(isic2020_csv.parent, require_images=False)


def test_real_2020_folds_group_patients_and_balance_positives(isic2020: pd.DataFrame, isic2020_csv: Path) -> None:
    duplicates = read_duplicate_list(isic2020_csv.parent / "ISIC_2020_Training_Duplicates.csv")
    table = drop_duplicates(isic2020, duplicates=duplicates)
    assert len(table) == 33126 - 425
    folds = assign_folds(table, n_folds=5, seed=42)
    assert folds.notna().all() and set(folds.unique()) == {0, 1, 2, 3, 4}
    per_patient = folds.groupby(table["patient_id"]).nunique()
    assert (per_patient == 1).all(), "a patient appears in two folds"
    positives = table["target"].groupby(folds).sum()
    assert positives.max() - positives.min() <= 6, positives.to_dict()
    images = table.groupby(folds).size()
    assert images.max() / images.min() < 1.1, images.to_dict()


def test_folds_are_deterministic(isic2020: pd.DataFrame) -> None:
    a = assign_folds(isic2020, n_folds=5, seed=1)
    b = assign_folds(isic2020, n_folds=5, seed=1)
    c = assign_folds(isic2020, n_folds=5, seed=2)
    assert a.equals(b) and not a.equals(c)


def _toy(n: int = 40, *, positives: int = 10) -> pd.DataFrame:
    return pd.DataFrame({
        "image_name": [f"img{i}" for i in range(n)],
        "split": "train",
        "target": [1.0] * positives + [0.0] * (n - positives),
        "patient_id": [f"p{i // 2}" for i in range(n)],
        "is_external": False,
        "fold_key": np.nan,
    })


def test_existing_fold_key_is_honoured_and_duplicates_dropped() -> None:
    table = _toy(30, positives=15)
    table["fold_key"] = np.arange(30) % 15
    table.loc[3, "fold_key"] = -1
    table = drop_duplicates(table)
    assert "img3" not in set(table["image_name"])
    folds = assign_folds(table, n_folds=5)
    assert (folds == table["fold_key"] % 5).all()


def test_external_rows_only_train() -> None:
    external = _toy(20, positives=5).assign(is_external=True, image_name=lambda d: "ext" + d.image_name)
    table = pd.concat([_toy(40), external], ignore_index=True)
    folds = assign_folds(table, n_folds=4)
    assert (folds[table["is_external"]] == EXTERNAL_FOLD).all()
    assert (folds[~table["is_external"]] >= 0).all()


def test_external_rows_can_be_validated_and_pseudo_labels_still_only_train() -> None:
    external = _toy(20, positives=5).assign(is_external=True, image_name=lambda d: "ext" + d.image_name,
                                            patient_id=lambda d: "ext" + d.patient_id, source="ISIC19")
    pseudo = _toy(6, positives=0).assign(is_external=True, image_name=lambda d: "ps" + d.image_name,
                                         patient_id=lambda d: "ps" + d.patient_id, source=PSEUDO_SOURCE)
    table = pd.concat([_toy(40).assign(source="ISIC20"), external, pseudo], ignore_index=True)
    folds = assign_folds(table, n_folds=4, validate_external=True)
    is_external = table["source"].eq("ISIC19")
    assert (folds[is_external] >= 0).all() and set(folds[is_external]) == {0, 1, 2, 3}  # dealt out like the rest
    assert (folds[table["source"].eq(PSEUDO_SOURCE)] == EXTERNAL_FOLD).all()
    per_patient = folds[folds >= 0].groupby(table["patient_id"]).nunique()
    assert (per_patient == 1).all()


def test_folds_can_hold_out_whole_collections() -> None:
    """Leave-collection-out: each source in one fold; fewer collections than folds is one clear line."""
    table = pd.concat([_toy(30, positives=8).assign(source=s, patient_id=lambda d, s=s: s + d.patient_id,
                                                    image_name=lambda d, s=s: s + d.image_name)
                       for s in ("clinicA", "clinicB", "clinicC")], ignore_index=True)
    folds = assign_folds(table, n_folds=3, group_by="source")
    assert (folds.groupby(table["source"]).nunique() == 1).all() and folds.nunique() == 3
    with pytest.raises(DataError, match="3 collection.s. .clinicA, clinicB, clinicC. cannot fill 4 folds"):
        assign_folds(table, n_folds=4, group_by="source")


def test_fold_without_positives_is_an_error() -> None:
    table = _toy(40, positives=2)
    table["fold_key"] = [0.0, 0.0] + [float(i % 5) for i in range(38)]
    with pytest.raises(DataError, match=r"fold \d of 5 has no positive"):
        assign_folds(table, n_folds=5)


def test_test_rows_get_no_fold() -> None:
    table = pd.concat([_toy(40), _toy(5, positives=0).assign(split="test", target=np.nan)], ignore_index=True)
    folds = assign_folds(table, n_folds=5)
    assert folds[table["split"] == "test"].isna().all()
