"""Where a trial's seconds go: a clock that adds up named phases (cache, model, training steps, validation, ...).

A search's throughput is set as much by each trial's fixed costs (loader start, model build, validation with TTA,
artifacts) as by the training step; the search records this breakdown on every trial (the ``time_breakdown`` user
attribute) so the dashboard, and ``bench/trial_overhead.py``, show which fixed part to cut.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["TRAINING_PHASE", "PhaseClock"]

#: The phase that is the work itself (optimiser steps over batches); every other phase is overhead.
TRAINING_PHASE = "train_steps"


class PhaseClock:
    """Seconds per named phase, summed over every time the phase ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, seconds)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as (part of) phase ``name``; counted even when the block raises."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def merge(self, other: Mapping[str, float]) -> None:
        for name, seconds in other.items():
            self.add(name, seconds)

    def breakdown(self, *, wall: float) -> dict[str, float]:
        """The phases in seconds (rounded to 10 ms) plus ``other``: what of ``wall`` no phase accounts for."""
        out = {name: round(seconds, 2) for name, seconds in self.seconds.items()}
        out["other"] = round(max(0.0, wall - sum(self.seconds.values())), 2)
        return out

    def fixed_seconds(self, *, wall: float) -> float:
        """Everything of ``wall`` that is not training steps: the per-trial cost that packing and reuse attack."""
        return max(0.0, wall - self.seconds.get(TRAINING_PHASE, 0.0))
