"""Learning-rate schedules, as multipliers of the peak rate per optimiser step (for ``LambdaLR``)."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["warmup_cosine"]


def warmup_cosine(*, total_steps: int, warmup_steps: int, min_ratio: float = 0.01) -> Callable[[int], float]:
    """Linear warm-up from ``min_ratio`` to 1 over ``warmup_steps``, then cosine decay to ``min_ratio``.

    Warm-up matters most when training from scratch or with a large batch: the first updates of a fresh head are
    large and can wreck pretrained features.
    """
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return min_ratio + (1 - min_ratio) * step / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor
