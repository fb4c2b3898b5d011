from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from melanoma_search.errors import ConfigError
from melanoma_search.model.network import ModelConfig, build_model


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto", "mobilenetv3_small_050"])
@pytest.mark.parametrize("head", ["linear", "msd", "arcface"])
def test_timm_backbones_with_heads_and_metadata(name: str, head: str) -> None:
    config = ModelConfig(name=name, head=head, pool="gem" if head == "msd" else "avg")
    model = build_model(config, n_outputs=2, n_meta=14)
    model.eval()
    out = model(torch.rand(3, 3, 64, 64), torch.rand(3, 14))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    if head == "arcface":
        assert out.abs().max() <= 1.0 + 1e-5  # cosines


def test_meta_model_requires_meta() -> None:
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1, n_meta=5).eval()
    with pytest.raises(ValueError, match="pass meta="):
        model(torch.rand(1, 3, 32, 32))


def test_unknown_timm_name_suggests_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown timm model 'efficentnet_b0'.*efficientnet_b0"):
        build_model(ModelConfig(name="efficentnet_b0"), n_outputs=1)


def test_pretrained_weights_from_a_local_file(tmp_path: Path) -> None:
    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_model(ModelConfig(name="resnet18", checkpoint=str(path)), n_outputs=1)
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    with pytest.raises(ConfigError, match="model.checkpoint: file not found"):
        build_model(ModelConfig(name="resnet18", checkpoint=str(tmp_path / "missing.pth")), n_outputs=1)


def test_freeze_backbone_stops_its_gradients() -> None:
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1).train()
    model.freeze_backbone(True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not model.backbone.training and model.head.training
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.backbone.parameters()) and model.backbone.training


def test_normalisation_comes_from_the_backbone_config() -> None:
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1)
    assert model.normalisation.mean == pytest.approx((0.485, 0.456, 0.406))
