"""Train one configuration over one or more folds and return out-of-fold and test predictions.

``fit(config)`` is what a search trial calls: plain data in (a :class:`~melanoma_search.train.config.TrainConfig`),
plain results out (:class:`~melanoma_search.train.results.RunResult`). A per-epoch ``callback`` receives
:class:`~melanoma_search.train.results.EpochStats`; the search hangs Optuna's ``trial.report`` / ``should_prune`` on
it, and raising from the callback stops the run. One fold's training is :func:`~melanoma_search.train.fold.fit_fold`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import torch

from melanoma_search.data.prepare import PreparedData, load_dataset
from melanoma_search.train.config import TrainConfig
from melanoma_search.train.device import device_name, peak_memory_mb, resolve_device
from melanoma_search.train.fold import fit_fold
from melanoma_search.train.phases import PhaseClock
from melanoma_search.train.results import EpochStats, FoldResult, RunResult
from melanoma_search.train.resume import ResumeFolder

__all__ = ["fit", "fit_with_oom_retry", "prepare_for", "smaller_batch"]

Callback = Callable[[EpochStats], None]
FoldCallback = Callable[[FoldResult], None]
Log = Callable[[str], None]


def _print(message: str) -> None:
    print(message, flush=True)


def prepare_for(config: TrainConfig) -> PreparedData:
    """Read the dataset a config names."""
    return load_dataset(config.data)


def fit(
    config: TrainConfig,
    *,
    data: PreparedData | None = None,
    callback: Callback | None = None,
    on_fold: FoldCallback | None = None,
    log: Log = _print,
    weights_dir: str | os.PathLike[str] | None = None,
    clock: PhaseClock | None = None,
    resume_dir: str | os.PathLike[str] | None = None,
    resume_attempt: str = "0",
) -> RunResult:
    """Train ``config`` on each of its folds (``config.data.folds``) and collect the predictions.

    ``callback``: called after every epoch; ``on_fold``: after every fold, with its honest result (the kept
    weights' out-of-fold predictions), so a cross-validated trial can be judged, and pruned, fold by fold.
    ``clock``: adds up where the seconds went by phase (a trial passes its own, to add its fixed costs to).
    ``resume_dir``: keep each fold's state after every epoch and each finished fold there, and continue from what a
    killed attempt of the same config left there (:mod:`~melanoma_search.train.resume`); ``resume_attempt``
    names this attempt's own folder in it (a search trial's number).
    """
    start = time.perf_counter()
    clock = clock if clock is not None else PhaseClock()
    if data is None:
        with clock.phase("data"):
            data = prepare_for(config)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = config.cudnn_benchmark  # tuning pays only on long trials (see the key)
    folds: list[FoldResult] = []
    encoders: dict[int, dict[str, object]] = {}
    resume = ResumeFolder(resume_dir, config, attempt=resume_attempt) if resume_dir is not None else None
    for position, fold in enumerate(config.data.fold_list()):
        done = resume.load_done(fold, weights_dir=weights_dir) if resume is not None else None
        if done is not None:  # a killed attempt finished this fold
            result, encoded = done
            log(f"fold {fold}: finished by a killed attempt (val_auc {result.auc:.4f}); kept")
            for stats in result.history:
                if callback is not None:
                    callback(stats)
        else:
            result, encoder = fit_fold(config, data, fold, callback=callback, log=log, device=device,
                                       step_offset=position * config.epochs,
                                       weights_dir=None if weights_dir is None else str(weights_dir), clock=clock,
                                       resume=resume)
            encoded = encoder.to_dict() if encoder is not None else None
            if resume is not None:
                resume.save_done(result, encoded)
        folds.append(result)
        if on_fold is not None:
            on_fold(result)
        if encoded is not None:
            encoders[fold] = encoded
    return RunResult(folds=folds, classes=data.classes, device=device_name(device),
                     seconds=time.perf_counter() - start, peak_memory_mb=peak_memory_mb(device),
                     meta_encoders=encoders, phases=dict(clock.seconds))


def smaller_batch(config: TrainConfig) -> TrainConfig | None:
    """Half the batch with twice the gradient accumulation: the same effective batch (accumulation is exact) in
    about half the activation memory; ``None`` when the batch cannot be halved."""
    if config.batch_size < 2:
        return None
    return config.model_copy(update={"batch_size": config.batch_size // 2, "accum_steps": config.accum_steps * 2})


def fit_with_oom_retry(config: TrainConfig, *, log: Log = _print, on_retry: Log | None = None, **kwargs: Any
                       ) -> tuple[RunResult, TrainConfig]:
    """:func:`fit`, retried once at :func:`smaller_batch` when CUDA runs out of memory (what a search trial does,
    for work outside a trial such as the export's refit); returns the result and the config that produced it.
    ``on_retry`` (default ``log``) is told of the retry."""
    try:
        return fit(config, log=log, **kwargs), config
    except torch.cuda.OutOfMemoryError:
        smaller = smaller_batch(config)
        if smaller is None:
            raise
        torch.cuda.empty_cache()
        (on_retry or log)(f"out of memory at batch {config.batch_size}; retrying at batch {smaller.batch_size} "
                          f"with accum_steps {smaller.accum_steps}")
        return fit(smaller, log=log, **kwargs), smaller
