"""Named augmentation policies and the ``augment:`` config section; the factories the training loop calls.

Augmentation was one of the few things that clearly moved the 2020 leaderboard, so policies are named and fixed
(``none``, ``light``, ``medium``, ``heavy``; ``heavy`` is the set of the winning solution) and the dermoscopy extras
(hair, microscope, colour constancy, cutout: :mod:`melanoma_search.augment.host`) are separate knobs.

A policy has two halves that must agree, so they are written side by side in one :class:`Policy` entry:

* ``on_device``: the cheap, common part (flips, affine, colour jitter) run on the whole batch on the training device
  (:class:`~melanoma_search.augment.device.BatchPolicy`), where it costs next to nothing;
* ``in_loader``: what only the loader workers can do per sample (blurs, distortions, CLAHE, ...);
* ``loader_equivalent``: ``on_device`` written as albumentations transforms, for use outside the training loop
  (``batch_on_device=False``) and as the reference the device half is tested against.

A new policy is one :func:`register_policy` call (see docs/architecture.md, "Extending").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import AfterValidator, Field

from melanoma_search.augment.device import BatchPolicy

# albumentations and cv2 come through host, which first turns off albumentations' version check on import
from melanoma_search.augment.host import A, ColorConstancy, HairAugment, Microscope, cv2
from melanoma_search.errors import ConfigError
from melanoma_search.registry import Registry
from melanoma_search.schema import StrictModel

__all__ = [
    "AugmentConfig",
    "Policy",
    "build_eval_transform",
    "build_train_transform",
    "check_augment_files",
    "get_policy",
    "list_policies",
    "register_policy",
]

Transforms = Callable[[], list[A.BasicTransform]]


def _nothing() -> list[A.BasicTransform]:
    return []


@dataclass(frozen=True)
class Policy:
    """One named policy: its device half, its loader-only half, and the device half as albumentations transforms."""

    name: str
    on_device: BatchPolicy = field(default_factory=BatchPolicy)
    in_loader: Transforms = _nothing
    loader_equivalent: Transforms = _nothing

    def loader_transforms(self, *, batch_on_device: bool) -> list[A.BasicTransform]:
        """The per-sample share: with ``batch_on_device`` the device half is left to the batch."""
        return [*([] if batch_on_device else self.loader_equivalent()), *self.in_loader()]


_POLICIES: Registry[Policy] = Registry("augmentation policy")


def register_policy(policy: Policy) -> Policy:
    """Add ``policy`` to the table (a name can be registered once)."""
    return _POLICIES.add(policy.name, policy)


def list_policies() -> tuple[str, ...]:
    return _POLICIES.names()


def get_policy(name: str) -> Policy:
    return _POLICIES.get(name)


def _dihedral() -> list[A.BasicTransform]:
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.Transpose(p=0.5)]


register_policy(Policy("none"))
register_policy(Policy(
    "light",
    on_device=BatchPolicy(dihedral=True, brightness_contrast_p=0.5, brightness=0.1, contrast=0.1),
    loader_equivalent=lambda: [*_dihedral(), A.RandomBrightnessContrast(0.1, 0.1, p=0.5)],
))
register_policy(Policy(
    "medium",
    on_device=BatchPolicy(dihedral=True, affine_p=0.7, brightness_contrast_p=0.6, hsv_p=0.5),
    loader_equivalent=lambda: [
        *_dihedral(),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-30, 30),
                 border_mode=cv2.BORDER_REFLECT_101, p=0.7),
        A.RandomBrightnessContrast(0.2, 0.2, p=0.6),
        A.HueSaturationValue(10, 20, 10, p=0.5),
    ],
))
register_policy(Policy(  # the winning 2020 solution's training set; only its flips move to the device
    "heavy",
    on_device=BatchPolicy(dihedral=True),
    loader_equivalent=_dihedral,
    in_loader=lambda: [
        A.RandomBrightnessContrast(0.2, 0.2, p=0.75),
        A.OneOf([A.MotionBlur(blur_limit=5), A.MedianBlur(blur_limit=5), A.GaussianBlur(blur_limit=(3, 5)),
                 A.GaussNoise(std_range=(0.02, 0.08))], p=0.7),
        A.OneOf([A.OpticalDistortion(distort_limit=0.5), A.GridDistortion(num_steps=5, distort_limit=0.3),
                 A.ElasticTransform(alpha=3)], p=0.7),
        A.CLAHE(clip_limit=4.0, p=0.7),
        A.HueSaturationValue(10, 20, 10, p=0.5),
        A.Affine(scale=(0.9, 1.1), translate_percent=(-0.1, 0.1), rotate=(-15, 15),
                 border_mode=cv2.BORDER_CONSTANT, p=0.85),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.375, 0.375),
                        hole_width_range=(0.375, 0.375), p=0.7),
    ],
))


def _known_policy(name: str) -> str:
    get_policy(name)
    return name


class AugmentConfig(StrictModel):
    policy: Annotated[str, AfterValidator(_known_policy)] = "medium"
    """A registered policy name (:func:`list_policies`)."""
    hair: float = Field(0.0, ge=0.0, le=1.0)
    hair_dir: str | None = None
    microscope: float = Field(0.0, ge=0.0, le=1.0)
    color_constancy: bool = False
    cutout: float = Field(0.0, ge=0.0, le=1.0)
    cutmix: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a training batch is cut-mixed."""
    mixup: float = Field(0.0, ge=0.0, le=1.0)
    mix_alpha: float = Field(1.0, gt=0.0)


def build_train_transform(config: AugmentConfig, *, size: int, seed: int | None = None,
                          batch_on_device: bool = True) -> A.Compose:
    """The per-sample training pipeline: colour constancy, hair, the policy's loader share, microscope, cutout.

    With ``batch_on_device`` (what the training loop expects) the policy's device half is left to
    ``get_policy(config.policy).on_device`` on the batch; ``False`` keeps it here as albumentations transforms.
    """
    steps: list[A.BasicTransform] = []
    if config.color_constancy:
        steps.append(ColorConstancy())
    if config.hair > 0:
        steps.append(HairAugment(hair_dir=config.hair_dir, p=config.hair))
    steps.extend(get_policy(config.policy).loader_transforms(batch_on_device=batch_on_device))
    if config.microscope > 0:
        steps.append(Microscope(p=config.microscope))
    if config.cutout > 0:
        steps.append(A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(0.3, 0.4),
                                     hole_width_range=(0.3, 0.4), p=config.cutout))
    return A.Compose(steps, seed=seed)


def build_eval_transform(config: AugmentConfig) -> A.Compose:
    """Validation / test pipeline: only normalisations that training applied to every image."""
    return A.Compose([ColorConstancy()] if config.color_constancy else [])


def check_augment_files(config: AugmentConfig) -> None:
    """The files an ``augment:`` section names (hair overlays) are there and readable: checked once before the
    first trial, so a missing folder stops the run with its remedy instead of failing every trial in turn."""
    if not config.hair_dir:
        return
    try:
        HairAugment(hair_dir=config.hair_dir)._load_overlays()
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"augment.hair_dir: {exc} (RGBA PNG hair overlays, e.g. the hair-augment folder of the "
                          "project's shared data; or leave hair_dir out and augment.hair draws strands)") from None
