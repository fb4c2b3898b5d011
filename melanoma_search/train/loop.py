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

import torch

from melanoma_search.data.prepare import PreparedData, load_dataset
from melanoma_search.train.config import TrainConfig
from melanoma_search.train.device import device_name, peak_memory_mb, resolve_device
from melanoma_search.train.fold import fit_fold
from melanoma_search.train.phases import PhaseClock
from melanoma_search.train.results import EpochStats, FoldResult, RunResult

__all__ = ["fit", "prepare_for"]

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
) -> RunResult:
    """Train ``config`` on each of its folds (``config.data.folds``) and collect the predictions.

    ``callback``: called after every epoch; ``on_fold``: after every fold, with its honest result (the kept
    weights' out-of-fold predictions), so a cross-validated trial can be judged, and pruned, fold by fold.
    ``clock``: adds up where the seconds went by phase (a trial passes its own, to add its fixed costs to).
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
    for position, fold in enumerate(config.data.fold_list()):
        result, encoder = fit_fold(config, data, fold, callback=callback, log=log, device=device,
                                   step_offset=position * config.epochs,
                                   weights_dir=None if weights_dir is None else str(weights_dir), clock=clock)
        folds.append(result)
        if on_fold is not None:
            on_fold(result)
        if encoder is not None:
            encoders[fold] = encoder.to_dict()
    return RunResult(folds=folds, classes=data.classes, device=device_name(device),
                     seconds=time.perf_counter() - start, peak_memory_mb=peak_memory_mb(device),
                     meta_encoders=encoders, phases=dict(clock.seconds))
