"""Augmentations applied to a whole batch on the training device: geometry, colour, cutmix and mixup.

The cheap, common augmentations (flips and transposes, small affine warps, brightness / contrast / hue /
saturation jitter) cost 0.5-1 ms an image on a loader core, which on a GPU node is the difference between a fed and
a starved accelerator. On the batch, on the device, they cost almost nothing: one batched ``grid_sample`` and a few
elementwise ops. Parameters are drawn per sample, so each image still gets its own augmentation, with the same
ranges and probabilities as the albumentations transforms they replace (:mod:`melanoma_search.augment`).

Images here are float NCHW in [0, 1], before the backbone's mean/std normalisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BatchPolicy", "batch_policy", "cutmix", "mixup", "random_affine", "random_colour", "random_dihedral"]


@dataclass(frozen=True)
class BatchPolicy:
    """The device-side part of an augmentation policy."""

    dihedral: bool = False
    affine_p: float = 0.0
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05
    rotate: float = 30.0
    brightness_contrast_p: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    hsv_p: float = 0.0
    hue_degrees: float = 20.0
    saturation: float = 0.08
    value: float = 0.04

    def __call__(self, images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.dihedral:
            images = random_dihedral(images, generator=generator)
        if self.affine_p > 0:
            images = random_affine(images, p=self.affine_p, scale=self.scale, translate=self.translate,
                                   rotate=self.rotate, generator=generator)
        if self.brightness_contrast_p > 0 or self.hsv_p > 0:
            images = random_colour(images, bc_p=self.brightness_contrast_p, brightness=self.brightness,
                                   contrast=self.contrast, hsv_p=self.hsv_p, hue_degrees=self.hue_degrees,
                                   saturation=self.saturation, value=self.value, generator=generator)
        return images


def batch_policy(name: str) -> BatchPolicy:
    """What each named policy does on the device (the rest runs per sample in the loader)."""
    if name == "none":
        return BatchPolicy()
    if name == "light":
        return BatchPolicy(dihedral=True, brightness_contrast_p=0.5, brightness=0.1, contrast=0.1)
    if name == "medium":
        return BatchPolicy(dihedral=True, affine_p=0.7, brightness_contrast_p=0.6, hsv_p=0.5)
    if name == "heavy":  # its distortions, blurs and CLAHE stay in the loader; only the flips move here
        return BatchPolicy(dihedral=True)
    raise ValueError(f"unknown augmentation policy {name!r}; allowed: none, light, medium, heavy")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def _chosen(n: int, p: float, generator: torch.Generator | None) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p).nonzero().flatten()


def random_dihedral(images: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Give each square NCHW image one of the 8 dihedral views (identity, flips, transposes), uniformly at random."""
    codes = torch.randint(0, 8, (images.shape[0],), generator=generator)
    out = images.clone()
    for code in range(1, 8):
        index = (codes == code).nonzero().flatten()
        if index.numel() == 0:
            continue
        index = index.to(images.device)
        view = images.index_select(0, index)
        if code & 4:
            view = view.transpose(-1, -2)
        if code & 1:
            view = view.flip(-1)
        if code & 2:
            view = view.flip(-2)
        out.index_copy_(0, index, view)
    return out


def random_affine(images: torch.Tensor, *, p: float, scale: tuple[float, float], translate: float, rotate: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale, shift (a fraction of the side) and rotate (degrees) a random ``p`` share of the batch; edges reflect."""
    index = _chosen(images.shape[0], p, generator)
    if index.numel() == 0:
        return images
    n = index.numel()
    angle = _uniform(n, -rotate, rotate, generator) * math.pi / 180
    zoom = _uniform(n, *scale, generator)
    shift = _uniform(2 * n, -translate, translate, generator).view(n, 2) * 2  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    index = index.to(images.device)
    chosen = images.index_select(0, index)
    grid = F.affine_grid(theta.to(images.device, chosen.dtype), list(chosen.shape), align_corners=False)
    warped = F.grid_sample(chosen, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return images.index_copy(0, index, warped.to(images.dtype))


# RGB -> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def random_colour(images: torch.Tensor, *, bc_p: float, brightness: float, contrast: float, hsv_p: float,
                  hue_degrees: float, saturation: float, value: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample brightness / contrast (probability ``bc_p``) and hue / saturation / value (``hsv_p``) jitter."""
    n = images.shape[0]
    out = images
    index = _chosen(n, bc_p, generator)
    if index.numel():
        k = index.numel()
        b = _uniform(k, -brightness, brightness, generator).view(k, 1, 1, 1).to(images.device, images.dtype)
        c = _uniform(k, -contrast, contrast, generator).view(k, 1, 1, 1).to(images.device, images.dtype)
        index = index.to(images.device)
        chosen = out.index_select(0, index)
        mean = chosen.mean(dim=(1, 2, 3), keepdim=True)
        out = out.index_copy(0, index, ((chosen - mean) * (1 + c) + mean + b).clamp(0, 1))
    index = _chosen(n, hsv_p, generator)
    if index.numel():
        k = index.numel()
        hue = _uniform(k, -hue_degrees, hue_degrees, generator) * math.pi / 180
        sat = 1 + _uniform(k, -saturation, saturation, generator) * 2.5  # an additive S shift of ~x on mid tones
        val = _uniform(k, -value, value, generator)
        cos, sin, zero, one = torch.cos(hue) * sat, torch.sin(hue) * sat, torch.zeros(k), torch.ones(k)
        chroma = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                              torch.stack([zero, sin, cos], 1)], 1)
        to_yiq = torch.tensor(_RGB_TO_YIQ)
        matrix = (torch.linalg.inv(to_yiq) @ chroma @ to_yiq).to(images.device, images.dtype)
        index = index.to(images.device)
        chosen = out.index_select(0, index)
        mixed = torch.einsum("kij,kjhw->kihw", matrix, chosen) + val.view(k, 1, 1, 1).to(images.device, images.dtype)
        out = out.index_copy(0, index, mixed.clamp(0, 1))
    return out


def mixup(images: torch.Tensor, *, alpha: float, generator: torch.Generator | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Blend each image with a shuffled partner; return the mixed batch, the partner order and the weight ``lam``."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    mixed = images.float() * lam + images[order].float() * (1 - lam)
    return mixed.to(images.dtype), order, lam


def cutmix(images: torch.Tensor, *, alpha: float, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box from a shuffled partner; ``lam`` is the share of each image that stays its own."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    order = torch.randperm(images.shape[0], generator=generator).to(images.device)
    height, width = images.shape[-2:]
    cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(height, (1,), generator=generator)), int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[order][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, order, lam
