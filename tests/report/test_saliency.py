"""Grad-CAM explains the input the member's model sees: its evaluation transform applied (colour constancy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma_search.augment.host import ColorConstancy
from melanoma_search.data.images import decode_image
from melanoma_search.report.saliency import member_input
from melanoma_search.train import apply_overrides, parse_config


def test_a_colour_constancy_members_maps_explain_the_corrected_image(ham_dir: Path) -> None:
    path = str(next((ham_dir / "images").glob("*.jpg")))
    base = {"image_size": 64, "model": {"name": "resnet18"}}
    plain = parse_config(base)
    corrected = parse_config(apply_overrides(base, {"augment.color_constancy": True}))
    decoded = decode_image(path, 64)
    assert np.array_equal(member_input(plain, path), decoded)
    assert np.array_equal(member_input(corrected, path), ColorConstancy()(image=decoded)["image"])
    assert not np.array_equal(member_input(corrected, path), decoded)  # a real dermoscopy cast, removed
