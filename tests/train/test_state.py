"""The fold's loop state: one object whose state_dict is what a resume saves (tensors and JSON, never a pickle), and
which restores onto the model's device."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from melanoma_search.train import apply_overrides, parse_config
from melanoma_search.train.results import EpochStats
from melanoma_search.train.resume import ResumeFolder
from melanoma_search.train.state import FoldState, WeightAverage, decode_state, encode_state


def _state(seed: int = 0) -> FoldState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return FoldState(model=model, optimizer=optimizer, scheduler=scheduler, scaler=None,
                     rng=np.random.default_rng(seed), lr=1e-3, average=WeightAverage())


def _train_one_epoch(state: FoldState, epoch: int) -> None:
    batch = torch.randn(8, 4)
    loss = state.model(batch).pow(2).mean()
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad()
    stats = EpochStats(fold=0, epoch=epoch, epochs=4, step=epoch - 1, image_size=32, train_loss=float(loss.detach()),
                       val_loss=0.5, val_auc=0.5 + 0.1 * epoch, lr=1e-3, seconds=1.0, images_per_s=8.0)
    state.finish_epoch(stats, images=8, seconds=1.0, keep_best=True, average=True)


def test_the_loop_state_round_trips_through_tensors_and_json() -> None:
    state = _state()
    for epoch in (1, 2):
        _train_one_epoch(state, epoch)
    tensors: dict[str, torch.Tensor] = {}
    saved = json.loads(json.dumps(encode_state(state.state_dict(), tensors)))  # what the file holds: plain JSON
    at_save = (torch.get_rng_state(), np.random.random(), random.random(), state.rng.random())
    restored = _state(seed=1)
    restored.load_state_dict(decode_state(saved, tensors))
    assert restored.epochs_done == 2 and restored.best_epoch == 2 and restored.history == state.history
    assert restored.average is not None and restored.average.count == 2
    for name, value in state.model.state_dict().items():
        assert torch.equal(restored.model.state_dict()[name], value)
    assert restored.optimizer.state_dict()["param_groups"][0]["betas"] == (0.8, 0.99)  # a tuple again
    assert restored.scheduler.state_dict()["last_epoch"] == 2
    # every generator is back where it was at the save point
    assert torch.equal(torch.get_rng_state(), at_save[0])
    assert (np.random.random(), random.random(), restored.rng.random()) == at_save[1:]
    torch.set_rng_state(at_save[0])
    _train_one_epoch(state, 3)  # both continue identically from the saved point
    torch.set_rng_state(at_save[0])
    _train_one_epoch(restored, 3)
    assert all(torch.allclose(restored.model.state_dict()[k], v) for k, v in state.model.state_dict().items())


def test_a_saved_state_refuses_anything_but_data_and_tensors() -> None:
    with pytest.raises(TypeError, match="cannot save object in a training state"):
        encode_state({"callable": object()}, {})


def test_a_weight_average_saved_on_one_device_resumes_on_the_models_device() -> None:
    """A state is written from the CPU; a GPU retry's next update mixes the model's tensors with the restored
    average in place. ``meta`` stands for the other device here (the GPU half runs where a card is lent)."""
    model = torch.nn.Linear(3, 2)
    average = WeightAverage()
    average.update(model)
    saved = average.state_dict()
    elsewhere = torch.nn.Linear(3, 2, device="meta")
    restored = WeightAverage()
    restored.load_state_dict(saved, device=torch.device("meta"))
    assert {v.device.type for v in restored.state.values()} == {"meta"}
    restored.update(elsewhere)  # the in-place lerp_ between the average and the model: same device, no error
    assert restored.count == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine): the CPU-saved "
                    "average resumed onto a real GPU is checked where a card is lent")
def test_a_cpu_saved_average_resumes_on_a_gpu() -> None:
    model = torch.nn.Linear(3, 2)
    average = WeightAverage()
    average.update(model)
    restored = WeightAverage()
    restored.load_state_dict(average.state_dict(), device=torch.device("cuda"))
    restored.update(model.cuda())
    assert restored.count == 2 and restored.state["weight"].is_cuda


def _config(tmp_path: Path) -> object:
    return parse_config(apply_overrides({"data": {"n_folds": 3, "folds": [0], "cache_dir": str(tmp_path)},
                                         "model": {"name": "resnet18"}, "image_size": 32, "epochs": 6}, {}))


def _saved(state: FoldState, epochs: int) -> dict[str, object]:
    out = state.state_dict()
    out["epochs_done"] = epochs
    return out


def test_each_attempt_writes_its_own_files_and_a_retry_reads_the_most_advanced(tmp_path: Path) -> None:
    """A trial failed as stale while still alive goes on writing: its retry's state must not be overwritten."""
    config = _config(tmp_path)
    stale = ResumeFolder(tmp_path / "chain", config, attempt="3")
    retry = ResumeFolder(tmp_path / "chain", config, attempt="7")
    state = _state()
    stale.save_state(0, _saved(state, 2))
    assert retry.load_state(0)["epochs_done"] == 2  # the retry continues from the stale attempt's epoch 2 ...
    retry.save_state(0, _saved(state, 4))
    stale.save_state(0, _saved(state, 3))  # ... while the stale attempt, still alive, writes its epoch 3
    assert retry.load_state(0)["epochs_done"] == 4  # the retry's own epoch 4 is intact and the most advanced
    again = ResumeFolder(tmp_path / "chain", config, attempt="9")
    assert again.load_state(0)["epochs_done"] == 4


def test_a_state_file_is_safetensors_with_a_json_header_not_a_pickle(tmp_path: Path) -> None:
    folder = ResumeFolder(tmp_path, _config(tmp_path), attempt="0")
    folder.save_state(0, _saved(_state(), 1))
    [path] = list(tmp_path.glob("attempt-0/fold0.*"))
    with safe_open(str(path), framework="pt") as handle:  # a pickle would not open here
        header = json.loads(handle.metadata()["fold_state"])
    assert header["state"]["epochs_done"] == 1 and header["digest"] == folder.digest
    (tmp_path / "attempt-0" / "fold0.state.pt").write_bytes(b"\x80\x04 a pickle a retry must never load")
    assert folder.load_state(0)["epochs_done"] == 1
