"""A training fold's loop state in one object: what the epochs change, and what a resume saves and restores.

The epoch loop (:mod:`~melanoma_search.train.fold`) updates :class:`FoldState` and nothing else; a resume
(:mod:`~melanoma_search.train.resume`) saves ``state.state_dict()`` after every epoch and a retry calls
``state.load_state_dict(saved)``, as Hugging Face's ``TrainerState`` and Lightning's loop ``state_dict()`` do. A new
piece of loop state is one field here: :meth:`FoldState.state_dict` walks the fields, so it is saved and restored
without another line.

:func:`encode_state` / :func:`decode_state` turn such a nested state (tensors, numbers, lists, tuples, dicts with
integer keys, numpy arrays) into tensors plus JSON and back: nothing in a saved state is a pickle, so a state file on
a shared storage folder cannot run code when a retry reads it.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from melanoma_search.train.results import EpochStats

__all__ = ["FoldState", "WeightAverage", "cpu_copy", "decode_state", "encode_state"]


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (each tensor its own storage, so safetensors can write it)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class WeightAverage:
    """The running mean of a model's weights and batch-norm statistics over the epochs it is updated with.

    Integer buffers (batch norm's ``num_batches_tracked``) take the latest value. ``AveragedModel(use_buffers=True)``
    does the same job, but its fused CUDA path (torch 2.11) fails on integer buffers ("Integer division with
    addcdiv"), which failed every ``swa`` trial on a GPU.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.count += 1
        for key, value in model.state_dict().items():
            if key not in self.state:
                self.state[key] = value.detach().clone()
            elif value.is_floating_point():
                self.state[key].lerp_(value.to(self.state[key].device), 1.0 / self.count)
            else:
                self.state[key].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"state": cpu_copy(self.state), "count": self.count}

    def load_state_dict(self, saved: dict[str, Any], *, device: torch.device) -> None:
        """Restore a saved average onto ``device``, the model's: a state saved on one device (the CPU, where every
        state is written) resumes on another (a GPU) without the next update mixing devices."""
        self.state = {k: v.to(device) for k, v in saved["state"].items()}
        self.count = int(saved["count"])


@dataclass
class FoldState:
    """Everything a fold's epochs change: the training objects, the kept-weights bookkeeping, the curve, the clock,
    and the epoch loop's random generator. ``epochs_done`` epochs are in it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    rng: np.random.Generator
    """The epoch loop's own generator (cutmix / mixup draws)."""
    lr: float
    """The peak learning rate in use (the LR finder's pick is not searched again by a retry)."""
    average: WeightAverage | None = None
    """``checkpoint: swa``: the running average of the last epochs' weights."""
    epochs_done: int = 0
    best_auc: float = -1.0
    best_epoch: int = -1
    best_weights: dict[str, torch.Tensor] | None = None
    """``checkpoint: best``: a CPU copy of the best epoch's weights."""
    history: list[EpochStats] = field(default_factory=list)
    images_seen: int = 0
    train_seconds: float = 0.0

    def finish_epoch(self, stats: EpochStats, *, images: int, seconds: float, keep_best: bool,
                     average: bool) -> None:
        """Account for one finished, validated epoch: the curve, the clock, the best epoch and the average."""
        self.epochs_done += 1
        self.history.append(stats)
        self.images_seen += images
        self.train_seconds += seconds
        if self.average is not None and average:
            self.average.update(self.model)
        if stats.val_auc > self.best_auc:
            self.best_auc, self.best_epoch = stats.val_auc, stats.epoch
            if keep_best:
                self.best_weights = cpu_copy(self.model.state_dict())

    def kept_weights(self, checkpoint: str) -> dict[str, torch.Tensor]:
        """The weights ``checkpoint`` keeps (``best``, the ``swa`` average, or ``last``), loaded into the model."""
        if checkpoint == "best":
            assert self.best_weights is not None, "no epoch finished"
            self.model.load_state_dict(self.best_weights)
        elif self.average is not None:
            self.model.load_state_dict(self.average.state)
        return cpu_copy(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Every field as plain data and tensors, plus the process's random generators (torch, numpy, Python)."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "rng":
                out["rng"] = value.bit_generator.state
            elif item.name == "history":
                out["history"] = [dataclasses.asdict(s) for s in value]
            elif item.name == "model" or item.name == "best_weights":
                out[item.name] = None if value is None else cpu_copy(value if item.name == "best_weights"
                                                                     else value.state_dict())
            elif hasattr(value, "state_dict"):
                out[item.name] = value.state_dict()
            else:
                out[item.name] = value
        out["global_rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Continue from ``saved`` (a :meth:`state_dict` of the same config): the training objects in place, on the
        model's device."""
        device = next(self.model.parameters()).device
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])  # moves its tensors to the parameters' device
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved.get("scaler") is not None:
            self.scaler.load_state_dict(saved["scaler"])
        if self.average is not None and saved.get("average") is not None:
            self.average.load_state_dict(saved["average"], device=device)
        self.rng.bit_generator.state = saved["rng"]
        self.lr = float(saved["lr"])
        self.epochs_done, self.best_auc, self.best_epoch = (int(saved["epochs_done"]), float(saved["best_auc"]),
                                                            int(saved["best_epoch"]))
        self.best_weights = saved.get("best_weights")
        self.history = [EpochStats(**s) for s in saved["history"]]
        self.images_seen, self.train_seconds = int(saved["images_seen"]), float(saved["train_seconds"])
        rngs = saved["global_rng"]
        torch.set_rng_state(rngs["torch"])
        np.random.set_state(rngs["numpy"])
        random.setstate(rngs["python"])


# ---- the codec: nested state <-> (tensors, JSON-able structure), no pickle anywhere

_TENSOR, _TUPLE, _DICT, _ARRAY = "__tensor__", "__tuple__", "__dict__", "__ndarray__"


def encode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON-able data, its tensors moved (as CPU copies) into ``tensors`` under generated names.

    Anything else (an arbitrary object) is refused: a saved state is data, never code.
    """
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {_TUPLE: [encode_state(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode_state(v, tensors) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode_state(v, tensors) for k, v in value.items()}
        return {_DICT: [[encode_state(k, tensors), encode_state(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save {type(value).__name__} in a training state (data and tensors only)")


def decode_state(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode_state`."""
    if isinstance(value, list):
        return [decode_state(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if _TENSOR in value:
        return tensors[value[_TENSOR]]
    if _ARRAY in value:
        return np.asarray(value[_ARRAY], dtype=value["dtype"])
    if _TUPLE in value:
        return tuple(decode_state(v, tensors) for v in value[_TUPLE])
    if _DICT in value:
        return {decode_state(k, tensors): decode_state(v, tensors) for k, v in value[_DICT]}
    return {k: decode_state(v, tensors) for k, v in value.items()}
