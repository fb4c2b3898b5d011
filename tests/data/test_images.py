from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from melanoma_search.data.images import decode_image
from melanoma_search.errors import ImageError


@pytest.fixture()
def real_jpeg(ham_dir: Path) -> Path:
    return next((ham_dir / "images").glob("*.jpg"))


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_odd_modes_become_rgb(tmp_path: Path, real_jpeg: Path, mode: str) -> None:
    source = Image.open(real_jpeg)
    converted = source.convert(mode) if mode != "I;16" else source.convert("L").convert("I;16")
    path = tmp_path / ("img.tif" if mode in ("CMYK", "I;16") else "img.png")
    if mode == "CMYK":
        path = tmp_path / "img.jpg"
    converted.save(path)
    array = decode_image(path, 64)
    assert array.shape == (64, 64, 3) and array.dtype == np.uint8


def test_jpeg_is_resized_to_square(real_jpeg: Path) -> None:
    assert decode_image(real_jpeg, 100).shape == (100, 100, 3)
    assert decode_image(real_jpeg, 300).shape == (300, 300, 3)


def test_a_decoded_image_is_the_callers_own(real_jpeg: Path) -> None:
    """At its own size (no resize) too: torch.from_numpy warns on a read-only view of Pillow's buffer."""
    with Image.open(real_jpeg) as image:
        native = image.size[0]
    for size in (native, 64):
        array = decode_image(real_jpeg, size)
        assert array.flags.writeable and array.flags.c_contiguous, size


def test_truncated_and_corrupt_files_name_the_file(tmp_path: Path, real_jpeg: Path) -> None:
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real_jpeg.read_bytes()[:2000])
    with pytest.raises(ImageError, match="truncated.jpg"):
        decode_image(truncated, 64)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageError, match="garbage.jpg"):
        decode_image(garbage, 64)
    with pytest.raises(ImageError, match="not found: .*absent.jpg"):
        decode_image(tmp_path / "absent.jpg", 64)
