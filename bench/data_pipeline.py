"""Loader throughput: the memory-mapped image cache against decoding the JPEGs every epoch.

Users' JPEGs are 512 px (the resized competition sets) or 1024 px and larger (the originals), while a trial trains at
~256 px. This benchmark upscales real HAM10000 images to those sizes, then, in one run and with the same loader
(workers, batch size, augmentation policy), measures images/s for

* ``decode``: every epoch decodes and resizes each JPEG (``LesionDataset(paths=...)``);
* ``cache``: the images are decoded once into the cache, and epochs read the memory map.

The loader runs the loader's share of the augmentation policy (its cheap part, flips / affine / colour jitter, runs on
the batch on the training device, see ``melanoma_search.augment.device``; its cost there is measured and printed too,
so nothing is hidden). It prints the measured figures and their ratio per policy, and the one-off cache build time.

    python bench/data_pipeline.py --data-dir ../shared/data/ham10000-224 --images 400
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from melanoma_search.augment.device import DeviceConstants, prepare_batch
from melanoma_search.augment.policies import AugmentConfig, build_train_transform, get_policy
from melanoma_search.data.cache import load_or_build_cache
from melanoma_search.data.dataset import LesionDataset


def make_jpegs(source: Path, names: list[str], *, size: int, out: Path) -> list[str]:
    """Upscale real images to ``size`` px JPEGs (quality 90), as a user's full-size files would be."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        image = cv2.imread(str(source / "images" / f"{name}.jpg"))
        big = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
        path = out / f"{name}.jpg"
        cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(str(path))
    return paths


def epoch_rate(dataset: LesionDataset, *, batch_size: int, workers: int, epochs: int) -> float:
    """Images/s over ``epochs`` full passes of a DataLoader (after one warm-up batch)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=False)
    next(iter(loader))  # start the workers before timing
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def device_rate(policy: str, *, size: int, batch_size: int, device: str, repeats: int = 20) -> float:
    """Images/s of the policy's device-side share, fused with the normalisation (what the training process runs)."""
    pixels = torch.randint(0, 256, (batch_size, 3, size, size), dtype=torch.uint8, device=device)
    constants = DeviceConstants(torch.device(device), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    def augment() -> torch.Tensor:
        return prepare_batch(pixels, constants=constants, policy=get_policy(policy).on_device)

    augment()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        augment()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return repeats * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224", help="a labels.csv + images/ folder")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="JPEG sizes to feed")
    parser.add_argument("--train-size", type=int, default=256)
    parser.add_argument("--policies", nargs="+", default=["light", "medium"],
                        help="augmentation policies to measure under (light: I/O-bound; medium: the default)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    source = Path(args.data_dir)
    names = pd.read_csv(source / "labels.csv", dtype={"image_name": str})["image_name"].head(args.images).tolist()
    work = Path(tempfile.mkdtemp(prefix="bench-data-"))
    print(f"{len(names)} real HAM images, loader: {args.workers} workers, batch {args.batch_size}, "
          f"trial size {args.train_size} px, {args.epochs} epochs per measurement")
    rows = []
    try:
        for size in args.sizes:
            paths = make_jpegs(source, names, size=size, out=work / f"jpeg{size}")
            megabytes = sum(os.path.getsize(p) for p in paths) / 2**20
            targets = np.zeros(len(paths), np.float32)
            start = time.perf_counter()
            cached = load_or_build_cache(paths, size=args.train_size, cache_dir=work / "cache", workers=args.workers,
                                         progress=False)
            build_seconds = time.perf_counter() - start
            print(f"{size} px JPEGs ({megabytes:.0f} MB): one-off cache build {build_seconds:.1f}s "
                  f"({len(paths) / build_seconds:.0f} img/s)")
            for policy in args.policies:
                transform = build_train_transform(AugmentConfig(policy=policy), size=args.train_size, seed=0)
                decode = LesionDataset(None, rows=np.arange(len(paths)), targets=targets, transform=transform,
                                       paths=paths, size=args.train_size)
                cache = LesionDataset(cached.array, rows=np.arange(len(paths)), targets=targets, transform=transform)
                decode_rate = epoch_rate(decode, batch_size=args.batch_size, workers=args.workers, epochs=args.epochs)
                cache_rate = epoch_rate(cache, batch_size=args.batch_size, workers=args.workers, epochs=args.epochs)
                rows.append((size, policy, decode_rate, cache_rate))
                print(f"  policy {policy:<7} decode every epoch {decode_rate:6.0f} img/s | "
                      f"cache {cache_rate:6.0f} img/s | ratio {cache_rate / decode_rate:4.1f}x")
        for policy in args.policies:
            rate = device_rate(policy, size=args.train_size, batch_size=args.batch_size, device=args.device)
            print(f"device-side share of policy {policy!r} on {args.device}: {rate:.0f} img/s per training process")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = ", ".join(f"{size} px/{policy} {c / d:.1f}x" for size, policy, d, c in rows)
    print(f"cache speed-up (cache img/s / decode img/s): {ratios}")


if __name__ == "__main__":
    main()
