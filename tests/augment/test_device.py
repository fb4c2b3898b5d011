from __future__ import annotations

import pytest
import torch

from melanoma_search.augment.device import BatchPolicy, DeviceConstants, cutmix, mixup, prepare_batch
from melanoma_search.augment.policies import get_policy

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONSTANTS = DeviceConstants(torch.device("cpu"), mean=MEAN, std=STD)


@pytest.fixture()
def pixels() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (16, 3, 24, 24), dtype=torch.uint8)


def _normalised(pixels: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return (pixels.float() / 255 - mean) / std


def test_no_policy_is_plain_normalisation(pixels: torch.Tensor) -> None:
    out = prepare_batch(pixels, constants=CONSTANTS)
    torch.testing.assert_close(out, _normalised(pixels), atol=1e-5, rtol=1e-5)
    assert prepare_batch(pixels, constants=CONSTANTS, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)


def test_dihedral_gives_each_image_one_of_eight_views(pixels: torch.Tensor) -> None:
    out = prepare_batch(pixels, constants=CONSTANTS, policy=BatchPolicy(dihedral=True),
                        generator=torch.Generator().manual_seed(1))
    expected = _normalised(pixels)
    seen = set()
    for original, augmented in zip(expected, out, strict=True):
        views = [original, original.flip(-1), original.flip(-2), original.flip(-1).flip(-2)]
        views += [v.transpose(-1, -2) for v in views]
        matches = [i for i, v in enumerate(views) if torch.allclose(v, augmented, atol=1e-4)]
        assert matches, "output is not a dihedral view of its input"
        seen.add(matches[0])
    assert len(seen) > 3


def test_affine_warps_only_the_chosen_share(pixels: torch.Tensor) -> None:
    untouched = prepare_batch(pixels, constants=CONSTANTS, policy=BatchPolicy(affine_p=0.0, brightness_contrast_p=0))
    torch.testing.assert_close(untouched, _normalised(pixels), atol=1e-5, rtol=1e-5)
    warped = prepare_batch(pixels, constants=CONSTANTS, policy=BatchPolicy(affine_p=1.0),
                           generator=torch.Generator().manual_seed(0))
    changed = ~torch.isclose(warped, _normalised(pixels), atol=1e-3).flatten(1).all(1)
    assert changed.all()


def test_colour_jitter_is_per_sample(pixels: torch.Tensor) -> None:
    policy = BatchPolicy(brightness_contrast_p=1.0, hsv_p=1.0)
    out = prepare_batch(pixels, constants=CONSTANTS, policy=policy, generator=torch.Generator().manual_seed(0))
    shifts = (out - _normalised(pixels)).mean(dim=(1, 2, 3))
    assert shifts.std() > 0.01  # different images got different jitter
    grey = torch.full((4, 3, 8, 8), 128, dtype=torch.uint8)
    hue_only = BatchPolicy(hsv_p=1.0, saturation=0.0, value=0.0)
    torch.testing.assert_close(prepare_batch(grey, constants=CONSTANTS, policy=hue_only), _normalised(grey),
                               atol=1e-4, rtol=1e-4)  # a hue rotation leaves grey grey
    brighter = BatchPolicy(brightness_contrast_p=1.0, brightness=0.1, contrast=0.0)
    up = prepare_batch(grey, constants=CONSTANTS, policy=brighter, generator=torch.Generator().manual_seed(3))
    delta = (up - _normalised(grey)) * torch.tensor(STD).view(1, 3, 1, 1)  # back in [0, 1] units
    assert delta.abs().max() <= 0.1 + 1e-5 and delta.flatten(1).std(1).max() < 1e-5  # a uniform shift


@pytest.mark.parametrize("name", ["none", "light", "medium", "heavy"])
def test_named_policies_run(pixels: torch.Tensor, name: str) -> None:
    out = prepare_batch(pixels, constants=CONSTANTS, policy=get_policy(name).on_device,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == pixels.shape and torch.isfinite(out).all()
    assert torch.allclose(out, _normalised(pixels), atol=1e-5) == (name == "none")


def test_cutmix_and_mixup_on_a_batch() -> None:
    torch.manual_seed(0)
    images = torch.rand(16, 3, 24, 24)
    mixed, order, lam = mixup(images, alpha=1.0)
    torch.testing.assert_close(mixed, images * lam + images[order] * (1 - lam))
    cut, order, lam = cutmix(images, alpha=1.0)
    assert cut.shape == images.shape and 0.0 <= lam <= 1.0
    kept = (cut == images).all(dim=1).float().mean(dim=(1, 2))
    moved = order != torch.arange(len(images))
    assert torch.allclose(kept[moved], torch.full_like(kept[moved], lam), atol=1e-6)
