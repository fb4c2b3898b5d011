"""The cost model: rates from a trial's phase clock predict its seconds; other machines and probes are scaled by what
this machine measured; a cost model file is JSON only and a bad one is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from melanoma_search.budget.cost import CostModel, TrialShape, observe
from melanoma_search.budget.probe import probe
from melanoma_search.train.config import parse_config

HERE, THERE = "this cpu x2", "another gpu"
KEY = CostModel.key("resnet18", 64, "fp32")


SHAPE = TrialShape(key=KEY, folds=3, epochs=4, train_rows=600, val_rows=300, tta=2, test_rows=100)


def _observed(*, machine: str = HERE, key: str = KEY, scale: float = 1.0) -> dict[str, object]:
    """A 3-fold x 4-epoch trial on 600 training and 300 validation rows per fold, 100 test rows, TTA 2."""
    phases = {"train_steps": 240.0 * scale, "loader_start": 12.0 * scale, "validate": 36.0 * scale, "data": 3.0,
              "config": 0.5, "artifacts": 1.5, "model": 6.0 * scale, "predict": 9.0 * scale}
    return observe(key=key, machine=machine, phases=phases, wall=sum(phases.values()) + 3.0,
                   shape=TrialShape(**{**SHAPE.__dict__, "key": key}), predicted=None)


def test_a_trials_own_rates_predict_its_seconds_and_scale_with_epochs_folds_and_tta() -> None:
    model = CostModel(machine=HERE, observations=[_observed()])
    seconds, source = model.predict(SHAPE) or (0.0, "")
    assert source == "measured"
    assert seconds == pytest.approx(240 + 12 + 36 + 3 + 0.5 + 1.5 + 6 + 9 + 3)  # its own wall clock
    screen = model.predict(TrialShape(key=KEY, folds=1, epochs=1, train_rows=600, val_rows=300, tta=1))
    assert screen is not None
    train = (240 + 12) / (3 * 4 * 600)  # per training image-epoch
    scoring = (36 + 9) / (3 * (4 * 300 + 2 * (300 + 100)))  # per scored image: each epoch's and the last TTA pass
    fold_fixed = (6 + 3) / 3  # model build and what no phase names, per fold
    assert screen[0] == pytest.approx(600 * train + (300 + 300) * scoring + fold_fixed + 5.0)  # + the trial's part
    assert model.predict(TrialShape(key="other@64|fp32", folds=1, epochs=1, train_rows=1, val_rows=1)) is None


def test_another_machines_figures_are_scaled_by_how_much_slower_this_one_was_on_a_shared_key() -> None:
    other_key = CostModel.key("efficientnet_b0", 128, "fp32")
    model = CostModel(machine=HERE, observations=[
        _observed(machine=THERE, scale=1.0), _observed(machine=HERE, scale=3.0),  # this machine: 3x slower
        _observed(machine=THERE, key=other_key, scale=2.0)])
    rates = model.rates(other_key)
    there = CostModel(machine=THERE, observations=model.observations).rates(other_key)
    assert rates is not None and there is not None
    assert rates.train == pytest.approx(3.0 * there.train)
    assert rates.source.startswith("measured on another machine x3.00")


def test_a_probe_is_scaled_by_real_over_probe_on_keys_that_have_both() -> None:
    other_key = CostModel.key("resnet18", 96, "fp32")
    measured = _observed()
    real_train = float(measured["train"])  # type: ignore[arg-type]
    model = CostModel(machine=HERE, observations=[measured], probes=[
        {"key": KEY, "machine": HERE, "train": real_train / 2, "val": 0.001},  # real training ran 2x its probe
        {"key": other_key, "machine": HERE, "train": 0.01, "val": 0.002}])
    rates = model.rates(other_key)
    assert rates is not None and rates.source == "probe x2.00"
    assert rates.train == pytest.approx(0.02) and rates.val == pytest.approx(0.004)


def test_a_cost_model_file_round_trips_and_a_bad_one_is_one_clear_error(tmp_path: Path) -> None:
    model = CostModel(machine=THERE, observations=[_observed(machine=THERE)])
    path = tmp_path / "cost_model.json"
    path.write_text(model.to_json())
    prior = CostModel.read(path, machine=HERE)
    assert prior.observations == model.observations
    got = prior.predict(SHAPE)
    assert got is not None and got[1] == "measured on another machine (unscaled)"  # nothing here to scale it by
    for text, needle in (("{", "not a readable JSON file"), ('{"observations": []}', "not a cost model file"),
                         ("\x80\x81", "not a readable JSON file")):
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(ValueError, match=needle):
            CostModel.read(path, machine=HERE)
    path.write_text(json.dumps({"format": "melanoma_search.cost_model/1", "observations": [
        {"key": KEY, "machine": HERE, "train": "nan", "val": 1, "fold_fixed": 1, "trial_fixed": 1}]}))
    assert CostModel.read(path, machine=HERE).observations == []  # a non-finite rate is dropped, not trusted


def test_the_probe_times_a_real_network_at_its_size() -> None:
    small = parse_config({"model": {"name": "resnet18", "pretrained": False}, "image_size": 32, "device": "cpu"})
    large = parse_config({"model": {"name": "resnet18", "pretrained": False}, "image_size": 160, "device": "cpu"})
    probe(small, steps=1, batch=4)  # the process's first network pays one-off set-up: not part of either figure
    a, b = probe(small, steps=2, batch=4), probe(large, steps=2, batch=4)
    assert a["train"] > 0 and a["val"] > 0
    assert b["train"] > a["train"]  # 25x the pixels: slower per image, on a busy machine too
