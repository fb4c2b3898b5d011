"""Where a killed trial's retry picks up: each fold's training state after every epoch, and each finished fold.

A b5 trial on the 2020 data trains for hours, and spot nodes are preempted mid-trial; the launcher (or the storage's
heartbeat, or a later run) then fails the trial and re-queues it with the same parameters. Without this the retry
starts over. With a resume folder (the search gives every trial one, keyed by the first trial of its retry chain),
training writes, in a folder of the attempt's own (``attempt-<name>/``: an attempt failed as stale while still alive
never writes where its retry does):

* ``fold<k>.state.safetensors`` at the end of each epoch: the fold's :class:`~melanoma_search.train.state.FoldState`
  (model, optimiser, scheduler, grad scaler, the running weight average, the best epoch's weights, the curve, the
  random generators), its tensors in safetensors and everything else as JSON in the file's header, written whole (a
  temporary file renamed over the last one). No pickle: a retry reading a shared storage folder runs no code;
* ``fold<k>.done/`` once the fold is finished: its out-of-fold and test predictions, kept weights and history.

A retry with the same config skips the folds any earlier attempt finished and continues the running one from the
most advanced state any attempt saved; the result equals an uninterrupted run's up to the order the data loader
draws images in (its workers' random streams restart). A state written for another config (an out-of-memory retry
halves the batch) is not used. The search removes the chain's folder once the trial ends without a retry; an
attempt that is re-queued (preempted, interrupted, killed) leaves it for its retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from melanoma_search.train.config import TrainConfig
from melanoma_search.train.results import EpochStats, FoldResult, weights_file
from melanoma_search.train.state import decode_state, encode_state

__all__ = ["ResumeFolder"]

#: Keys of a config that may differ between a trial and its retry without changing what is trained.
_INCIDENTAL = {"device", "output_dir", "save_weights"}
_HEADER = "fold_state"


def _digest(config: TrainConfig) -> str:
    values = {k: v for k, v in config.to_dict().items() if k not in _INCIDENTAL}
    values["data"] = {k: v for k, v in values["data"].items() if k != "num_workers"}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


class ResumeFolder:
    """One retry chain's resume files (see the module docstring); this attempt writes under ``attempt-<attempt>``
    and reads what any attempt of the chain left."""

    def __init__(self, root: str | os.PathLike[str], config: TrainConfig, *, attempt: str = "0") -> None:
        self.root = Path(root)
        self.own = self.root / f"attempt-{attempt}"
        self.digest = _digest(config)

    def _attempts(self) -> list[Path]:
        """Every attempt's folder, this one first (a sequential retry in the same folder reads its own)."""
        others = sorted(p for p in self.root.glob("attempt-*") if p.is_dir() and p != self.own)
        return [self.own, *others]

    def save_state(self, fold: int, state: dict[str, Any]) -> None:
        """A fold's :meth:`FoldState.state_dict`, written whole into this attempt's folder."""
        from safetensors.torch import save_file

        self.own.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, Any] = {}
        header = json.dumps({"digest": self.digest, "state": encode_state(state, tensors)})
        path = self.own / f"fold{fold}.state.safetensors"
        partial = path.with_suffix(".partial")
        try:
            save_file(tensors, str(partial), metadata={_HEADER: header})
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)  # a write that failed (a full disk) leaves nothing behind

    def load_state(self, fold: int) -> dict[str, Any] | None:
        """The most advanced state any attempt saved for ``fold`` with this very config, or ``None``."""
        saved = [s for p in self._attempts() if (s := self._read_state(p / f"fold{fold}.state.safetensors"))]
        return max(saved, key=lambda s: int(s["epochs_done"])) if saved else None

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        from safetensors import SafetensorError, safe_open

        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = json.loads((handle.metadata() or {})[_HEADER])
                if header.get("digest") != self.digest:
                    return None
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (SafetensorError, OSError, KeyError, ValueError):  # unreadable: a retry starts the fold afresh
            return None
        state: dict[str, Any] = decode_state(header["state"], tensors)
        return state

    def save_done(self, result: FoldResult, encoder: dict[str, Any] | None) -> None:
        """The finished fold, in a folder renamed into place once complete; its running state is dropped."""
        done = self.own / f"fold{result.fold}.done"
        partial = done.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            self._write_done(partial, result, encoder)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # a write that failed leaves nothing behind
            raise
        shutil.rmtree(done, ignore_errors=True)
        os.replace(partial, done)
        (self.own / f"fold{result.fold}.state.safetensors").unlink(missing_ok=True)

    def _write_done(self, partial: Path, result: FoldResult, encoder: dict[str, Any] | None) -> None:
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

    def load_done(self, fold: int, *, weights_dir: str | os.PathLike[str] | None
                  ) -> tuple[FoldResult, dict[str, Any] | None] | None:
        """A fold any attempt finished (its weights copied into ``weights_dir``), or ``None``."""
        for attempt in self._attempts():
            done = attempt / f"fold{fold}.done"
            if not (done / "result.json").is_file():
                continue
            saved = json.loads((done / "result.json").read_text())
            if saved["digest"] == self.digest:
                return self._read_done(done, fold, saved, weights_dir=weights_dir)
        return None

    @staticmethod
    def _read_done(done: Path, fold: int, saved: dict[str, Any], *, weights_dir: str | os.PathLike[str] | None
                   ) -> tuple[FoldResult, dict[str, Any] | None]:
        weights_path = None
        if weights_dir is not None and (done / weights_file(fold)).is_file():
            Path(weights_dir).mkdir(parents=True, exist_ok=True)
            weights_path = str(shutil.copy2(done / weights_file(fold), Path(weights_dir) / weights_file(fold)))
        test = pd.read_csv(done / "test.csv") if (done / "test.csv").is_file() else None
        result = FoldResult(**saved["fields"], oof=pd.read_csv(done / "oof.csv"), test=test,
                            history=[EpochStats(**s) for s in saved["history"]], weights_path=weights_path)
        return result, saved["encoder"]
