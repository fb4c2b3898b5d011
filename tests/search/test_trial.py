"""A trial's out-of-memory retry: the retry reports only steps the failed attempt did not reach."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import timm
import torch
from optuna.trial import TrialState
from timm.models import register_model

from melanoma_search.search import start_run
from tests.studies import write_spec

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
    assert "trial 0: out of memory at batch 16; retrying at batch 8" in capsys.readouterr().out
    # step 0 stays the first attempt's; the retry's own value of it is kept beside, steps 1-2 are the retry's
    assert sorted(trial.intermediate_values) == [0, 1, 2]
    assert list(trial.user_attrs["oom_retry_curve"]) == ["0"]
    assert not [w for w in caught if "already reported" in str(w.message)]  # Optuna was never asked twice
    assert trial.user_attrs["train_seconds"] < trial.user_attrs["wall_seconds"]
    assert optuna.load_study(study_name="tiny", storage=summary.storage_url).trials[0].number == trial.number
