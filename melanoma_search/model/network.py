"""Models: any timm backbone, an optional metadata MLP fused with the pooled image features, and a head.

A name on the command line is a timm registry lookup (``timm.create_model``), exactly as in timm. The backbone's own
pretrained config carries its input normalisation, which the training loop applies on the device.

Heads:

* ``linear``: dropout + one linear layer;
* ``msd``: multi-sample dropout, the mean of several dropout masks through one shared linear layer (faster
  convergence, used by many 2020 solutions);
* ``arcface``: cosine similarities to L2-normalised class centres; the margin lives in
  :class:`~melanoma_search.model.losses.ArcFaceLoss`, the scale in both.

The ``model:`` config section (:class:`ModelConfig`) lives here too: :func:`build_model` takes it whole.

``pool="gem"`` swaps the global average pool for generalised-mean pooling with a learnable power.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import nn

from melanoma_search.errors import ConfigError
from melanoma_search.schema import StrictModel

__all__ = [
    "ArcFaceHead",
    "GeM",
    "LesionModel",
    "ModelConfig",
    "Normalisation",
    "build_model",
    "check_model_name",
    "check_pretrained",
]

_log = logging.getLogger(__name__)

Head = Literal["linear", "msd", "arcface"]
Pool = Literal["avg", "gem"]


class GeM(nn.Module):
    """Generalised-mean pooling: ``p = 1`` is average pooling, large ``p`` approaches max pooling; ``p`` is learnt."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x.float().clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)
        return pooled.flatten(1).to(x.dtype)


class ArcFaceHead(nn.Module):
    """Cosine similarity between the normalised features and normalised class weights."""

    def __init__(self, in_features: int, n_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(features.float()), F.normalize(self.weight.float()))


class _MultiSampleDropout(nn.Module):
    def __init__(self, in_features: int, n_outputs: int, *, p: float, samples: int) -> None:
        super().__init__()
        self.dropouts = nn.ModuleList(nn.Dropout(p) for _ in range(samples))
        self.fc = nn.Linear(in_features, n_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.fc(features)
        return torch.stack([self.fc(d(features)) for d in self.dropouts]).mean(0)


@dataclass(frozen=True)
class Normalisation:
    """Input normalisation of a backbone (from its timm pretrained config), applied on the device."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class LesionModel(nn.Module):
    """Backbone -> pooled features [+ metadata MLP] -> head. ``forward(image, meta=None)`` returns logits."""

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_outputs: int,
        n_meta: int = 0,
        head: Head = "linear",
        pool: Pool = "avg",
        drop_rate: float = 0.3,
        msd_samples: int = 5,
        meta_hidden: tuple[int, int] = (128, 32),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = GeM() if pool == "gem" else None
        # With the backbone's own pooling some nets (MobileNetV3) add a head conv: its width is head_hidden_size.
        timm_backbone: Any = backbone  # timm's attributes (num_features, forward_features) are not nn.Module's
        pooled_width = getattr(timm_backbone, "head_hidden_size", None) if pool == "avg" else None
        features = int(pooled_width or timm_backbone.num_features)
        self.meta_mlp: nn.Module | None = None
        if n_meta:
            self.meta_mlp = nn.Sequential(
                nn.Linear(n_meta, meta_hidden[0]), nn.BatchNorm1d(meta_hidden[0]), nn.SiLU(), nn.Dropout(0.3),
                nn.Linear(meta_hidden[0], meta_hidden[1]), nn.BatchNorm1d(meta_hidden[1]), nn.SiLU(),
            )
            features += meta_hidden[1]
        self.n_meta = n_meta
        self.head_kind = head
        if head == "arcface":
            self.head: nn.Module = ArcFaceHead(features, n_outputs)
        elif head == "msd":
            self.head = _MultiSampleDropout(features, n_outputs, p=drop_rate, samples=msd_samples)
        else:
            self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(features, n_outputs))

    def features(self, image: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled image features, concatenated with the metadata embedding when the model uses metadata."""
        if self.pool is not None:
            timm_backbone: Any = self.backbone
            feature_map = timm_backbone.forward_features(image)
            if feature_map.ndim != 4:
                raise ConfigError("model.pool=gem needs a convolutional backbone (its features are not a 2-D map)")
            pooled = self.pool(feature_map)
        else:
            pooled = self.backbone(image)
        if self.meta_mlp is not None:
            if meta is None:
                raise ValueError("this model was built with metadata features; pass meta=")
            pooled = torch.cat([pooled, self.meta_mlp(meta.to(pooled.dtype)).to(pooled.dtype)], dim=1)
        return pooled

    def forward(self, image: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(image, meta))

    def freeze_backbone(self, frozen: bool) -> None:
        """Freeze (or unfreeze) the backbone's weights; frozen BatchNorm layers also stop updating statistics."""
        for param in self.backbone.parameters():
            param.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)

    def train(self, mode: bool = True) -> LesionModel:
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self

    @property
    def normalisation(self) -> Normalisation:
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
        std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
        return Normalisation(mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def _check_local_dir(name: str) -> None:
    """A ``local-dir:FOLDER`` backbone: the folder timm's ``save_for_hf`` writes (``config.json`` naming a timm
    architecture, and ``model.safetensors`` for pretrained weights)."""
    import timm

    folder = Path(name.split(":", 1)[1]).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise ConfigError(f"model {name!r}: no config.json in {folder} (a local-dir: backbone is a folder written by "
                          "timm's save_for_hf: config.json and model.safetensors)")
    try:
        architecture = json.loads(config.read_text()).get("architecture")
    except (ValueError, AttributeError):
        raise ConfigError(f"model {name!r}: {config} is not a timm model config (JSON with an architecture)") from None
    if not isinstance(architecture, str) or not timm.is_model(architecture):
        raise ConfigError(f"model {name!r}: its config.json names architecture {architecture!r}, which this timm "
                          f"({timm.__version__}) does not have")


def _check_hf_hub(name: str) -> None:
    """An ``hf-hub:ORG/NAME`` backbone: its config is read from the Hugging Face hub, or its offline cache."""
    from timm.models._hub import load_model_config_from_hf

    try:
        load_model_config_from_hf(name.split(":", 1)[1])
    except Exception as exc:  # the hub client raises many kinds; they all mean "cannot load this model"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"model {name!r}: cannot read its config from the Hugging Face hub or its offline cache "
                          f"({reason}); on a machine without the hub, save it with timm's save_for_hf and use "
                          "local-dir:FOLDER") from None


def check_model_name(name: str) -> None:
    """Raise :class:`ConfigError` when ``name`` is not a model timm can build: a registry name (with close matches),
    ``local-dir:FOLDER`` (a saved timm model) or ``hf-hub:ORG/NAME``."""
    import timm

    if name.startswith("local-dir:"):
        return _check_local_dir(name)
    if name.startswith("hf-hub:"):
        return _check_hf_hub(name)
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ConfigError(f"unknown timm model {name!r}{hint}")


def _known_model(name: str) -> str:
    try:
        check_model_name(name)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name


class ModelConfig(StrictModel):
    name: Annotated[str, AfterValidator(_known_model)] = "resnet18"
    """Any timm model name, or a backbone a user brings as timm loads it: ``local-dir:FOLDER`` (a model saved with
    timm's ``save_for_hf``: its weights are the pretrained ones) or ``hf-hub:ORG/NAME``."""
    pretrained: bool = False
    """Start from pretrained weights: ``checkpoints[name]`` when given, else timm's (hub or offline cache)."""
    checkpoint: str | None = None
    """A local file of starting weights for the backbone (loaded whatever ``pretrained`` says)."""
    checkpoints: dict[str, str] = {}
    """Local weights per architecture, for a search over ``model.name`` on machines without a model hub:
    with ``pretrained: true`` the file of the sampled name is loaded; names without an entry use timm's."""
    pool: Pool = "avg"
    head: Head = "linear"
    meta: bool = True
    """Fuse the metadata MLP with the image features."""
    meta_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """The probability that a training image's patient metadata (sex, age, site) is replaced by "missing", so the
    model still scores images that come without it (outside collections, a folder of JPEGs)."""
    drop_rate: float = Field(0.3, ge=0.0, lt=1.0)
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0)


def build_model(config: ModelConfig, *, n_outputs: int, n_meta: int = 0, load_weights: bool = True,
                msd_samples: int = 5) -> LesionModel:
    """Create a :class:`LesionModel` around the timm backbone ``config.name``.

    ``pretrained`` loads the backbone's pretrained weights through timm (Hugging Face hub or its offline cache,
    ``HF_HUB_OFFLINE=1``); ``checkpoint`` loads them from a local file instead (timm's ``pretrained_cfg_overlay``),
    for machines without a network. Nothing is downloaded when both are off, or with ``load_weights=False`` (the
    caller loads trained weights itself, as the ensemble does).
    """
    import timm

    name = config.name
    checkpoint = config.checkpoint or (config.checkpoints.get(name) if config.pretrained else None)
    check_model_name(name)
    kwargs: dict[str, Any] = {"num_classes": 0}
    if config.pool == "gem":
        kwargs["global_pool"] = ""
    if config.drop_path_rate is not None:
        kwargs["drop_path_rate"] = config.drop_path_rate
    use_weights = load_weights and (config.pretrained or checkpoint is not None)
    if use_weights and checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            key = "model.checkpoint" if config.checkpoint else f"model.checkpoints.{name}"
            raise ConfigError(f"{key}: file not found: {path}")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        backbone = timm.create_model(name, pretrained=use_weights, **kwargs)
    except TypeError:
        kwargs.pop("drop_path_rate", None)  # some architectures take no drop path
        backbone = timm.create_model(name, pretrained=use_weights, **kwargs)
    except (OSError, RuntimeError) as exc:
        if not use_weights:
            raise
        where = f"the local file {checkpoint}" if checkpoint else "the Hugging Face hub or its offline cache"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot load pretrained weights of {name!r} from {where}: {reason}. Set model.pretrained=false to train "
            f"from scratch, or give a local weights file: model.checkpoints: {{{name}: PATH}} (per architecture) "
            "or model.checkpoint=PATH"
        ) from exc
    return LesionModel(backbone, n_outputs=n_outputs, n_meta=n_meta, head=config.head, pool=config.pool,
                       drop_rate=config.drop_rate, msd_samples=msd_samples)


def check_pretrained(configs: list[ModelConfig], *, log: Callable[[str], None] = print) -> None:
    """Load the starting weights of every architecture a run may build, once, before any trial.

    Without a reachable hub a missing weight file otherwise fails every trial in turn, each after the hub client's
    retries (about a minute); here it fails once, with the remedy in the message.
    """
    seen: set[tuple[str, str | None]] = set()
    for config in configs:
        if not (config.pretrained or config.checkpoint):
            continue
        source = config.checkpoint or config.checkpoints.get(config.name)
        if (config.name, source) in seen:
            continue
        seen.add((config.name, source))
        log(f"checking pretrained weights of {config.name} ({source or 'timm: hub or offline cache'})")
        build_model(config, n_outputs=1)
