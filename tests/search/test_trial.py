"""A trial's steps: per epoch or per fold, pruning between folds, and the out-of-memory retry (it reports only steps
the failed attempt did not reach)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import timm
import torch
import yaml
from optuna.trial import TrialState
from sklearn.metrics import roc_auc_score
from timm.models import register_model

from melanoma_search.search import start_run
from tests.studies import TINY, run_cli, write_spec

_MODEL = "resnet18_out_of_memory_after_one_epoch"


@pytest.fixture(scope="module")
def memory_hungry_model() -> str:
    """A real resnet18 whose training forward runs out of (pretend) CUDA memory from its second epoch on at batches
    above 8: what a trial whose progressive resizing outgrows the card meets."""

    def resnet18_out_of_memory_after_one_epoch(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        model = timm.create_model("resnet18", pretrained=False, **kwargs)
        forward_features, calls = model.forward_features, [0]

        def hungry(x: torch.Tensor) -> torch.Tensor:
            if model.training and x.shape[0] > 8:
                calls[0] += 1
                if calls[0] > 4:  # epoch 0 is 3 or 4 batches of 16 (60 training rows)
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (test)")
            return forward_features(x)

        model.forward_features = hungry  # type: ignore[method-assign]
        return model

    resnet18_out_of_memory_after_one_epoch.__name__ = _MODEL
    register_model(resnet18_out_of_memory_after_one_epoch)
    return _MODEL


def test_an_out_of_memory_retry_reports_only_new_steps(tmp_path: Path, memory_hungry_model: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    fixed = {"epochs": 3, "batch_size": 16, "image_size": 32, "model": {"name": memory_hungry_model}}
    spec = write_spec(tmp_path, fixed=fixed, space={"lr": {"low": 1.0e-3, "high": 2.0e-3}},
                      budget={"n_trials": 1})
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = start_run(str(spec), storage_dir=tmp_path / "storage", log=lines.append)
    trial = summary.study.trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert trial.user_attrs["oom_retry"] == "batch 16 -> 8"
    artifacts = optuna.artifacts.get_all_artifact_meta(trial, storage=summary.study._storage)
    config = next(m for m in artifacts if m.filename == "config.yaml")
    with optuna.artifacts.FileSystemArtifactStore(str(summary.artifact_dir)).open_reader(config.artifact_id) as f:
        recorded = yaml.safe_load(f.read())
    assert (recorded["batch_size"], recorded["accum_steps"]) == (8, 2)  # the config that trained the weights
    assert "trial 0: out of memory at batch 16; retrying at batch 8" in capsys.readouterr().out
    # step 1 (one epoch done) stays the first attempt's; the retry's own value of it is kept beside, 2-3 are the retry's
    assert sorted(trial.intermediate_values) == [1, 2, 3]
    assert list(trial.user_attrs["oom_retry_curve"]) == ["1"]
    assert not [w for w in caught if "already reported" in str(w.message)]  # Optuna was never asked twice
    assert trial.user_attrs["train_seconds"] < trial.user_attrs["wall_seconds"]
    assert optuna.load_study(study_name="tiny", storage=summary.storage_url).trials[0].number == trial.number


def test_a_cross_validated_trial_reports_each_fold(tmp_path: Path) -> None:
    """cv_auc reports its value of the folds so far after each fold, at step k after k fold models; the last step
    is the trial's value."""
    spec = write_spec(tmp_path, objective="cv_auc", fixed={"epochs": 2, "batch_size": 16, "image_size": 32,
                                                          "model": {"name": "resnet18"}},
                      space={"lr": {"low": 1.0e-3, "high": 2.0e-3}}, budget={"n_trials": 1})
    summary = start_run(str(spec), storage_dir=tmp_path / "storage", log=lambda line: None)
    trial = summary.study.trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    assert sorted(trial.intermediate_values) == [1, 2, 3]  # one step per fold, not one per epoch
    assert trial.intermediate_values[3] == pytest.approx(trial.value)  # all folds: the cv_auc itself
    assert summary.study.user_attrs["first_step"] == 1
    assert trial.user_attrs["epochs_run"] == 6 and len(trial.user_attrs["fold_aucs"]) == 3


def test_validated_external_rows_give_the_all_rows_figure_beside_the_objective(tmp_path: Path) -> None:
    """data.validate_external: an external dataset's rows are dealt into the folds and scored, but the objective
    (and every fold's AUC) reads the primary rows alone; the all-rows AUC is recorded beside it."""
    from melanoma_search.data.synthetic import ensure_synthetic_dataset

    external = ensure_synthetic_dataset(str(tmp_path / "ext"), n_train=60, n_test=0, size=40, seed=7)
    data = {**TINY["data"], "external": [str(external)], "validate_external": True}
    spec = write_spec(tmp_path, objective="cv_auc", data=data,
                      fixed={"epochs": 1, "batch_size": 16, "image_size": 32, "model": {"name": "resnet18"}},
                      space={"lr": {"low": 1.0e-3, "high": 2.0e-3}}, budget={"n_trials": 1})
    summary = start_run(str(spec), storage_dir=tmp_path / "storage", log=lambda line: None)
    trial = summary.study.trials[0]
    assert trial.state == TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    metas = optuna.artifacts.get_all_artifact_meta(trial, storage=summary.study._storage)
    oof_meta = next(m for m in metas if m.filename == "oof.csv")
    with optuna.artifacts.FileSystemArtifactStore(str(summary.artifact_dir)).open_reader(oof_meta.artifact_id) as f:
        oof = pd.read_csv(f)
    assert oof["external"].sum() == 60 and (~oof["external"]).sum() == 90  # every row validated once
    primary = oof[~oof["external"]]
    each = [roc_auc_score(g["target"], g["pred"]) for _, g in primary.groupby("fold")]
    assert trial.value == pytest.approx(np.mean(each), abs=1e-5)  # the objective: primary rows only
    all_rows = np.mean([roc_auc_score(g["target"], g["pred"]) for _, g in oof.groupby("fold")])
    assert trial.user_attrs["oof_auc_all_rows"] == pytest.approx(all_rows, abs=1e-5)


def test_a_cross_validated_trial_is_pruned_between_folds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trial below the pruner's bar after its first fold stops there: one fold model's epochs, one step."""
    spec = write_spec(tmp_path, objective="cv_auc", fixed={"epochs": 2, "batch_size": 16, "image_size": 32,
                                                          "model": {"name": "resnet18"}},
                      space={"lr": {"low": 1.0e-3, "high": 2.0e-3}}, budget={"n_trials": 1},
                      pruner={"name": "threshold", "lower": 0.9999, "n_warmup_steps": 0})
    summary = start_run(str(spec), storage_dir=tmp_path / "storage", log=lambda line: None)
    trial = summary.study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert list(trial.intermediate_values) == [1] and trial.user_attrs["epochs_run"] == 2  # fold 0 only
    assert "trial 0 pruned at fold 0 (1 fold(s) done)" in capsys.readouterr().out


def test_work_outside_a_trial_gets_the_same_out_of_memory_retry(tmp_path: Path, memory_hungry_model: str,
                                                               synthetic_dir: Path) -> None:
    """The export's refit trains through fit_with_oom_retry: half the batch, and the config that ran comes back."""
    from melanoma_search.train import parse_config
    from melanoma_search.train.loop import fit_with_oom_retry

    config = parse_config({"data": {"dir": str(synthetic_dir), "n_folds": 3, "folds": [0], "num_workers": 0,
                                    "cache_dir": str(tmp_path / "cache")},
                           "model": {"name": memory_hungry_model, "meta": False}, "image_size": 32, "epochs": 3,
                           "batch_size": 16})
    told: list[str] = []
    result, ran = fit_with_oom_retry(config, log=lambda line: None, on_retry=told.append)
    assert (ran.batch_size, ran.accum_steps) == (8, 2) and len(result.folds) == 1
    assert told == ["out of memory at batch 16; retrying at batch 8 with accum_steps 2"]


def _isic2024_with_a_corrupt_image(root: Path) -> str:
    """A small ISIC 2024 layout (JPEG bytes in train-image.hdf5) whose fourth image is not a JPEG; its id."""
    import cv2
    import h5py
    import numpy as np
    import pandas as pd

    from melanoma_search.data.synthetic import render_lesion

    rng = np.random.default_rng(3)
    ids = [f"ISIC_{i:07d}" for i in range(36)]
    with h5py.File(root / "train-image.hdf5", "w") as handle:
        for index, name in enumerate(ids):
            ok, encoded = cv2.imencode(".jpg", render_lesion(rng, malignant=index % 3 == 0, size=32))
            assert ok
            data = b"\xff\xd8 not the rest of a JPEG" if index == 3 else encoded.tobytes()
            handle.create_dataset(name, data=np.void(data))
    pd.DataFrame({"isic_id": ids, "patient_id": [f"IP_{i // 2}" for i in range(36)],
                  "target": [int(i % 3 == 0) for i in range(36)], "age_approx": 50, "sex": "male",
                  "anatom_site_general": "posterior torso"}).to_csv(root / "train-metadata.csv", index=False)
    return ids[3]


def test_a_corrupt_image_stops_the_run_once_and_the_trial_waits_for_the_same_command(tmp_path: Path) -> None:
    """Before: every trial failed on the same undecodable image and the run exited 0 having spent all of them."""
    data = tmp_path / "data"
    data.mkdir()
    bad = _isic2024_with_a_corrupt_image(data)
    spec = write_spec(tmp_path, data={"dir": str(data), "n_folds": 3, "num_workers": 0},
                      fixed={**TINY["fixed"], "epochs": 1})
    args = ("--study", str(spec), "--n-trials", "3")
    stopped = run_cli(tmp_path, *args)
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 image(s) could not be decoded") and bad in last and "re-queued" in last
    assert "Traceback" not in stopped.stdout + stopped.stderr and stopped.stderr.count("error:") == 1
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/storage/tiny.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # one trial spent, re-queued
    assert study.trials[0].user_attrs["fail_reason"].startswith("ImageError: 1 image(s) could not be decoded")
    skipping = write_spec(tmp_path, data={"dir": str(data), "n_folds": 3, "num_workers": 0, "bad_images": "skip"},
                          fixed={**TINY["fixed"], "epochs": 1})
    again = run_cli(tmp_path, "--study", str(skipping), "--n-trials", "1")  # the user allows it: the same study goes on
    assert again.returncode == 0, again.stdout + again.stderr
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/storage/tiny.db").trials
    assert trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params
