"""A killed attempt's saved state: the retry skips finished folds and continues the running one from its last
finished epoch (the end-to-end kill of a worker process is in tests/search/test_resume.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from melanoma_search.train import EpochStats, apply_overrides, fit, parse_config


class _Killed(Exception):
    """Stands in for the process dying: raised from the epoch callback, after the epoch's state is saved."""


def _config(data_dir: Path, tmp_path: Path, **overrides: Any) -> Any:
    base = {"data": {"dir": str(data_dir), "n_folds": 3, "folds": [0], "cache_dir": str(tmp_path / "cache"),
                     "num_workers": 0},
            "model": {"name": "resnet18", "meta": False}, "image_size": 32, "epochs": 4, "batch_size": 16, "lr": 1e-3,
            "output_dir": str(tmp_path / "out")}
    return parse_config(apply_overrides(base, overrides))


def _kill_after(epochs: int, *, fold: int, seen: list[EpochStats]) -> Any:
    def callback(stats: EpochStats) -> None:
        seen.append(stats)
        if stats.fold == fold and stats.epoch == epochs:
            raise _Killed

    return callback


def test_a_retry_continues_from_the_last_finished_epoch(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path)
    resume = tmp_path / "resume"
    killed: list[EpochStats] = []
    with pytest.raises(_Killed):
        fit(config, callback=_kill_after(2, fold=0, seen=killed), resume_dir=resume, log=lambda _: None)
    assert (resume / "attempt-0" / "fold0.state.safetensors").is_file()
    lines: list[str] = []
    retried: list[EpochStats] = []
    result = fit(config, callback=retried.append, resume_dir=resume, weights_dir=tmp_path / "w", log=lines.append)
    assert "fold 0: resuming after epoch 2/4 from a killed attempt's saved state" in lines
    trained = [line for line in lines if line.startswith("fold 0 epoch ")]
    assert [line.split()[3] for line in trained] == ["3/4", "4/4"]  # only the epochs the killed attempt lacked
    assert retried[:2] == killed  # the inherited curve, exactly as the killed attempt measured it
    assert [s.epoch for s in retried] == [1, 2, 3, 4] and len(result.folds[0].history) == 4
    assert (tmp_path / "w" / "fold0.safetensors").is_file() and (resume / "attempt-0" / "fold0.done").is_dir()


def test_a_retry_keeps_the_folds_a_killed_attempt_finished(synthetic_dir: Path, tmp_path: Path) -> None:
    config = _config(synthetic_dir, tmp_path, **{"data.folds": "all", "epochs": 2})
    resume = tmp_path / "resume"
    with pytest.raises(_Killed):  # each attempt writes weights to its own folder, as each trial does
        fit(config, callback=_kill_after(1, fold=1, seen=[]), resume_dir=resume, weights_dir=tmp_path / "killed",
            log=lambda _: None)
    lines: list[str] = []
    result = fit(config, resume_dir=resume, weights_dir=tmp_path / "w", log=lines.append)
    assert any(line.startswith("fold 0: finished by a killed attempt") for line in lines)
    assert "fold 1: resuming after epoch 1/2 from a killed attempt's saved state" in lines
    assert not any(line.startswith("fold 0 epoch") for line in lines)  # fold 0 was not trained again
    assert len(result.folds) == 3 and sorted((tmp_path / "w").glob("fold*.safetensors")) == [
        tmp_path / "w" / f"fold{k}.safetensors" for k in range(3)]


def test_a_state_saved_for_another_config_is_not_used(synthetic_dir: Path, tmp_path: Path) -> None:
    resume = tmp_path / "resume"
    with pytest.raises(_Killed):
        fit(_config(synthetic_dir, tmp_path), callback=_kill_after(2, fold=0, seen=[]), resume_dir=resume,
            log=lambda _: None)
    lines: list[str] = []
    fit(_config(synthetic_dir, tmp_path, batch_size=8, accum_steps=2), resume_dir=resume, log=lines.append)
    assert not any("resuming" in line for line in lines)  # an out-of-memory retry's smaller batch starts afresh
