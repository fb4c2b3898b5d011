from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma_search.data.layouts import COLUMNS, SITES, detect_layout, load_table
from melanoma_search.errors import DataError, ImageError


def _copy_images(src: Path, names: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / f"{name}.jpg", dest / f"{name}.jpg")


@pytest.fixture()
def ham_rows(ham_dir: Path) -> pd.DataFrame:
    labels = pd.read_csv(ham_dir / "labels.csv", dtype={"image_name": str})
    return pd.concat([labels[labels.target == 1].head(6), labels[labels.target == 0].head(14)], ignore_index=True)


def test_labels_layout_reads_real_ham_sample(ham_dir: Path) -> None:
    table = load_table(ham_dir)
    assert detect_layout(ham_dir) == "labels"
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2238
    assert int(table["target"].sum()) == 491
    assert table["image_path"].map(lambda p: Path(p).is_file()).all()
    assert set(table["site"].dropna()) <= set(SITES)
    assert table["site"].isna().sum() == 40  # blank sites stay missing, as SOURCE.md counts them
    assert not table["is_external"].any()


def test_kaggle2020_layout(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame) -> None:
    train = ham_rows.head(15)[["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
                               "diagnosis", "target"]]
    test = ham_rows.tail(5)[["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]]
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    _copy_images(ham_dir / "images", train["image_name"].tolist(), tmp_path / "jpeg" / "train")
    _copy_images(ham_dir / "images", test["image_name"].tolist(), tmp_path / "jpeg" / "test")
    table = load_table(tmp_path)
    assert detect_layout(tmp_path) == "kaggle2020"
    assert table["split"].value_counts().to_dict() == {"train": 15, "test": 5}
    assert table.loc[table.split == "test", "target"].isna().all()
    assert table.loc[table.split == "train", "image_path"].str.contains("jpeg/train").all()


def test_tfrecord_layout_keeps_fold_key(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame) -> None:
    columns = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge", "target"]
    train = ham_rows[columns].copy()
    train["tfrecord"] = np.arange(len(train)) % 15
    train.loc[0, "tfrecord"] = -1
    train.to_csv(tmp_path / "train.csv", index=False)
    _copy_images(ham_dir / "images", train["image_name"].tolist(), tmp_path / "train")
    table = load_table(tmp_path)
    assert detect_layout(tmp_path) == "tfrecord"
    assert table["fold_key"].tolist() == train["tfrecord"].astype(float).tolist()


def test_marking_layout(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame) -> None:
    marking = pd.DataFrame({
        "image_id": ham_rows["image_name"], "patient_id": ham_rows["patient_id"], "sex": ham_rows["sex"],
        "age_approx": ham_rows["age_approx"],
        "anatom_site_general_challenge": ham_rows["anatom_site_general_challenge"],
        "source": "HAM10000", "target": ham_rows["target"],
    })
    marking.to_csv(tmp_path / "marking.csv", index=False)
    _copy_images(ham_dir / "images", marking["image_id"].tolist(), tmp_path / "512x512-dataset-melanoma")
    table = load_table(tmp_path)
    assert detect_layout(tmp_path) == "marking"
    assert len(table) == len(marking) and set(table["source"]) == {"HAM10000"}
    assert not table["is_external"].any()  # one collection and no 2020 rows: nothing to protect


def test_marking_layout_keeps_only_its_2020_rows_for_validation(tmp_path: Path, ham_dir: Path,
                                                               ham_rows: pd.DataFrame) -> None:
    from melanoma_search.data.folds import assign_folds

    sources = np.where(np.arange(len(ham_rows)) % 2 == 0, "ISIC20", "ISIC19")
    sources[1] = "SLATMD"
    marking = pd.DataFrame({"image_id": ham_rows["image_name"], "patient_id": ham_rows["patient_id"],
                            "source": sources, "target": ham_rows["target"]})
    marking.to_csv(tmp_path / "marking.csv", index=False)
    _copy_images(ham_dir / "images", marking["image_id"].tolist(), tmp_path / "train")
    table = load_table(tmp_path)
    assert table["is_external"].tolist() == [s != "ISIC20" for s in sources]
    folds = assign_folds(table, n_folds=2, seed=0)
    assert (folds[table["is_external"]] == -1).all() and (folds[~table["is_external"]] >= 0).all()


def test_isic2019_layout_from_real_metadata(isic2019_dir: Path) -> None:
    real = isic2019_dir
    table = load_table(real, require_images=False, external=True)
    assert detect_layout(real) == "isic2019"
    assert len(table) == 25331
    assert int(table["target"].sum()) == 4522  # MEL count from SOURCE.md
    assert table["is_external"].all()
    assert set(table["site"].dropna()) <= set(SITES)  # 2019 anterior/posterior/lateral torso mapped to torso
    assert (table.loc[table.target == 1, "diagnosis"] == "melanoma").all()


def test_kaggle2020_metadata_alone(isic2020_csv: Path) -> None:
    table = load_table(isic2020_csv.parent, require_images=False)
    assert len(table) == 33126 and int(table["target"].sum()) == 584
    assert table["patient_id"].nunique() == 2056
    assert table["age_approx"].dtype == float


def test_missing_column_is_named(tmp_path: Path) -> None:
    pd.DataFrame({"image_name": ["a"], "label": [1]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"lacks required column\(s\) target"):
        load_table(tmp_path)


def test_unknown_site_reads_as_missing_with_a_count_or_refuses_when_strict(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pd.DataFrame({"image_name": ["a", "b", "c"], "target": [0, 1, 0], "site": ["elbow", "torso", "elbow"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    with caplog.at_level("WARNING", logger="melanoma_search.data.layouts"):
        table = load_table(tmp_path, require_images=False)
    assert table["site"].isna().tolist() == [True, False, True] and table.loc[1, "site"] == "torso"
    assert "2 row(s) have an anatomical site outside the vocabulary: 'elbow' (2)" in caplog.text
    with pytest.raises(DataError, match=r"2 row\(s\) .* 'elbow' \(2\).*data.unknown_sites=missing"):
        load_table(tmp_path, require_images=False, unknown_sites="error")


def test_images_to_score_read_an_unknown_site_as_missing(tmp_path: Path, ham_dir: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    from melanoma_search.data.layouts import read_images_to_score

    names = pd.read_csv(ham_dir / "labels.csv", dtype={"image_name": str})["image_name"].head(3).tolist()
    _copy_images(ham_dir / "images", names, tmp_path / "images")
    pd.DataFrame({"image_name": names, "site": ["scalp", "torso", None]}).to_csv(tmp_path / "new.csv", index=False)
    with caplog.at_level("WARNING", logger="melanoma_search.data.layouts"):
        rows = read_images_to_score(tmp_path / "new.csv")
    assert rows["site"].isna().tolist() == [True, False, True]
    assert "1 row(s) have an anatomical site outside the vocabulary: 'scalp' (1)" in caplog.text


def test_non_numeric_age_is_named(tmp_path: Path) -> None:
    pd.DataFrame({"image_name": ["a", "b"], "target": [0, 1], "age_approx": ["40", "forty"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError, match=r"'age_approx' must be numeric; found \['forty'\]"):
        load_table(tmp_path, require_images=False)


def test_nan_metadata_is_kept_missing(tmp_path: Path) -> None:
    pd.DataFrame({"image_name": ["a", "b"], "target": [0, 1], "age_approx": [None, 50], "sex": [None, "M"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    table = load_table(tmp_path, require_images=False)
    assert np.isnan(table.loc[0, "age_approx"]) and table.loc[1, "sex"] == "male"
    assert pd.isna(table.loc[0, "sex"])


def test_missing_image_files_error_or_skip(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame) -> None:
    ham_rows.to_csv(tmp_path / "labels.csv", index=False)
    _copy_images(ham_dir / "images", ham_rows["image_name"].tolist()[2:], tmp_path / "images")
    missing = ham_rows["image_name"].tolist()[:2]
    with pytest.raises(DataError, match=rf"2 image file\(s\) not found .*{missing[0]}"):
        load_table(tmp_path)
    table = load_table(tmp_path, missing_images="skip")
    assert len(table) == len(ham_rows) - 2 and not set(missing) & set(table["image_name"])


def test_unknown_layout_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        load_table(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        load_table(tmp_path / "nope")


def test_a_new_layout_is_one_registered_reader(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with ``ground_truth.tsv`` + ``img/``: one decorated reader; detection and ``data.layout`` know it."""
    from melanoma_search.data import layouts
    from melanoma_search.data.config import DataConfig
    from melanoma_search.data.layouts import list_layouts, register_layout

    monkeypatch.setattr(layouts, "_LAYOUTS", layouts._LAYOUTS.copy())

    @register_layout("tsv", detect=lambda root: (root / "ground_truth.tsv").is_file(), priority=5)
    def _read_tsv(root: Path) -> list[layouts.Part]:
        frame = pd.read_csv(root / "ground_truth.tsv", sep="\t")
        rows = layouts._base(frame, path=root / "ground_truth.tsv", name_col="image_name", source="tsv",
                             site_col=None, labelled=True)
        return [("train", rows, [root / "img"])]

    _copy_images(ham_dir / "images", ham_rows["image_name"].tolist(), tmp_path / "img")
    ham_rows[["image_name", "target"]].to_csv(tmp_path / "ground_truth.tsv", sep="\t", index=False)
    assert list_layouts()[0] == "tsv" and detect_layout(tmp_path) == "tsv"
    table = load_table(tmp_path)
    assert list(table.columns) == list(COLUMNS) and len(table) == len(ham_rows)
    assert DataConfig(layout="tsv").layout == "tsv"
    with pytest.raises(ValueError, match="unknown layout 'csv'"):
        DataConfig(layout="csv")


def test_the_official_ham10000_download(tmp_path: Path, ham_dir: Path, ham_rows: pd.DataFrame) -> None:
    """HAM10000_metadata.csv as published, images in its two part folders, one lesion photographed twice."""
    official = pd.read_csv(ham_dir / "source_csv" / "HAM10000_metadata.csv")
    rows = official[official["image_id"].isin(ham_rows["image_name"])].reset_index(drop=True)
    twice = rows.iloc[0]
    copy = twice.copy()
    copy["image_id"] = "ISIC_9999999"  # a second image of the first lesion
    rows = pd.concat([rows, copy.to_frame().T], ignore_index=True)
    rows.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    names = rows["image_id"].tolist()
    _copy_images(ham_dir / "images", names[: len(names) // 2], tmp_path / "HAM10000_images_part_1")
    _copy_images(ham_dir / "images", [n for n in names[len(names) // 2:] if n != "ISIC_9999999"],
                 tmp_path / "HAM10000_images_part_2")
    shutil.copy(ham_dir / "images" / f"{twice['image_id']}.jpg", tmp_path / "HAM10000_images_part_2" /
                "ISIC_9999999.jpg")
    assert detect_layout(tmp_path) == "ham10000"
    table = load_table(tmp_path)
    assert len(table) == len(rows) and table["image_path"].map(lambda p: Path(p).is_file()).all()
    by_name = table.set_index("image_name")
    assert by_name["target"].sum() == (rows["dx"] == "mel").sum()  # melanoma is dx == mel, nothing else
    assert set(by_name.loc[rows.loc[rows["dx"] == "mel", "image_id"], "diagnosis"]) == {"melanoma"}
    assert set(table["site"].dropna()) <= set(SITES) and set(table["sex"].dropna()) <= {"male", "female"}
    assert by_name.loc["ISIC_9999999", "patient_id"] == by_name.loc[twice["image_id"], "patient_id"]
    from melanoma_search.data.prepare import prepare_data

    folds = prepare_data(root=str(tmp_path), n_folds=3).table.set_index("image_name")["fold"]
    assert folds["ISIC_9999999"] == folds[twice["image_id"]]  # a lesion's images never split across folds


def test_the_isic2024_layout_reads_metadata_and_hdf5_images(tmp_path: Path) -> None:
    """ISIC 2024 (SLICE-3D): train-metadata.csv with per-lesion columns, JPEG bytes in train-image.hdf5 by isic_id."""
    import cv2
    import h5py

    from melanoma_search.data.images import decode_image
    from melanoma_search.data.synthetic import render_lesion

    rng = np.random.default_rng(0)
    ids = [f"ISIC_{i:07d}" for i in range(6)]
    with h5py.File(tmp_path / "train-image.hdf5", "w") as handle:
        for index, name in enumerate(ids):
            image = render_lesion(rng, malignant=index % 3 == 0, size=40)
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            assert ok
            handle.create_dataset(name, data=np.void(encoded.tobytes()))
    pd.DataFrame({"isic_id": ids, "patient_id": ["IP_1"] * 3 + ["IP_2"] * 3, "target": [1, 0, 0, 1, 0, 0],
                  "age_approx": [60, 60, 60, 45, 45, 45], "sex": ["male"] * 3 + ["female"] * 3,
                  "anatom_site_general": ["posterior torso", "lower extremity", "head/neck"] * 2,
                  "clin_size_long_diam_mm": [6.1, 3.2, 2.9, 7.5, 3.0, 2.2],
                  "tbp_lv_H": [40.1, 35.2, 36.0, 41.0, 33.3, 34.4]}).to_csv(tmp_path / "train-metadata.csv",
                                                                            index=False)
    table = load_table(tmp_path, keep=("clin_size_long_diam_mm", "tbp_lv_H"))
    assert detect_layout(tmp_path) == "isic2024" and len(table) == 6 and table["target"].sum() == 2
    assert table.loc[0, "site"] == "torso" and table.loc[0, "patient_id"] == "IP_1"
    assert table["tbp_lv_H"].tolist()[:2] == [40.1, 35.2]  # the per-lesion columns kept for stage two
    path = table.loc[0, "image_path"]
    assert path == f"{tmp_path / 'train-image.hdf5'}::{ids[0]}"
    assert decode_image(path, 32).shape == (32, 32, 3)
    with pytest.raises(DataError, match=r"column\(s\) tbp_lv_nope not in the dataset's table"):
        load_table(tmp_path, keep=("tbp_lv_nope",))
    with pytest.raises(ImageError, match="ISIC_9999999"):
        decode_image(f"{tmp_path / 'train-image.hdf5'}::ISIC_9999999", 32)
