"""Losses, their ``loss:`` config section, and the table that a config's ``loss.name`` is looked up in.

Each loss is registered once with :func:`register_loss`, which records what the rest of the package needs to know
about it: which targets it supports, which head it needs, how wide the model's output must be, and how to build it
from the config section. A new loss is one class and one decorated builder (see docs/architecture.md, "Extending").

All losses take ``(logits, target, weight=None)``: for a binary target the logits are ``(N, 1)`` and the target a
float in [0, 1] (soft after mixup, or a pseudo-label's probability); for a multi-class target (diagnosis, or ArcFace's
two classes) the logits are ``(N, C)`` and the target a class index. ``weight`` (``(N,)``, optional) scales each
row's loss: pseudo-labelled rows train at a lower weight than labelled ones. Every loss is a mean over the batch
(of the weighted row losses), so gradient accumulation can weight micro-batches by their share of the effective batch
and get the big batch's gradient exactly (the AUC surrogate, being pairwise, is the one exception: its micro-batches
only see their own pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import nn

from melanoma_search.data.prepare import MELANOMA
from melanoma_search.registry import Registry
from melanoma_search.schema import StrictModel

__all__ = [
    "AUCSurrogateLoss",
    "ArcFaceLoss",
    "BCELoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LossConfig",
    "LossEntry",
    "MarginFocalLoss",
    "MulticlassFocalLoss",
    "OutputLayout",
    "Target",
    "build_loss",
    "get_loss",
    "list_losses",
    "output_layout",
    "register_loss",
]

Target = Literal["binary", "diagnosis"]


class BCELoss(nn.Module):
    """Binary cross-entropy with label smoothing: targets are pulled towards 0.5 by ``smoothing``."""

    def __init__(self, *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        rows = F.binary_cross_entropy_with_logits(logits.view(-1).float(), target.view(-1), reduction="none")
        return _mean(rows, weight)


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017): down-weights easy examples by ``(1 - p_t) ** gamma``.

    ``alpha`` weights the positive class (``1 - alpha`` the negative); ``None`` weights both equally.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = 0.25, smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.alpha, self.smoothing = gamma, alpha, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1) * (1 - self.smoothing) + 0.5 * self.smoothing
        return _mean(_focal(logits, target, gamma=self.gamma, alpha=self.alpha), weight)


def _mean(rows: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The batch mean of per-row losses, each scaled by its row's weight when given."""
    return rows.mean() if weight is None else (rows * weight.float().view(-1)).mean()


def _focal(logits: torch.Tensor, target: torch.Tensor, *, gamma: float, alpha: float | None) -> torch.Tensor:
    """Per-row focal loss; a soft target (a pseudo-label's probability) weighs both classes' terms by it."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    prob = torch.sigmoid(logits)
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = bce * (1 - p_t).clamp_min(0).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return loss


class MarginFocalLoss(nn.Module):
    """Focal loss on margin-shifted logits: a positive must beat ``+margin`` and a negative ``-margin``.

    The margin focal loss of several 2020 top solutions: the margin keeps pushing confident-but-close examples apart,
    which is what a ranking metric like AUC rewards.
    """

    def __init__(self, *, gamma: float = 2.0, alpha: float | None = None, margin: float = 0.2, scale: float = 1.0
                 ) -> None:
        super().__init__()
        self.gamma, self.alpha, self.margin, self.scale = gamma, alpha, margin, scale

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1)
        shifted = self.scale * (logits - self.margin * (2 * target - 1))
        return _mean(_focal(shifted, target, gamma=self.gamma, alpha=self.alpha), weight)


class AUCSurrogateLoss(nn.Module):
    """Pairwise logistic ranking loss over (positive, negative) pairs in the batch, plus ``bce_weight`` x BCE.

    AUC is the share of correctly ordered pairs; the logistic surrogate ``log(1 + exp(-(s_pos - s_neg) / tau))`` is
    its smooth upper bound. A batch without both classes has no pair, so the BCE term keeps every batch useful.
    """

    def __init__(self, *, tau: float = 1.0, bce_weight: float = 0.5) -> None:
        super().__init__()
        self.tau, self.bce_weight = tau, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = logits.view(-1).float()
        target = target.float().view(-1)
        rows = torch.ones_like(logits) if weight is None else weight.float().view(-1)
        bce = _mean(F.binary_cross_entropy_with_logits(logits, target, reduction="none"), rows)
        positive = target > 0.5
        pos, neg = logits[positive], logits[~positive]
        if pos.numel() == 0 or neg.numel() == 0:
            return bce
        pairs = rows[positive][:, None] * rows[~positive][None, :]  # a pair weighs what both its rows weigh
        rank = (F.softplus(-(pos[:, None] - neg[None, :]) / self.tau) * pairs).mean()
        return rank + self.bce_weight * bce


class MulticlassFocalLoss(nn.Module):
    """Softmax focal loss over classes, with label smoothing."""

    def __init__(self, *, gamma: float = 2.0, smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(logits, target.long(), reduction="none", label_smoothing=self.smoothing)
        p_t = torch.softmax(logits, dim=1).gather(1, target.long().view(-1, 1)).view(-1)
        return _mean(ce * (1 - p_t).pow(self.gamma), weight)


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy with label smoothing (class-index targets)."""

    def __init__(self, *, smoothing: float = 0.0) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        rows = F.cross_entropy(logits.float(), target.long(), label_smoothing=self.smoothing, reduction="none")
        return _mean(rows, weight)


class ArcFaceLoss(nn.Module):
    """Additive angular margin (Deng et al. 2019) on cosine logits from :class:`~.network.ArcFaceHead`.

    The target class's angle is widened by ``margin`` before scaling by ``scale`` and a softmax cross-entropy, so
    classes must be separated by an angular gap, which tightens each class and helped 2020 rankers.
    """

    def __init__(self, *, scale: float = 30.0, margin: float = 0.5, smoothing: float = 0.0) -> None:
        super().__init__()
        self.scale, self.margin, self.smoothing = scale, margin, smoothing
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)
        self.mm = math.sin(math.pi - margin) * margin

    def forward(self, cosine: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
                ) -> torch.Tensor:
        cosine = cosine.float().clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine**2)
        phi = cosine * self.cos_m - sine * self.sin_m
        phi = torch.where(cosine > self.threshold, phi, cosine - self.mm)  # keep it monotonic past pi - m
        one_hot = F.one_hot(target.long().view(-1), cosine.shape[1]).float()
        logits = self.scale * (one_hot * phi + (1 - one_hot) * cosine)
        rows = F.cross_entropy(logits, target.long().view(-1), label_smoothing=self.smoothing, reduction="none")
        return _mean(rows, weight)


# ------------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class LossEntry:
    """What the package knows about a registered loss."""

    name: str
    build: Callable[[LossConfig, Target], nn.Module]
    targets: tuple[Target, ...]
    """The targets it supports; a config pairing it with another is refused up front."""
    head: str | None
    """The model head it needs (and that needs it), e.g. ArcFace's cosine head."""
    classes_for_binary: int
    """Output width for a binary target: 1 (a sigmoid logit) or 2 (two class cosines, for ArcFace)."""
    reads: Mapping[Target, tuple[str, ...]] | None = None
    """The ``loss:`` keys its ``build`` uses, per target; another key set to a non-default value is refused (it
    would do nothing). ``None``: not declared, nothing refused."""

    def unused(self, config: LossConfig, *, target: Target) -> list[str]:
        """The keys of ``config`` set away from their defaults that this loss ignores for ``target``."""
        if self.reads is None:
            return []
        return sorted(key for key in config.model_fields_set - {"name"} if key not in self.reads.get(target, ())
                      and getattr(config, key) != LossConfig.model_fields[key].default)


_LOSSES: Registry[LossEntry] = Registry("loss")


def register_loss(*names: str, targets: tuple[Target, ...] = ("binary", "diagnosis"), head: str | None = None,
                  classes_for_binary: int = 1, reads: tuple[str, ...] | Mapping[Target, tuple[str, ...]] | None = None
                  ) -> Callable[[Callable[[LossConfig, Target], nn.Module]], Callable[[LossConfig, Target], nn.Module]]:
    """Register the decorated ``build(config, target) -> nn.Module`` under each of ``names``.

    ``reads``: the ``loss:`` keys ``build`` uses (the same for every target, or per target), so that a key it
    ignores is refused up front instead of silently doing nothing.
    """
    per_target = {t: reads for t in targets} if isinstance(reads, tuple) else reads

    def decorate(build: Callable[[LossConfig, Target], nn.Module]) -> Callable[[LossConfig, Target], nn.Module]:
        for name in names:
            _LOSSES.add(name, LossEntry(name=name, build=build, targets=targets, head=head,
                                        classes_for_binary=classes_for_binary, reads=per_target))
        return build

    return decorate


def list_losses(target: Target | None = None) -> tuple[str, ...]:
    """Registered loss names (those supporting ``target`` when given)."""
    return tuple(e.name for e in _LOSSES if target is None or target in e.targets)


def get_loss(name: str) -> LossEntry:
    return _LOSSES.get(name)


def _known_loss(name: str) -> str:
    get_loss(name)
    return name


class LossConfig(StrictModel):
    name: Annotated[str, AfterValidator(_known_loss)] = "bce"
    """A registered loss (:func:`list_losses`). ``bce`` and ``ce`` both mean cross-entropy: sigmoid for a binary
    target, softmax for diagnosis."""
    smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    gamma: float = Field(2.0, ge=0.0)
    alpha: float | None = Field(0.25, gt=0.0, lt=1.0)
    margin: float = Field(0.2, ge=0.0)
    arc_scale: float = Field(30.0, gt=0.0)
    arc_margin: float = Field(0.5, ge=0.0, lt=1.5)
    tau: float = Field(1.0, gt=0.0)
    bce_weight: float = Field(0.5, ge=0.0)


def build_loss(config: LossConfig, *, target: Target = "binary") -> nn.Module:
    """Create the configured loss for ``target``; a target the loss does not support is a ``ValueError``."""
    entry = get_loss(config.name)
    if target not in entry.targets:
        raise ValueError(f"unknown loss {config.name!r} for a {target} target; allowed: "
                         f"{', '.join(list_losses(target))}")
    return entry.build(config, target)


@register_loss("bce", "ce", reads=("smoothing",))
def _cross_entropy(config: LossConfig, target: Target) -> nn.Module:
    if target == "binary":
        return BCELoss(smoothing=config.smoothing)
    return CrossEntropyLoss(smoothing=config.smoothing)


@register_loss("focal", reads={"binary": ("gamma", "alpha", "smoothing"), "diagnosis": ("gamma", "smoothing")})
def _focal_loss(config: LossConfig, target: Target) -> nn.Module:
    if target == "binary":
        return FocalLoss(gamma=config.gamma, alpha=config.alpha, smoothing=config.smoothing)
    return MulticlassFocalLoss(gamma=config.gamma, smoothing=config.smoothing)


@register_loss("margin_focal", targets=("binary",), reads=("gamma", "alpha", "margin"))
def _margin_focal(config: LossConfig, target: Target) -> nn.Module:
    return MarginFocalLoss(gamma=config.gamma, alpha=config.alpha, margin=config.margin)


@register_loss("auc", targets=("binary",), reads=("tau", "bce_weight"))
def _auc(config: LossConfig, target: Target) -> nn.Module:
    return AUCSurrogateLoss(tau=config.tau, bce_weight=config.bce_weight)


@register_loss("arcface", head="arcface", classes_for_binary=2, reads=("arc_scale", "arc_margin", "smoothing"))
def _arcface(config: LossConfig, target: Target) -> nn.Module:
    return ArcFaceLoss(scale=config.arc_scale, margin=config.arc_margin, smoothing=config.smoothing)


# ------------------------------------------------------------------------------------------------ output layout
@dataclass(frozen=True)
class OutputLayout:
    """How a model's outputs read as P(melanoma): output width, melanoma's column, softmax scale."""

    n_outputs: int
    melanoma_index: int
    scale: float


def output_layout(config: LossConfig, *, target: Target, classes: tuple[str, ...]) -> OutputLayout:
    """One output per diagnosis class; for a binary target the loss's width (1 sigmoid logit, or 2 classes)."""
    scale = config.arc_scale if get_loss(config.name).head == "arcface" else 1.0
    if target == "diagnosis":
        return OutputLayout(len(classes), classes.index(MELANOMA), scale)
    width = get_loss(config.name).classes_for_binary
    return OutputLayout(width, width - 1, scale)
