from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from melanoma_search.augment.host import ColorConstancy, HairAugment, Microscope
from melanoma_search.augment.policies import AugmentConfig, build_eval_transform, build_train_transform
from melanoma_search.data.images import decode_image


@pytest.fixture(scope="module")
def lesion(ham_dir: Path) -> np.ndarray:
    return decode_image(next((ham_dir / "images").glob("*.jpg")), 128)


@pytest.mark.parametrize("policy", ["none", "light", "medium", "heavy"])
def test_policies_keep_shape_and_dtype(lesion: np.ndarray, policy: str) -> None:
    config = AugmentConfig(policy=policy, hair=0.5, microscope=0.5, cutout=0.5, color_constancy=True)
    transform = build_train_transform(config, size=128, seed=0)
    for _ in range(5):
        out = transform(image=lesion)["image"]
        assert out.shape == lesion.shape and out.dtype == np.uint8


def test_whole_policy_in_the_loader_when_asked(lesion: np.ndarray) -> None:
    loader_only = build_train_transform(AugmentConfig(policy="medium"), size=128, seed=0)
    assert len(loader_only.transforms) == 0  # all of medium runs on the device batch
    full = build_train_transform(AugmentConfig(policy="medium"), size=128, seed=0, batch_on_device=False)
    assert {type(t).__name__ for t in full.transforms} >= {"Affine", "HueSaturationValue", "Transpose"}


def test_heavy_policy_changes_the_image(lesion: np.ndarray) -> None:
    transform = build_train_transform(AugmentConfig(policy="heavy"), size=128, seed=1)
    changed = [not np.array_equal(transform(image=lesion)["image"], lesion) for _ in range(5)]
    assert all(changed)
    assert np.array_equal(build_train_transform(AugmentConfig(policy="none"), size=128)(image=lesion)["image"], lesion)


def test_hair_overlays_from_a_folder(lesion: np.ndarray, hair_dir: Path) -> None:
    hair = HairAugment(hair_dir=hair_dir, max_hairs=3, p=1.0)
    out = hair(image=lesion)["image"]
    assert out.shape == lesion.shape and not np.array_equal(out, lesion)
    drawn = HairAugment(p=1.0)(image=lesion)["image"]
    assert not np.array_equal(drawn, lesion)
    with pytest.raises(FileNotFoundError, match="hair overlay folder not found"):
        HairAugment(hair_dir="/nonexistent", p=1.0)(image=lesion)


def test_microscope_blacks_out_corners(lesion: np.ndarray) -> None:
    out = Microscope(p=1.0)(image=lesion)["image"]
    assert out[0, 0].sum() == 0 and out[-1, -1].sum() == 0
    np.testing.assert_array_equal(out[64, 64], lesion[64, 64])


def test_color_constancy_removes_a_colour_cast(lesion: np.ndarray) -> None:
    cast = np.clip(lesion.astype(float) * [1.0, 0.7, 0.5], 0, 255).astype(np.uint8)
    fixed = ColorConstancy()(image=cast)["image"]
    def imbalance(img: np.ndarray) -> float:
        means = img.reshape(-1, 3).mean(0)
        return float(means.max() / means.min())
    assert imbalance(fixed) < imbalance(cast)
    assert len(build_eval_transform(AugmentConfig(color_constancy=True)).transforms) == 1


def test_a_new_policy_is_one_table_entry(lesion: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both halves of a policy live in one entry: the device half runs on the batch, the rest in the loader."""
    import albumentations as A

    from melanoma_search.augment import policies
    from melanoma_search.augment.device import BatchPolicy
    from melanoma_search.augment.policies import Policy, get_policy, list_policies, register_policy

    monkeypatch.setattr(policies, "_POLICIES", policies._POLICIES.copy())
    register_policy(Policy("flips+blur", on_device=BatchPolicy(dihedral=True),
                           loader_equivalent=lambda: [A.HorizontalFlip(p=0.5)],
                           in_loader=lambda: [A.GaussianBlur(blur_limit=(3, 3), p=1.0)]))
    assert "flips+blur" in list_policies()
    config = AugmentConfig(policy="flips+blur")
    assert [type(t).__name__ for t in build_train_transform(config, size=128).transforms] == ["GaussianBlur"]
    whole = build_train_transform(config, size=128, batch_on_device=False)
    assert [type(t).__name__ for t in whole.transforms] == ["HorizontalFlip", "GaussianBlur"]
    assert get_policy("flips+blur").on_device.dihedral
    with pytest.raises(ValueError, match="unknown augmentation policy 'swirl'"):
        AugmentConfig(policy="swirl")
