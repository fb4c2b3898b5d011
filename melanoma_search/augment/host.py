"""The dermoscopy-specific per-sample transforms (albumentations), run in the loader workers on uint8 HWC arrays.

These are the extras the search can turn on beside a named policy (:mod:`melanoma_search.augment.policies`):

* ``hair``: dark strands drawn across the image, or real hair overlays pasted from a folder of RGBA PNGs;
* ``microscope``: the black circular vignette of a dermatoscope's field of view;
* ``color_constancy``: shades-of-grey colour constancy, a normalisation, so it also applies at validation and test;
* ``cutout``: coarse dropout of one large square.

They need the whole image at full precision and per-sample randomness that does not vectorise, so they stay on
the host; the cheap common part of every policy runs on the batch on the device (:mod:`melanoma_search.augment.device`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# albumentations asks PyPI for its latest version on import unless told not to: no network calls from a trial.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["ColorConstancy", "HairAugment", "Microscope"]


class ColorConstancy(A.ImageOnlyTransform):
    """Shades-of-grey colour constancy (Minkowski p-norm): removes the colour cast of different cameras and lights."""

    def __init__(self, power: float = 6.0, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.power = power

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        pixels = img.astype(np.float32)
        norm = np.power(np.mean(np.power(pixels, self.power), axis=(0, 1)), 1.0 / self.power)
        gain = np.sqrt(np.sum(norm**2)) / (norm * np.sqrt(3.0) + 1e-6)
        return np.clip(pixels * gain, 0, 255).astype(np.uint8)


class HairAugment(A.ImageOnlyTransform):
    """Add hair: paste RGBA overlays from ``hair_dir`` when given (the 2020 "advanced hair"), else draw strands."""

    def __init__(self, hair_dir: str | os.PathLike[str] | None = None, max_hairs: int = 4, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_hairs = max_hairs
        self.hair_dir = str(hair_dir) if hair_dir else None
        self._overlays: list[np.ndarray] | None = None

    def _load_overlays(self) -> list[np.ndarray]:
        if self._overlays is None:
            overlays: list[np.ndarray] = []
            if self.hair_dir:
                folder = Path(self.hair_dir)
                if not folder.is_dir():
                    raise FileNotFoundError(f"hair overlay folder not found: {folder}")
                for path in sorted(folder.glob("*.png")):
                    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                    if image is None or image.ndim != 3 or image.shape[2] != 4:
                        raise ValueError(f"hair overlay {path} must be an RGBA PNG")
                    overlays.append(cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA))
                if not overlays:
                    raise FileNotFoundError(f"no *.png hair overlays in {folder}")
            self._overlays = overlays
        return self._overlays

    def get_params(self) -> dict[str, Any]:
        return {"n_hairs": int(self.random_generator.integers(1, self.max_hairs + 1)),
                "seed": int(self.random_generator.integers(2**31))}

    def apply(self, img: np.ndarray, n_hairs: int = 1, seed: int = 0, **params: Any) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = img.copy()
        overlays = self._load_overlays()
        height, width = out.shape[:2]
        for _ in range(n_hairs):
            if overlays:
                hair = overlays[int(rng.integers(len(overlays)))]
                scale = rng.uniform(0.3, 0.8) * min(height, width) / max(hair.shape[:2])
                hair = cv2.resize(hair, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                hair = np.rot90(hair, int(rng.integers(4))).copy()
                h, w = min(hair.shape[0], height), min(hair.shape[1], width)
                y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                alpha = hair[:h, :w, 3:4].astype(np.float32) / 255.0
                region = out[y : y + h, x : x + w].astype(np.float32)
                out[y : y + h, x : x + w] = (region * (1 - alpha) + hair[:h, :w, :3] * alpha).astype(np.uint8)
            else:
                p0, p1, p2 = rng.uniform(0, 1, (3, 2)) * (width, height)
                t = np.linspace(0, 1, 30)[:, None]
                curve = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.int32)
                shade = float(rng.uniform(10, 50))
                cv2.polylines(out, [curve], False, (shade * 1.2, shade, shade * 0.8),
                              thickness=max(1, min(height, width) // 160), lineType=cv2.LINE_AA)
        return out


class Microscope(A.ImageOnlyTransform):
    """Black out everything outside a circle, as a dermatoscope's round field of view does."""

    def get_params(self) -> dict[str, Any]:
        return {"radius": float(self.random_generator.uniform(0.42, 0.6))}

    def apply(self, img: np.ndarray, radius: float = 0.5, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        mask = np.zeros((height, width), np.uint8)
        cv2.circle(mask, (width // 2, height // 2), int(radius * max(height, width)), 1, -1)
        return img * mask[..., None]
