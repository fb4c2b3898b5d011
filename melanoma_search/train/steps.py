"""The inner loops: one training epoch and one prediction pass.

Kept apart from the fold logic so that the LR finder, the benchmarks and the tests drive the very code a trial runs.

Gradient accumulation is exact: micro-batches are grouped ``accum_steps`` at a time and each micro-batch's mean loss
is weighted by one over its group's size, so the summed gradient equals the gradient of the mean loss over the
group's images (the training loader drops the last incomplete micro-batch, so all micro-batches are the same size).
Models with BatchNorm still see micro-batch statistics, which no accumulation can change.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from melanoma_search.augment.device import BatchPolicy, DeviceConstants, cutmix, mixup, prepare_batch
from melanoma_search.errors import NonFiniteLossError
from melanoma_search.model.network import Normalisation
from melanoma_search.train.precision import cpu_precision
from melanoma_search.train.tta import dihedral_views

__all__ = ["BatchInputs", "EpochOutput", "Precision", "melanoma_probability", "predict", "run_epoch"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Precision:
    """Mixed precision: ``dtype`` is ``torch.bfloat16``, ``torch.float16`` (with a grad scaler) or ``None`` (off)."""

    device_type: str
    dtype: torch.dtype | None

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        if self.dtype == torch.float16:
            return torch.amp.GradScaler(self.device_type)
        return None

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32") if self.dtype else "fp32"

    @staticmethod
    def resolve(mode: str, device: torch.device, *, model: str = "", image_size: int = 0) -> Precision:
        """``auto``: bf16 on a GPU that supports it, fp16 on an older GPU; on the CPU, bf16 only where the CPU has
        it natively and it measured faster for ``model`` at ``image_size`` (:mod:`~melanoma_search.train.precision`),
        else fp32."""
        if mode == "off":
            return Precision(device.type, None)
        if mode == "auto" and device.type != "cuda":
            chosen = cpu_precision(model, image_size).bf16 if device.type == "cpu" else False
            return Precision(device.type, torch.bfloat16 if chosen else None)
        if mode == "fp16":
            return Precision(device.type, torch.float16)
        if mode == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
            return Precision(device.type, torch.bfloat16)
        return Precision(device.type, torch.float16)

    @staticmethod
    def describe(mode: str, device: torch.device, *, model: str, image_size: int) -> str:
        """The precision a trial will run in and why (its start line says it)."""
        if mode == "auto" and device.type == "cpu":
            return cpu_precision(model, image_size).reason
        chosen = Precision.resolve(mode, device, model=model, image_size=image_size).name
        return f"{chosen} (amp: {mode} on {device.type})"


class BatchInputs:
    """Move a loader batch to the device and turn uint8 pixels into normalised floats there.

    ``augment`` (a training call's :class:`~melanoma_search.augment.device.BatchPolicy`) is fused with the
    normalisation: see :func:`~melanoma_search.augment.device.prepare_batch`.
    """

    def __init__(self, device: torch.device, normalisation: Normalisation, *, channels_last: bool) -> None:
        self.device = device
        self.constants = DeviceConstants(device, mean=normalisation.mean, std=normalisation.std)
        self.channels_last = channels_last

    def __call__(self, batch: dict[str, torch.Tensor], *, augment: BatchPolicy | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        non_blocking = self.device.type == "cuda"
        pixels = batch["image"].to(self.device, non_blocking=non_blocking)
        images = prepare_batch(pixels, constants=self.constants, policy=augment, channels_last=self.channels_last)
        meta = batch.get("meta")
        if meta is not None:
            meta = meta.to(self.device, non_blocking=non_blocking)
        return images, meta, batch["target"].to(self.device, non_blocking=non_blocking)

    def row_weights(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The batch's per-row loss weights (pseudo-labelled rows train lighter), ``None`` when all weigh 1."""
        weights = batch.get("weight")
        return None if weights is None else weights.to(self.device, non_blocking=self.device.type == "cuda")


def _loss(loss_fn: LossFn, logits: torch.Tensor, target: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """The loss, with per-row weights only when the batch has them (a loss of one's own need not take them)."""
    return loss_fn(logits, target) if rows is None else loss_fn(logits, target, weight=rows)  # type: ignore[call-arg]


@dataclass(frozen=True)
class EpochOutput:
    loss: float
    images: int
    seconds: float
    optimizer_steps: int
    first_batch_seconds: float = 0.0
    """Of ``seconds``, the wait for the first batch: the loader's start (worker processes, prefetch), not steps."""


class _Tally:
    """An epoch's running account: micro-batches grouped ``accum_steps`` at a time (each micro-batch's loss weighted
    by one over its group's size), the summed loss, images seen, optimiser steps."""

    def __init__(self, *, limit: int, accum_steps: int, device: torch.device) -> None:
        self.accum_steps = accum_steps
        self.group_sizes = [min(accum_steps, limit - start) for start in range(0, limit, accum_steps)]
        self.running = torch.zeros((), device=device)
        self.group_loss = torch.zeros((), device=device)
        self.seen, self.steps, self.position = 0, 0, 0
        self.first_batch = 0.0

    def weight(self, index: int) -> float:
        return 1.0 / self.group_sizes[index // self.accum_steps]

    def add(self, index: int, loss: torch.Tensor, scaled: torch.Tensor, images: int) -> bool:
        """Count one micro-batch; ``True`` when it completes its group (time for an optimiser step)."""
        self.running += loss.detach() * images
        self.group_loss += scaled.detach()
        self.seen += images
        self.position += 1
        return self.position == self.group_sizes[index // self.accum_steps]

    def stepped(self, on_step: Callable[[int, float], None] | None) -> None:
        """An optimiser step was taken: every 25 steps (or each, for ``on_step``) check the loss is finite."""
        self.steps += 1
        self.position = 0
        if on_step is not None or self.steps % 25 == 0:
            value = float(self.group_loss)
            if not math.isfinite(value):
                raise NonFiniteLossError(f"training loss became {value} at optimiser step {self.steps}")
            if on_step is not None:
                on_step(self.steps, value)
        self.group_loss = torch.zeros((), device=self.group_loss.device)

    def output(self, seconds: float) -> EpochOutput:
        mean = float(self.running) / max(self.seen, 1)
        if not math.isfinite(mean):
            raise NonFiniteLossError(f"training loss became {mean} during the epoch")
        return EpochOutput(loss=mean, images=self.seen, seconds=seconds, optimizer_steps=self.steps,
                           first_batch_seconds=self.first_batch)


def _batch_loss(model: nn.Module, batch: dict[str, torch.Tensor], *, inputs: BatchInputs, loss_fn: LossFn,
                precision: Precision, augment: BatchPolicy | None, mix: dict[str, float], rng: np.random.Generator
                ) -> tuple[torch.Tensor, int]:
    """One micro-batch's forward pass and loss (cutmix / mixup drawn per batch; per-row weights when present)."""
    images, meta, target = inputs(batch, augment=augment)
    rows = inputs.row_weights(batch)
    with precision.autocast():
        mixed, order, lam = _mix(images, cutmix_p=mix["cutmix"], mixup_p=mix["mixup"], alpha=mix["alpha"], rng=rng)
        logits = model(mixed, meta)
        loss = _loss(loss_fn, logits, target, rows)
        if order is not None:
            loss = lam * loss + (1 - lam) * _loss(loss_fn, logits, target[order], None if rows is None else rows[order])
    return loss, images.shape[0]


def run_epoch(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    n_batches: int,
    inputs: BatchInputs,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    precision: Precision,
    scaler: torch.amp.GradScaler | None = None,
    accum_steps: int = 1,
    clip_grad: float | None = None,
    cutmix_p: float = 0.0,
    mixup_p: float = 0.0,
    mix_alpha: float = 1.0,
    augment: BatchPolicy | None = None,
    rng: np.random.Generator | None = None,
    max_batches: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> EpochOutput:
    """Train ``model`` over ``batches`` (``n_batches`` of them, ``len(loader)``) and return the mean loss.

    ``augment`` is the device-side share of the augmentation policy, applied to every batch.
    ``max_batches`` stops early (LR finder, benchmarks); ``on_step(step, loss)`` is called after every optimiser
    step with that step's loss (it forces a device sync, so only the LR finder uses it).
    """
    model.train()
    rng = rng or np.random.default_rng(0)
    limit = min(n_batches, max_batches) if max_batches else n_batches
    tally = _Tally(limit=limit, accum_steps=accum_steps, device=inputs.device)
    mix = {"cutmix": cutmix_p, "mixup": mixup_p, "alpha": mix_alpha}
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    for index, batch in enumerate(itertools.islice(batches, limit)):  # never a batch more: a fold's epochs share
        if index == 0:                                                 # one iterator (see train/loaders.py)
            tally.first_batch = time.perf_counter() - start
        loss, images = _batch_loss(model, batch, inputs=inputs, loss_fn=loss_fn, precision=precision,
                                   augment=augment, mix=mix, rng=rng)
        scaled = loss * tally.weight(index)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if tally.add(index, loss, scaled, images):
            _optimizer_step(model, optimizer, scaler=scaler, clip_grad=clip_grad)
            if scheduler is not None:
                scheduler.step()
            tally.stepped(on_step)
    return tally.output(time.perf_counter() - start)


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, scaler: torch.amp.GradScaler | None,
                    clip_grad: float | None) -> None:
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], clip_grad)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _mix(images: torch.Tensor, *, cutmix_p: float, mixup_p: float, alpha: float, rng: np.random.Generator
         ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    draw = rng.random() if (cutmix_p or mixup_p) else 1.0
    if draw < cutmix_p:
        return cutmix(images, alpha=alpha)
    if draw < cutmix_p + mixup_p:
        return mixup(images, alpha=alpha)
    return images, None, 1.0


def melanoma_probability(logits: torch.Tensor, *, melanoma_index: int, scale: float = 1.0) -> torch.Tensor:
    """P(melanoma) from logits: a sigmoid of one output, else a softmax (of scaled cosines for ArcFace)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return F.softmax(logits * scale, dim=1)[:, melanoma_index]


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    inputs: BatchInputs,
    precision: Precision,
    melanoma_index: int,
    scale: float = 1.0,
    tta: int = 1,
    loss_fn: LossFn | None = None,
) -> tuple[np.ndarray, float]:
    """P(melanoma) per row (mean over ``tta`` dihedral views) and, with ``loss_fn``, the mean loss of the plain view."""
    model.eval()
    probs: list[torch.Tensor] = []
    total_loss, seen, full = torch.zeros((), device=inputs.device), 0, 0
    for batch in batches:
        images, meta, target = inputs(batch)
        n = images.shape[0]
        full = full or n
        if n < full:  # a short last batch keeps the others' shape: no new cuDNN autotuning, no recompilation
            images = torch.cat([images, images[-1:].expand(full - n, *images.shape[1:])])
            meta = None if meta is None else torch.cat([meta, meta[-1:].expand(full - n, *meta.shape[1:])])
        views = list(dihedral_views(images, tta))
        with precision.autocast():
            # every view in one forward pass (a square image's views share a shape): one launch per layer, not tta
            logits = model(torch.cat(views), None if meta is None else meta.repeat(len(views), 1))
            if loss_fn is not None:
                total_loss += loss_fn(logits[:n], target).float() * n
            view_probs = melanoma_probability(logits, melanoma_index=melanoma_index, scale=scale)
        probs.append(view_probs.view(len(views), -1)[:, :n].mean(0).float().cpu())
        seen += n
    values = torch.cat(probs).numpy() if probs else np.zeros(0, np.float32)
    return values, float(total_loss) / max(seen, 1)
