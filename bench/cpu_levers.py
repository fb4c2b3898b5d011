"""Where a CPU trial's seconds could be cut: each lever's speed, measured in one run on this machine.

Levers timed here, each against its baseline in the same run (medians of ``--repeats`` timings after a warm-up,
batch 32, channels_last, ``torch.get_num_threads()`` threads):

* bf16 autocast against fp32, one training step (forward, backward, AdamW), for every backbone and image size of the
  shipped ``ham-cpu`` space (``tf_efficientnet_lite0/1/2`` at 128, 160, 192 px): the table ``amp: auto`` reads
  (``melanoma_search/train/precision.py``);
* validation with TTA 1 against TTA 2 (two dihedral views in one pass), per image;
* the backbone frozen (only the head trains) against a full step, the freeze of ``freeze_epochs``.

It measures speed only: whether a lever keeps the outside AUC is a run of the shipped study with and without it
(``bench/search_value.py``), which this bench does not do.

    python bench/cpu_levers.py [--repeats 3] [--out storage/bench-cpu-levers]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from melanoma_search.model.network import ModelConfig, build_model
from melanoma_search.train.tta import dihedral_views

BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")
SIZES = (128, 160, 192)


def median_seconds(step: Callable[[], None], *, repeats: int, warmup: int = 1) -> float:
    """The median of ``repeats`` timings of ``step`` after ``warmup`` untimed calls (also used by predict_speed.py)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _train_step(model: torch.nn.Module, images: torch.Tensor, *, dtype: torch.dtype | None) -> Callable[[], None]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    target = torch.zeros(images.shape[0], 1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False):
            logits = model(images, None)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        loss.backward()
        optimizer.step()

    return step


def _model(name: str) -> torch.nn.Module:
    model = build_model(ModelConfig(name=name, pretrained=False, meta=False), n_outputs=1)
    return model.to(memory_format=torch.channels_last).train()


def precision_table(*, repeats: int, batch: int = 32) -> list[dict[str, Any]]:
    rows = []
    for name in BACKBONES:
        model = _model(name)
        for size in SIZES:
            images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
            fp32 = median_seconds(_train_step(model, images, dtype=None), repeats=repeats)
            bf16 = median_seconds(_train_step(model, images, dtype=torch.bfloat16), repeats=repeats)
            rows.append({"model": name, "size": size, "fp32_img_s": round(batch / fp32, 1),
                         "bf16_img_s": round(batch / bf16, 1), "bf16_speedup": round(fp32 / bf16, 3)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _validate(model: torch.nn.Module, images: torch.Tensor, *, tta: int) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            model.eval()
            model(torch.cat(list(dihedral_views(images, tta))), None)
            model.train()

    return run


def tta_and_freeze(*, repeats: int, batch: int = 32) -> list[dict[str, Any]]:
    rows = []
    for name, size in (("tf_efficientnet_lite0", 128), ("tf_efficientnet_lite2", 192)):
        model = _model(name)
        images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

        full = median_seconds(_train_step(model, images, dtype=None), repeats=repeats)
        model.freeze_backbone(True)  # type: ignore[operator]
        frozen = median_seconds(_train_step(model, images, dtype=None), repeats=repeats)
        model.freeze_backbone(False)  # type: ignore[operator]
        one, two = (median_seconds(_validate(model, images, tta=t), repeats=repeats) for t in (1, 2))
        rows.append({"model": name, "size": size, "validate_tta1_img_s": round(batch / one, 1),
                     "validate_tta2_img_s": round(batch / two, 1), "tta2_cost": round(two / one, 3),
                     "train_full_img_s": round(batch / full, 1),
                     "train_frozen_backbone_img_s": round(batch / frozen, 1),
                     "frozen_speedup": round(full / frozen, 3)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="storage/bench-cpu-levers")
    args = parser.parse_args()
    from melanoma_search.train.precision import cpu_bf16_supported

    report = {"machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__, "bf16_supported": cpu_bf16_supported(),
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "precision": precision_table(repeats=args.repeats), "tta_and_freeze": tta_and_freeze(
                  repeats=args.repeats)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
