"""Augmentation: named policies (``policies``), the host's per-sample transforms (``host``), the device's batch ops.

The ``augment:`` config section and the factories the training loop calls live in :mod:`.policies`; the
dermoscopy-specific transforms in :mod:`.host`; the batched, fused on-device half (and cutmix / mixup) in
:mod:`.device`.
"""

from __future__ import annotations

from melanoma_search.augment.device import BatchPolicy, DeviceConstants, cutmix, mixup, prepare_batch
from melanoma_search.augment.host import ColorConstancy, HairAugment, Microscope
from melanoma_search.augment.policies import (
    AugmentConfig,
    Policy,
    build_eval_transform,
    build_train_transform,
    get_policy,
    list_policies,
    register_policy,
)

__all__ = [
    "AugmentConfig",
    "BatchPolicy",
    "ColorConstancy",
    "DeviceConstants",
    "HairAugment",
    "Microscope",
    "Policy",
    "build_eval_transform",
    "build_train_transform",
    "cutmix",
    "get_policy",
    "list_policies",
    "mixup",
    "prepare_batch",
    "register_policy",
]
