"""The learning-rate range test (Smith 2017): raise the rate exponentially for a few hundred steps, watch the loss.

The suggestion is the rate where the smoothed loss falls fastest (steepest negative slope against log lr), a common
and robust reading of the curve. The model's and optimiser's state are restored afterwards, so the finder is free
to run before training and its suggestion can stand in for ``lr`` (``lr: auto``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from melanoma_search.errors import NonFiniteLossError

__all__ = ["LRFinderResult", "find_lr"]

_log = logging.getLogger(__name__)


@dataclass
class LRFinderResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    suggestion: float | None = None


def find_lr(
    model: nn.Module,
    make_optimizer: Callable[[float], torch.optim.Optimizer],
    train_steps: Callable[[torch.optim.Optimizer, Callable[[int, float], None], int], None],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    num_steps: int = 100,
    smoothing: float = 0.9,
    diverge: float = 4.0,
) -> LRFinderResult:
    """Run the range test.

    Args:
        model: Trained in place during the test and restored afterwards.
        make_optimizer: Builds the optimiser to test, given a starting rate.
        train_steps: ``train_steps(optimizer, on_step, max_steps)`` runs up to ``max_steps`` optimiser steps,
            calling ``on_step(step, loss)`` after each (the loop's own :func:`~melanoma_search.train.steps.run_epoch`,
            repeated over epochs if one epoch is shorter).
    """
    saved = copy.deepcopy(model.state_dict())
    optimizer = make_optimizer(start_lr)
    ratio = (end_lr / start_lr) ** (1.0 / max(num_steps - 1, 1))
    result = LRFinderResult()
    smoothed, best = 0.0, math.inf

    class _Stop(Exception):
        pass

    def on_step(step: int, loss: float) -> None:
        nonlocal smoothed, best
        lr = optimizer.param_groups[0]["lr"]
        smoothed = smoothing * smoothed + (1 - smoothing) * loss
        debiased = smoothed / (1 - smoothing ** (len(result.losses) + 1))
        result.lrs.append(lr)
        result.losses.append(debiased)
        best = min(best, debiased)
        if not math.isfinite(loss) or debiased > diverge * best or len(result.lrs) >= num_steps:
            raise _Stop
        for group in optimizer.param_groups:
            group["lr"] = lr * ratio

    try:
        while len(result.lrs) < num_steps:
            before = len(result.lrs)
            train_steps(optimizer, on_step, num_steps - len(result.lrs))
            if len(result.lrs) == before:
                break  # no batch at all
    except (_Stop, NonFiniteLossError):
        pass
    finally:
        model.load_state_dict(saved)
    result.suggestion = _steepest(result.lrs, result.losses)
    return result


def _steepest(lrs: list[float], losses: list[float]) -> float | None:
    if len(lrs) < 10:
        return None
    # Ignore the tail where the loss blows up: it has the steepest positive slope and no useful negative one.
    stop = int(np.argmin(losses)) + 1
    if stop < 5:
        return None
    slopes = np.gradient(np.asarray(losses[:stop]), np.log10(np.asarray(lrs[:stop])))
    return float(lrs[int(np.argmin(slopes))])
