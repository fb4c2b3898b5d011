from __future__ import annotations

import pytest
import torch

from melanoma_search.batch_augment import (
    batch_policy,
    cutmix,
    mixup,
    random_affine,
    random_colour,
    random_dihedral,
)


@pytest.fixture()
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(16, 3, 24, 24)


def test_dihedral_gives_each_image_one_of_eight_views(images: torch.Tensor) -> None:
    out = random_dihedral(images, generator=torch.Generator().manual_seed(1))
    views_seen = set()
    for original, augmented in zip(images, out):
        views = [original, original.flip(-1), original.flip(-2), original.flip(-1).flip(-2)]
        views += [v.transpose(-1, -2) for v in views]
        matches = [i for i, v in enumerate(views) if torch.equal(v, augmented)]
        assert matches, "output is not a dihedral view of its input"
        views_seen.add(matches[0])
    assert len(views_seen) > 3


def test_affine_keeps_unchosen_images_and_range(images: torch.Tensor) -> None:
    untouched = random_affine(images, p=0.0, scale=(0.9, 1.1), translate=0.05, rotate=30)
    assert torch.equal(untouched, images)
    warped = random_affine(images, p=1.0, scale=(0.9, 1.1), translate=0.05, rotate=30,
                           generator=torch.Generator().manual_seed(0))
    assert warped.shape == images.shape and not torch.allclose(warped, images)
    assert warped.min() >= 0 and warped.max() <= 1
    identity = random_affine(images, p=1.0, scale=(1.0, 1.0), translate=0.0, rotate=0.0)
    torch.testing.assert_close(identity, images, atol=1e-5, rtol=0)


def test_colour_jitter_is_per_sample_and_bounded(images: torch.Tensor) -> None:
    out = random_colour(images, bc_p=1.0, brightness=0.2, contrast=0.2, hsv_p=1.0, hue_degrees=20,
                        saturation=0.08, value=0.04, generator=torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    shifts = (out - images).mean(dim=(1, 2, 3))
    assert shifts.std() > 0.005  # different images got different jitter
    grey = torch.full((2, 3, 8, 8), 0.5)
    hue_only = random_colour(grey, bc_p=0.0, brightness=0, contrast=0, hsv_p=1.0, hue_degrees=20, saturation=0.0,
                             value=0.0)
    torch.testing.assert_close(hue_only, grey, atol=1e-5, rtol=0)  # a hue rotation leaves grey grey


@pytest.mark.parametrize("name", ["none", "light", "medium", "heavy"])
def test_named_policies_run(images: torch.Tensor, name: str) -> None:
    out = batch_policy(name)(images, generator=torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    assert torch.equal(out, images) == (name == "none")


def test_cutmix_and_mixup_on_a_batch(images: torch.Tensor) -> None:
    torch.manual_seed(0)
    mixed, order, lam = mixup(images, alpha=1.0)
    torch.testing.assert_close(mixed, images * lam + images[order] * (1 - lam))
    cut, order, lam = cutmix(images, alpha=1.0)
    assert cut.shape == images.shape and 0.0 <= lam <= 1.0
    kept = (cut == images).all(dim=1).float().mean(dim=(1, 2))
    moved = order != torch.arange(len(images))
    assert torch.allclose(kept[moved], torch.full_like(kept[moved], lam), atol=1e-6)
