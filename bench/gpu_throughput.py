"""Training throughput of the real trial engine against the GPU's ceiling, in one run.

For each case (efficientnet_b0 at 224 px, batch 128; efficientnet_b5 at 456 px, batch 32):

* **ceiling**: the training step alone — random tensors already on the device, the same model (timm backbone +
  head), AdamW, AMP (bf16) and channels_last;
* **engine**: the trial engine's own pieces on the real HAM images — the memory-mapped cache, the engine's
  DataLoader (workers, pinned memory, prefetch), the default ``medium`` augmentation (its loader part and its
  on-device part), the device-side normalisation and the same training step (``run_epoch``).

It prints images/s for both and the ratio engine / ceiling. The HAM sample has only ~1,800 training images per fold,
so the engine's epoch is drawn with replacement to ``--images`` images: long enough to time, same per-image work.

    python bench/gpu_throughput.py --data-dir .device/data/ham10000-224            # on a GPU machine
    python bench/gpu_throughput.py --device cpu --tiny                             # a smoke test on a CPU
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import RandomSampler

from melanoma_search.augment.policies import AugmentConfig, build_train_transform, get_policy
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.prepare import prepare_data
from melanoma_search.model.losses import BCELoss
from melanoma_search.model.network import ModelConfig, build_model
from melanoma_search.train.config import parse_config
from melanoma_search.train.loaders import make_loader
from melanoma_search.train.steps import BatchInputs, Precision, run_epoch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(name: str, *, size: int, batch: int, steps: int, device: torch.device, precision: Precision) -> float:
    model = build_model(ModelConfig(name=name), n_outputs=1).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = BCELoss()
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, device=device) > 0.8).float()
    model.train()

    def step() -> None:
        with precision.autocast():
            loss = loss_fn(model(images), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def engine(name: str, *, size: int, batch: int, images: int, device: torch.device, precision: Precision,
           data_dir: str, cache_dir: str, workers: int) -> float:
    config = parse_config({"model": {"name": name, "meta": False}, "image_size": size, "batch_size": batch,
                           "data": {"dir": data_dir, "cache_dir": cache_dir, "num_workers": workers}})
    data = prepare_data(root=data_dir, n_folds=5)
    array = data.cached_images(size=size, cache_dir=cache_dir, workers=workers)
    rows = data.table[data.table["fold"].ne(0) & data.table["split"].eq("train")]
    dataset = LesionDataset(array, rows=rows["cache_row"].to_numpy(), targets=rows["target"].to_numpy(np.float32),
                            transform=build_train_transform(AugmentConfig(policy="medium"), size=size, seed=0))
    sampler = RandomSampler(dataset, replacement=True, num_samples=images, generator=torch.Generator().manual_seed(0))
    loader = make_loader(dataset, batch_size=config.batch_size, num_workers=config.data.num_workers, device=device,
                         sampler=sampler, train=True, epochs=2)  # a fold's epochs come from one loader pass
    model = build_model(config.model, n_outputs=1)
    channels_last = device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    inputs = BatchInputs(device, model.normalisation, channels_last=channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    common = dict(inputs=inputs, loss_fn=BCELoss(), optimizer=optimizer, precision=precision,
                  scaler=precision.scaler(), augment=get_policy("medium").on_device)
    batches = iter(loader)  # as in a trial: the epochs read on from one iterator, the loader never restarts
    per_epoch = len(loader) // 2
    run_epoch(model, batches, n_batches=8, **common)  # warm-up: workers, cuDNN autotune
    _sync(device)
    out = run_epoch(model, batches, n_batches=per_epoch, **common)
    _sync(device)
    return out.images / out.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small models and sizes: a CPU smoke test")
    parser.add_argument("--cache-dir", default="storage/cache")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--cases", nargs="+", default=["b0", "b5"])
    args = parser.parse_args()
    device = torch.device(args.device)
    precision = Precision.resolve("auto", device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, AMP {precision.dtype}, "
              f"{args.workers} loader workers")
    else:
        print(f"device: cpu ({os.cpu_count()} cores), torch {torch.__version__}, AMP off, {args.workers} workers")
    cases = {
        "b0": ("efficientnet_b0", 224, 128, 40, 12_800),
        "b5": ("efficientnet_b5", 456, 32, 30, 3_200),
    }
    if args.tiny:
        cases = {"b0": ("efficientnet_b0", 64, 16, 3, 96), "b5": ("efficientnet_b5", 64, 8, 2, 48)}
    Path(args.cache_dir).mkdir(parents=True, exist_ok=True)
    for key in args.cases:
        name, size, batch, steps, images = cases[key]
        top = ceiling(name, size=size, batch=batch, steps=steps, device=device, precision=precision)
        real = engine(name, size=size, batch=batch, images=images, device=device, precision=precision,
                      data_dir=args.data_dir, cache_dir=args.cache_dir, workers=args.workers)
        print(f"{name}@{size} batch {batch}: ceiling {top:7.0f} img/s | engine on real HAM images {real:7.0f} img/s"
              f" | ratio {real / top:.2f}", flush=True)


if __name__ == "__main__":
    main()
