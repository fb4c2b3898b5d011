"""Pseudo-labels and a noisy-student round end to end: a tiny teacher study, its ensemble, a student study."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta

from melanoma_search.ensemble.folder import load_ensemble
from tests.studies import call_module, run_and_export, run_module

SPEC = {
    "objective": "cv_auc",
    "data": {"n_folds": 3, "num_workers": 0, "synthetic": {"n_train": 90, "n_test": 12, "size": 40, "seed": 4}},
    "fixed": {"epochs": 1, "batch_size": 16, "image_size": 32, "model": {"name": "resnet18"}},
    "space": {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "export": {"top_k": 2, "refit": False},
    "student": {"noise": {"augment.policy": "light", "model.drop_rate": 0.5}, "pseudo": {"weight": 0.4}},
    "top_k_weights": 2,
}
LABEL_COLUMNS = ("target", "diagnosis", "dx", "dx_type", "benign_malignant", "source_target")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-member ensemble of a tiny synthetic study, in ``<root>/teacher``."""
    root = tmp_path_factory.mktemp("student")
    run_and_export(root, SPEC, name="tiny", n_trials=2, ensemble_dir="teacher")
    return root


def test_pseudo_labels_never_read_the_images_labels(teacher: Path, ham_subset: Path) -> None:
    """The same images with every label column replaced by text get the very same pseudo-labels."""
    labelled = pd.concat([pd.read_csv(ham_subset / "labels.csv").iloc[i::50] for i in range(2)])  # 8 images
    labelled["image_path"] = [str(ham_subset / "images" / f"{n}.jpg") for n in labelled["image_name"]]
    labelled.to_csv(teacher / "labelled.csv", index=False)
    hidden = labelled.copy()
    for column in LABEL_COLUMNS:
        if column in hidden:
            hidden[column] = "hidden"
    hidden.to_csv(teacher / "hidden.csv", index=False)
    seen = run_module(teacher, "melanoma_search.pseudo", "--ensemble", "teacher", "--images", "labelled.csv",
                      "--out", "seen/pseudo.csv", "--device", "cpu")
    blind = call_module(teacher, "melanoma_search.pseudo", "--ensemble", "teacher", "--images", "hidden.csv",
                        "--out", "blind/pseudo.csv", "--device", "cpu")
    assert seen.returncode == 0 and blind.returncode == 0, seen.stderr + blind.stderr
    assert "8 image(s) pseudo-labelled by 2 member(s) of tiny (round 0)" in seen.stdout
    first, second = pd.read_csv(teacher / "seen" / "pseudo.csv"), pd.read_csv(teacher / "blind" / "pseudo.csv")
    pd.testing.assert_frame_equal(first.drop(columns="image_path"), second.drop(columns="image_path"))
    assert first["target"].between(0, 1).all() and first["confidence"].between(0, 1).all()
    assert first["agreement"].between(0, 1).all()
    source = json.loads((teacher / "seen" / "pseudo.json").read_text())
    assert source["teacher_round"] == 0 and source["members"] == 2


def test_a_student_round_trains_on_pseudo_rows_and_names_its_round(teacher: Path) -> None:
    images = next((teacher / "storage" / "cache").glob("synthetic-*/test.csv"))
    args = ("--study", "tiny.yaml", "--n-trials", "1", "--student-of", "teacher", "--unlabelled", str(images))
    run = run_module(teacher, "melanoma_search.run", *args)
    assert run.returncode == 0, run.stderr
    assert "student round 1 of 'tiny': 2 teacher member(s) pseudo-label 12 image(s)" in run.stdout
    assert "study 'tiny-student-r1' in sqlite:///" in run.stdout and "/storage/tiny.db" in run.stdout
    storage = f"sqlite:///{teacher}/storage/tiny.db"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    assert names == {"tiny", "tiny-student-r1"}  # the rounds side by side in one storage
    study = optuna.load_study(study_name="tiny-student-r1", storage=storage)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert study.user_attrs["student"]["round"] == 1 and study.user_attrs["student"]["noise"]["model.drop_rate"]
    store = FileSystemArtifactStore(study.user_attrs["artifact_dir"])
    meta = {m.filename: m for m in get_all_artifact_meta(trial, storage=study._storage)}
    download_artifact(artifact_store=store, file_path=str(teacher / "oof.csv"), artifact_id=meta["oof.csv"].artifact_id)
    download_artifact(artifact_store=store, file_path=str(teacher / "config.yaml"),
                      artifact_id=meta["config.yaml"].artifact_id)
    oof, config = pd.read_csv(teacher / "oof.csv"), yaml.safe_load((teacher / "config.yaml").read_text())
    pseudo = pd.read_csv(teacher / "storage" / "tiny-student-r1" / "pseudo.csv")
    assert len(oof) == 90 and not set(oof["image_name"]) & set(pseudo["image_name"])  # pseudo rows never scored
    assert config["data"]["pseudo"]["weight"] == 0.4 and config["model"]["drop_rate"] == 0.5
    assert config["augment"]["policy"] == "light"

    again = run_module(teacher, "melanoma_search.run", *args, "--dry-run")  # a resumed round keeps its labels
    assert again.returncode == 0 and "reusing the pseudo-labels" in again.stdout
    export = call_module(teacher, "melanoma_search.export", "--study", "tiny-student-r1", "--ensemble-dir", "student")
    assert export.returncode == 0, export.stderr
    lineage = load_ensemble(teacher / "student").manifest["lineage"]
    assert lineage["round"] == 1 and lineage["teacher_study"] == "tiny"
    card = (teacher / "student" / "model_card.md").read_text()  # pseudo-labelled rows train, never calibrate:
    rate = oof["target"].mean()  # the labelled rows' rate, not one diluted by soft pseudo-labels
    line = next(text for text in card.splitlines() if "The probability carries" in text)
    assert line.startswith(f"- The probability carries the melanoma rate of the 90 rows its map was fitted on "
                           f"({rate:.1%}, synthetic-"), line  # the collection: the folder it was read from
    next_round = run_module(teacher, "melanoma_search.run", "--study", "tiny.yaml", "--student-of", "student",
                      "--unlabelled", str(images), "--dry-run", "--n-trials", "1")
    assert next_round.returncode == 0 and "dry run of study 'tiny-student-r2'" in next_round.stdout
    made = json.loads((teacher / "storage" / "tiny-student-r1" / "pseudo.json").read_text())
    assert made["seal"] == load_ensemble(teacher / "teacher").seal  # the labels name the very export that made them
    assert made["csv_sha256"] and not list((teacher / "storage" / "tiny-student-r1").glob(".*partial*"))
    again = call_module(teacher, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--ensemble-dir",
                        "teacher")  # the teacher exported again into the same folder
    assert again.returncode == 0, again.stderr
    stale = run_module(teacher, "melanoma_search.run", *args, "--dry-run")
    assert stale.returncode == 2 and "has been exported again since" in stale.stderr, stale.stdout + stale.stderr
    assert len(stale.stderr.strip().splitlines()) == 1


def test_a_dry_run_of_a_new_round_on_a_real_dataset_plans_without_labelling(teacher: Path, ham_subset: Path) -> None:
    """A spec reading a dataset folder: the dry run checks that folder and says the round's labels come later."""
    real = {**SPEC, "data": {"dir": str(ham_subset), "n_folds": 3, "num_workers": 0}}
    (teacher / "real.yaml").write_text(yaml.safe_dump(real))
    images = teacher / "unlabelled"
    images.mkdir(exist_ok=True)
    for name in pd.read_csv(ham_subset / "labels.csv")["image_name"].head(3):
        (images / f"{name}.jpg").write_bytes((ham_subset / "images" / f"{name}.jpg").read_bytes())
    run = run_module(teacher, "melanoma_search.run", "--study", "real.yaml", "--student-of", "teacher",
                     "--unlabelled", str(images), "--dry-run", "--n-trials", "1")
    assert run.returncode == 0, run.stderr
    assert "are not written yet" in run.stdout and "dry run of study 'real-student-r1'" in run.stdout
    assert not (teacher / "storage" / "real-student-r1" / "pseudo.csv").exists()  # a dry run labels nothing
