"""Test-time augmentation over the dihedral group: the flips and transposes a lesion photo is invariant to."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["TTA_VIEWS", "dihedral_views"]

TTA_VIEWS: tuple[int, ...] = (1, 2, 4, 8)


def dihedral_views(images: torch.Tensor, n: int) -> Iterator[torch.Tensor]:
    """Yield ``n`` (1, 2, 4 or 8) views of an NCHW batch: identity, h-flip, v-flip, both, then their transposes."""
    if n not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {TTA_VIEWS}, got {n}")
    bases = [images, images.transpose(-1, -2)] if n == 8 else [images]
    for base in bases:
        yield base
        if n >= 2:
            yield base.flip(-1)
        if n >= 4:
            yield base.flip(-2)
            yield base.flip(-1).flip(-2)
