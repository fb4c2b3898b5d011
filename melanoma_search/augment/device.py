"""Augmentations applied to a whole batch on the training device, fused with the input normalisation.

The cheap, common augmentations (flips and transposes, small affine warps, brightness / contrast / hue /
saturation jitter) cost 0.5-1 ms an image on a loader core, which on a GPU node is the difference between a fed and
a starved accelerator. On the device they are nearly free, *if* they are few passes over the batch:

* geometry: the dihedral view (flip / transpose) and the affine warp of each image are composed into one 2x3 matrix
  per image, so the whole batch is resampled by a single ``grid_sample``;
* colour: brightness, contrast, hue rotation (in YIQ), saturation, value shift, the uint8 -> [0, 1] scaling and the
  backbone's mean/std normalisation are all affine maps of the RGB vector, composed into one 3x3 matrix and offset
  per image and applied by a single batched matrix product (``baddbmm``).

Parameters are drawn per sample, on the images' device, with the ranges and probabilities of the albumentations
transforms they replace (each policy's ``loader_equivalent`` in :mod:`melanoma_search.augment.policies`), so each
image still gets its own augmentation, and nothing waits for the GPU. One difference: intermediate colours are not
clipped to [0, 1] between the composed steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BatchPolicy", "DeviceConstants", "cutmix", "mixup", "prepare_batch", "shades_of_grey"]

# RGB -> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class DeviceConstants:
    """The constant tensors of :func:`prepare_batch`, copied to the device once.

    Creating a tensor from Python values on a GPU is a copy from pageable memory, which makes the host wait for the
    GPU's queue to drain; done per step it would stop the CPU from queueing the next step while the GPU works.
    """

    def __init__(self, device: torch.device, *, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        from_yiq = torch.linalg.inv(to_yiq)
        rotation = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
        # M(hue, sat) = luma + sat * cos(hue) * chroma + sat * sin(hue) * turn, in RGB
        self.luma = (from_yiq @ torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)) @ to_yiq).float()
        self.chroma = (from_yiq @ torch.diag(torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)) @ to_yiq).float()
        self.turn = (from_yiq @ rotation @ to_yiq).float()
        self.inv_std = 1.0 / torch.tensor(std, dtype=torch.float32)
        self.offset = -torch.tensor(mean, dtype=torch.float32) * self.inv_std
        self.swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        for name in ("luma", "chroma", "turn", "inv_std", "offset", "swap"):
            setattr(self, name, getattr(self, name).to(device))
        self.device = device


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

    def theta(self, n: int, constants: DeviceConstants, generator: torch.Generator | None = None
              ) -> torch.Tensor | None:
        """Per-image 2x3 sampling matrices (output -> input coordinates), or ``None`` for no geometric change."""
        if not self.dihedral and self.affine_p <= 0:
            return None
        device = constants.device
        linear = torch.eye(2, device=device).expand(n, 2, 2).clone()
        shift = torch.zeros(n, 2, device=device)
        if self.dihedral:  # independent fair coins: transpose, x-flip, y-flip -> the 8 views equally often
            coins = torch.rand(3, n, device=device, generator=generator) < 0.5
            linear = torch.where(coins[0].view(n, 1, 1), constants.swap.expand(n, 2, 2), linear)
            flips = torch.stack([torch.where(coins[1], -1.0, 1.0), torch.where(coins[2], -1.0, 1.0)], 1)
            linear = linear * flips[:, None, :]
        if self.affine_p > 0:
            chosen = torch.rand(n, device=device, generator=generator) < self.affine_p
            angle = _uniform(n, -self.rotate, self.rotate, device, generator) * (math.pi / 180) * chosen
            zoom = torch.where(chosen, _uniform(n, *self.scale, device, generator), 1.0)
            cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
            rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
            linear = rotation @ linear
            shift = _uniform(2 * n, -self.translate, self.translate, device, generator).view(n, 2) * 2 * chosen[:, None]
        return torch.cat([linear, shift[:, :, None]], dim=2)

    def colour(self, n: int, constants: DeviceConstants, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Per-image (hue/saturation matrix M, brightness b, contrast c, value v), or ``None`` for no jitter."""
        if self.brightness_contrast_p <= 0 and self.hsv_p <= 0:
            return None
        device = constants.device
        b = c = v = torch.zeros(n, device=device)
        matrix = torch.eye(3, device=device).expand(n, 3, 3)
        if self.brightness_contrast_p > 0:
            chosen = torch.rand(n, device=device, generator=generator) < self.brightness_contrast_p
            b = _uniform(n, -self.brightness, self.brightness, device, generator) * chosen
            c = _uniform(n, -self.contrast, self.contrast, device, generator) * chosen
        if self.hsv_p > 0:
            chosen = torch.rand(n, device=device, generator=generator) < self.hsv_p
            hue = _uniform(n, -self.hue_degrees, self.hue_degrees, device, generator) * (math.pi / 180) * chosen
            sat = 1 + _uniform(n, -self.saturation, self.saturation, device, generator) * 2.5 * chosen
            v = _uniform(n, -self.value, self.value, device, generator) * chosen
            cos, sin = (torch.cos(hue) * sat).view(n, 1, 1), (torch.sin(hue) * sat).view(n, 1, 1)
            matrix = constants.luma + cos * constants.chroma + sin * constants.turn
        return matrix, b, c, v


def _uniform(n: int, low: float, high: float, device: torch.device, generator: torch.Generator | None
             ) -> torch.Tensor:
    return torch.rand(n, device=device, generator=generator) * (high - low) + low


def prepare_batch(
    pixels: torch.Tensor,
    *,
    constants: DeviceConstants,
    policy: BatchPolicy | None = None,
    channels_last: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """uint8 NCHW pixels (on the device) -> augmented, normalised float NCHW: one resampling, one colour product."""
    images = pixels.float()
    n, _, height, width = images.shape
    device = images.device
    theta = policy.theta(n, constants, generator) if policy is not None else None
    if theta is not None:
        grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    inv_std, offset = constants.inv_std, constants.offset
    jitter = policy.colour(n, constants, generator) if policy is not None else None
    if jitter is None:
        matrix = torch.diag(inv_std / 255.0).expand(n, 3, 3)
        bias = offset.expand(n, 3)
    else:  # y01 = M((1 + c)(x01 - m01) + m01 + b) + v, then (y01 - mean) / std, all as z = A x + t
        hue_sat, b, c, v = jitter
        needs_grey = policy is not None and policy.brightness_contrast_p > 0  # contrast pivots on the image's mean
        grey = images.mean(dim=(1, 2, 3)) / 255.0 if needs_grey else torch.zeros(n, device=device)
        scaled = hue_sat * (1 + c).view(n, 1, 1) / 255.0
        matrix = inv_std.view(1, 3, 1) * scaled
        shift = hue_sat @ (b - c * grey).view(n, 1, 1).expand(n, 3, 1) + v.view(n, 1, 1)
        bias = (inv_std.view(1, 3, 1) * shift).squeeze(2) + offset
    out = torch.baddbmm(bias.unsqueeze(2), matrix, images.reshape(n, 3, height * width)).view(n, 3, height, width)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


def shades_of_grey(pixels: torch.Tensor, *, power: float = 6.0) -> torch.Tensor:
    """Shades-of-grey colour constancy of uint8 batches (N, 3, H, W), exactly as the host's ``ColorConstancy`` does it
    to one image, in operations an ONNX graph holds: per image and channel, the Minkowski ``power``-norm of the
    pixels sets a gain that makes the channels' norms equal."""
    values = pixels.float()
    norm = values.pow(power).mean(dim=(2, 3), keepdim=True).pow(1.0 / power)
    gain = norm.pow(2).sum(dim=1, keepdim=True).sqrt() / (norm * 3.0**0.5 + 1e-6)
    return (values * gain).clamp(0, 255).floor().to(torch.uint8)


def mixup(images: torch.Tensor, *, alpha: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Blend each image with a shuffled partner; return the mixed batch, the partner order and the weight ``lam``."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    order = torch.randperm(images.shape[0], device=images.device)
    mixed = images.float() * lam + images[order].float() * (1 - lam)
    return mixed.to(images.dtype), order, lam


def cutmix(images: torch.Tensor, *, alpha: float, generator: torch.Generator | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste a box from a shuffled partner; ``lam`` is the share of each image that stays its own."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    order = torch.randperm(images.shape[0], device=images.device)
    height, width = images.shape[-2:]
    cut_h, cut_w = int(height * (1 - lam) ** 0.5), int(width * (1 - lam) ** 0.5)
    cy, cx = int(torch.randint(height, (1,), generator=generator)), int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = images.clone()
    mixed[..., y0:y1, x0:x1] = images[order][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    return mixed, order, lam
