from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError

from melanoma_search.errors import ConfigError
from melanoma_search.model.network import ModelConfig, build_model
from melanoma_search.train.config import parse_config


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
    """Refused where a ``model:`` section is read (a spec, ``--set``, a config file), so before any trial builds."""
    with pytest.raises(ConfigError, match=r"unknown timm model 'efficentnet_b0'.*efficientnet_b0"):
        parse_config({"model": {"name": "efficentnet_b0"}})
    with pytest.raises(ValidationError, match=r"unknown timm model 'efficentnet_b0'.*efficientnet_b0"):
        ModelConfig(name="efficentnet_b0")


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


def test_pretrained_weights_per_architecture_and_one_check_before_trials(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``model.checkpoints`` maps a searched name to its local file; a name without weights fails once, clearly."""
    import huggingface_hub

    from melanoma_search.model.network import check_pretrained

    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    mapping = {"resnet18": str(path)}
    model = build_model(ModelConfig(name="resnet18", pretrained=True, checkpoints=mapping), n_outputs=1)
    torch.testing.assert_close(model.backbone.conv1.weight, source.conv1.weight)
    scratch = build_model(ModelConfig(name="resnet18", pretrained=False, checkpoints=mapping), n_outputs=1)
    assert not torch.equal(scratch.backbone.conv1.weight, source.conv1.weight)  # the mapping only with pretrained
    lines: list[str] = []
    check_pretrained([ModelConfig(name="resnet18", pretrained=True, checkpoints=mapping)] * 3, log=lines.append)
    assert len(lines) == 1  # each architecture's weights are loaded once
    # no hub here: offline, the client fails at once rather than after its retries (it read the variable on import)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match=r"cannot load pretrained weights of 'resnet34'.*"
                                          r"model.checkpoints: \{resnet34: PATH\}"):
        check_pretrained([ModelConfig(name="resnet34", pretrained=True, checkpoints=mapping)], log=lines.append)
    with pytest.raises(ConfigError, match="model.checkpoints.resnet18: file not found"):
        build_model(ModelConfig(name="resnet18", pretrained=True, checkpoints={"resnet18": str(tmp_path / "x")}),
                    n_outputs=1)


def test_a_backbone_saved_to_a_local_folder_is_searchable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's local-dir: source: a user's own (or newer) backbone saved with save_for_hf; its saved weights are the
    pretrained ones, checked as early as a registry name is, with the same one-line error when they cannot load."""
    import huggingface_hub.constants
    from timm.models._hub import save_for_hf

    from melanoma_search.model.network import check_model_name

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries against an absent network

    own = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    with torch.no_grad():
        next(own.parameters()).fill_(0.123)  # a mark to find again
    save_for_hf(own, tmp_path / "mine")
    name = f"local-dir:{tmp_path / 'mine'}"
    check_model_name(name)
    model = build_model(ModelConfig(name=name, pretrained=True, meta=False), n_outputs=1)
    assert torch.allclose(next(model.backbone.parameters()), torch.tensor(0.123))  # its own weights, loaded
    assert model(torch.zeros(2, 3, 32, 32), None).shape == (2, 1)
    for bad, message in ((f"local-dir:{tmp_path / 'nothing'}", "no config.json in"),
                         ("hf-hub:nobody/nothing-here", "cannot read its config from the Hugging Face hub")):
        with pytest.raises(ConfigError, match=message):  # the run's one line, before any trial
            parse_config({"model": {"name": bad}})
