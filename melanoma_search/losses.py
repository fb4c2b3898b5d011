"""Losses, behind one factory so a config names them.

All losses take ``(logits, target)``: for a binary target the logits are ``(N, 1)`` and the target a float in
[0, 1] (soft after mixup); for a multi-class target (diagnosis, or ArcFace's two classes) the logits are ``(N, C)``
and the target a class index. Every loss is a mean over the batch, so gradient accumulation can weight micro-batches
by their share of the effective batch and get the big batch's gradient exactly (the AUC surrogate, being pairwise,
is the one exception: its micro-batches only see their own pairs).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BINARY_LOSSES",
    "MULTICLASS_LOSSES",
    "ArcFaceLoss",
    "AUCSurrogateLoss",
    "BCELoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "MarginFocalLoss",
    "MulticlassFocalLoss",
    "build_loss",
]

BINARY_LOSSES: tuple[str, ...] = ("bce", "ce", "focal", "margin_focal", "auc", "arcface")
MULTICLASS_LOSSES: tuple[str, ...] = ("ce", "bce", "focal", "arcface")


class BCELoss(nn.Module):
    """Binary cross-entropy with label smoothing: targets are pulled towards 0.5 by ``smoothing``."""

    def __init__(self, *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return F.binary_cross_entropy_with_logits(logits.view(-1).float(), target.view(-1))


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017): down-weights easy examples by ``(1 - p_t) ** gamma``.

    ``alpha`` weights the positive class (``1 - alpha`` the negative); ``None`` weights both equally.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = 0.25, smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.alpha, self.smoothing = gamma, alpha, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1) * (1 - self.smoothing) + 0.5 * self.smoothing
        return _focal(logits, target, gamma=self.gamma, alpha=self.alpha)


def _focal(logits: torch.Tensor, target: torch.Tensor, *, gamma: float, alpha: float | None) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = bce * (1 - p_t).clamp_min(0).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss.mean()


class MarginFocalLoss(nn.Module):
    """Focal loss on margin-shifted logits: a positive must beat ``+margin`` and a negative ``-margin``.

    The margin focal loss of several 2020 top solutions: the margin keeps pushing confident-but-close examples apart,
    which is what a ranking metric like AUC rewards.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = None, margin: float = 0.2, scale: float = 1.0
                 ) -> None:
        super().__init__()
        self.gamma, self.alpha, self.margin, self.scale = gamma, alpha, margin, scale

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1)
        shifted = self.scale * (logits - self.margin * (2 * target - 1))
        return _focal(shifted, target, gamma=self.gamma, alpha=self.alpha)


class AUCSurrogateLoss(nn.Module):
    """Pairwise logistic ranking loss over (positive, negative) pairs in the batch, plus ``bce_weight`` x BCE.

    AUC is the share of correctly ordered pairs; the logistic surrogate ``log(1 + exp(-(s_pos - s_neg) / tau))`` is
    its smooth upper bound. A batch without both classes has no pair, so the BCE term keeps every batch useful.
    """

    def __init__(self, *, tau: float = 1.0, bce_weight: float = 0.5) -> None:
        super().__init__()
        self.tau, self.bce_weight = tau, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        pos, neg = logits[target > 0.5], logits[target <= 0.5]
        if pos.numel() == 0 or neg.numel() == 0:
            return bce
        rank = F.softplus(-(pos[:, None] - neg[None, :]) / self.tau).mean()
        return rank + self.bce_weight * bce


class MulticlassFocalLoss(nn.Module):
    """Softmax focal loss over classes, with label smoothing."""

    def __init__(self, *, gamma: float = 2.0, smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target.long(), reduction="none", label_smoothing=self.smoothing)
        p_t = torch.softmax(logits, dim=1).gather(1, target.long().view(-1, 1)).view(-1)
        return (ce * (1 - p_t).pow(self.gamma)).mean()


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with label smoothing (class-index targets)."""

    def __init__(self, *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target.long(), label_smoothing=self.smoothing)


class ArcFaceLoss(nn.Module):
    """Additive angular margin (Deng et al. 2019) on cosine logits from :class:`~melanoma_search.models.ArcFaceHead`.

    The target class's angle is widened by ``margin`` before scaling by ``scale`` and a softmax cross-entropy, so
    classes must be separated by an angular gap, which tightens each class and helped 2020 rankers.
    """

    def __init__(self, *, scale: float = 30.0, margin: float = 0.5, smoothing: float = 0.0) -> None:
        super().__init__()
        self.scale, self.margin, self.smoothing = scale, margin, smoothing
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, cosine: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cosine = cosine.float().clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine**2)
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where(cosine > self.threshold, phi, cosine - self.mm)  # keep it monotonic past pi - m
        one_hot = F.one_hot(target.long().view(-1), cosine.shape[1]).float()
        logits = self.scale * (one_hot * phi + (1 - one_hot) * cosine)
        return F.cross_entropy(logits, target.long().view(-1), label_smoothing=self.smoothing)


def build_loss(
    name: str,
    *,
    target: Literal["binary", "diagnosis"] = "binary",
    smoothing: float = 0.0,
    gamma: float = 2.0,
    alpha: float | None = 0.25,
    margin: float = 0.2,
    arc_scale: float = 30.0,
    arc_margin: float = 0.5,
    tau: float = 1.0,
    bce_weight: float = 0.5,
) -> nn.Module:
    """Create the loss ``name`` for ``target`` with its parameters; parameters a loss does not use are ignored.

    ``bce`` and ``ce`` both name cross-entropy of the target's kind (sigmoid for binary, softmax for diagnosis), so a
    search space can pair one loss list with either target.
    """
    if name == "arcface":
        return ArcFaceLoss(scale=arc_scale, margin=arc_margin, smoothing=smoothing)
    if target == "binary":
        if name in ("bce", "ce"):
            return BCELoss(smoothing=smoothing)
        if name == "focal":
            return FocalLoss(gamma=gamma, alpha=alpha, smoothing=smoothing)
        if name == "margin_focal":
            return MarginFocalLoss(gamma=gamma, alpha=alpha, margin=margin)
        if name == "auc":
            return AUCSurrogateLoss(tau=tau, bce_weight=bce_weight)
        raise ValueError(f"unknown loss {name!r} for a binary target; allowed: {', '.join(BINARY_LOSSES)}")
    if name in ("ce", "bce"):
        return CrossEntropyLoss(smoothing=smoothing)
    if name == "focal":
        return MulticlassFocalLoss(gamma=gamma, smoothing=smoothing)
    raise ValueError(f"unknown loss {name!r} for a diagnosis target; allowed: {', '.join(MULTICLASS_LOSSES)}")
