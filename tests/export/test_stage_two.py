"""Stage two end to end: a real run on synthetic patients, export with stage two, predict with a patient CSV and with
a folder of images (which falls back to the image blend), the folder sealed and free of pickles."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from melanoma_search.ensemble.folder import EnsembleError, load_ensemble
from tests.studies import call_module, run_and_export

SPEC = {
    "objective": "cv_auc",
    "data": {"n_folds": 3, "num_workers": 0, "synthetic": {"n_train": 240, "n_test": 24, "size": 32, "seed": 5}},
    "fixed": {"epochs": 1, "batch_size": 32, "image_size": 32, "model": {"name": "resnet18", "meta": False}},
    "space": {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "top_k_weights": 2,
    "export": {"top_k": 2, "method": "rank"},
    "stage_two": {"enabled": True, "n_trials": 3, "seeds": 2, "columns": ["diameter_mm", "colour_variance"]},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stage-two")
    (root / "export.out").write_text(run_and_export(root, SPEC, name="s2", n_trials=2, ensemble_dir="ens"))
    return root


def _test_csv(root: Path) -> Path:
    return next((root / "storage" / "cache").glob("synthetic-*/test.csv"))


def test_stage_two_is_a_study_compared_with_the_blend_and_shipped_when_it_beats_it(exported: Path) -> None:
    out = (exported / "export.out").read_text()
    assert "stage two: study 's2-stage-two', 0 trial(s) finished, 3 to run" in out
    assert "chosen on one half of the patients, scored on the other:" in out and "AUC " in out and "pAUC " in out
    # patient context is strong here: above one standard error of the difference, patients resampled
    assert "ships: on auc, stage two minus the blend is +" in out
    assert "(it ships only above one standard error; bootstrap over patients), on rows it was not chosen on" in out
    ensemble = load_ensemble(exported / "ens")
    about = ensemble.manifest["stage_two"]
    assert about["shipped"] and about["auc"][0] > about["auc"][1] and about["auc_difference"]["low"] > 0
    files = [f for f in ensemble.manifest["files"] if f.startswith("stage_two/")]
    assert sum(f.endswith(".lgb.txt") for f in files) == 3 * 2 and "stage_two/features.json" in files  # sealed
    assert not [p for p in (exported / "ens").rglob("*") if p.is_file() and p.read_bytes()[:1] == b"\x80"]
    card = (exported / "ens" / "model_card.md").read_text()
    assert "## Stage two" in card and "Shipped: `predict` uses it" in card
    report = (exported / "storage" / "s2" / "export" / "report.html").read_text()
    assert "Stage two: trees over the image scores" in report and "lesions per melanoma found" in report
    again = call_module(exported, "melanoma_search.export", "--study", "s2", "--out", "again/sub.csv")
    assert again.returncode == 0 and "3 trial(s) finished, 0 to run" in again.stdout  # the study resumes, no more


def test_predict_applies_stage_two_with_the_patients_other_lesions_and_falls_back_without(exported: Path) -> None:
    scored = call_module(exported, "melanoma_search.predict", "--ensemble", "ens", "--images",
                         str(_test_csv(exported)), "--out", "s2.csv", "--operating-point", "sens90")
    assert scored.returncode == 0, scored.stderr
    assert "stage two (" in scored.stdout and "scored 24 row(s)" in scored.stdout and "0 fell back" in scored.stdout
    scores = pd.read_csv(exported / "s2.csv")
    assert set(scores["scored_by"]) == {"stage two"} and scores["probability"].between(0, 1).all()
    submission = pd.read_csv(exported / "storage" / "s2" / "export" / "submission.csv").merge(scores, on="image_name")
    assert (submission["target"] - submission["score"]).abs().max() < 1e-9  # the submission is what predict gives
    rows = pd.read_csv(_test_csv(exported))
    one = rows.head(1).assign(image_path=lambda r: [str(_test_csv(exported).parent / "images" / f"{n}.jpg")
                                                     for n in r["image_name"]])
    one.to_csv(exported / "one.csv", index=False)
    alone = call_module(exported, "melanoma_search.predict", "--ensemble", "ens", "--images", "one.csv",
                        "--out", "one-scores.csv")
    assert alone.returncode == 0, alone.stderr  # the patient's other lesions are not in this file: a score anyway
    assert pd.read_csv(exported / "one-scores.csv")["scored_by"].tolist() == ["stage two"]
    folder = call_module(exported, "melanoma_search.predict", "--ensemble", "ens", "--images",
                         str(_test_csv(exported).parent / "images"), "--out", "folder.csv")
    assert folder.returncode == 0, folder.stderr
    assert "scored 0 row(s)" in folder.stdout and "264 fell back to the image blend" in folder.stdout
    assert set(pd.read_csv(exported / "folder.csv")["scored_by"]) == {"images only"}


def test_an_edited_tree_file_is_refused(exported: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "ens"
    shutil.copytree(exported / "ens", copy)
    tree = next((copy / "stage_two").glob("*.lgb.txt"))
    tree.write_text(tree.read_text().replace("shrinkage=", "shrinkage=1", 1))
    with pytest.raises(EnsembleError, match="changed since export .*lgb.txt"):
        load_ensemble(copy)


def test_stage_two_bad_input_ends_in_one_line(exported: Path, tmp_path: Path) -> None:
    bad = {**SPEC, "stage_two": {**SPEC["stage_two"], "learners": ["random_forest"]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    run = call_module(tmp_path, "melanoma_search.run", "--study", "bad.yaml", "--dry-run")
    assert run.returncode == 2 and "stage_two.learners: unknown stage-two learner 'random_forest'" in run.stderr
    absent = {**SPEC, "stage_two": {**SPEC["stage_two"], "columns": ["tbp_lv_H"]}}
    (exported / "absent.yaml").write_text(yaml.safe_dump(absent))
    run = call_module(exported, "melanoma_search.run", "--study", "absent.yaml", "--study-name", "absent",
                      "--n-trials", "1")  # refused before any trial, not at export after the whole search
    last = run.stderr.strip().splitlines()[-1]  # (after the dataset's INFO log line)
    assert run.returncode == 2 and last.startswith("error: ") and "column(s) tbp_lv_H not in the dataset's" in last
    assert "Traceback" not in run.stderr and "trial 0" not in run.stdout + run.stderr


def test_an_infinite_per_lesion_value_is_one_line_in_predict_and_before_the_run(exported: Path,
                                                                                tmp_path: Path) -> None:
    """``diameter_mm = inf`` used to reach scikit-learn's outlier score and end in its traceback ("Input X contains
    NaN"); it is refused naming the column and the row, in predict's CSV and in the dataset before any trial."""
    import shutil

    rows = pd.read_csv(_test_csv(exported))
    rows["image_path"] = [str(_test_csv(exported).parent / "images" / f"{n}.jpg") for n in rows["image_name"]]
    rows.loc[3, "diameter_mm"] = float("inf")
    rows.to_csv(tmp_path / "inf.csv", index=False)
    scored = call_module(exported, "melanoma_search.predict", "--ensemble", "ens", "--images",
                         str(tmp_path / "inf.csv"), "--out", str(tmp_path / "inf-scores.csv"))
    assert scored.returncode == 2 and "Traceback" not in scored.stderr
    line = scored.stderr.strip().splitlines()[-1]
    assert "column 'diameter_mm' holds infinite value(s) in 1 row(s), e.g. " + rows.loc[3, "image_name"] in line
    assert not (tmp_path / "inf-scores.csv").exists()
    data = tmp_path / "data"
    shutil.copytree(_test_csv(exported).parent, data)
    labels = pd.read_csv(data / "labels.csv")
    labels.loc[7, "diameter_mm"] = float("inf")
    labels.to_csv(data / "labels.csv", index=False)
    spec = {**SPEC, "data": {"dir": str(data), "n_folds": 3, "num_workers": 0}}
    (tmp_path / "inf.yaml").write_text(yaml.safe_dump(spec))
    run = call_module(tmp_path, "melanoma_search.run", "--study", "inf.yaml", "--dry-run")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"column 'diameter_mm' holds infinite value(s) in 1 row(s), e.g. {labels.loc[7, 'image_name']}" in run.stderr
