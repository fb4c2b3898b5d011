from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from melanoma_search.errors import ConfigError, DataError
from melanoma_search.train import EpochStats, apply_overrides, fit, parse_config, prepare_for


def _config(data_dir: Path, tmp_path: Path, **overrides: Any) -> Any:
    base = {
        "data": {"dir": str(data_dir), "n_folds": 3, "folds": [0], "cache_dir": str(tmp_path / "cache"),
                 "num_workers": 0},
        "model": {"name": "resnet18"},
        "image_size": 32,
        "epochs": 2,
        "batch_size": 16,
        "lr": 1e-3,
        "output_dir": str(tmp_path / "out"),
    }
    return parse_config(apply_overrides(base, overrides))


def test_fit_returns_oof_and_test_predictions(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path)
    seen: list[EpochStats] = []
    result = fit(config, callback=seen.append, weights_dir=tmp_path / "weights", log=lambda _: None)
    data = prepare_for(config)
    fold0 = data.table[data.table["fold"] == 0]
    oof = result.oof
    assert sorted(oof["image_name"]) == sorted(fold0["image_name"])
    assert oof["pred"].between(0, 1).all() and set(oof["target"].unique()) == {0.0, 1.0}
    assert result.test is not None and len(result.test) == 20 and result.test["target"].isna().all()
    assert [s.epoch for s in seen] == [1, 2] and [s.step for s in seen] == [0, 1]
    assert all(0 <= s.val_auc <= 1 and s.images_per_s > 0 for s in seen)
    weights = load_file(result.folds[0].weights_path)
    assert any(k.startswith("backbone.") for k in weights)
    out = result.save(tmp_path / "run", config=config)
    assert {p.name for p in out.iterdir()} == {"oof.csv", "test.csv", "history.csv", "config.yaml", "metrics.yaml"}
    saved = pd.read_csv(out / "oof.csv")
    assert list(saved.columns[:3]) == ["image_name", "target", "pred"]


def test_all_folds_cover_every_training_row_once(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path, **{"data.folds": "all", "epochs": 1})
    result = fit(config, log=lambda _: None)
    assert len(result.folds) == 3 and len(result.fold_aucs) == 3
    assert result.oof["image_name"].is_unique and len(result.oof) == 120
    assert 0.0 <= result.auc <= 1.0


class _Stop(Exception):
    pass


def test_callback_can_stop_a_run(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path, epochs=4)
    seen: list[int] = []

    def callback(stats: EpochStats) -> None:
        seen.append(stats.epoch)
        if stats.epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fit(config, callback=callback, log=lambda _: None)
    assert seen == [1, 2]


@pytest.mark.parametrize("overrides", [
    {"progressive_sizes": [24], "freeze_epochs": 1, "tta": 8, "accum_steps": 2},
    {"row_sampler": "balanced", "oversample": 3, "augment.cutmix": 0.5, "augment.mixup": 0.5, "augment.policy": "heavy",
     "augment.hair": 0.5, "augment.microscope": 0.5, "augment.color_constancy": True, "augment.cutout": 0.5},
    {"lr": "auto", "loss.name": "focal", "model.head": "msd", "model.pool": "gem"},
    {"target": "diagnosis", "loss.name": "focal", "model.meta": False},
    {"model.meta": True, "model.meta_dropout": 0.5, "checkpoint": "last"},
    {"loss.name": "arcface", "model.head": "arcface", "tta": 2},
    {"loss.name": "margin_focal", "loss.margin": 0.3},
    {"loss.name": "auc", "model.name": "efficientnet_b0"},
])
def test_training_options_run_end_to_end(synthetic_dir: Path, tmp_path: Path, overrides: dict[str, Any]) -> None:
    lines: list[str] = []
    result = fit(_config(synthetic_dir, tmp_path, **overrides), log=lines.append)
    assert np.isfinite(result.auc) and result.oof["pred"].between(0, 1).all()
    assert sum(line.startswith("fold 0 epoch") for line in lines) == 2
    if overrides.get("lr") == "auto":
        assert any(line.startswith("lr finder:") for line in lines)
    if "progressive_sizes" in overrides:
        assert [s.image_size for s in result.folds[0].history] == [24, 32]


def test_real_ham_images_train(ham_subset: Path, tmp_path: Path) -> None:
    """A short real run on 200 HAM10000 dermoscopy images (the full-size check is bench/generalization.py)."""
    config = _config(ham_subset, tmp_path, image_size=64, epochs=3, **{"data.n_folds": 4})
    result = fit(config, log=lambda _: None)
    assert len(result.oof) == 50 and result.oof["target"].sum() == 15
    assert np.isfinite(result.auc)


def test_bad_inputs_give_clear_errors(synthetic_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        fit(_config(tmp_path / "absent", tmp_path), log=lambda _: None)
    with pytest.raises(ConfigError, match="unknown timm model 'resnet181'"):
        fit(_config(synthetic_dir, tmp_path, **{"model.name": "resnet181"}), log=lambda _: None)
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        fit(_config(synthetic_dir, tmp_path, device="cuda"), log=lambda _: None)


def test_cli_prints_progress_and_val_auc(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path, epochs=1)
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    run = subprocess.run([sys.executable, "-m", "melanoma_search.train", "--config", str(path),
                          "--set", "tta=2", "--output-dir", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "fold 0 epoch 1/1" in run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("val_auc=")
    assert (tmp_path / "cli" / "oof.csv").is_file() and (tmp_path / "cli" / "fold0.safetensors").is_file()
    assert "tta: 2" in (tmp_path / "cli" / "config.yaml").read_text()
    bad = subprocess.run([sys.executable, "-m", "melanoma_search.train", "--set", "model.nmae=x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "model.nmae: unknown key; did you mean 'name'?" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("checkpoint", ["swa", "last", "best"])
def test_the_kept_weights_follow_the_checkpoint_rule(synthetic_dir: Path, tmp_path: Path, checkpoint: str) -> None:
    """``swa`` keeps the mean of the last epochs' weights, ``last`` the final ones, ``best`` the best epoch's; the
    fold's AUC and predictions are those of the kept weights, and the best epoch's AUC is recorded beside them."""
    import torch
    from sklearn.metrics import roc_auc_score

    import melanoma_search.train.fold as fold_module

    swa = {"swa_epochs": 2} if checkpoint == "swa" else {}  # read by swa alone (elsewhere it is refused)
    config = _config(synthetic_dir, tmp_path, epochs=3, checkpoint=checkpoint, **swa, **{"model.meta": False})
    data = prepare_for(config)
    states: list[dict[str, torch.Tensor]] = []
    original = fold_module.run_epoch

    def spy(model: Any, *args: Any, **kwargs: Any) -> Any:  # the weights after every epoch, as trained
        out = original(model, *args, **kwargs)
        states.append({k: v.detach().clone().float() for k, v in model.state_dict().items()})
        return out

    fold_module.run_epoch = spy  # type: ignore[assignment]
    try:
        result, _ = fold_module.fit_fold(config, data, 0, log=lambda _: None, weights_dir=tmp_path / "w")
    finally:
        fold_module.run_epoch = original  # type: ignore[assignment]
    assert result.weights_path is not None
    kept = load_file(result.weights_path)
    key = "head.1.weight"
    expected = {"swa": (states[1][key] + states[2][key]) / 2, "last": states[2][key],
                "best": states[result.best_epoch - 1][key]}[checkpoint]
    torch.testing.assert_close(kept[key].float(), expected)
    assert result.checkpoint == checkpoint and 0 <= result.best_epoch_auc <= 1
    assert result.auc == pytest.approx(float(roc_auc_score(result.oof["target"], result.oof["pred"])))
    if checkpoint == "best":
        assert result.auc == pytest.approx(result.best_epoch_auc)  # the optimistic number, chosen on this fold


def test_compiled_training_matches_eager(synthetic_dir: Path, tmp_path: Path) -> None:
    """``compile: default`` (torch.compile, inductor on the CPU here) trains to the same weights and scores as eager.

    Dropout is off on both sides: compiled graphs draw their masks from another random stream, which is a
    difference in noise, not in the model.
    """
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("torch.compile on the CPU (inductor) needs a C++ compiler; none on PATH")
    overrides = {"model": {"name": "test_resnet", "drop_rate": 0.0, "meta": False}, "epochs": 1, "tta": 2,
                 "save_weights": False}
    eager = fit(_config(synthetic_dir, tmp_path, **overrides), log=lambda _: None)
    compiled = fit(_config(synthetic_dir, tmp_path, **overrides, compile="default"), log=lambda _: None)
    assert compiled.folds[0].history[0].train_loss == pytest.approx(eager.folds[0].history[0].train_loss, rel=1e-4)
    np.testing.assert_allclose(compiled.oof["pred"], eager.oof["pred"], rtol=1e-3, atol=1e-4)
    assert {"train_steps", "validate", "predict", "model", "cache"} <= set(compiled.phases)
