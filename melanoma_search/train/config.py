"""The configuration of one training run: plain, frozen, validated data.

A trial's inputs are this object and nothing else (no global state), so a trial can be rebuilt in another process
or on another machine from its YAML dump. Validation is pydantic's; :func:`parse_config` turns its errors into one
:class:`~melanoma_search.errors.ConfigError` whose lines give the key path, the bad value and what is allowed
(with a did-you-mean for misspelt keys).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from melanoma_search.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticConfig(_Frozen):
    """The embedded synthetic set, used when ``data.dir`` is empty."""

    n_train: int = Field(600, ge=20)
    n_test: int = Field(100, ge=0)
    size: int = Field(128, ge=32)
    seed: int = 0


class DataConfig(_Frozen):
    dir: str | None = None
    """Dataset folder (any layout of :mod:`melanoma_search.data.tables`); empty means the synthetic set."""
    layout: str = "auto"
    external: tuple[str, ...] = ()
    """Extra dataset folders used in training folds only (e.g. ISIC 2019)."""
    duplicates: str | None = None
    """A duplicate-pair list; ``ISIC_2020_Training_Duplicates.csv`` in ``dir`` is used when present."""
    n_folds: int = Field(5, ge=2, le=20)
    folds: tuple[int, ...] | Literal["all"] = (0,)
    """Which folds to train and validate (``all`` for full cross-validation)."""
    fold_seed: int = 42
    cache_dir: str = "storage/cache"
    missing_images: Literal["error", "skip"] = "error"
    bad_images: Literal["error", "skip"] = "error"
    num_workers: int = Field(-1, ge=-1)
    """Loader worker processes; -1 picks min(8, CPU cores)."""
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _check_folds(self) -> DataConfig:
        if self.folds != "all":
            bad = [f for f in self.folds if not 0 <= f < self.n_folds]
            if bad:
                raise ValueError(f"folds {bad} out of range for n_folds={self.n_folds} (allowed 0..{self.n_folds - 1})")
        return self

    def fold_list(self) -> list[int]:
        return list(range(self.n_folds)) if self.folds == "all" else sorted(set(self.folds))


class ModelConfig(_Frozen):
    name: str = "resnet18"
    """Any timm model name."""
    pretrained: bool = False
    checkpoint: str | None = None
    pool: Literal["avg", "gem"] = "avg"
    head: Literal["linear", "msd", "arcface"] = "linear"
    meta: bool = True
    """Fuse the metadata MLP with the image features."""
    drop_rate: float = Field(0.3, ge=0.0, lt=1.0)
    drop_path_rate: float | None = Field(None, ge=0.0, lt=1.0)


class LossConfig(_Frozen):
    name: Literal["bce", "ce", "focal", "margin_focal", "auc", "arcface"] = "bce"
    """``bce`` and ``ce`` both mean cross-entropy: sigmoid for a binary target, softmax for diagnosis."""
    smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    gamma: float = Field(2.0, ge=0.0)
    alpha: float | None = Field(0.25, gt=0.0, lt=1.0)
    margin: float = Field(0.2, ge=0.0)
    arc_scale: float = Field(30.0, gt=0.0)
    arc_margin: float = Field(0.5, ge=0.0, lt=1.5)
    tau: float = Field(1.0, gt=0.0)
    bce_weight: float = Field(0.5, ge=0.0)


class AugmentConfig(_Frozen):
    policy: Literal["none", "light", "medium", "heavy"] = "medium"
    hair: float = Field(0.0, ge=0.0, le=1.0)
    hair_dir: str | None = None
    microscope: float = Field(0.0, ge=0.0, le=1.0)
    color_constancy: bool = False
    cutout: float = Field(0.0, ge=0.0, le=1.0)
    cutmix: float = Field(0.0, ge=0.0, le=1.0)
    """Probability that a training batch is cut-mixed."""
    mixup: float = Field(0.0, ge=0.0, le=1.0)
    mix_alpha: float = Field(1.0, gt=0.0)


class TrainConfig(_Frozen):
    """Everything one training run needs. Dump it with :meth:`to_yaml`; rebuild it with :func:`parse_config`."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    target: Literal["binary", "diagnosis"] = "binary"
    image_size: int = Field(128, ge=16, le=2048)
    progressive_sizes: tuple[int, ...] = ()
    """Smaller sizes trained first; the epochs are split evenly over these and ``image_size``."""
    progressive_resize: bool = False
    """Shortcut (a search switch): train the first half of the epochs at half ``image_size``."""
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    accum_steps: int = Field(1, ge=1)
    lr: float | Literal["auto"] = 3e-4
    """Peak learning rate, or ``auto`` for the LR range finder's suggestion."""
    weight_decay: float = Field(1e-2, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    min_lr_ratio: float = Field(0.01, ge=0.0, le=1.0)
    freeze_epochs: int = Field(0, ge=0)
    clip_grad: float | None = Field(5.0, gt=0.0)
    sampler: Literal["random", "balanced"] = "random"
    oversample: float = Field(1.0, ge=1.0)
    """With the balanced sampler: how much more often a melanoma is drawn than a benign image."""
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    tta: Literal[1, 2, 4, 8] = 1
    device: str = "auto"
    seed: int = 0
    output_dir: str = "storage/runs/train"
    save_weights: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.target == "diagnosis" and self.loss.name in ("margin_focal", "auc"):
            raise ValueError(f"loss.name {self.loss.name!r} needs target 'binary'; for diagnosis use ce, focal "
                             "or arcface")
        if (self.loss.name == "arcface") != (self.model.head == "arcface"):
            raise ValueError("loss.name 'arcface' and model.head 'arcface' go together (the head gives cosines, "
                             "the loss adds the margin)")
        if self.freeze_epochs >= self.epochs:
            raise ValueError(f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs})")
        if any(s > self.image_size for s in self.progressive_sizes):
            raise ValueError("progressive_sizes must all be at most image_size")
        if len(self.progressive_sizes) >= self.epochs:
            raise ValueError("progressive_sizes needs fewer stages than epochs")
        return self

    def stage_sizes(self) -> tuple[int, ...]:
        """The image sizes trained, smallest first, ending with ``image_size``."""
        stages = self.progressive_sizes or ((max(16, self.image_size // 2),) if self.progressive_resize else ())
        return (*stages, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_config(data: Mapping[str, Any] | None, *, source: str = "config") -> TrainConfig:
    """Validate a nested mapping into a :class:`TrainConfig`, raising :class:`ConfigError` on any problem."""
    try:
        return TrainConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, model=TrainConfig)) from None


def format_validation_error(exc: ValidationError, *, source: str, model: type[BaseModel]) -> str:
    """One line per problem: ``key.path: message (got value)``, with a did-you-mean for unknown keys."""
    lines = [f"invalid {source}:"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = _fields_at(model, error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key{hint} allowed here: {', '.join(allowed)}"
        elif "input" in error and error["type"] != "missing" and error["loc"]:
            message += f" (got {error['input']!r})"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        field = current.model_fields.get(str(part)) if isinstance(current, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings (values parsed as YAML: ``lr=1e-3``, ``folds=[0,1]``) to a nested dict."""
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_config(path: str | os.PathLike[str] | None, *, overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (``None``: the defaults) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    source = "default config"
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: a config must be a mapping of keys to values")
        data = loaded or {}
        source = str(file)
    return parse_config(apply_overrides(data, overrides), source=source)
