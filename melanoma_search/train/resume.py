"""Where a killed trial's retry picks up: each fold's training state after every epoch, and each finished fold.

A b5 trial on the 2020 data trains for hours, and spot nodes are preempted mid-trial; the storage's heartbeat (or the
launcher) then fails the trial and re-queues it with the same parameters. Without this the retry starts over. With a
``resume_dir`` (the search gives every trial one, keyed by the first trial of its retry chain), training writes:

* ``fold<k>.state.pt`` at the end of each epoch: model, optimiser, scheduler, grad scaler, the running weight average,
  the best epoch's weights (``checkpoint: best``), the epochs' history, and the random number generators (torch,
  numpy, Python, and the epoch loop's own), written whole (a temporary file renamed over the last one);
* ``fold<k>.done/`` once the fold is finished: its out-of-fold and test predictions, kept weights and history.

A retry with the same config skips the finished folds and continues the running one from its last finished epoch;
the result equals an uninterrupted run's up to the order the data loader draws images in (its workers' random
streams restart). A state written for another config (an out-of-memory retry halves the batch) is not used. The search
removes the folder when the trial ends, whatever the end; a killed process leaves it for the retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from melanoma_search.train.config import TrainConfig
from melanoma_search.train.results import EpochStats, FoldResult, weights_file

__all__ = ["FoldState", "ResumeFolder", "capture_rng", "restore_rng"]

#: Keys of a config that may differ between a trial and its retry without changing what is trained.
_INCIDENTAL = {"device", "output_dir", "save_weights"}


def _digest(config: TrainConfig) -> str:
    values = {k: v for k, v in config.to_dict().items() if k not in _INCIDENTAL}
    values["data"] = {k: v for k, v in values["data"].items() if k != "num_workers"}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


@dataclasses.dataclass
class FoldState:
    """A fold's training state after ``epochs_done`` epochs."""

    epochs_done: int
    lr: float
    """The peak learning rate in use (the LR finder's pick is not searched again)."""
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    average: dict[str, torch.Tensor]
    average_count: int
    best_auc: float
    best_epoch: int
    best_state: dict[str, torch.Tensor] | None
    history: list[EpochStats]
    images_seen: int
    train_seconds: float
    rng: dict[str, Any]
    """``torch``, ``numpy`` (the global one), ``python`` and ``loop`` (the epoch loop's generator) states."""


def capture_rng(loop: np.random.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "loop": loop.bit_generator.state}


def restore_rng(state: dict[str, Any], loop: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    loop.bit_generator.state = state["loop"]


class ResumeFolder:
    """One trial's resume files (see the module docstring); every method is a no-op-safe read or an atomic write."""

    def __init__(self, root: str | os.PathLike[str], config: TrainConfig) -> None:
        self.root = Path(root)
        self.digest = _digest(config)

    def _state_path(self, fold: int) -> Path:
        return self.root / f"fold{fold}.state.pt"

    def _done_dir(self, fold: int) -> Path:
        return self.root / f"fold{fold}.done"

    def save_state(self, fold: int, state: FoldState) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        partial = self._state_path(fold).with_suffix(".partial")
        payload = dataclasses.asdict(state) | {"digest": self.digest}
        payload["history"] = [dataclasses.asdict(s) for s in state.history]
        torch.save(payload, partial)
        os.replace(partial, self._state_path(fold))

    def load_state(self, fold: int) -> FoldState | None:
        """The fold's last saved state, if one was written for this very config."""
        path = self._state_path(fold)
        if not path.is_file():
            return None
        payload = torch.load(path, map_location="cpu", weights_only=False)  # our own file, written above
        if payload.pop("digest", None) != self.digest:
            return None
        payload["history"] = [EpochStats(**s) for s in payload["history"]]
        return FoldState(**payload)

    def save_done(self, result: FoldResult, encoder: dict[str, Any] | None) -> None:
        """The finished fold, in a folder renamed into place once complete; its running state is dropped."""
        done = self._done_dir(result.fold)
        partial = done.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        result.oof.to_csv(partial / "oof.csv", index=False)
        if result.test is not None:
            result.test.to_csv(partial / "test.csv", index=False)
        if result.weights_path:
            shutil.copy2(result.weights_path, partial / weights_file(result.fold))
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)
                  if f.name not in ("oof", "test", "history", "weights_path")}
        (partial / "result.json").write_text(json.dumps({
            "digest": self.digest, "fields": fields, "encoder": encoder,
            "history": [dataclasses.asdict(s) for s in result.history]}))
        shutil.rmtree(done, ignore_errors=True)
        os.replace(partial, done)
        self._state_path(result.fold).unlink(missing_ok=True)

    def load_done(self, fold: int, *, weights_dir: str | os.PathLike[str] | None
                  ) -> tuple[FoldResult, dict[str, Any] | None] | None:
        """A fold a killed attempt finished (its weights copied into ``weights_dir``), or ``None``."""
        done = self._done_dir(fold)
        if not (done / "result.json").is_file():
            return None
        saved = json.loads((done / "result.json").read_text())
        if saved["digest"] != self.digest:
            return None
        weights_path = None
        if weights_dir is not None and (done / weights_file(fold)).is_file():
            Path(weights_dir).mkdir(parents=True, exist_ok=True)
            weights_path = str(shutil.copy2(done / weights_file(fold), Path(weights_dir) / weights_file(fold)))
        test = pd.read_csv(done / "test.csv") if (done / "test.csv").is_file() else None
        result = FoldResult(**saved["fields"], oof=pd.read_csv(done / "oof.csv"), test=test,
                            history=[EpochStats(**s) for s in saved["history"]], weights_path=weights_path)
        return result, saved["encoder"]
