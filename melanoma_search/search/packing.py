"""How many trials share one GPU: sized from the study's measured peak memory, capped by the CPU cores for loaders.

A trial on the HAM sample keeps a modern GPU busy a fifth of the time (its fixed costs, loader start, validation,
are large against a short epoch), so several trials per card finish several times the trials per hour. How many fit
is a memory question the study has already answered: every finished trial records its ``peak_memory_mb``. The plan
takes the largest such peak, adds a margin for the allocator's cache and the CUDA context, and divides the smallest
card by it; the loaders' worker processes cap it by the CPU cores. Before any trial has measured its memory, the plan
assumes :data:`UNMEASURED_PER_GPU` and says so; an out-of-memory trial is retried at half the batch, then alone on
the card (:class:`~melanoma_search.search.gpu_share.GpuShare`).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

from melanoma_search.train.loaders import MAX_LOADER_WORKERS

__all__ = ["GpuCard", "PackingPlan", "measured_peak_mb", "plan_packing", "visible_devices", "visible_gpus"]

#: Trials per GPU before any trial of the study has measured its memory (three gave 3x the trials on one H100).
UNMEASURED_PER_GPU = 3
#: Never more than this many trials on one card, whatever the memory says (kernels then only queue).
MAX_PER_GPU = 8
#: Share of a trial's measured peak added for the allocator's cache and fragmentation.
MEMORY_MARGIN = 0.25
#: Per process: the CUDA context, cuDNN and cuBLAS workspaces, which ``max_memory_allocated`` does not count.
CONTEXT_MB = 1024.0
#: Loader worker processes each trial gets at least, plus its own main process.
MIN_LOADER_WORKERS = 2


@dataclass(frozen=True)
class GpuCard:
    """One visible GPU: its ``CUDA_VISIBLE_DEVICES`` value and its memory."""

    device: str
    total_mb: float
    name: str = ""


@dataclass(frozen=True)
class PackingPlan:
    """What the launcher runs: ``trials_per_gpu`` on each card, each with ``loader_workers`` (``None``: as set)."""

    trials_per_gpu: int
    workers: int
    loader_workers: int | None
    reason: str


def visible_devices(visible: str) -> list[str]:
    """The devices a ``CUDA_VISIBLE_DEVICES`` value names (``""`` and ``"-1"`` hide every GPU)."""
    return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]


def visible_gpus(*, visible: str | None = None, query: Callable[[], list[GpuCard]] | None = None
                 ) -> list[GpuCard]:
    """The GPUs this process may use (``CUDA_VISIBLE_DEVICES`` respected), without opening a CUDA context here.

    ``nvidia-smi`` reports the memory; without it, torch does (which costs the launcher a context on each card).
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    cards = (query or _query_gpus)()
    if visible is None or not cards:
        return cards
    by_device = {card.device: card for card in cards}
    smallest = min(card.total_mb for card in cards)  # a UUID or a remapped index: assume the smallest card
    return [by_device.get(d, GpuCard(device=d, total_mb=smallest)) for d in visible_devices(visible)]


def _query_gpus() -> list[GpuCard]:
    if shutil.which("nvidia-smi"):
        try:
            query = ["nvidia-smi", "--query-gpu=index,memory.total,name", "--format=csv,noheader,nounits"]
            text = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
            rows = [[part.strip() for part in line.split(",", 2)] for line in text.splitlines() if line.strip()]
            return [GpuCard(device=r[0], total_mb=float(r[1]), name=r[2]) for r in rows if len(r) == 3]
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    import torch

    if not torch.cuda.is_available():
        return []
    return [GpuCard(device=str(i), total_mb=torch.cuda.get_device_properties(i).total_memory / 2**20,
                    name=torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]


def measured_peak_mb(study: optuna.Study) -> tuple[float, int]:
    """The largest ``peak_memory_mb`` of the study's trials that ran on a GPU, and how many such trials there are."""
    peaks = [float(t.user_attrs["peak_memory_mb"]) for t in study.get_trials(deepcopy=False)
             if "peak_memory_mb" in t.user_attrs and str(t.user_attrs.get("device", "")).startswith("cuda")]
    return (max(peaks) if peaks else 0.0), len(peaks)


def plan_packing(
    *,
    gpus: Sequence[GpuCard],
    cpu_cores: int,
    peak_mb: float = 0.0,
    measured_trials: int = 0,
    trials_per_gpu: int | None = None,
    loader_workers: int = -1,
) -> PackingPlan:
    """Trials per GPU and loader workers per trial for ``--workers auto``, with the reason in words.

    ``trials_per_gpu``: the user's ``--trials-per-gpu`` (kept, with a warning when the memory says fewer fit);
    ``loader_workers``: the configured ``data.num_workers`` (-1: auto, shared out among the trials here).
    """
    if not gpus:
        return PackingPlan(trials_per_gpu=0, workers=1, loader_workers=None,
                           reason="no GPU visible: one trial at a time on the CPU, with every core")
    smallest = min(card.total_mb for card in gpus)
    per_loader = loader_workers if loader_workers >= 0 else MIN_LOADER_WORKERS
    by_cpu = max(1, cpu_cores // (len(gpus) * (per_loader + 1)))
    notes = []
    if measured_trials:
        need = peak_mb * (1 + MEMORY_MARGIN) + CONTEXT_MB
        by_memory = max(1, math.floor(smallest * 0.95 / need))
        notes.append(f"the largest measured peak of {measured_trials} trial(s) is {peak_mb:,.0f} MB, so one trial "
                     f"needs about {need:,.0f} MB with margin and context: {by_memory} fit in {smallest:,.0f} MB")
    else:
        by_memory = UNMEASURED_PER_GPU
        notes.append(f"no trial of this study has measured its GPU memory yet: assuming {UNMEASURED_PER_GPU} fit "
                     "(an out-of-memory trial retries at half the batch, then alone on the card)")
    notes.append(f"{cpu_cores} CPU core(s) feed at most {by_cpu} trial(s) per GPU with {per_loader} loader "
                 "worker(s) each")
    if trials_per_gpu is not None:
        chosen = trials_per_gpu
        if chosen > min(by_memory, by_cpu):
            notes.append(f"--trials-per-gpu {chosen} is more than that: out-of-memory retries or loader waits "
                         "may follow")
        else:
            notes.append(f"--trials-per-gpu {chosen} as asked")
    else:
        chosen = max(1, min(by_memory, by_cpu, MAX_PER_GPU))
    workers = chosen * len(gpus)
    per_trial = None
    if loader_workers < 0:  # share the cores out, instead of every trial starting its own full set of loaders
        per_trial = max(1, min(MAX_LOADER_WORKERS, cpu_cores // workers - 1))
        notes.append(f"each trial gets {per_trial} loader worker(s)")
    where = ", ".join(f"GPU {c.device}" + (f" ({c.name})" if c.name else "") for c in gpus)
    return PackingPlan(trials_per_gpu=chosen, workers=workers, loader_workers=per_trial,
                       reason=f"{chosen} trial(s) per GPU on {where}: " + "; ".join(notes))
