"""Export and predict end to end on a tiny real study (synthetic lesions, resnet18 at 32 px, SQLite storage)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.folder import EnsembleError, load_ensemble
from melanoma_search.ensemble.prevalence import shift_prior
from tests.studies import call_module, run_module, run_study

SPEC = {
    "objective": "holdout_auc",
    "data": {"n_folds": 3, "num_workers": 0, "synthetic": {"n_train": 90, "n_test": 12, "size": 40, "seed": 2}},
    "fixed": {"epochs": 2, "batch_size": 16, "image_size": 32, "model": {"name": "resnet18"}, "tta": 2},
    "space": {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}, "loss.name": {"choices": ["bce", "focal"]}},
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "top_k_weights": 3,
}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    run_study(root, SPEC, name="tiny", n_trials=3)
    return root


def _test_csv(root: Path) -> Path:
    return next((root / "storage" / "cache").glob("synthetic-*/test.csv"))


def test_rank_export_writes_submission_report_and_blend_roc(study_dir: Path) -> None:
    run = run_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "3", "--out", "rank/sub.csv")
    assert run.returncode == 0, run.stderr
    assert "OOF AUC" in run.stdout and "vs the best single member chosen on one half of the rows" in run.stdout
    assert "refit: 6 fold model(s) to train (0 already done)" in run.stdout and "ETA" in run.stdout  # 3 x 2 folds
    submission = pd.read_csv(study_dir / "rank" / "sub.csv")
    assert list(submission.columns) == ["image_name", "target"]
    assert len(submission) == 12 and submission["image_name"].is_unique
    assert submission["target"].between(0, 1).all()
    report = (study_dir / "rank" / "report.html").read_text()
    assert "Optimisation history" in report and "ROC on out-of-fold predictions" in report
    assert "<script src=" not in report and len(report) > 1_000_000  # plotly.js inlined: opens offline
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir}/storage/tiny.db")
    names = [m.filename for m in optuna.artifacts.get_all_artifact_meta(study)]
    assert "blend-roc.svg" in names


def test_greedy_export_and_predict_agree(study_dir: Path) -> None:
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--method", "greedy", "--out",
               "greedy/sub.csv", "--ensemble-dir", "greedy/ensemble")
    assert run.returncode == 0, run.stderr
    line = next(text for text in run.stdout.splitlines() if text.startswith("blend of"))
    in_sample = float(line.split("; ")[1].split()[0])  # the weights' AUC on the rows they were chosen on
    best_auc = float(line.split("where it was chosen: ")[1].split(",")[0])
    assert in_sample >= best_auc  # greedy selection never loses to its best member on its own rows ...
    assert "scored on the half of the rows they were not chosen on" in line  # ... so that is not the AUC printed
    assert "vs the best single member chosen on one half of the rows and scored on the other" in line
    assert "the outside check (--validate) is the unbiased one" in run.stdout
    ensemble = load_ensemble(study_dir / "greedy" / "ensemble")
    assert ensemble.manifest["versions"]["torch"] and sum(m.weight for m in ensemble.members) == pytest.approx(1)
    assert ensemble.manifest["blend_oof_auc_in_sample"] == pytest.approx(in_sample, abs=1e-4)
    scored = run_module(study_dir, "melanoma_search.predict", "--ensemble", "greedy/ensemble", "--images",
                  str(_test_csv(study_dir)), "--out", "greedy/scores.csv", "--device", "cpu")
    assert scored.returncode == 0, scored.stderr
    merged = pd.read_csv(study_dir / "greedy" / "sub.csv").merge(pd.read_csv(study_dir / "greedy" / "scores.csv"),
                                                                   on="image_name")
    assert len(merged) == 12
    assert (merged["target"] - merged["score"]).abs().max() < 1e-9  # the submission's target is predict's score
    assert merged["probability"].between(0, 1).all()
    ordered = merged.sort_values("score")  # the calibrated probability never reorders images
    assert (ordered["probability"].diff().dropna() >= -1e-12).all()
    single = call_module(study_dir, "melanoma_search.predict", "--ensemble", "greedy/ensemble", "--images",
                  str(_test_csv(study_dir).parent / "images"), "--out", "greedy/folder.csv")
    assert single.returncode == 2 and "--allow-missing-meta" in single.stderr
    _check_images_per_patient_rule(study_dir, "greedy/ensemble")


def _check_images_per_patient_rule(study_dir: Path, ensemble: str) -> None:
    """A metadata member reads the patient's image count: counted in the file unless ``n_images`` gives it."""
    rows = pd.read_csv(_test_csv(study_dir)).head(2)
    rows["image_path"] = [str(_test_csv(study_dir).parent / "images" / f"{n}.jpg") for n in rows["image_name"]]
    rows["patient_id"] = rows["patient_id"].iloc[0]  # two images of one patient
    rows.to_csv(study_dir / "pair.csv", index=False)
    rows.head(1).assign(n_images=2).to_csv(study_dir / "alone.csv", index=False)
    pair = call_module(study_dir, "melanoma_search.predict", "--ensemble", ensemble, "--images", "pair.csv",
                "--out", "pair-scores.csv")
    alone = call_module(study_dir, "melanoma_search.predict", "--ensemble", ensemble, "--images", "alone.csv",
                 "--out", "alone-scores.csv")
    assert pair.returncode == 0 and alone.returncode == 0, pair.stderr + alone.stderr
    assert "images per patient: counted in this file by patient_id" in pair.stdout
    assert "images per patient: from the n_images column" in alone.stdout
    first = pd.read_csv(study_dir / "pair-scores.csv")["score"].iloc[0]
    assert pd.read_csv(study_dir / "alone-scores.csv")["score"].iloc[0] == pytest.approx(first, abs=1e-12)


def test_a_tampered_ensemble_is_refused(study_dir: Path, tmp_path: Path) -> None:
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--out", "one/sub.csv",
               "--ensemble-dir", "one/ensemble")
    assert run.returncode == 0, run.stderr
    copy = tmp_path / "ensemble"
    shutil.copytree(study_dir / "one" / "ensemble", copy)
    weights = next(copy.glob("trial-*/fold0.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EnsembleError, match="changed since export .*fold0.safetensors"):
        load_ensemble(copy)
    weights.unlink()
    scored = call_module(study_dir, "melanoma_search.predict", "--ensemble", str(copy), "--images",
                  str(_test_csv(study_dir)), "--out", str(tmp_path / "s.csv"))
    assert scored.returncode == 2 and "ensemble file missing" in scored.stderr


def test_export_errors(study_dir: Path, tmp_path: Path) -> None:
    missing = call_module(tmp_path, "melanoma_search.export", "--study", "nothing")
    assert missing.returncode == 2 and "no study storage" in missing.stderr
    storage = f"sqlite:///{tmp_path}/failed.db"
    study = optuna.create_study(study_name="failed", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # complete, but no artifacts at all
    empty = call_module(tmp_path, "melanoma_search.export", "--study", "failed", "--storage", storage)
    assert empty.returncode == 2 and "has no usable finished trial" in empty.stderr
    assert "skipping trial 0: it has no oof.csv/config.yaml artifact" in empty.stdout
    for top_k in ("0", "-1"):
        bad = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", top_k)
        assert bad.returncode == 2 and f"--top-k {top_k}: must be at least 1" in bad.stderr
        assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_stage_two_on_members_of_one_fold_is_skipped_and_said_and_the_export_ships(study_dir: Path) -> None:
    """``--no-refit`` on a fold-0 study leaves out-of-fold rows of one fold: stage two cannot cross-fit over them (its
    trees for a fold train on the other folds' rows; LightGBM used to end the export on zero rows), so it is skipped
    with the reason and the rest of the export ships."""
    export = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--no-refit", "--stage-two",
                         "--out", "one-fold/sub.csv", "--ensemble-dir", "one-fold-ens")
    assert export.returncode == 0, export.stderr
    assert "stage two skipped: the members' out-of-fold rows come from fold 0 only" in export.stdout
    assert "Traceback" not in export.stderr and (study_dir / "one-fold" / "sub.csv").is_file()
    assert "stage_two" not in load_ensemble(study_dir / "one-fold-ens").manifest


def test_operating_points_of_one_fold_model_are_said_and_calibrate_on_fits_them_to_what_predict_returns(
        tmp_path: Path) -> None:
    """No test split, no --validate: the thresholds describe one fold model and every door says so in words; with
    --calibrate-on (unlabelled images the study never saw) they describe the combination predict returns."""
    from melanoma_search.data.synthetic import write_synthetic_dataset

    spec = {**SPEC, "objective": "cv_auc", "export": {"top_k": 2, "method": "rank", "refit": True},
            "data": {**SPEC["data"], "synthetic": {**SPEC["data"]["synthetic"], "n_test": 0}},
            "fixed": {**SPEC["fixed"], "epochs": 1, "tta": 1, "model": {"name": "resnet18", "meta": False}}}
    run_study(tmp_path, spec, name="nosplit", n_trials=2)
    plain = call_module(tmp_path, "melanoma_search.export", "--study", "nosplit", "--ensemble-dir", "plain")
    assert plain.returncode == 0, plain.stderr
    assert "scale: no combination measured. The operating points and probabilities below describe ONE fold model, " \
           "but predict averages 3 per member" in plain.stdout and "expect more flags than stated" in plain.stdout
    assert "describe **one fold model** per member" in (tmp_path / "plain" / "model_card.md").read_text()
    unseen = tmp_path / "unseen"  # a new draw of lesions under names the study never used: images it never saw
    write_synthetic_dataset(tmp_path / "draw", n_train=30, n_test=0, size=40, seed=11)
    unseen.mkdir()
    for image in sorted((tmp_path / "draw" / "images").iterdir()):
        shutil.copy(image, unseen / image.name.replace("SYN_", "NEW_"))
    scored = call_module(tmp_path, "melanoma_search.predict", "--ensemble", "plain", "--images", str(unseen),
                         "--out", "plain.csv")
    assert scored.returncode == 0 and "note: the image blend's operating points and probability describe one " \
        "fold model, while each score here averages 3" in scored.stdout
    fitted = call_module(tmp_path, "melanoma_search.export", "--study", "nosplit", "--ensemble-dir", "fitted",
                         "--calibrate-on", str(unseen), "--out", "fitted-out/sub.csv")
    assert fitted.returncode == 0, fitted.stderr
    assert f"measured on --calibrate-on {unseen} (no labels read), 30 images" in fitted.stdout
    ensemble = load_ensemble(tmp_path / "fitted")
    assert ensemble.deployed_scale is not None and ensemble.deployed_scale.folds == 3
    assert ensemble.manifest["resize"] == "pillow" and {m.resize for m in ensemble.members} == {"pillow"}
    calibration = pd.read_csv(tmp_path / "fitted" / "calibration.csv")
    assert (calibration["score"] != calibration["oof"]).any()  # thresholds fitted on the combination's scale
    assert "- Scale: `score` combines every member's fold models" in (tmp_path / "fitted" / "model_card.md").read_text()
    again = call_module(tmp_path, "melanoma_search.predict", "--ensemble", "fitted", "--images", str(unseen),
                        "--out", "fitted.csv")
    assert again.returncode == 0 and "note:" not in again.stdout
    seen = call_module(tmp_path, "melanoma_search.export", "--study", "nosplit", "--out", "seen/sub.csv",
                       "--calibrate-on", str(_train_images(tmp_path)))
    last = seen.stderr.strip().splitlines()[-1]
    assert seen.returncode == 2 and "are images this ensemble's study trained on" in last
    absent = call_module(tmp_path, "melanoma_search.export", "--study", "nosplit", "--calibrate-on", "nowhere")
    assert absent.returncode == 2
    assert absent.stderr.strip() == "error: --calibrate-on nowhere: no such folder or CSV file"


def _train_images(root: Path) -> Path:
    return next((root / "storage" / "cache").glob("synthetic-*/images"))


def test_export_bags_each_member_over_every_fold_and_resumes(study_dir: Path) -> None:
    """A fold-0 study's members are retrained on the other folds: K weights each, OOF over every training row."""
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "2", "--out", "bag/sub.csv",
               "--ensemble-dir", "bag/ensemble")
    assert run.returncode == 0, run.stderr
    assert "refit:" in run.stdout and "cv_auc" in run.stdout
    ensemble = load_ensemble(study_dir / "bag" / "ensemble")
    for member, entry in zip(ensemble.members, ensemble.manifest["members"], strict=True):
        assert sorted(p.name for p in member.weight_files.values()) == ["fold0.safetensors", "fold1.safetensors",
                                                                          "fold2.safetensors"]
        assert 0 <= entry["cv_auc"] <= 1 and len(member.reference) == 90  # every training row, once ...
        assert sorted(member.reference["fold"].unique()) == [0, 1, 2]  # ... each with the fold model that scored it
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_dir}/storage/tiny.db")
    recorded = study.user_attrs["cv_auc"]
    assert {str(e["trial"]) for e in ensemble.manifest["members"]} <= set(recorded)
    again = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "4")  # 3 trials in it
    assert again.returncode == 0, again.stderr
    assert "already done, kept" in again.stdout and "refit: 0 fold model(s) to train" in again.stdout
    assert "3 of the 4 member(s) asked for: the study has no more usable finished trials" in again.stdout
    exported = study_dir / "storage" / "tiny" / "export"  # the default: out of the working tree's way
    assert (exported / "submission.csv").is_file() and (exported / "report.html").is_file()
    assert not (study_dir / "submission.csv").exists()
    no_refit = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "2", "--no-refit",
                    "--out", "plain/sub.csv")
    assert no_refit.returncode == 0 and "refit" not in no_refit.stdout


def test_export_validate_prints_in_search_and_outside_auc(study_dir: Path, ham_subset: Path) -> None:
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "2", "--out", "val/sub.csv",
               "--validate", str(ham_subset), "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert "outside check on" in run.stdout and "200 image(s), 60 melanoma(s)" in run.stdout
    blend_line = next(text for text in run.stdout.splitlines() if text.startswith("  blend "))
    inside, outside, gap = (float(v) for v in blend_line.split()[1:4])
    assert 0 <= outside <= 1 and gap == pytest.approx(inside - outside, abs=2e-3)
    report = (study_dir / "val" / "report.html").read_text()
    assert "Outside check: in-search vs outside AUC" in report and "ROC on the outside images" in report


def test_what_the_ensemble_tells_its_users(study_dir: Path, ham_subset: Path) -> None:
    """Operating points, calibration, subgroups, saliency and the model card, from one export with --validate."""
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "2", "--out", "card/sub.csv",
                      "--ensemble-dir", "card/ensemble", "--validate", str(ham_subset), "--device", "cpu",
                      "--prevalence", "0.02")
    assert run.returncode == 0, run.stderr
    # what choosing 2 of the study's trials costs, measured without training (BBC-CV)
    assert "bias-corrected (BBC-CV: the choice of the top 2 of " in run.stdout
    # at the rate where it is used: each point's PPV / NPV / flags per melanoma, in the output and the card
    assert "prevalence 2.0%: probabilities moved from the training rows' melanoma rate" in run.stdout
    assert "sens90 at 2.0% melanoma: PPV " in run.stdout
    assert "operating points, chosen on the shipped out-of-fold blend" in run.stdout
    assert "measured on the study's test split (no labels read), 12 images" in run.stdout  # the combination's scale
    assert "sens90: score >= " in run.stdout and "operating point sens90 outside: sensitivity" in run.stdout
    assert "calibration of the calibrated probability, out of fold (map fitted on the other half): Brier" in run.stdout
    ensemble = load_ensemble(study_dir / "card" / "ensemble")
    points = ensemble.operating_points()
    assert set(points) == {"sens90", "sens95", "youden"} and points["sens90"].sensitivity >= 0.9
    assert "model_card.md" in ensemble.manifest["files"]  # sealed with the rest
    card = (study_dir / "card" / "ensemble" / "model_card.md").read_text()
    for heading in ("## Intended use", "## Not intended use", "## Training data", "## How it was made",
                    "## Performance", "## Operating points", "## Subgroups", "## Known limits"):
        assert heading in card
    assert "- 90 images (" in card and f"Outside ({ham_subset}: 200 images, 60 melanomas)" in card
    assert "- Scale: `score` combines every member's fold models" in card and "study's test split" in card
    assert "The probability carries the melanoma rate of the 90 rows its map was fitted on (" in card
    assert "At the melanoma rate where it is used: prevalence 2.0%" in card and "- youden at 2.0% melanoma" in card
    assert "Corrected for choosing the members: bias-corrected (BBC-CV" in card
    assert ensemble.prevalence == 0.02 and ensemble.manifest["bias_corrected"]["top_k"] == 2
    assert ensemble.deployed_scale is not None and ensemble.deployed_scale.folds == 3
    check = ensemble.manifest["validation"]["scale_check"]  # the outside images described both ways, paired
    assert set(check["points"]) == {"sens90", "sens95", "youden"} and "ece_difference" in check
    calibration = pd.read_csv(study_dir / "card" / "ensemble" / "calibration.csv")
    assert list(calibration.columns) == ["oof", "score", "target"]  # what ships is described on the combination
    assert (calibration["score"] != calibration["oof"]).any()
    oof_groups = ensemble.manifest["subgroups_oof"]
    assert {g["attribute"] for g in oof_groups} >= {"sex", "source"}
    assert sum(g["images"] for g in oof_groups if g["attribute"] == "source") == 90
    # a subgroup's AUC is that of the shipped out-of-fold scores as they are (``oof``), never of the label-shrunk
    # estimate the operating points are read on (``score``, whose AUC is higher by construction: d4b4a5f showed it)
    (every_row,) = [g for g in oof_groups if g["attribute"] == "source"]  # one collection: all 90 rows
    assert every_row["auc"] == pytest.approx(roc_auc_score(calibration["target"], calibration["oof"]))
    assert roc_auc_score(calibration["target"], calibration["score"]) > every_row["auc"]
    assert "sensitivity and specificity at the operating points estimated for the combination" in card
    outside = ensemble.manifest["validation"]["subgroups"]
    assert sum(g["images"] for g in outside if g["attribute"] == "sex") == 200
    report = (study_dir / "card" / "report.html").read_text()
    for section in ("Operating points", "Calibration", "Subgroups: out of fold", "Subgroups: outside",
                    "Where the members looked", "Model card"):
        assert section in report
    assert "data:image/png;base64," in report  # the Grad-CAM overlays themselves
    flagged = call_module(study_dir, "melanoma_search.predict", "--ensemble", "card/ensemble", "--images",
                          str(_test_csv(study_dir)), "--out", "card/flags.csv", "--operating-point", "youden")
    assert flagged.returncode == 0, flagged.stderr
    scores = pd.read_csv(study_dir / "card" / "flags.csv")
    assert list(scores.columns) == ["image_name", "score", "probability", "flag_youden"]
    assert (scores["flag_youden"] == (scores["score"] >= points["youden"].threshold)).all()
    # the exported rate moves the probability (prior shift), never the score; --prevalence picks another one
    trained = float(calibration["target"].mean())
    unmoved = ensemble.probability(scores["score"].to_numpy())
    assert "prevalence 2.0%" in flagged.stdout
    assert scores["probability"].to_numpy() == pytest.approx(shift_prior(unmoved, trained=trained, deployed=0.02))
    assert (scores["probability"] <= unmoved + 1e-12).all() and trained > 0.02
    wrong = call_module(study_dir, "melanoma_search.predict", "--ensemble", "card/ensemble", "--images",
                        str(_test_csv(study_dir)), "--out", "card/y.csv", "--prevalence", "2")
    assert wrong.returncode == 2 and "--prevalence 2: the melanoma rate where the ensemble is used" in wrong.stderr
    unknown = call_module(study_dir, "melanoma_search.predict", "--ensemble", "card/ensemble", "--images",
                          str(_test_csv(study_dir)), "--out", "card/x.csv", "--operating-point", "sens99")
    assert unknown.returncode == 2 and "this ensemble has sens90, sens95, youden" in unknown.stderr


def test_a_cross_validated_study_exports_bagged_members_without_refit(tmp_path: Path) -> None:
    """cv_auc trials hold every fold's weights: the export trains nothing, and predict reproduces the submission
    (each fold model ranked on its own out-of-fold scale, at export as at scoring); the ensemble (no metadata) also
    goes portable."""
    synthetic = {**SPEC["data"]["synthetic"], "size": SPEC["fixed"]["image_size"]}  # no resize: see _check_portable
    spec = {**SPEC, "objective": "cv_auc", "export": {"top_k": 3, "method": "greedy", "refit": True},
            "data": {**SPEC["data"], "synthetic": synthetic},  # colour constancy: a step the ONNX graph must hold
            "fixed": {**SPEC["fixed"], "model": {"name": "resnet18", "meta": False},
                      "augment": {"color_constancy": True}}}
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(spec))
    run = run_module(tmp_path, "melanoma_search.run", "--study", "cv.yaml", "--n-trials", "3")
    assert run.returncode == 0, run.stderr
    export = call_module(tmp_path, "melanoma_search.export", "--study", "cv", "--ensemble-dir", "ens")
    assert export.returncode == 0, export.stderr
    assert "refit:" not in export.stdout and "greedy" in export.stdout
    assert "of 3 candidate(s)" in export.stdout
    report = (tmp_path / "storage" / "cv" / "export" / "report.html").read_text()
    member = load_ensemble(tmp_path / "ens").members[0].name  # its learning curves: each fold's epochs, so named
    assert all(f'"name":"{member} fold {k}"' in report for k in range(3)) and "epoch of the fold" in report
    assert "epoch (over folds)" not in report and "reported to the pruner" not in report
    ensemble = load_ensemble(tmp_path / "ens")
    assert ensemble.manifest["format"] == 3
    for member in ensemble.members:
        assert sorted(member.weight_files) == [0, 1, 2] and sorted(member.reference["fold"].unique()) == [0, 1, 2]
    submission = pd.read_csv(tmp_path / "storage" / "cv" / "export" / "submission.csv")
    scored = call_module(tmp_path, "melanoma_search.predict", "--ensemble", "ens", "--images",
                         str(_test_csv(tmp_path)), "--out", "scores.csv")
    assert scored.returncode == 0, scored.stderr
    merged = submission.merge(pd.read_csv(tmp_path / "scores.csv"), on="image_name")
    assert len(merged) == 12 and (merged["target"] - merged["score"]).abs().max() < 1e-9
    _check_portable(tmp_path, ensemble=tmp_path / "ens", images=_test_csv(tmp_path).parent / "images",
                    folds=sum(len(m.weight_files) for m in ensemble.members))


def _check_portable(root: Path, *, ensemble: Path, images: Path, folds: int) -> None:
    """ONNX fold models and a scorer needing only onnxruntime, numpy and Pillow, checked in two exact halves: each
    fold model's raw output equals the toolkit's (its evaluation transform, colour constancy here, inside the graph),
    and the scorer's rank-blend-combine, fed the toolkit's raw outputs, gives predict's scores. The images are stored
    at the model's size, so both sides decode the same pixels; end to end, colour constancy's float arithmetic (numpy
    on the host, ONNX in the graph) moves raw outputs by about 1e-5, which on these barely trained models' nearly
    tied outputs can still flip a rank (docs/export.md says so)."""
    import numpy as np
    import onnxruntime
    import torch

    from melanoma_search.data.layouts import read_images_to_score
    from melanoma_search.ensemble import score_member

    portable = run_module(root, "melanoma_search.portable", "--ensemble", str(ensemble), "--out",
                          str(root / "portable"))
    assert portable.returncode == 0, portable.stderr
    files = sorted(p.name for p in (root / "portable").iterdir())
    assert "score.py" in files and "ensemble.json" in files and sum(f.endswith(".onnx") for f in files) == folds
    rows = read_images_to_score(images)
    spec = json.loads((root / "portable" / "ensemble.json").read_text())
    loaded = importlib.util.spec_from_file_location("portable_score", root / "portable" / "score.py")
    assert loaded is not None and loaded.loader is not None
    scorer_code = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(scorer_code)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for p in rows["image_path"]])
    ranks: dict[str, dict[int, np.ndarray]] = {}
    for member, listed in zip(load_ensemble(ensemble).members, spec["members"], strict=True):
        raw = score_member(member, rows, device=torch.device("cpu"))
        ranks[listed["name"]] = {}
        for fold in listed["folds"]:
            graph = onnxruntime.InferenceSession(str(root / "portable" / fold["file"]))
            assert np.abs(graph.run(None, {"pixels": pixels})[0] - raw[fold["fold"]]).max() < 1e-4
            reference = np.asarray(fold["reference"])
            ranks[listed["name"]][fold["fold"]] = scorer_code.percentiles(raw[fold["fold"]], reference)
    combined = scorer_code.combine(ranks, {m["name"]: m["weight"] for m in spec["members"]}, rule=spec["combine"],
                                   edge=spec["edge"])
    scorer = subprocess.run([sys.executable, "-I", str(root / "portable" / "score.py"), str(images), "--out",
                             str(root / "onnx.csv")], capture_output=True, text=True, timeout=300)
    assert scorer.returncode == 0, scorer.stderr  # -I: no melanoma_search on the path, only the three packages
    predicted = call_module(root, "melanoma_search.predict", "--ensemble", str(ensemble), "--images", str(images),
                            "--out", str(root / "torch.csv"))
    assert predicted.returncode == 0, predicted.stderr
    merged = pd.read_csv(root / "onnx.csv").merge(pd.read_csv(root / "torch.csv"), on="image_name",
                                                  suffixes=("_onnx", "_torch"))
    assert len(merged) == len(list(images.glob("*.jpg")))
    torch_scores = pd.read_csv(root / "torch.csv").set_index("image_name").loc[rows["image_name"], "score"]
    assert np.abs(combined - torch_scores.to_numpy()).max() < 1e-9  # the same blend and fold combination
    assert (merged["score_onnx"] - merged["score_torch"]).abs().median() < 1e-6  # end to end, most images exactly
    _check_real_size(root, ensemble=ensemble, images=images, scorer=scorer_code, spec=spec)
    refused = call_module(root, "melanoma_search.portable", "--ensemble", str(ensemble), "--out",
                          str(root / "portable"))
    assert refused.returncode == 2 and "exists; give a new folder" in refused.stderr
    onnx = next((root / "portable").glob("*.onnx"))  # the portable folder is sealed: an edited file is refused
    onnx.write_bytes(onnx.read_bytes()[:-16])
    tampered = subprocess.run([sys.executable, "-I", str(root / "portable" / "score.py"), str(images), "--out",
                               str(root / "tampered.csv")], capture_output=True, text=True, timeout=300)
    assert tampered.returncode == 2 and not (root / "tampered.csv").exists()
    assert tampered.stderr.strip() == f"error: portable ensemble file changed since it was written (SHA-256 " \
        f"mismatch): {onnx}"


def _check_real_size(root: Path, *, ensemble: Path, images: Path, scorer: Any, spec: dict[str, Any]) -> None:
    """Images larger than the members' size (here 600x450, a camera's, and 450x600): resized by the scorer and the
    toolkit with the same calls, so the same pixels reach the same fold models and each one's raw output agrees
    within 1e-4, and the scores end to end as on stored-size images (OpenCV against Pillow had moved them by up to
    0.094 on real 600x450 lesions)."""
    import numpy as np
    import onnxruntime
    import torch

    from melanoma_search.data.images import decode_image
    from melanoma_search.data.layouts import read_images_to_score
    from melanoma_search.ensemble import score_member

    big = root / "real-size"
    big.mkdir()
    for index, path in enumerate(sorted(images.glob("*.jpg"))):
        with Image.open(path) as image:
            image.resize((600, 450) if index % 2 else (450, 600), Image.Resampling.BICUBIC).save(big / path.name)
    rows = read_images_to_score(big)
    for member, listed in zip(load_ensemble(ensemble).members, spec["members"], strict=True):
        size = listed["image_size"]
        pixels = np.stack([scorer.decode(Path(p), size) for p in rows["image_path"]])
        assert all(np.array_equal(decode_image(p, size), pixels[i].transpose(1, 2, 0))
                   for i, p in enumerate(rows["image_path"]))
        raw = score_member(member, rows, device=torch.device("cpu"))
        for fold in listed["folds"]:
            graph = onnxruntime.InferenceSession(str(root / "portable" / fold["file"]))
            assert np.abs(graph.run(None, {"pixels": pixels})[0] - raw[fold["fold"]]).max() < 1e-4
    onnx = subprocess.run([sys.executable, "-I", str(root / "portable" / "score.py"), str(big), "--out",
                           str(root / "onnx-big.csv")], capture_output=True, text=True, timeout=300)
    assert onnx.returncode == 0, onnx.stderr
    predicted = call_module(root, "melanoma_search.predict", "--ensemble", str(ensemble), "--images", str(big),
                            "--out", str(root / "torch-big.csv"))
    assert predicted.returncode == 0, predicted.stderr
    merged = pd.read_csv(root / "onnx-big.csv").merge(pd.read_csv(root / "torch-big.csv"), on="image_name")
    assert len(merged) == len(rows) and (merged["score_x"] - merged["score_y"]).abs().median() < 1e-6


def test_an_out_inside_the_ensemble_folder_is_refused_before_any_work(study_dir: Path) -> None:
    """The submission (and the report beside it) inside --ensemble-dir used to be refused at the very end, after the
    refit, and the file it left blocked every later export."""
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--out", "inside/sub.csv",
                      "--ensemble-dir", "inside")
    assert run.returncode == 2 and run.stderr.strip().startswith("error: --out inside/sub.csv: inside --ensemble-dir")
    assert len(run.stderr.strip().splitlines()) == 1 and "refit" not in run.stdout
    assert not (study_dir / "inside").exists()


def test_export_never_deletes_what_it_did_not_write(study_dir: Path, tmp_path: Path) -> None:
    """--ensemble-dir over a folder of the user's is refused by name; over an ensemble it is replaced whole."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    for target in (str(work), str(study_dir / "storage")):
        refused = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                              "--out", "safe/sub.csv", "--ensemble-dir", target)
        assert refused.returncode == 2 and "refusing to replace it" in refused.stderr and target in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert (work / "notes.txt").read_text() == "mine" and (study_dir / "storage" / "tiny.db").is_file()
    ensemble = tmp_path / "ensemble"
    for _ in range(2):  # a second export replaces the first ensemble, and leaves no staging folder behind
        run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                          "--out", "safe/sub.csv", "--ensemble-dir", str(ensemble))
        assert run.returncode == 0, run.stderr
    assert load_ensemble(ensemble).members and sorted(p.name for p in tmp_path.iterdir()) == ["ensemble", "work"]
    (ensemble / "stray.txt").write_text("added by hand")
    again = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                        "--out", "safe/sub.csv", "--ensemble-dir", str(ensemble))
    assert again.returncode == 2 and "holds files its ensemble does not list (stray.txt)" in again.stderr


def test_an_edited_manifest_is_refused(study_dir: Path, tmp_path: Path) -> None:
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                      "--out", "seal/sub.csv", "--ensemble-dir", str(tmp_path / "ensemble"))
    assert run.returncode == 0, run.stderr
    manifest = tmp_path / "ensemble" / "manifest.json"
    edited = manifest.read_text().replace('"weight": 1.0', '"weight": 0.5')
    assert edited != manifest.read_text()
    manifest.write_text(edited)
    with pytest.raises(EnsembleError, match="changed since export .*manifest.json"):
        load_ensemble(tmp_path / "ensemble")
    (tmp_path / "ensemble" / "manifest.sha256").unlink()
    with pytest.raises(EnsembleError, match="ensemble file missing: .*manifest.sha256"):
        load_ensemble(tmp_path / "ensemble")
    # an edit that also claims the format before the seal, and lists the edited file's own digest, is refused too
    weights = next((tmp_path / "ensemble").glob("trial-*/fold0.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-8] + bytes(8))
    body = json.loads(edited)
    body["format"] = 1
    body["files"][str(weights.relative_to(tmp_path / "ensemble"))] = hashlib.sha256(weights.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(body))
    with pytest.raises(EnsembleError, match="ensemble file missing: .*manifest.sha256"):
        load_ensemble(tmp_path / "ensemble")


def test_reading_a_study_never_creates_storage(study_dir: Path) -> None:
    typo = study_dir / "storage" / "tiny-typo.log"
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--storage", f"journal:{typo}")
    assert run.returncode == 2 and "no study storage at journal:" in run.stderr and not typo.exists()
    # and a run that would start the study afresh in a second storage stops, naming the one with its trials
    journal = study_dir / "storage" / "tiny.log"
    split = run_module(study_dir, "melanoma_search.run", "--study", "tiny.yaml", "--storage", f"journal:{journal}",
                       "--n-trials", "1")
    assert split.returncode == 2 and "has 3 trial(s) in sqlite:///" in split.stderr
    assert "--study-name NEW" in split.stderr


def test_an_outside_check_refuses_the_studys_own_images(study_dir: Path, tmp_path: Path) -> None:
    """--validate on training images is refused: a copy under new names by file content, a resized re-encoded copy
    by perceptual hash."""
    source = _test_csv(study_dir).parent
    train = pd.read_csv(source / "labels.csv").head(20)
    (tmp_path / "images").mkdir()
    for index, name in enumerate(train["image_name"]):
        shutil.copy2(source / "images" / f"{name}.jpg", tmp_path / "images" / f"renamed_{index}.jpg")
    train.assign(image_name=[f"renamed_{i}" for i in range(len(train))]).to_csv(tmp_path / "labels.csv", index=False)
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                      "--out", "own/sub.csv", "--validate", str(tmp_path))
    assert run.returncode == 2 and "20 of its 20 image(s) are images this ensemble's study trained on" in run.stderr
    # resized and saved again as JPEG: no name or digest matches, the perceptual hash does
    for index, name in enumerate(train["image_name"]):
        image = Image.open(source / "images" / f"{name}.jpg").convert("RGB")
        image.resize((56, 56)).save(tmp_path / "images" / f"renamed_{index}.jpg", "JPEG", quality=70)
    again = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                        "--out", "own/sub.csv", "--validate", str(tmp_path))
    assert again.returncode == 2 and "image(s) are images this ensemble's study trained on" in again.stderr
    assert "as a near-duplicate (a resized or re-encoded copy)" in again.stderr


def test_predict_writes_under_storage_by_default_and_names_an_unwritable_out(study_dir: Path) -> None:
    run = call_module(study_dir, "melanoma_search.export", "--study", "tiny", "--top-k", "1", "--no-refit",
                      "--out", "pred/sub.csv", "--ensemble-dir", "pred/ensemble")
    assert run.returncode == 0, run.stderr
    scored = call_module(study_dir, "melanoma_search.predict", "--ensemble", "pred/ensemble", "--images",
                         str(_test_csv(study_dir)))
    assert scored.returncode == 0, scored.stderr
    assert (study_dir / "storage" / "tiny" / "predict" / "scores.csv").is_file()
    assert not (study_dir / "scores.csv").exists()
    blocked = study_dir / "pred" / "blocked"
    blocked.write_text("a file where a folder should be")
    refused = call_module(study_dir, "melanoma_search.predict", "--ensemble", "pred/ensemble", "--images",
                          str(_test_csv(study_dir)), "--out", str(blocked / "scores.csv"))
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and str(blocked) in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_ctrl_c_during_the_refit_is_one_line_and_keeps_the_finished_folds(study_dir: Path, tmp_path: Path) -> None:
    args = ["-m", "melanoma_search.export", "--study", "tiny", "--storage", f"sqlite:///{study_dir}/storage/tiny.db",
            "--storage-dir", str(tmp_path / "fresh"), "--top-k", "3", "--out", str(tmp_path / "sub.csv")]
    process = subprocess.Popen([sys.executable, *args], cwd=study_dir, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("refit trial-") and "val_auc" in line:  # one fold model finished
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert err.strip().startswith("interrupted: finished refit folds are kept") and len(err.strip().splitlines()) == 1
    again = call_module(study_dir, "melanoma_search.export", *args[2:])
    assert again.returncode == 0, again.stderr
    assert "already done, kept" in again.stdout
