"""``amp: auto`` on a CPU: bf16 only where the CPU has it natively and it measured faster for that configuration."""

from __future__ import annotations

import torch

from melanoma_search.train.precision import MIN_SPEEDUP, cpu_bf16_supported, cpu_precision
from melanoma_search.train.steps import Precision

TABLE = {("tf_efficientnet_lite2", 192): 1.13, ("tf_efficientnet_lite0", 128): 0.77}


def test_bf16_where_supported_and_measured_faster_else_fp32() -> None:
    faster = cpu_precision("tf_efficientnet_lite2", 192, supported=True, table=TABLE)
    assert faster.bf16 and faster.reason.startswith("bf16 (measured 1.13x")
    slower = cpu_precision("tf_efficientnet_lite0", 128, supported=True, table=TABLE)
    assert not slower.bf16 and slower.reason.startswith("fp32 (bf16 measured 0.77x")
    nearest = cpu_precision("tf_efficientnet_lite2", 176, supported=True, table=TABLE)
    assert nearest.bf16 and "at 192 px" in nearest.reason  # the nearest measured size decides
    unmeasured = cpu_precision("resnet18", 128, supported=True, table=TABLE)
    assert not unmeasured.bf16 and "not measured" in unmeasured.reason
    unsupported = cpu_precision("tf_efficientnet_lite2", 192, supported=False, table=TABLE)
    assert not unsupported.bf16 and "no native bf16" in unsupported.reason  # detected, never assumed
    assert not cpu_precision("x", 1, supported=True, table={("x", 1): MIN_SPEEDUP - 0.01}).bf16


def test_resolve_follows_the_decision_and_explicit_modes_stay_explicit() -> None:
    cpu = torch.device("cpu")
    chosen = Precision.resolve("auto", cpu, model="tf_efficientnet_lite2", image_size=192)
    assert chosen.name == ("bf16" if cpu_precision("tf_efficientnet_lite2", 192).bf16 else "fp32")
    if not cpu_bf16_supported():  # this machine: the decision says fp32 whatever the table holds
        assert chosen.name == "fp32"
    assert Precision.resolve("bf16", cpu).name == "bf16" and Precision.resolve("off", cpu).name == "fp32"
    assert Precision.describe("off", cpu, model="resnet18", image_size=64) == "fp32 (amp: off on cpu)"


def test_the_shipped_cpu_space_trains_in_fp32_where_bf16_measured_slower() -> None:
    """The measured table as shipped: on a CPU with native bf16 the ``ham-cpu`` space stays in fp32 (a whole
    lite2 trial at 192 px ran 0.87x fp32's speed in bf16), and each start line says which measurement decided."""
    for model in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        for size in (128, 160, 192):
            decided = cpu_precision(model, size, supported=True)
            assert not decided.bf16 and decided.reason.startswith("fp32 (bf16 measured"), (model, size)
