"""A few-second measurement of a configuration that never ran here: training steps and scoring on random tensors.

The cost model needs some figure for a backbone and size before the first trial of it; guessing from FLOPs is off by
2-3x on CPUs (depthwise convolutions run far below peak), so the probe times the real network, at the real size and
precision, for a few steps. It leaves out what real training adds (the data loader, host augmentation), which the
cost model corrects for by the ratio it measured on keys that have both.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["probe"]


def probe(config: Any, *, steps: int = 2, batch: int = 8) -> dict[str, float]:
    """Seconds per image of one training step and of one scoring pass of ``config`` (a ``TrainConfig``), measured
    after a warm-up step, on random images at its largest size; weights are not loaded (the speed is the same)."""
    import torch

    from melanoma_search.model.network import build_model
    from melanoma_search.train.device import resolve_device
    from melanoma_search.train.steps import Precision

    device = resolve_device(config.device)
    size = int(config.image_size)
    precision = Precision.resolve(config.amp, device, model=config.model.name, image_size=size)
    model = build_model(config.model, n_outputs=2, load_weights=False).to(device)
    memory = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    images = torch.randn(batch, 3, size, size, device=device).to(memory_format=memory)
    labels = torch.randint(0, 2, (batch,), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast():
            loss = loss_fn(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    def score_step() -> None:
        with torch.no_grad(), precision.autocast():
            model(images)

    model.train()
    train = _timed(train_step, steps=steps, device=device)
    model.eval()
    score = _timed(score_step, steps=steps, device=device)  # per-epoch validation scores one view
    return {"train": train / batch, "val": score / batch}


def _timed(step: Any, *, steps: int, device: Any) -> float:
    """Seconds per step after one warm-up step (the first allocates and picks kernels)."""
    import torch

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps

