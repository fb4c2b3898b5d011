"""Which precision a trial trains and predicts in, for ``amp: auto``: the decision, apart from the mechanism.

On a GPU, ``auto`` is bf16 where the card has it, fp16 (with a grad scaler) on an older one. On a CPU, bf16 autocast
has not paid in a whole trial on this project's machines, even with native bf16 (docs/measurements.md): one training
step of ``tf_efficientnet_lite2`` at 192 px timed alone ran 1.13x (AMD EPYC, AVX512-BF16) and 1.29-1.34x (Intel Xeon,
AVX512-BF16 and AMX) fp32's speed, yet the whole 3-fold trial's training steps ran 0.87x fp32's speed in bf16 on the
Xeon (``bench/cpu_precision.py``), and at 128 and 160 px the step alone is slower in bf16 (0.72-0.95x). So ``auto``
picks bf16 on a CPU only where the CPU supports it (checked, never assumed) *and* the table below says it ran at
least :data:`MIN_SPEEDUP` times faster for that backbone at the nearest measured image size; with today's table that
is nowhere, and the CPU stays in fp32. A faster measurement on another CPU is one table entry. ``amp: bf16`` or
``off`` still decide for themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CPU_BF16_SPEEDUP", "MIN_SPEEDUP", "CpuPrecision", "cpu_bf16_supported", "cpu_precision"]

#: bf16 autocast's speed-up over fp32 on a CPU with native bf16, by backbone and image size (docs/measurements.md,
#: 2026-12-06, Intel Xeon with AVX512-BF16 and AMX, 2 threads, idle). At 128 and 160 px: one training step (batch 32,
#: channels_last, AdamW, ``bench/cpu_levers.py``), the higher of two runs. At 192 px the step alone is unreliable on
#: that machine (fp32's step read 14-29 img/s across backbones and runs), so only a whole trial decides: lite2's steps
#: over 3 folds x 4 epochs of HAM10000 (``bench/cpu_precision.py``); lite0 and lite1 at 192 px have no whole-trial
#: measurement and fall to their nearest measured size. Backbones not in it train in fp32.
CPU_BF16_SPEEDUP: dict[tuple[str, int], float] = {
    ("tf_efficientnet_lite0", 128): 0.89,
    ("tf_efficientnet_lite0", 160): 0.90,
    ("tf_efficientnet_lite1", 128): 0.78,
    ("tf_efficientnet_lite1", 160): 0.91,
    ("tf_efficientnet_lite2", 128): 0.78,
    ("tf_efficientnet_lite2", 160): 0.95,
    ("tf_efficientnet_lite2", 192): 0.87,
}

#: The least measured speed-up for which ``auto`` trains in bf16 on a CPU (below it the rounding is not worth it).
MIN_SPEEDUP = 1.05


def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's check: AVX512-BF16 or AMX), as opposed to emulating it."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class CpuPrecision:
    bf16: bool
    reason: str


def cpu_precision(model: str, image_size: int, *, supported: bool | None = None,
                  table: dict[tuple[str, int], float] | None = None) -> CpuPrecision:
    """``amp: auto`` on a CPU for ``model`` at ``image_size``: bf16 only where supported and measured faster."""
    supported = cpu_bf16_supported() if supported is None else supported
    table = CPU_BF16_SPEEDUP if table is None else table
    if not supported:
        return CpuPrecision(False, "fp32 (this CPU has no native bf16)")
    sizes = [size for name, size in table if name == model]
    if not sizes:
        return CpuPrecision(False, f"fp32 (bf16 not measured for {model} on a CPU)")
    nearest = min(sizes, key=lambda size: abs(size - image_size))
    speedup = table[(model, nearest)]
    if speedup >= MIN_SPEEDUP:
        return CpuPrecision(True, f"bf16 (measured {speedup:.2f}x fp32's speed for {model} at {nearest} px)")
    return CpuPrecision(False, f"fp32 (bf16 measured {speedup:.2f}x fp32's speed for {model} at {nearest} px)")
