"""The torch ``Dataset`` over cached pixels.

Items are uint8 CHW tensors: the float conversion and the mean/std normalisation of the backbone happen on the
training device, where they cost nothing, instead of quadrupling the bytes every loader worker copies.
A dataset reads either the memory-mapped cache (fast) or, for comparison and for one-off predictions, the image
files themselves (``paths=``, decoded on every access).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from melanoma_search.data.images import Resize, decode_image

__all__ = ["LesionDataset"]


class LesionDataset(Dataset[dict[str, torch.Tensor]]):
    """Rows of images (cached array or files), optional metadata features and targets.

    Args:
        images: ``(N, H, W, 3)`` uint8 array (a memory map of the cache); or ``None`` with ``paths``.
        rows: Indices into ``images`` (or ``paths``) that this dataset exposes, e.g. one fold's rows.
        targets: One target per exposed row (float for binary, class index for multi-class); NaN/-1 if unknown.
        meta: ``(len(rows), F)`` float32 metadata features, or ``None``.
        meta_missing: the same rows' features with the patient metadata (sex, age, site) missing; with
            ``meta_dropout`` each item reads them instead of ``meta`` with that probability, so a model trained with
            metadata also learns to score an image that comes without it.
        meta_dropout: The probability of that swap, per item.
        transform: An albumentations pipeline applied to each image, or ``None``.
        paths: Image files to decode on each access, instead of ``images``.
        size: Decode size, with ``paths``.
        resize: How ``paths`` are resized (:func:`~melanoma_search.data.images.decode_image`).
        weights: One loss weight per exposed row (pseudo-labelled rows train lighter), or ``None`` for all 1.
    """

    def __init__(
        self,
        images: np.ndarray | None,
        *,
        rows: Sequence[int] | np.ndarray,
        targets: np.ndarray,
        meta: np.ndarray | None = None,
        meta_missing: np.ndarray | None = None,
        meta_dropout: float = 0.0,
        transform: Any = None,
        paths: Sequence[str] | None = None,
        size: int | None = None,
        weights: np.ndarray | None = None,
        resize: Resize = "pillow",
    ) -> None:
        if images is None and (paths is None or size is None):
            raise ValueError("LesionDataset needs either a cached image array or paths and a size")
        self.images = images
        self.rows = np.asarray(rows, dtype=np.int64)
        self.targets = np.asarray(targets)
        self.meta = meta
        self.meta_missing = meta_missing
        self.meta_dropout = meta_dropout
        if meta_dropout > 0 and (meta is None or meta_missing is None or meta_missing.shape != meta.shape):
            raise ValueError("meta_dropout needs meta and meta_missing of the same shape")
        self.transform = transform
        self.paths = list(paths) if paths is not None else None
        self.size = size
        self.resize: Resize = resize
        if len(self.targets) != len(self.rows):
            raise ValueError(f"{len(self.targets)} targets for {len(self.rows)} rows")
        if meta is not None and len(meta) != len(self.rows):
            raise ValueError(f"{len(meta)} metadata rows for {len(self.rows)} rows")
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        if self.weights is not None and len(self.weights) != len(self.rows):
            raise ValueError(f"{len(self.weights)} row weights for {len(self.rows)} rows")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[index])
        if self.images is not None:
            image = np.asarray(self.images[row])
        else:
            assert self.paths is not None and self.size is not None
            image = decode_image(self.paths[row], self.size, resize=self.resize)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "target": torch.as_tensor(self.targets[index]),
            "index": torch.as_tensor(index),
        }
        if self.weights is not None:
            item["weight"] = torch.as_tensor(self.weights[index])
        if self.meta is not None:
            dropped = self.meta_dropout > 0 and float(torch.rand(())) < self.meta_dropout  # torch: seeded per worker
            source = self.meta_missing if dropped and self.meta_missing is not None else self.meta
            item["meta"] = torch.from_numpy(source[index])
        return item
