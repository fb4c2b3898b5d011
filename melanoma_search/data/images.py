"""Decoding one image file into a square RGB array, with errors that name the file.

Pillow's JPEG ``draft`` mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale straight from the DCT coefficients, so a
1024 px file feeding a 256 px trial costs a fraction of a full decode. Grayscale, RGBA, palette and CMYK files are
converted to RGB; a truncated or corrupt file raises :class:`~melanoma_search.errors.ImageError`.

One resize for every door: Pillow's box filter when shrinking, bilinear when enlarging (:func:`resize_square`). The
portable scorer, which may import only numpy, Pillow and onnxruntime, resizes with the very same calls, so training,
``predict`` and the scorer see the same pixels. Ensembles exported before this (no ``resize`` in their manifest) were
trained on OpenCV's area / bilinear resize and keep it when they score (``resize="opencv"``), so their scores do not
move; the two filters differ by about half a grey level on average and up to 16 on a 600x450 lesion.
"""

from __future__ import annotations

import io
import os
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from melanoma_search.errors import ImageError

__all__ = ["RESIZES", "Resize", "decode_image", "resize_square"]

Resize = Literal["pillow", "opencv"]
#: The resizes an image can be read with: ``pillow`` (every export since it was recorded), ``opencv`` (older ones).
RESIZES: tuple[Resize, ...] = ("pillow", "opencv")


def _hdf5(path: str) -> Any:
    """An open HDF5 file of encoded images, one handle per file and process (ISIC 2024's ``train-image.hdf5``):
    keyed by the process too, since a handle inherited by a forked cache decoder is not safe to use there."""
    import h5py

    key = (os.getpid(), path)
    if key not in _OPEN:
        _OPEN[key] = h5py.File(path, "r")
    return _OPEN[key]


_OPEN: dict[tuple[int, str], Any] = {}


def _source(path: str | os.PathLike[str]) -> str | os.PathLike[str] | io.BytesIO:
    """A file path, or for ``<file>::<key>`` the encoded bytes stored under ``key`` in that HDF5 file."""
    text = str(path)
    if "::" not in text:
        return path
    file, key = text.split("::", 1)
    try:
        return io.BytesIO(bytes(np.asarray(_hdf5(file)[key])))
    except (KeyError, OSError) as exc:
        raise FileNotFoundError(f"{key} in {file}: {exc}") from None


def resize_square(rgb: Image.Image, size: int) -> Image.Image:
    """``rgb`` squashed to ``size`` x ``size``: box filter when shrinking (each pixel the mean of the area it covers),
    bilinear when enlarging. The portable scorer's ``decode`` makes the same calls (tests/portable checks the pixels
    are identical)."""
    if rgb.size == (size, size):
        return rgb
    shrinking = rgb.size[0] > size or rgb.size[1] > size
    return rgb.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def decode_image(path: str | os.PathLike[str], size: int, *, resize: Resize = "pillow") -> np.ndarray:
    """Read ``path`` and return a ``(size, size, 3)`` uint8 RGB array (squashed to a square, as the 2020 sets were).

    ``path`` is a file, or ``<file.hdf5>::<key>`` for an image stored in an HDF5 file. ``resize``: ``pillow``
    (:func:`resize_square`), or ``opencv`` for an ensemble exported before the resize was one (see the module
    docstring). The array is the caller's own: writable and C-contiguous, so ``torch.from_numpy`` takes it as it is
    (a view of Pillow's buffer is read-only, and torch warns on those)."""
    try:
        with Image.open(_source(path)) as image:
            if image.format == "JPEG":
                image.draft("RGB", (size, size))
            image.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES stays False)
            rgb = _to_rgb(image)
            if resize == "pillow":
                rgb = resize_square(rgb, size)
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {path}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"not a readable image (corrupt or unknown format): {path}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image {path}: {exc}") from exc
    array: np.ndarray = np.array(rgb, dtype=np.uint8)  # a copy: np.asarray would view Pillow's bytes
    if array.shape[:2] != (size, size):  # resize="opencv": an ensemble exported before the one resize
        shrinking = array.shape[0] > size or array.shape[1] > size
        array = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return array


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")  # L, I;16, P, CMYK, YCbCr
