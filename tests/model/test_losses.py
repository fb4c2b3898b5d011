from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from melanoma_search.model.losses import (
    ArcFaceLoss,
    AUCSurrogateLoss,
    BCELoss,
    CrossEntropyLoss,
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

    monkeypatch.setattr(losses, "_LOSSES", losses._LOSSES.copy())  # registered for this test only

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


@pytest.mark.parametrize("loss", [BCELoss(), FocalLoss(), MarginFocalLoss(), AUCSurrogateLoss()],
                         ids=["bce", "focal", "margin_focal", "auc"])
def test_row_weights_scale_each_rows_loss(loss: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Weights of 1 are the plain mean; a weight of 0 takes a row out (pseudo-labelled rows train lighter)."""
    logits, target = batch
    torch.testing.assert_close(loss(logits, target, weight=torch.ones(16)), loss(logits, target))
    if isinstance(loss, AUCSurrogateLoss):  # pairwise: the batch's pairs change with its rows, so only the ones
        return
    half = torch.tensor([1.0] * 8 + [0.0] * 8)
    torch.testing.assert_close(loss(logits, target, weight=half), loss(logits[:8], target[:8]) / 2)


@pytest.mark.parametrize("loss", [CrossEntropyLoss(), MulticlassFocalLoss(), ArcFaceLoss(margin=0.2)],
                         ids=["ce", "multiclass_focal", "arcface"])
def test_row_weights_of_class_index_losses(loss: torch.nn.Module) -> None:
    torch.manual_seed(1)
    logits, target = torch.rand(6, 2) * 2 - 1, torch.tensor([0, 1, 1, 0, 1, 0])
    weight = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(loss(logits, target, weight=weight), loss(logits[:3], target[:3]) / 2)


def test_soft_targets_are_the_probability_weighted_bce() -> None:
    """A pseudo-label p trains like p of a positive and 1 - p of a negative row (BCE, and focal at gamma 0)."""
    logits, p = torch.tensor([[0.3], [-1.2]]), torch.tensor([0.7, 0.2])
    ones, zeros = torch.ones(2), torch.zeros(2)
    mixed = p * F.binary_cross_entropy_with_logits(logits.view(-1), ones, reduction="none") + (
        1 - p) * F.binary_cross_entropy_with_logits(logits.view(-1), zeros, reduction="none")
    torch.testing.assert_close(BCELoss()(logits, p), mixed.mean())
    torch.testing.assert_close(FocalLoss(gamma=0.0, alpha=None)(logits, p), mixed.mean())
