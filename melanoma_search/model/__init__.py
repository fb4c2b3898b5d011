"""The model: a timm backbone with metadata fusion and a head (``network``), and the losses that train it.

Both families are tables a config names: ``model.name`` is a timm registry lookup, ``loss.name`` a lookup in
:func:`~melanoma_search.model.losses.register_loss`'s table.
"""

from __future__ import annotations

from melanoma_search.model.losses import (
    LossConfig,
    OutputLayout,
    build_loss,
    get_loss,
    list_losses,
    output_layout,
    register_loss,
)
from melanoma_search.model.network import LesionModel, ModelConfig, Normalisation, build_model, check_model_name

__all__ = [
    "LesionModel",
    "LossConfig",
    "ModelConfig",
    "Normalisation",
    "OutputLayout",
    "build_loss",
    "build_model",
    "check_model_name",
    "get_loss",
    "list_losses",
    "output_layout",
    "register_loss",
]
