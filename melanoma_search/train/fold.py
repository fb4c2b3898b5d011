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
from typing import Any

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
from melanoma_search.train.results import EXTERNAL, EpochStats, FoldResult, primary_rows, weights_file
from melanoma_search.train.resume import ResumeFolder
from melanoma_search.train.samplers import build_sampler
from melanoma_search.train.schedules import warmup_cosine
from melanoma_search.train.state import FoldState, WeightAverage
from melanoma_search.train.steps import BatchInputs, EpochOutput, Precision, predict, run_epoch

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
    if config.train_fraction < 1:  # a screening fidelity: the same share of each class, in the table's order
        train = train.groupby("target", group_keys=False).sample(
            frac=config.train_fraction, random_state=config.seed + fold).sort_index()
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
                  precision=Precision.resolve(config.amp, device, model=config.model.name,
                                              image_size=config.image_size),
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


def _save_weights(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@dataclass
class _FoldRun:
    """One fold's training as its parts: the rows, the model and its runners, the loaders, and the loop's state."""

    config: TrainConfig
    fold: int
    layout: OutputLayout
    rows: _Rows
    parts: _Parts
    sizes: list[int]
    """The image size of every epoch."""
    streams: dict[int, _Stream]
    val_loader: Loader
    arrays: dict[int, np.ndarray]
    state: FoldState
    clock: PhaseClock
    log: Log

    def score(self, loader: Loader, *, tta: int = 1, with_loss: bool = False) -> tuple[np.ndarray, float]:
        return predict(self.parts.forward, loader, inputs=self.parts.inputs, precision=self.parts.precision,
                       melanoma_index=self.layout.melanoma_index, scale=self.layout.scale, tta=tta,
                       loss_fn=self.parts.loss_fn if with_loss else None)

    def train_epoch(self, epoch: int, *, step_offset: int) -> tuple[EpochStats, EpochOutput]:
        """Train one epoch, validate it (for the curve and the pruner) and say how it went."""
        config, state = self.config, self.state
        self.parts.model.freeze_backbone(epoch < config.freeze_epochs)
        stream = self.streams[self.sizes[epoch]]
        current_lr = state.optimizer.param_groups[0]["lr"]
        augment = config.augment
        out = run_epoch(self.parts.forward, stream.epoch(), n_batches=stream.per_epoch, inputs=self.parts.inputs,
                        loss_fn=self.parts.loss_fn, optimizer=state.optimizer, scheduler=state.scheduler,
                        precision=self.parts.precision, scaler=state.scaler, accum_steps=config.accum_steps,
                        clip_grad=config.clip_grad, cutmix_p=augment.cutmix, mixup_p=augment.mixup,
                        mix_alpha=augment.mix_alpha, augment=get_policy(augment.policy).on_device, rng=state.rng)
        self.clock.add("loader_start", out.first_batch_seconds)
        self.clock.add(TRAINING_PHASE, out.seconds - out.first_batch_seconds)
        with self.clock.phase("validate"):
            probs, val_loss = self.score(self.val_loader, with_loss=True)
            primary = ~self.rows.val["is_external"].astype(bool).to_numpy()  # external rows: the all-rows figure only
            auc = float(roc_auc_score(self.rows.val["target"].to_numpy()[primary], np.asarray(probs)[primary]))
        stats = EpochStats(fold=self.fold, epoch=epoch + 1, epochs=config.epochs, step=step_offset + epoch,
                           image_size=self.sizes[epoch], train_loss=out.loss, val_loss=val_loss, val_auc=auc,
                           lr=current_lr, seconds=out.seconds, images_per_s=out.images / max(out.seconds, 1e-9))
        self.log(f"fold {self.fold} epoch {epoch + 1}/{config.epochs} size {self.sizes[epoch]} | train_loss "
                 f"{out.loss:.4f} | val_loss {val_loss:.4f} | val_auc {auc:.4f} | lr {current_lr:.2e} | "
                 f"{stats.images_per_s:.0f} img/s | {out.seconds:.1f}s")
        return stats, out

    def finish_epoch(self, stats: EpochStats, out: EpochOutput, resume: ResumeFolder | None) -> None:
        """Account for the epoch in the loop's state and save that state for a retry (not after the last epoch)."""
        config = self.config
        with self.clock.phase("checkpoint"):
            self.state.finish_epoch(stats, images=out.images, seconds=out.seconds,
                                    keep_best=config.checkpoint == "best",
                                    average=stats.epoch > config.epochs - min(config.swa_epochs, config.epochs))
            if resume is not None and stats.epoch < config.epochs:
                resume.save_state(self.fold, self.state.state_dict())

    def predictions(self) -> tuple[np.ndarray, pd.DataFrame | None]:
        """The out-of-fold and test-split predictions of the model as it is (with the member's TTA)."""
        oof_probs, _ = self.score(self.val_loader, tta=self.config.tta)
        if not len(self.rows.test):
            return oof_probs, None
        rows = self.rows
        loader = _eval_loader(self.config, rows, rows.test, np.zeros(len(rows.test), rows.train_targets.dtype),
                              self.arrays[self.config.image_size], self.parts.inputs.device)
        test_probs, _ = self.score(loader, tta=self.config.tta)
        return oof_probs, pd.DataFrame({"image_name": rows.test["image_name"].to_numpy(), "target": np.nan,
                                        "pred": test_probs})


def _prepare(config: TrainConfig, data: PreparedData, fold: int, *, device: torch.device, clock: PhaseClock,
             saved: dict[str, Any] | None, log: Log) -> _FoldRun:
    """Set the fold up: cached images, rows, model, loaders (a resumed fold's yield only the epochs left) and the
    optimiser, with the loop's state restored from ``saved``."""
    sizes = _stage_sizes(config)
    with clock.phase("cache"):
        arrays = {size: data.cached_images(size=size, cache_dir=config.data.cache_dir, workers=0,
                                           bad_images=config.data.bad_images) for size in sorted(set(sizes))}
    with clock.phase("model"):
        layout = output_layout(config.loss, target=config.target, classes=data.classes)
        rows = _select_rows(config, data, fold, layout)
        parts = _build_parts(config, layout, rows, device)
    start_epoch = int(saved["epochs_done"]) if saved is not None else 0
    with clock.phase("loaders"):
        streams = _train_loaders(config, rows, arrays, fold=fold, device=device, sizes=sizes[start_epoch:])
        val_loader = _eval_loader(config, rows, rows.val, rows.val_targets, arrays[config.image_size], device)
    with clock.phase("lr_finder" if config.lr == "auto" and saved is None else "model"):
        lr, optimizer, scheduler = _optimiser(
            config if saved is None else config.model_copy(update={"lr": float(saved["lr"])}), parts,
            streams[sizes[start_epoch]], log=log)
    state = FoldState(model=parts.model, optimizer=optimizer, scheduler=scheduler, scaler=parts.precision.scaler(),
                      rng=np.random.default_rng(config.seed * 1000 + fold), lr=lr,
                      average=WeightAverage() if config.checkpoint == "swa" else None)
    if saved is not None:
        with clock.phase("checkpoint"):
            state.load_state_dict(saved)
    return _FoldRun(config=config, fold=fold, layout=layout, rows=rows, parts=parts, sizes=sizes, streams=streams,
                    val_loader=val_loader, arrays=arrays, state=state, clock=clock, log=log)


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
    ``resume``: save the loop's state after every epoch there, and continue from a state saved there by a killed
    attempt of the same config (:mod:`~melanoma_search.train.resume`).
    """
    start = time.perf_counter()
    clock = clock if clock is not None else PhaseClock()
    seed_everything(config.seed * 1000 + fold)
    saved = resume.load_state(fold) if resume is not None else None
    run = _prepare(config, data, fold, device=device or resolve_device(config.device), clock=clock, saved=saved,
                   log=log)
    state = run.state
    if saved is not None:
        log(f"fold {fold}: resuming after epoch {state.epochs_done}/{config.epochs} from a killed attempt's saved "
            "state")
        for stats in state.history:  # the retry's curve starts with the epochs it inherits
            if callback is not None:
                callback(stats)
    for epoch in range(state.epochs_done, config.epochs):
        stats, out = run.train_epoch(epoch, step_offset=step_offset)
        run.finish_epoch(stats, out, resume)
        if callback is not None:
            callback(stats)
    with clock.phase("checkpoint"):
        kept = state.kept_weights(config.checkpoint)
    with clock.phase("predict"):
        oof_probs, test = run.predictions()
    weights_path = None
    if weights_dir is not None and config.save_weights:
        with clock.phase("weights"):
            weights_path = str(_save_weights(kept, Path(weights_dir) / weights_file(fold)))
    oof = pd.DataFrame({"image_name": run.rows.val["image_name"].to_numpy(),
                        "target": run.rows.val["target"].to_numpy(), "pred": oof_probs, "fold": fold})
    if run.rows.val["is_external"].astype(bool).any():  # data.validate_external: scored, kept apart (primary_rows)
        oof[EXTERNAL] = run.rows.val["is_external"].astype(bool).to_numpy()
    scored = primary_rows(oof)
    result = FoldResult(fold=fold, checkpoint=config.checkpoint, best_epoch=state.best_epoch,
                        best_epoch_auc=state.best_auc, auc=float(roc_auc_score(scored["target"], scored["pred"])),
                        oof=oof, test=test, history=list(state.history), lr=state.lr,
                        seconds=time.perf_counter() - start, weights_path=weights_path,
                        images_per_s=state.images_seen / max(state.train_seconds, 1e-9),
                        train_seconds=state.train_seconds)
    log(f"fold {fold} done: val_auc {result.auc:.4f} with the {config.checkpoint} weights (tta={config.tta}); "
        f"best single epoch {state.best_epoch} at {state.best_auc:.4f}; {result.seconds:.0f}s")
    return result, run.rows.encoder
