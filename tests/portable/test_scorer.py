"""The portable scorer reads images exactly as the toolkit does: the same pixels on real-size images, whichever way
they are resized (predict used OpenCV and the scorer Pillow, and their scores differed by up to 0.094)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from melanoma_search.data.images import decode_image
from tests.conftest import shared_path

SCORER = Path(__file__).resolve().parents[2] / "melanoma_search" / "portable" / "scorer.py"


def _scorer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("portable_scorer", SCORER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_size(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Outside dermoscopy images at the size the cameras give (600x450 as HAM10000's, and upright 450x600), JPEG."""
    source = shared_path("isic2018-test-ext", "images")
    out = tmp_path_factory.mktemp("real-size")
    paths = []
    for index, image in enumerate(sorted(source.glob("*.jpg"))[:6]):
        size = (600, 450) if index % 2 == 0 else (450, 600)
        with Image.open(image) as loaded:
            path = out / f"{image.stem}.jpg"
            loaded.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
        paths.append(path)
    return paths


@pytest.mark.parametrize("size", [128, 192, 256, 512, 700])
def test_the_scorer_decodes_the_same_pixels_as_the_toolkit(real_size: list[Path], size: int) -> None:
    scorer = _scorer()
    for path in real_size:
        toolkit = decode_image(path, size)
        portable = scorer.decode(path, size).transpose(1, 2, 0)
        assert np.array_equal(toolkit, portable), f"{path.name} at {size} px"


def test_an_ensemble_exported_before_keeps_opencvs_pixels(real_size: list[Path]) -> None:
    """``resize="opencv"``: what older ensembles trained on, so their scores do not move; it is another filter (the
    check above would catch the toolkit falling back to it)."""
    differs = [np.abs(decode_image(p, 192, resize="opencv").astype(int) - decode_image(p, 192).astype(int)).max()
               for p in real_size]
    assert max(differs) > 0
