"""The engine's DataLoaders: worker processes over the memory-mapped cache, pinned memory and prefetch on GPUs.

A training loader yields every epoch of a fold back to back (:class:`EpochBatches`), and the fold reads its epochs
from one iterator: the workers never stop at an epoch's end, so they prepare the next epoch's first batches while
the model is validated, instead of the GPU waiting for a restarted loader at every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from melanoma_search.data.dataset import LesionDataset

__all__ = ["MAX_LOADER_WORKERS", "EpochBatches", "loader_workers", "make_loader"]

#: The most loader processes ``data.num_workers: -1`` starts for one trial (more only contend for the cores).
MAX_LOADER_WORKERS = 8


def loader_workers(requested: int) -> int:
    """``data.num_workers``, with -1 meaning min(MAX_LOADER_WORKERS, CPU cores)."""
    return requested if requested >= 0 else min(MAX_LOADER_WORKERS, os.cpu_count() or 1)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(info.seed % 2**31))  # type: ignore[union-attr]


class EpochBatches(Sampler[list[int]]):
    """``epochs`` epochs of ``sampler``'s batches, one after the other (each epoch draws its own order, as a new
    ``iter`` of the loader would); an epoch drops its last partial batch when ``drop_last``."""

    def __init__(self, sampler: Sampler[int], *, batch_size: int, epochs: int, drop_last: bool) -> None:
        self.batches = BatchSampler(sampler, batch_size, drop_last)
        self.epochs = epochs

    @property
    def per_epoch(self) -> int:
        return len(self.batches)

    def __len__(self) -> int:
        return self.per_epoch * self.epochs

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.epochs):
            yield from self.batches


def make_loader(dataset: LesionDataset, *, batch_size: int, num_workers: int, device: torch.device,
                sampler: Sampler[int] | None = None, train: bool, epochs: int = 1
                ) -> DataLoader[dict[str, torch.Tensor]]:
    """A loader over ``dataset``; training loaders drop a last partial batch (BatchNorm needs more than one row).

    ``epochs``: with a ``sampler``, one pass of the loader yields that many epochs (see :class:`EpochBatches`).
    """
    workers = loader_workers(num_workers)
    drop_last = train and len(dataset) > batch_size
    batching: dict[str, object] = {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last}
    if sampler is not None:
        batching = {"batch_sampler": EpochBatches(sampler, batch_size=batch_size, epochs=epochs, drop_last=drop_last)}
    return DataLoader(
        dataset,
        **batching,  # type: ignore[arg-type]
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
