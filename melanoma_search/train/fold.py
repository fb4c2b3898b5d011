"""Train one configuration on one fold, in phases: rows, parts, loaders, optimiser, epochs, predictions.

Train on every fold but ``fold`` (plus external rows), validate on ``fold`` after every epoch, then predict the
validation rows (the out-of-fold predictions) and the test split with the kept weights. Which weights are kept is
``config.checkpoint``; by default they are not chosen by looking at this fold's AUC (``swa``: the average of the last
epochs), so the fold's score is an honest estimate of what the weights do on new images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from melanoma_search.augment.policies import build_eval_transform, build_train_transform, get_policy
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.meta import MetaEncoder, without_metadata
from melanoma_search.data.prepare import PreparedData
from melanoma_search.errors import DataError
from melanoma_search.model.losses import OutputLayout, build_loss, output_layout
from melanoma_search.model.network import LesionModel, build_model
from melanoma_search.train.config import TrainConfig
from melanoma_search.train.device import resolve_device, seed_everything
from melanoma_search.train.loaders import make_loader
from melanoma_search.train.lr_finder import find_lr
from melanoma_search.train.phases import TRAINING_PHASE, PhaseClock
from melanoma_search.train.results import EpochStats, FoldResult, weights_file
from melanoma_search.train.resume import FoldState, ResumeFolder, capture_rng, restore_rng
from melanoma_search.train.samplers import build_sampler
from melanoma_search.train.schedules import warmup_cosine
from melanoma_search.train.steps import BatchInputs, Precision, predict, run_epoch

__all__ = ["fit_fold"]

Callback = Callable[[EpochStats], None]
Log = Callable[[str], None]
Loader = DataLoader[dict[str, torch.Tensor]]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class _Rows:
    """The fold's rows and what the model reads of them (targets in the loss's dtype, metadata features)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    train_targets: np.ndarray
    val_targets: np.ndarray
    encoder: MetaEncoder | None

    def meta(self, rows: pd.DataFrame) -> np.ndarray | None:
        return self.encoder.transform(rows) if self.encoder is not None else None

    def meta_missing(self, rows: pd.DataFrame) -> np.ndarray | None:
        """The rows' features as they read without patient metadata (what ``model.meta_dropout`` trains on)."""
        if self.encoder is None:
            return None
        return self.encoder.transform(without_metadata(rows))


def _select_rows(config: TrainConfig, data: PreparedData, fold: int, layout: OutputLayout) -> _Rows:
    table = data.table
    train = table[table["split"].eq("train") & table["fold"].ne(fold)]
    val = table[table["fold"].eq(fold)]
    test = table[table["split"].eq("test")]
    if val["target"].nunique() < 2:
        raise DataError(f"fold {fold} needs both melanoma and benign rows to score an AUC")
    if config.target == "diagnosis":
        train_targets = train["class_index"].to_numpy(np.int64)
        val_targets = val["class_index"].to_numpy(np.int64)
    else:
        train_targets = train["target"].to_numpy(np.int64 if layout.n_outputs == 2 else np.float32)
        val_targets = val["target"].to_numpy().astype(train_targets.dtype)
    encoder = MetaEncoder().fit(train) if config.model.meta else None
    return _Rows(train=train, val=val, test=test, train_targets=train_targets, val_targets=val_targets,
                 encoder=encoder)


@dataclass
class _Parts:
    """The model and what runs it: input preparation, precision, loss.

    ``forward`` is what the steps call: the model itself, or its ``torch.compile`` wrapper (same parameters, so
    the optimiser, the weight averaging and the saved weights all read ``model``).
    """

    model: LesionModel
    forward: torch.nn.Module
    inputs: BatchInputs
    precision: Precision
    loss_fn: LossFn


def _build_parts(config: TrainConfig, layout: OutputLayout, rows: _Rows, device: torch.device) -> _Parts:
    model = build_model(config.model, n_outputs=layout.n_outputs,
                        n_meta=rows.encoder.n_features if rows.encoder else 0)
    channels_last = config.channels_last
    model = model.to(device).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    forward: torch.nn.Module = model
    if config.compile != "off":
        forward = torch.compile(model, mode=config.compile)  # type: ignore[assignment]
    return _Parts(model=model, forward=forward,
                  inputs=BatchInputs(device, model.normalisation, channels_last=channels_last),
                  precision=Precision.resolve(config.amp, device),
                  loss_fn=build_loss(config.loss, target=config.target))


@dataclass
class _Stream:
    """The training batches at one image size: all its epochs from one pass of one loader (see train/loaders.py)."""

    loader: Loader
    per_epoch: int
    batches: Iterator[dict[str, torch.Tensor]] | None = None

    def epoch(self) -> Iterator[dict[str, torch.Tensor]]:
        """The iterator the next epoch takes ``per_epoch`` batches from (the loader starts on the first call)."""
        if self.batches is None:
            self.batches = iter(self.loader)
        return self.batches


def _train_loaders(config: TrainConfig, rows: _Rows, arrays: dict[int, np.ndarray], *, fold: int,
                   device: torch.device, sizes: list[int]) -> dict[int, _Stream]:
    """One training stream per image size the epochs use (progressive resizing trains several)."""
    seed = config.seed * 1000 + fold
    meta = rows.meta(rows.train)
    dropout = config.model.meta_dropout if meta is not None else 0.0
    missing = rows.meta_missing(rows.train) if dropout > 0 else None
    weights = rows.train["loss_weight"].to_numpy(np.float32) if "loss_weight" in rows.train else None
    if weights is not None and (weights == 1.0).all():
        weights = None  # every row weighs 1: the plain mean, no weight tensor per batch
    loaders = {}
    for size, array in arrays.items():
        dataset = LesionDataset(array, rows=rows.train["cache_row"].to_numpy(), targets=rows.train_targets,
                                meta=meta, meta_missing=missing, meta_dropout=dropout,
                                transform=build_train_transform(config.augment, size=size, seed=seed),
                                weights=weights)
        sampler = build_sampler(rows.train["target"].to_numpy(), kind=config.row_sampler,
                                oversample=config.oversample, seed=seed)
        loader = make_loader(dataset, batch_size=config.batch_size, num_workers=config.data.num_workers,
                             device=device, sampler=sampler, train=True, epochs=sizes.count(size))
        loaders[size] = _Stream(loader=loader, per_epoch=len(loader) // sizes.count(size))
    return loaders


def _eval_loader(config: TrainConfig, rows: _Rows, part: pd.DataFrame, targets: np.ndarray, array: np.ndarray,
                 device: torch.device) -> Loader:
    transform = build_eval_transform(config.augment)
    dataset = LesionDataset(array, rows=part["cache_row"].to_numpy(), targets=targets, meta=rows.meta(part),
                            transform=transform)
    # without a host transform an eval batch is a slice of the memory-mapped cache: reading it here beats starting
    # loader processes for every fold's validation and test loaders
    workers = config.data.num_workers if transform.transforms else 0
    return make_loader(dataset, batch_size=config.batch_size, num_workers=workers, device=device, train=False)


def _optimiser(config: TrainConfig, parts: _Parts, stream: _Stream, *, log: Log
               ) -> tuple[float, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW at the configured (or LR-finder) peak rate, with warm-up then cosine decay per optimiser step."""
    model = parts.model

    def make_optimizer(lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)

    lr = config.lr
    if lr == "auto":
        lr = _find_lr(config, parts, stream, make_optimizer=make_optimizer, log=log)
    optimizer = make_optimizer(float(lr))
    steps_per_epoch = -(-stream.per_epoch // config.accum_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        total_steps=steps_per_epoch * config.epochs, warmup_steps=int(config.warmup_epochs * steps_per_epoch),
        min_ratio=config.min_lr_ratio))
    return float(lr), optimizer, scheduler


def _find_lr(config: TrainConfig, parts: _Parts, stream: _Stream, *,
             make_optimizer: Callable[[float], torch.optim.Optimizer], log: Log) -> float:
    def train_steps(optimizer: torch.optim.Optimizer, on_step: Callable[[int, float], None], max_steps: int) -> None:
        run_epoch(parts.forward, stream.loader, n_batches=len(stream.loader), inputs=parts.inputs,
                  loss_fn=parts.loss_fn, optimizer=optimizer, precision=parts.precision,
                  scaler=parts.precision.scaler(), accum_steps=config.accum_steps, clip_grad=config.clip_grad,
                  max_batches=max_steps * config.accum_steps, on_step=on_step)

    result = find_lr(parts.model, make_optimizer, train_steps, num_steps=min(100, 5 * stream.per_epoch))
    if result.suggestion is None:
        log(f"lr finder: no clear minimum after {len(result.lrs)} steps; using lr 3e-4")
        return 3e-4
    log(f"lr finder: suggests lr {result.suggestion:.2e} ({len(result.lrs)} steps)")
    return result.suggestion


def _stage_sizes(config: TrainConfig) -> list[int]:
    """The image size of every epoch: progressive stages first, split evenly, then ``image_size``."""
    stages = config.stage_sizes()
    return [stages[min(epoch * len(stages) // config.epochs, len(stages) - 1)] for epoch in range(config.epochs)]


class _WeightAverage:
    """The running mean of a model's weights and batch-norm statistics over the epochs it is updated with.

    Integer buffers (batch norm's ``num_batches_tracked``) take the latest value. ``AveragedModel(use_buffers=True)``
    does the same job, but its fused CUDA path (torch 2.11) fails on integer buffers ("Integer division with
    addcdiv"), which failed every ``swa`` trial on a GPU.
    """

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}
        self.count = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.count += 1
        for key, value in model.state_dict().items():
            if key not in self.state:
                self.state[key] = value.detach().clone()
            elif value.is_floating_point():
                self.state[key].lerp_(value, 1.0 / self.count)
            else:
                self.state[key].copy_(value)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def fit_fold(
    config: TrainConfig,
    data: PreparedData,
    fold: int,
    *,
    callback: Callback | None = None,
    log: Log = print,
    device: torch.device | None = None,
    step_offset: int = 0,
    weights_dir: str | Path | None = None,
    clock: PhaseClock | None = None,
    resume: ResumeFolder | None = None,
) -> tuple[FoldResult, MetaEncoder | None]:
    """Train on every fold but ``fold`` (plus external rows), validate on ``fold``, predict the test split.

    ``clock``: where the fold's seconds go, by phase (see :mod:`~melanoma_search.train.phases`).
    ``resume``: save the training state after every epoch there, and continue from a state saved there by a killed
    attempt of the same config (:mod:`~melanoma_search.train.resume`).
    """
    start = time.perf_counter()
    clock = clock if clock is not None else PhaseClock()
    device = device or resolve_device(config.device)
    seed_everything(config.seed * 1000 + fold)
    sizes = _stage_sizes(config)
    with clock.phase("cache"):
        arrays = {size: data.cached_images(size=size, cache_dir=config.data.cache_dir, workers=0,
                                           bad_images=config.data.bad_images) for size in sorted(set(sizes))}
    with clock.phase("model"):
        layout = output_layout(config.loss, target=config.target, classes=data.classes)
        rows = _select_rows(config, data, fold, layout)
        parts = _build_parts(config, layout, rows, device)
    saved = resume.load_state(fold) if resume is not None else None
    start_epoch = saved.epochs_done if saved is not None else 0
    with clock.phase("loaders"):  # a resumed fold's loaders yield only the epochs left
        loaders = _train_loaders(config, rows, arrays, fold=fold, device=device, sizes=sizes[start_epoch:])
        val_loader = _eval_loader(config, rows, rows.val, rows.val_targets, arrays[config.image_size], device)
    with clock.phase("lr_finder" if config.lr == "auto" and saved is None else "model"):
        lr, optimizer, scheduler = _optimiser(config if saved is None else config.model_copy(update={"lr": saved.lr}),
                                              parts, loaders[sizes[start_epoch]], log=log)
    scaler = parts.precision.scaler()
    rng = np.random.default_rng(config.seed * 1000 + fold)
    device_augment = get_policy(config.augment.policy).on_device
    model, augment = parts.model, config.augment

    def score(loader: Loader, *, tta: int = 1, with_loss: bool = False) -> tuple[np.ndarray, float]:
        return predict(parts.forward, loader, inputs=parts.inputs, precision=parts.precision,
                       melanoma_index=layout.melanoma_index, scale=layout.scale, tta=tta,
                       loss_fn=parts.loss_fn if with_loss else None)

    # ---- epochs: train, validate (for the curve and the pruner), average the last ones, remember the best one
    history: list[EpochStats] = []
    best_auc, best_epoch, best_state = -1.0, -1, None
    averaged = _WeightAverage() if config.checkpoint == "swa" else None
    average_from = config.epochs - min(config.swa_epochs, config.epochs)
    images_seen, train_seconds = 0, 0.0
    if saved is not None:
        with clock.phase("checkpoint"):
            model.load_state_dict(saved.model)
            optimizer.load_state_dict(saved.optimizer)
            scheduler.load_state_dict(saved.scheduler)
            if scaler is not None and saved.scaler is not None:
                scaler.load_state_dict(saved.scaler)
            if averaged is not None:
                averaged.state, averaged.count = saved.average, saved.average_count
            best_auc, best_epoch, best_state = saved.best_auc, saved.best_epoch, saved.best_state
            history, images_seen, train_seconds = list(saved.history), saved.images_seen, saved.train_seconds
            restore_rng(saved.rng, rng)
        log(f"fold {fold}: resuming after epoch {start_epoch}/{config.epochs} from a killed attempt's saved state")
        for stats in history:  # the retry's curve starts with the epochs it inherits
            if callback is not None:
                callback(stats)
    for epoch in range(start_epoch, config.epochs):
        model.freeze_backbone(epoch < config.freeze_epochs)
        stream = loaders[sizes[epoch]]
        current_lr = optimizer.param_groups[0]["lr"]
        out = run_epoch(parts.forward, stream.epoch(), n_batches=stream.per_epoch, inputs=parts.inputs,
                        loss_fn=parts.loss_fn, optimizer=optimizer, scheduler=scheduler, precision=parts.precision,
                        scaler=scaler, accum_steps=config.accum_steps, clip_grad=config.clip_grad,
                        cutmix_p=augment.cutmix, mixup_p=augment.mixup, mix_alpha=augment.mix_alpha,
                        augment=device_augment, rng=rng)
        images_seen += out.images
        train_seconds += out.seconds
        clock.add("loader_start", out.first_batch_seconds)
        clock.add(TRAINING_PHASE, out.seconds - out.first_batch_seconds)
        with clock.phase("validate"):
            probs, val_loss = score(val_loader, with_loss=True)
            auc = float(roc_auc_score(rows.val["target"], probs))
        stats = EpochStats(fold=fold, epoch=epoch + 1, epochs=config.epochs, step=step_offset + epoch,
                           image_size=sizes[epoch], train_loss=out.loss, val_loss=val_loss, val_auc=auc,
                           lr=current_lr, seconds=out.seconds, images_per_s=out.images / max(out.seconds, 1e-9))
        history.append(stats)
        log(f"fold {fold} epoch {epoch + 1}/{config.epochs} size {sizes[epoch]} | train_loss {out.loss:.4f} | "
            f"val_loss {val_loss:.4f} | val_auc {auc:.4f} | lr {current_lr:.2e} | "
            f"{stats.images_per_s:.0f} img/s | {out.seconds:.1f}s")
        with clock.phase("checkpoint"):
            if averaged is not None and epoch >= average_from:
                averaged.update(model)
            if auc > best_auc:
                best_auc, best_epoch = auc, epoch + 1
                if config.checkpoint == "best":
                    best_state = _cpu_copy(model.state_dict())
            if resume is not None and epoch + 1 < config.epochs:  # what a retry continues from
                resume.save_state(fold, FoldState(
                    epochs_done=epoch + 1, lr=lr, model=_cpu_copy(model.state_dict()),
                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                    scaler=None if scaler is None else scaler.state_dict(),
                    average=_cpu_copy(averaged.state) if averaged is not None else {},
                    average_count=averaged.count if averaged is not None else 0, best_auc=best_auc,
                    best_epoch=best_epoch, best_state=best_state, history=list(history), images_seen=images_seen,
                    train_seconds=train_seconds, rng=capture_rng(rng)))
        if callback is not None:
            callback(stats)

    # ---- predictions with the kept weights: out-of-fold rows, then the test split
    with clock.phase("checkpoint"):
        if config.checkpoint == "best":
            assert best_state is not None
            model.load_state_dict(best_state)
        elif averaged is not None:
            model.load_state_dict(averaged.state)
        kept_state = _cpu_copy(model.state_dict())
    with clock.phase("predict"):
        oof_probs, _ = score(val_loader, tta=config.tta)
        oof = pd.DataFrame({"image_name": rows.val["image_name"].to_numpy(),
                            "target": rows.val["target"].to_numpy(), "pred": oof_probs, "fold": fold})
        test = None
        if len(rows.test):
            test_loader = _eval_loader(config, rows, rows.test, np.zeros(len(rows.test), rows.train_targets.dtype),
                                       arrays[config.image_size], device)
            test_probs, _ = score(test_loader, tta=config.tta)
            test = pd.DataFrame({"image_name": rows.test["image_name"].to_numpy(), "target": np.nan,
                                 "pred": test_probs})
    weights_path = None
    if weights_dir is not None and config.save_weights:
        with clock.phase("weights"):
            weights_path = str(_save_weights(kept_state, Path(weights_dir) / weights_file(fold)))
    result = FoldResult(fold=fold, checkpoint=config.checkpoint, best_epoch=best_epoch, best_epoch_auc=best_auc,
                        auc=float(roc_auc_score(oof["target"], oof["pred"])), oof=oof, test=test, history=history,
                        lr=lr, seconds=time.perf_counter() - start,
                        images_per_s=images_seen / max(train_seconds, 1e-9), weights_path=weights_path,
                        train_seconds=train_seconds)
    log(f"fold {fold} done: val_auc {result.auc:.4f} with the {config.checkpoint} weights (tta={config.tta}); "
        f"best single epoch {best_epoch} at {best_auc:.4f}; {result.seconds:.0f}s")
    return result, rows.encoder
