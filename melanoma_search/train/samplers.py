"""Training-row samplers: plain shuffling, or balanced oversampling of melanomas.

Melanoma is ~2 % of the 2020 data; a batch of 32 usually holds none. The balanced sampler draws each melanoma
``oversample`` times as often as a benign image (with replacement), keeping the epoch length unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import RandomSampler, Sampler, WeightedRandomSampler

__all__ = ["build_sampler"]


def build_sampler(targets: np.ndarray, *, kind: str, oversample: float, seed: int) -> Sampler[int]:
    """A sampler over ``len(targets)`` rows; ``targets`` are binary melanoma labels."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "random":
        return RandomSampler(range(len(targets)), generator=generator)
    if kind == "balanced":
        weights = np.where(np.asarray(targets) > 0.5, float(oversample), 1.0)
        return WeightedRandomSampler(weights.tolist(), num_samples=len(targets),
                                     replacement=True, generator=generator)
    raise ValueError(f"unknown sampler {kind!r}; allowed: random, balanced")
