"""Train one configuration over one or more folds and return out-of-fold and test predictions.

``fit(config)`` is what a search trial calls: plain data in (a :class:`~melanoma_search.train.config.TrainConfig`),
plain results out (:class:`RunResult`). A per-epoch ``callback`` receives :class:`EpochStats`; the search hangs
Optuna's ``trial.report`` / ``should_prune`` on it, and raising from the callback stops the run.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from melanoma_search.augment import build_eval_transform, build_train_transform
from melanoma_search.batch_augment import batch_policy
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.meta import MetaEncoder
from melanoma_search.data.prepare import MELANOMA, PreparedData, prepare_data
from melanoma_search.errors import ConfigError, DataError
from melanoma_search.losses import build_loss
from melanoma_search.models import LesionModel, build_model
from melanoma_search.train.config import TrainConfig
from melanoma_search.train.lr_finder import find_lr
from melanoma_search.train.samplers import build_sampler
from melanoma_search.train.schedules import warmup_cosine
from melanoma_search.train.steps import BatchInputs, Precision, predict, run_epoch

__all__ = [
    "EpochStats",
    "FoldResult",
    "OutputLayout",
    "RunResult",
    "fit",
    "fit_fold",
    "make_loader",
    "output_layout",
    "resolve_device",
]

_log = logging.getLogger(__name__)

Callback = Callable[["EpochStats"], None]
Log = Callable[[str], None]


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did. ``step`` counts epochs over all folds of the run (Optuna's report step)."""

    fold: int
    epoch: int
    epochs: int
    step: int
    image_size: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class FoldResult:
    fold: int
    best_epoch: int
    best_epoch_auc: float
    auc: float
    """Validation AUC of the best weights with TTA (what the OOF predictions score)."""
    oof: pd.DataFrame
    test: pd.DataFrame | None
    history: list[EpochStats]
    lr: float
    seconds: float
    images_per_s: float
    weights_path: str | None = None


@dataclass
class RunResult:
    folds: list[FoldResult]
    classes: tuple[str, ...]
    device: str
    seconds: float
    peak_memory_mb: float
    meta_encoders: dict[int, dict[str, object]] = field(default_factory=dict)

    @property
    def oof(self) -> pd.DataFrame:
        return pd.concat([f.oof for f in self.folds], ignore_index=True)

    @property
    def auc(self) -> float:
        """Pooled out-of-fold ROC AUC over every trained fold (primary-source rows only)."""
        oof = self.oof
        return float(roc_auc_score(oof["target"], oof["pred"]))

    @property
    def fold_aucs(self) -> list[float]:
        return [f.auc for f in self.folds]

    @property
    def test(self) -> pd.DataFrame | None:
        """Test predictions averaged over the folds' models."""
        tests = [f.test for f in self.folds if f.test is not None]
        if not tests:
            return None
        mean = np.mean([t["pred"].to_numpy() for t in tests], axis=0)
        return tests[0].assign(pred=mean)

    @property
    def images_per_s(self) -> float:
        return float(np.mean([f.images_per_s for f in self.folds]))

    def save(self, folder: str | os.PathLike[str], *, config: TrainConfig) -> Path:
        """Write ``oof.csv``, ``test.csv`` (when there is a test split), ``config.yaml`` and ``metrics.yaml``."""
        import yaml

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.oof.to_csv(out / "oof.csv", index=False)
        test = self.test
        if test is not None:
            test.to_csv(out / "test.csv", index=False)
        (out / "config.yaml").write_text(config.to_yaml())
        metrics = {
            "val_auc": self.auc,
            "fold_aucs": self.fold_aucs,
            "best_epochs": [f.best_epoch for f in self.folds],
            "lr": [f.lr for f in self.folds],
            "seconds": self.seconds,
            "images_per_s": self.images_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "device": self.device,
            "classes": list(self.classes),
            "meta_encoders": {str(k): v for k, v in self.meta_encoders.items()},
        }
        (out / "metrics.yaml").write_text(yaml.safe_dump(metrics, sort_keys=False))
        return out


@dataclass(frozen=True)
class OutputLayout:
    """How a config's model outputs read as P(melanoma): output width, melanoma's column, softmax scale."""

    n_outputs: int
    melanoma_index: int
    scale: float


def output_layout(config: TrainConfig, classes: tuple[str, ...]) -> OutputLayout:
    """One sigmoid output for binary targets; two classes for binary ArcFace; one per diagnosis otherwise."""
    scale = config.loss.arc_scale if config.loss.name == "arcface" else 1.0
    if config.target == "diagnosis":
        return OutputLayout(len(classes), classes.index(MELANOMA), scale)
    if config.loss.name == "arcface":
        return OutputLayout(2, 1, scale)
    return OutputLayout(1, 0, scale)


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first GPU when there is one, else the CPU; an explicit ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} asked for, but no CUDA GPU is available (use cpu or auto)")
    return device


def _print(message: str) -> None:
    print(message, flush=True)


def prepare_for(config: TrainConfig) -> PreparedData:
    """Read the dataset a config names."""
    data = config.data
    return prepare_data(
        root=data.dir,
        layout=data.layout,
        external=data.external,
        duplicates=data.duplicates,
        n_folds=data.n_folds,
        fold_seed=data.fold_seed,
        missing_images=data.missing_images,
        synthetic_dir=data.cache_dir,
        synthetic_params=data.synthetic.model_dump(),
    )


def fit(
    config: TrainConfig,
    *,
    data: PreparedData | None = None,
    callback: Callback | None = None,
    log: Log = _print,
    weights_dir: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Train ``config`` on each of its folds (``config.data.folds``) and collect the predictions."""
    start = time.perf_counter()
    data = data if data is not None else prepare_for(config)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
    folds: list[FoldResult] = []
    encoders: dict[int, dict[str, object]] = {}
    for position, fold in enumerate(config.data.fold_list()):
        result, encoder = fit_fold(config, data, fold, callback=callback, log=log, device=device,
                                   step_offset=position * config.epochs, weights_dir=weights_dir)
        folds.append(result)
        if encoder is not None:
            encoders[fold] = encoder.to_dict()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return RunResult(folds=folds, classes=data.classes, device=_device_name(device),
                     seconds=time.perf_counter() - start, peak_memory_mb=float(peak), meta_encoders=encoders)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stage_sizes(config: TrainConfig) -> list[int]:
    """The image size of every epoch: progressive stages first, split evenly, then ``image_size``."""
    stages = config.stage_sizes()
    return [stages[min(epoch * len(stages) // config.epochs, len(stages) - 1)] for epoch in range(config.epochs)]


def _loader_workers(config: TrainConfig) -> int:
    requested = config.data.num_workers
    return requested if requested >= 0 else min(8, os.cpu_count() or 1)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(info.seed % 2**31))  # type: ignore[union-attr]


def make_loader(dataset: LesionDataset, *, config: TrainConfig, device: torch.device, sampler: object = None,
                train: bool) -> DataLoader[dict[str, torch.Tensor]]:
    """The engine's DataLoader: worker processes over the memory-mapped cache, pinned memory and prefetch on GPUs."""
    workers = _loader_workers(config)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=train and len(dataset) > config.batch_size,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def fit_fold(
    config: TrainConfig,
    data: PreparedData,
    fold: int,
    *,
    callback: Callback | None = None,
    log: Log = _print,
    device: torch.device | None = None,
    step_offset: int = 0,
    weights_dir: str | os.PathLike[str] | None = None,
) -> tuple[FoldResult, MetaEncoder | None]:
    """Train on every fold but ``fold`` (plus external rows), validate on ``fold``, predict the test split."""
    start = time.perf_counter()
    device = device or resolve_device(config.device)
    seed_everything(config.seed * 1000 + fold)
    sizes = _stage_sizes(config)
    cache_dir = config.data.cache_dir
    arrays = {size: data.cached_images(size=size, cache_dir=cache_dir, workers=0, bad_images=config.data.bad_images)
              for size in sorted(set(sizes))}
    table = data.table
    train_rows = table[table["split"].eq("train") & table["fold"].ne(fold)]
    val_rows = table[table["fold"].eq(fold)]
    test_rows = table[table["split"].eq("test")]
    if val_rows["target"].nunique() < 2:
        raise DataError(f"fold {fold} needs both melanoma and benign rows to score an AUC")

    encoder = MetaEncoder().fit(train_rows) if config.model.meta else None
    meta = (lambda rows: encoder.transform(rows)) if encoder is not None else (lambda rows: None)

    layout = output_layout(config, data.classes)
    n_outputs, melanoma_index, scale = layout.n_outputs, layout.melanoma_index, layout.scale
    if config.target == "diagnosis":
        train_targets = train_rows["class_index"].to_numpy(np.int64)
    else:
        train_targets = train_rows["target"].to_numpy(np.int64 if n_outputs == 2 else np.float32)
    val_targets = (val_rows["class_index"].to_numpy(np.int64) if config.target == "diagnosis"
                   else val_rows["target"].to_numpy().astype(train_targets.dtype))

    model = build_model(config.model.name, n_outputs=n_outputs, n_meta=encoder.n_features if encoder else 0,
                        pretrained=config.model.pretrained, checkpoint=config.model.checkpoint,
                        head=config.model.head, pool=config.model.pool, drop_rate=config.model.drop_rate,
                        drop_path_rate=config.model.drop_path_rate)
    channels_last = config.channels_last and device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    inputs = BatchInputs(device, model.normalisation, channels_last=channels_last)
    precision = Precision.resolve(config.amp, device)
    loss_fn = build_loss(config.loss.name, target=config.target, smoothing=config.loss.smoothing,
                         gamma=config.loss.gamma, alpha=config.loss.alpha, margin=config.loss.margin,
                         arc_scale=config.loss.arc_scale, arc_margin=config.loss.arc_margin, tau=config.loss.tau,
                         bce_weight=config.loss.bce_weight)

    augment = config.augment
    train_meta = meta(train_rows)

    def train_loader(size: int) -> DataLoader[dict[str, torch.Tensor]]:
        transform = build_train_transform(policy=augment.policy, size=size, hair=augment.hair,
                                          hair_dir=augment.hair_dir, microscope=augment.microscope,
                                          color_constancy=augment.color_constancy, cutout=augment.cutout,
                                          seed=config.seed * 1000 + fold)
        dataset = LesionDataset(arrays[size], rows=train_rows["cache_row"].to_numpy(), targets=train_targets,
                                meta=train_meta, transform=transform)
        sampler = build_sampler(train_rows["target"].to_numpy(), kind=config.sampler, oversample=config.oversample,
                                seed=config.seed * 1000 + fold)
        return make_loader(dataset, config=config, device=device, sampler=sampler, train=True)

    eval_transform = build_eval_transform(color_constancy=augment.color_constancy)

    def eval_loader(rows: pd.DataFrame, targets: np.ndarray) -> DataLoader[dict[str, torch.Tensor]]:
        dataset = LesionDataset(arrays[config.image_size], rows=rows["cache_row"].to_numpy(), targets=targets,
                                meta=meta(rows), transform=eval_transform)
        return make_loader(dataset, config=config, device=device, train=False)

    loaders = {size: train_loader(size) for size in sorted(set(sizes))}
    val_loader = eval_loader(val_rows, val_targets)
    steps_per_epoch = -(-len(loaders[sizes[0]]) // config.accum_steps)

    def make_optimizer(lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)

    lr = config.lr
    if lr == "auto":
        lr = _find_lr(model, loaders[sizes[0]], make_optimizer=make_optimizer, inputs=inputs, loss_fn=loss_fn,
                      precision=precision, config=config, log=log)
    optimizer = make_optimizer(float(lr))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(
        total_steps=steps_per_epoch * config.epochs, warmup_steps=int(config.warmup_epochs * steps_per_epoch),
        min_ratio=config.min_lr_ratio))
    scaler = precision.scaler()
    rng = np.random.default_rng(config.seed * 1000 + fold)
    device_augment = batch_policy(augment.policy)

    history: list[EpochStats] = []
    best_auc, best_epoch, best_state = -1.0, -1, None
    images_seen, train_seconds = 0, 0.0
    for epoch in range(config.epochs):
        model.freeze_backbone(epoch < config.freeze_epochs)
        loader = loaders[sizes[epoch]]
        current_lr = optimizer.param_groups[0]["lr"]
        out = run_epoch(model, loader, n_batches=len(loader), inputs=inputs, loss_fn=loss_fn, optimizer=optimizer,
                        scheduler=scheduler, precision=precision, scaler=scaler, accum_steps=config.accum_steps,
                        clip_grad=config.clip_grad, cutmix_p=augment.cutmix, mixup_p=augment.mixup,
                        mix_alpha=augment.mix_alpha, augment=device_augment, rng=rng)
        images_seen += out.images
        train_seconds += out.seconds
        probs, val_loss = predict(model, val_loader, inputs=inputs, precision=precision,
                                  melanoma_index=melanoma_index, scale=scale, loss_fn=loss_fn)
        auc = float(roc_auc_score(val_rows["target"], probs))
        stats = EpochStats(fold=fold, epoch=epoch + 1, epochs=config.epochs, step=step_offset + epoch,
                           image_size=sizes[epoch], train_loss=out.loss, val_loss=val_loss, val_auc=auc,
                           lr=current_lr, seconds=out.seconds, images_per_s=out.images / max(out.seconds, 1e-9))
        history.append(stats)
        log(f"fold {fold} epoch {epoch + 1}/{config.epochs} size {sizes[epoch]} | train_loss {out.loss:.4f} | "
            f"val_loss {val_loss:.4f} | val_auc {auc:.4f} | lr {current_lr:.2e} | "
            f"{stats.images_per_s:.0f} img/s | {out.seconds:.1f}s")
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch + 1
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if callback is not None:
            callback(stats)

    assert best_state is not None
    model.load_state_dict(best_state)
    oof_probs, _ = predict(model, val_loader, inputs=inputs, precision=precision, melanoma_index=melanoma_index,
                           scale=scale, tta=config.tta)
    oof = pd.DataFrame({"image_name": val_rows["image_name"].to_numpy(), "target": val_rows["target"].to_numpy(),
                        "pred": oof_probs, "fold": fold})
    test = None
    if len(test_rows):
        test_probs, _ = predict(model, eval_loader(test_rows, np.zeros(len(test_rows), train_targets.dtype)),
                                inputs=inputs, precision=precision, melanoma_index=melanoma_index, scale=scale,
                                tta=config.tta)
        test = pd.DataFrame({"image_name": test_rows["image_name"].to_numpy(), "target": np.nan, "pred": test_probs})
    weights_path = None
    if weights_dir is not None and config.save_weights:
        weights_path = str(_save_weights(model, best_state, Path(weights_dir) / f"fold{fold}.safetensors"))
    result = FoldResult(fold=fold, best_epoch=best_epoch, best_epoch_auc=best_auc,
                        auc=float(roc_auc_score(oof["target"], oof["pred"])), oof=oof, test=test, history=history,
                        lr=float(lr), seconds=time.perf_counter() - start,
                        images_per_s=images_seen / max(train_seconds, 1e-9), weights_path=weights_path)
    log(f"fold {fold} done: best epoch {best_epoch}, val_auc {result.auc:.4f} (tta={config.tta}), "
        f"{result.seconds:.0f}s")
    return result, encoder


def _find_lr(model: LesionModel, loader: DataLoader[dict[str, torch.Tensor]], *,
             make_optimizer: Callable[[float], torch.optim.Optimizer], inputs: BatchInputs,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], precision: Precision,
             config: TrainConfig, log: Log) -> float:
    def train_steps(optimizer: torch.optim.Optimizer, on_step: Callable[[int, float], None], max_steps: int) -> None:
        run_epoch(model, loader, n_batches=len(loader), inputs=inputs, loss_fn=loss_fn, optimizer=optimizer,
                  precision=precision, scaler=precision.scaler(), accum_steps=config.accum_steps,
                  clip_grad=config.clip_grad, max_batches=max_steps * config.accum_steps, on_step=on_step)

    result = find_lr(model, make_optimizer, train_steps, num_steps=min(100, 5 * len(loader)))
    if result.suggestion is None:
        log(f"lr finder: no clear minimum after {len(result.lrs)} steps; using lr 3e-4")
        return 3e-4
    log(f"lr finder: suggests lr {result.suggestion:.2e} ({len(result.lrs)} steps)")
    return result.suggestion


def _save_weights(model: LesionModel, state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path

