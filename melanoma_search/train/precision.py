"""Which precision a trial trains and predicts in, for ``amp: auto``: the decision, apart from the mechanism.

On a GPU, ``auto`` is bf16 where the card has it, fp16 (with a grad scaler) on an older one. On a CPU, bf16 autocast
pays for some configurations and costs for others, even on a CPU with AVX512-BF16: measured on this project's
machines (``bench/cpu_levers.py``), one training step of ``tf_efficientnet_lite2`` at 192 px ran 1.13x faster in
bf16, and ``tf_efficientnet_lite0`` at 128 px 0.77x (slower). So ``auto`` picks bf16 on a CPU only where the CPU
supports it (checked, never assumed) *and* the measured table below says it ran at least :data:`MIN_SPEEDUP` times
faster for that backbone at the nearest measured image size; everywhere else it stays in fp32. ``amp: bf16`` or
``off`` still decide for themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CPU_BF16_SPEEDUP", "MIN_SPEEDUP", "CpuPrecision", "cpu_bf16_supported", "cpu_precision"]

#: bf16 autocast's speed-up over fp32 of one CPU training step (batch 32, channels_last, 2 threads, medians of 3,
#: idle), by backbone and image size, on a project machine whose AMD EPYC has AVX512-BF16 (issue #32's measurement;
#: ``bench/cpu_levers.py`` measures the whole table on a machine that has it: docs/measurements.md). Configurations
#: not in it train in fp32.
CPU_BF16_SPEEDUP: dict[tuple[str, int], float] = {
    ("tf_efficientnet_lite2", 192): 1.13,
    ("tf_efficientnet_lite0", 128): 0.77,
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
