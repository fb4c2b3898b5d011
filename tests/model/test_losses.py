from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from melanoma_search.model.losses import (
    ArcFaceLoss,
    AUCSurrogateLoss,
    BCELoss,
    FocalLoss,
    LossConfig,
    MarginFocalLoss,
    MulticlassFocalLoss,
    build_loss,
)


@pytest.fixture()
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(16, 1), (torch.rand(16) > 0.6).float()


def test_bce_label_smoothing(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    expected = F.binary_cross_entropy_with_logits(logits.view(-1), target * 0.8 + 0.1)
    torch.testing.assert_close(BCELoss(smoothing=0.2)(logits, target), expected)


def test_focal_reduces_to_bce_and_downweights_easy(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, target = batch
    torch.testing.assert_close(FocalLoss(gamma=0.0, alpha=None)(logits, target), BCELoss()(logits, target))
    easy = torch.tensor([[6.0]]), torch.tensor([1.0])
    assert FocalLoss(gamma=2.0, alpha=None)(*easy) < BCELoss()(*easy) * 0.01


def test_margin_focal_penalises_small_margins() -> None:
    target = torch.tensor([1.0, 0.0])
    close = torch.tensor([[0.1], [-0.1]])
    far = torch.tensor([[2.0], [-2.0]])
    loss = MarginFocalLoss(gamma=0.0, margin=0.5)
    assert loss(close, target) > FocalLoss(gamma=0.0, alpha=None)(close, target)
    assert loss(far, target) < loss(close, target)


def test_auc_surrogate_prefers_correct_order() -> None:
    target = torch.tensor([1.0, 1.0, 0.0, 0.0])
    ordered = torch.tensor([[2.0], [1.5], [0.0], [-1.0]])
    reversed_ = -ordered
    loss = AUCSurrogateLoss(bce_weight=0.0)
    assert loss(ordered, target) < loss(reversed_, target)
    single_class = AUCSurrogateLoss()(ordered, torch.ones(4))
    torch.testing.assert_close(single_class, BCELoss()(ordered, torch.ones(4)))


def test_arcface_without_margin_is_scaled_softmax() -> None:
    torch.manual_seed(1)
    cosine = torch.rand(8, 3) * 2 - 1
    target = torch.randint(0, 3, (8,))
    torch.testing.assert_close(ArcFaceLoss(scale=10.0, margin=0.0)(cosine, target),
                               F.cross_entropy(cosine.clamp(-1 + 1e-7, 1 - 1e-7) * 10.0, target))
    assert ArcFaceLoss(scale=10.0, margin=0.5)(cosine, target) > ArcFaceLoss(scale=10.0, margin=0.0)(cosine, target)


def test_multiclass_focal_gamma_zero_is_ce() -> None:
    logits, target = torch.randn(8, 4), torch.randint(0, 4, (8,))
    torch.testing.assert_close(MulticlassFocalLoss(gamma=0.0)(logits, target), F.cross_entropy(logits, target))


def test_factory_checks_target() -> None:
    assert isinstance(build_loss(LossConfig(name="focal"), target="diagnosis"), MulticlassFocalLoss)
    assert isinstance(build_loss(LossConfig(name="ce"), target="binary"), BCELoss)
    with pytest.raises(ValueError, match="unknown loss 'auc' for a diagnosis target"):
        build_loss(LossConfig(name="auc"), target="diagnosis")


def test_a_new_loss_is_one_registered_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's "Extending" example: register a builder, and a config can name it, with its checks derived."""
    from torch import nn

    from melanoma_search.model import losses
    from melanoma_search.model.losses import get_loss, list_losses, output_layout, register_loss
    from melanoma_search.train.config import check_value, parse_config

    monkeypatch.setattr(losses, "_LOSSES", dict(losses._LOSSES))  # registered for this test only

    class HingeLoss(nn.Module):
        def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.relu(1 - (2 * target.float().view(-1) - 1) * logits.view(-1).float()).mean()

    @register_loss("hinge", targets=("binary",))
    def _hinge(config: LossConfig, target: str) -> nn.Module:
        return HingeLoss()

    assert "hinge" in list_losses("binary") and "hinge" not in list_losses("diagnosis")
    config = parse_config({"loss": {"name": "hinge"}})
    assert isinstance(build_loss(config.loss, target=config.target), HingeLoss)
    assert output_layout(config.loss, target="binary", classes=("melanoma", "other")).n_outputs == 1
    assert check_value("loss.name", "hinge") is None  # a search space may list it
    with pytest.raises(ValueError, match="needs target 'binary'"):
        parse_config({"target": "diagnosis", "loss": {"name": "hinge"}})
    with pytest.raises(ValueError, match="already registered"):
        register_loss("hinge")(_hinge)
    assert get_loss("arcface").head == "arcface"
