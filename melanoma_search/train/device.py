"""Where a run executes: the torch device a config names, its printable name, seeding, peak memory."""

from __future__ import annotations

import random
import resource

import numpy as np
import torch

from melanoma_search.errors import ConfigError

__all__ = ["device_name", "peak_memory_mb", "resolve_device", "seed_everything"]


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on ``device``, or this process's peak resident memory on the CPU."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device) / 2**20)
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
