"""The configuration of one training run, and the one codec for its dotted key paths.

A trial's inputs are a :class:`TrainConfig` and nothing else (no global state), so a trial can be rebuilt in another
process or on another machine from its YAML dump. Sections are owned by the families they configure
(:class:`~melanoma_search.data.DataConfig`, :class:`~melanoma_search.model.ModelConfig`,
:class:`~melanoma_search.model.LossConfig`, :class:`~melanoma_search.augment.AugmentConfig`), whose registries
supply the allowed names; this module composes them and adds the cross-checks between sections.

Key paths (``loss.gamma``) are how a spec, the search space, ``--set`` and Optuna's parameter names address a value.
This module is their only codec: :func:`set_path` puts a value (kept as the object it is, never text) into a nested
mapping, :func:`flatten_config` takes a mapping apart, :func:`check_value` validates one value against its field.
Text is parsed once, at the command line, by :func:`parse_override`.
"""

from __future__ import annotations

import os
import typing
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator
from pydantic.fields import FieldInfo

from melanoma_search.augment.policies import AugmentConfig
from melanoma_search.data.config import DataConfig, SyntheticConfig
from melanoma_search.errors import ConfigError
from melanoma_search.model.losses import LossConfig, LossEntry, get_loss
from melanoma_search.model.network import ModelConfig
from melanoma_search.schema import StrictModel, format_validation_error, format_yaml_error

__all__ = [
    "DEPRECATED_KEYS",
    "AugmentConfig",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "canonical_path",
    "check_value",
    "config_field",
    "config_paths",
    "flatten_config",
    "is_section",
    "load_config",
    "parse_config",
    "parse_override",
    "set_path",
]

#: Old key paths still accepted, with a deprecation warning, and the key they now mean.
DEPRECATED_KEYS: dict[str, str] = {"sampler": "row_sampler"}


def canonical_path(path: str, *, warn: bool = True) -> str:
    """``path`` with a deprecated key replaced by its new name (warning once per call site)."""
    new = DEPRECATED_KEYS.get(path)
    if new is None:
        return path
    if warn:
        warnings.warn(f"config key {path!r} is deprecated: use {new!r} (Optuna's sampler is the spec's top-level "
                      f"'sampler:' section; this one picks training rows)", FutureWarning, stacklevel=3)
    return new


class TrainConfig(StrictModel):
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
    checkpoint: Literal["swa", "last", "best"] = "swa"
    """Which weights a fold keeps, scores and predicts with: ``swa`` (the uniform average of the last ``swa_epochs``
    epochs' weights, batch-norm statistics included), ``last`` (the final epoch's), or ``best`` (the epoch with the
    best validation AUC: optimistic, since it is chosen on the very rows it is then scored on). Not to be confused
    with ``model.checkpoint``, a file of starting weights."""
    swa_epochs: int = Field(3, ge=1)
    """How many final epochs ``checkpoint: swa`` averages (all of them when there are fewer)."""
    row_sampler: Literal["random", "balanced"] = "random"
    """How training rows are drawn (``sampler`` before 0.2; the spec's ``sampler:`` section is Optuna's)."""
    oversample: float = Field(1.0, ge=1.0)
    """With the balanced row sampler: how much more often a melanoma is drawn than a benign image."""
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    compile: Literal["off", "default", "reduce-overhead"] = "off"
    """``torch.compile`` the model's forward (and so its backward): ``default`` fuses kernels, ``reduce-overhead``
    also replays CUDA graphs (small batches on a fast GPU). Compiling costs tens of seconds per trial, so it pays on
    long trials only; off by default."""
    cudnn_benchmark: bool = False
    """Let cuDNN time its kernels for every new input shape. On an H200 (b0 at 256 px, bf16) the first epochs with
    it took 16 to 30 s against 1.4 s once tuned: more than a short search trial's whole training, so it is off unless
    the trials are long."""
    tta: Literal[1, 2, 4, 8] = 1
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """The share of each fold's training rows a model trains on, drawn per class with the seed: a race's cheap
    screening fidelity (:mod:`melanoma_search.budget.race`); 1 (all) for anything meant to be a member."""
    device: str = "auto"
    seed: int = 0
    output_dir: str = "storage/runs/train"
    save_weights: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and any(k in data for k in DEPRECATED_KEYS):
            data = {canonical_path(str(k), warn=True): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        loss = get_loss(self.loss.name)
        if self.target not in loss.targets:
            raise ValueError(f"loss.name {self.loss.name!r} needs target {' or '.join(map(repr, loss.targets))}; "
                             f"for {self.target} use {', '.join(_losses_for(self.target))}")
        if unused := loss.unused(self.loss, target=self.target):
            raise ValueError(f"{', '.join(f'loss.{k}' for k in unused)} does nothing with loss "
                             f"{self.loss.name!r} for a {self.target} target (it reads "
                             f"{', '.join(loss.reads.get(self.target, ())) if loss.reads else 'other keys'})")
        head_losses = _losses_needing_head(self.model.head)  # the losses this head only works with
        pair = ((self.loss.name, loss.head) if loss.head is not None and loss.head != self.model.head
                else (head_losses[0], self.model.head) if head_losses and self.loss.name not in head_losses
                else None)
        if pair is not None:
            raise ValueError(f"loss.name {pair[0]!r} and model.head {pair[1]!r} go together (the head gives "
                             "cosines, the loss adds the margin)")
        if self.data.pseudo is not None:
            self._check_pseudo(loss, soft=self.data.pseudo.soft)
        if self.oversample != 1.0 and self.row_sampler != "balanced":
            raise ValueError(f"oversample ({self.oversample:g}) does nothing with row_sampler {self.row_sampler!r} "
                             "(it is how much more often the balanced sampler draws a melanoma)")
        if self.swa_epochs != TrainConfig.model_fields["swa_epochs"].default and self.checkpoint != "swa":
            raise ValueError(f"swa_epochs ({self.swa_epochs}) does nothing with checkpoint {self.checkpoint!r} "
                             "(it is how many final epochs checkpoint: swa averages)")
        if self.freeze_epochs >= self.epochs:
            raise ValueError(f"freeze_epochs ({self.freeze_epochs}) must be below epochs ({self.epochs})")
        if any(s > self.image_size for s in self.progressive_sizes):
            raise ValueError("progressive_sizes must all be at most image_size")
        if len(self.progressive_sizes) >= self.epochs:
            raise ValueError("progressive_sizes needs fewer stages than epochs")
        return self

    def _check_pseudo(self, loss: LossEntry, *, soft: bool) -> None:
        """Pseudo-labels are P(melanoma): they need a binary target, and soft ones a loss that takes a probability."""
        if self.target != "binary":
            raise ValueError("data.pseudo needs target: binary (a pseudo-label is a melanoma probability, not a "
                             "diagnosis)")
        if soft and loss.classes_for_binary != 1:
            raise ValueError(f"soft pseudo-labels need a loss with a probability target (bce, focal, margin_focal, "
                             f"auc); loss.name {self.loss.name!r} takes a class, so set data.pseudo.soft=false")

    def stage_sizes(self) -> tuple[int, ...]:
        """The image sizes trained, smallest first, ending with ``image_size``."""
        stages = self.progressive_sizes or ((max(16, self.image_size // 2),) if self.progressive_resize else ())
        return (*stages, self.image_size)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _losses_for(target: str) -> list[str]:
    from melanoma_search.model.losses import list_losses

    return list(list_losses(target))  # type: ignore[arg-type]


def _losses_needing_head(head: str) -> list[str]:
    from melanoma_search.model.losses import list_losses

    return [name for name in list_losses() if get_loss(name).head == head]


def parse_config(data: Mapping[str, Any] | None, *, source: str = "config") -> TrainConfig:
    """Validate a nested mapping into a :class:`TrainConfig`, raising :class:`ConfigError` on any problem."""
    try:
        return TrainConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, model=TrainConfig)) from None


# ----------------------------------------------------------------------------------------------- key-path codec
def config_field(path: str) -> tuple[FieldInfo, bool]:
    """The pydantic field at a key path and whether it is a section (a nested model); ``KeyError`` if none."""
    model: Any = TrainConfig
    field: FieldInfo | None = None
    for part in canonical_path(path, warn=False).split("."):
        if model is None or part not in model.model_fields:
            raise KeyError(path)
        field = model.model_fields[part]
        model = _section(field.annotation)
    assert field is not None
    return field, model is not None


def _section(annotation: Any) -> type[BaseModel] | None:
    """The config section a field holds (an optional one too, such as ``data.pseudo``), else ``None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return models[0] if len(models) == 1 and type(None) in typing.get_args(annotation) else None


def is_section(path: str) -> bool:
    try:
        return config_field(path)[1]
    except KeyError:
        return False


def config_paths(model: type[BaseModel] = TrainConfig, prefix: str = "") -> list[str]:
    """Every leaf key path of the config (``data.dir``, ..., ``loss.gamma``, ...)."""
    paths = []
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            paths.extend(config_paths(section, f"{prefix}{name}."))
        else:
            paths.append(f"{prefix}{name}")
    return paths


def check_value(path: str, value: Any) -> str | None:
    """Why ``value`` is not allowed at ``path`` (pydantic's message), or ``None`` when it is."""
    field, _ = config_field(path)
    annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(typing.cast(Any, annotation))  # a field's type, built at run time
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
    return None


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections as key paths (``{'loss': {'gamma': 2}}`` -> ``{'loss.gamma': 2}``)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and is_section(path):
            out.update(flatten_config(value, prefix=f"{path}."))
        else:
            out[canonical_path(path)] = value
    return out


def set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at the key path ``path`` of the nested mapping ``tree`` (in place), creating sections."""
    parts = canonical_path(path.strip()).split(".")
    if not all(parts):
        raise ConfigError(f"{path!r} is not a key path (e.g. loss.gamma)")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | Iterable[tuple[str, Any]]
                    ) -> dict[str, Any]:
    """A copy of ``data`` with each ``(key path, value)`` set; nested values are copied, never shared."""
    result: dict[str, Any] = _deep_copy(data)
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for path, value in items:
        set_path(result, path, _deep_copy(value) if isinstance(value, Mapping) else value)
    return result


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value`` from the command line, the value read as YAML (``lr=1e-3``, ``data.folds=[0,1]``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(format_yaml_error(exc, source=f"--set {key}={raw}")) from None
    return key.strip(), value


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_config(path: str | os.PathLike[str] | None, *, overrides: Iterable[str] = (),
                values: Mapping[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (``None``: the defaults), apply ``--set key=value`` texts, then ``values`` (key paths)."""
    data: dict[str, Any] = {}
    source = "default config"
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file not found: {file}")
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(format_yaml_error(exc, source=str(file))) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{file}: a config must be a mapping of keys to values")
        data = loaded or {}
        source = str(file)
    data = apply_overrides(data, [parse_override(o) for o in overrides])
    return parse_config(apply_overrides(data, values or {}), source=source)
