"""The engine's DataLoaders: worker processes over the memory-mapped cache, pinned memory and prefetch on GPUs."""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Sampler

from melanoma_search.data.dataset import LesionDataset

__all__ = ["loader_workers", "make_loader"]


def loader_workers(requested: int) -> int:
    """``data.num_workers``, with -1 meaning min(8, CPU cores)."""
    return requested if requested >= 0 else min(8, os.cpu_count() or 1)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(info.seed % 2**31))  # type: ignore[union-attr]


def make_loader(dataset: LesionDataset, *, batch_size: int, num_workers: int, device: torch.device,
                sampler: Sampler[int] | None = None, train: bool) -> DataLoader[dict[str, torch.Tensor]]:
    """A loader over ``dataset``; training loaders drop a last partial batch (BatchNorm needs more than one row)."""
    workers = loader_workers(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=train and len(dataset) > batch_size,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )
