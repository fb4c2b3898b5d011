from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from melanoma_search.data.dataset import LesionDataset
from melanoma_search.errors import NonFiniteLossError
from melanoma_search.model.losses import BCELoss
from melanoma_search.model.network import ModelConfig, build_model
from melanoma_search.train.lr_finder import find_lr
from melanoma_search.train.steps import BatchInputs, Precision, predict, run_epoch


def _dataset(n: int = 8, size: int = 32) -> LesionDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return LesionDataset(images, rows=np.arange(n), targets=(np.arange(n) % 3 == 0).astype(np.float32),
                         meta=rng.normal(size=(n, 4)).astype(np.float32))


def _one_step(model: torch.nn.Module, *, batch_size: int, accum: int) -> dict[str, torch.Tensor]:
    dataset = _dataset()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=True)
    inputs = BatchInputs(torch.device("cpu"), model.normalisation, channels_last=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    out = run_epoch(model, loader, n_batches=len(loader), inputs=inputs, loss_fn=BCELoss(), optimizer=optimizer,
                    precision=Precision("cpu", None), accum_steps=accum, clip_grad=1.0)
    assert out.optimizer_steps == 8 // (batch_size * accum) and out.images == 8
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_gradient_accumulation_equals_the_large_batch() -> None:
    """8 images in one batch == 4 micro-batches of 2 with accum_steps=4 (clipping included).

    ConvNeXt uses LayerNorm, so no BatchNorm statistics differ between the two; the metadata MLP is off for the
    same reason. One SGD step at lr=1 makes the weight change equal to the (clipped) gradient.
    """
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="convnext_atto", drop_rate=0.0, drop_path_rate=0.0), n_outputs=1)
    start = copy.deepcopy(model)
    start_model_copy = copy.deepcopy(model)
    start_weights = {k: v.clone() for k, v in model.state_dict().items()}
    big = _one_step(model, batch_size=8, accum=1)
    small = _one_step(start, batch_size=2, accum=4)
    initial = start_weights
    for key, value in big.items():
        torch.testing.assert_close(small[key], value, rtol=1e-4, atol=1e-6, msg=key)
    assert any(not torch.equal(big[k], initial[k]) for k in big), "the step changed nothing"
    wrong = _one_step(copy.deepcopy(start_model_copy), batch_size=2, accum=1)  # without accumulation: 4 separate steps
    assert any(not torch.allclose(wrong[k], big[k], atol=1e-4) for k in big if big[k].dtype.is_floating_point)


def test_nan_loss_raises_a_clear_error() -> None:
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1)
    dataset = _dataset()
    loader = DataLoader(dataset, batch_size=4, drop_last=True)
    inputs = BatchInputs(torch.device("cpu"), model.normalisation, channels_last=False)

    def nan_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return logits.sum() * float("nan")

    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        run_epoch(model, loader, n_batches=len(loader), inputs=inputs, loss_fn=nan_loss,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), precision=Precision("cpu", None))


def test_predict_with_tta_views() -> None:
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1, n_meta=4).eval()
    loader = DataLoader(_dataset(), batch_size=4)
    inputs = BatchInputs(torch.device("cpu"), model.normalisation, channels_last=False)
    plain, loss = predict(model, loader, inputs=inputs, precision=Precision("cpu", None), melanoma_index=0,
                          loss_fn=BCELoss())
    tta8, _ = predict(model, loader, inputs=inputs, precision=Precision("cpu", None), melanoma_index=0, tta=8)
    assert plain.shape == tta8.shape == (8,) and ((0 <= tta8) & (tta8 <= 1)).all() and loss > 0
    assert not np.allclose(plain, tta8)


def test_tta_views_in_one_pass_equal_the_mean_of_each_view_alone() -> None:
    """The views go through the model as one batch, and a short last batch is padded to the others' shape; neither
    may change a score: compare with each view scored on its own, image by image."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1, n_meta=4).eval()
    dataset = _dataset(n=7)  # batches of 3, 3 and a short 1
    inputs = BatchInputs(torch.device("cpu"), model.normalisation, channels_last=False)
    batched, _ = predict(model, DataLoader(dataset, batch_size=3), inputs=inputs, precision=Precision("cpu", None),
                         melanoma_index=0, tta=4)
    with torch.no_grad():
        expected = []
        for index in range(len(dataset)):
            images, meta, _ = inputs(next(iter(DataLoader(torch.utils.data.Subset(dataset, [index])))))
            views = [images, images.flip(-1), images.flip(-2), images.flip(-1).flip(-2)]
            expected.append(np.mean([torch.sigmoid(model(v, meta)[:, 0]).item() for v in views]))
    np.testing.assert_allclose(batched, expected, rtol=1e-5, atol=1e-6)


def test_lr_finder_suggests_a_rate_and_restores_the_model() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), n_outputs=1)
    before = copy.deepcopy(model.state_dict())
    dataset = _dataset(n=64, size=32)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, drop_last=True)
    inputs = BatchInputs(torch.device("cpu"), model.normalisation, channels_last=False)

    def train_steps(optimizer, on_step, max_steps):  # type: ignore[no-untyped-def]
        run_epoch(model, loader, n_batches=len(loader), inputs=inputs, loss_fn=BCELoss(), optimizer=optimizer,
                  precision=Precision("cpu", None), max_batches=max_steps, on_step=on_step)

    result = find_lr(model, lambda lr: torch.optim.AdamW(model.parameters(), lr=lr), train_steps,
                     start_lr=1e-6, end_lr=10.0, num_steps=40)
    assert len(result.lrs) >= 10 and result.lrs == sorted(result.lrs)
    assert result.suggestion is not None and 1e-6 <= result.suggestion <= 10.0
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
