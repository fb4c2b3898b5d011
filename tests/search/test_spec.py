from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from melanoma_search.errors import ConfigError
from melanoma_search.search.objective import load_objective
from melanoma_search.search.spec import load_spec, native_size
from melanoma_search.search.trial import sample_params, trial_config

SPECS = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.yaml"))


def test_the_shipped_specs_are_there() -> None:
    assert {p.stem for p in SPECS} >= {"demo", "ham-cpu", "b0-search", "b5-search", "effnet-sweep"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_specs_sample_only_valid_configs(path: Path) -> None:
    """30 random draws from each shipped space all give configs the trainer accepts."""
    spec = load_spec(path)
    objective = load_objective(spec.objective)
    base = spec.base_config()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), directions=list(objective.directions))
    for _ in range(30):
        trial = study.ask()
        config = trial_config(base, sample_params(trial, spec, base), objective)
        assert config.data.fold_list() == list(objective.folds(config.data.n_folds))


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_errors_name_the_key_path(tmp_path: Path) -> None:
    spec = {
        "objective": "holdout_auc",
        "space": {
            "modle.name": {"choices": ["resnet18"]},
            "loss.name": {"choices": ["bce", "hinge"]},
            "loss.gamma": {"low": 1, "high": 3, "when": {"loss.nmae": "focal"}},
            "lr": {"low": 0.1, "high": 0.01},
        },
        "enqueue": [{"loss.name": "focal"}],
    }
    with pytest.raises(ConfigError) as info:
        load_spec(_write(tmp_path, spec))
    message = str(info.value)
    assert "space.lr: low (0.1) is above high (0.01)" in message
    spec["space"].pop("lr")
    with pytest.raises(ConfigError) as info:
        load_spec(_write(tmp_path, spec))
    message = str(info.value)
    assert "space.modle.name: not a config key; did you mean 'model.name'?" in message
    assert "space.loss.name: choice 'hinge': unknown loss 'hinge'; available: bce" in message
    assert "space.loss.gamma.when: 'loss.nmae' is neither a searched parameter nor a fixed setting" in message
    assert "enqueue[0].loss.name: 'focal' is not one of ['bce', 'hinge']" in message


def test_unknown_spec_keys_and_models(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"budget\.n_trail: unknown key; did you mean 'n_trials'\?"):
        load_spec(_write(tmp_path, {"budget": {"n_trail": 3}}))
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet181'"):
        load_spec(_write(tmp_path, {"space": {"model.name": {"choices": ["resnet18", "resnet181"]}}}))
    with pytest.raises(ConfigError, match=r"sampler\.name: Input should be 'tpe', 'random', 'qmc' or 'gp'"):
        load_spec(_write(tmp_path, {"sampler": {"name": "cmaes"}}))
    with pytest.raises(ConfigError, match="no study spec 'nope' .* available: .*demo"):
        load_spec("nope")


def test_native_size_pairs_efficientnet_variants() -> None:
    assert native_size("efficientnet_b0") == 224
    assert native_size("tf_efficientnet_b5.ns_jft_in1k") == 456
    assert native_size("efficientnet_b7", scale=0.5) == 304
    with pytest.raises(ConfigError, match="EfficientNet B0-B7 only"):
        native_size("resnet18")


def test_conditional_parameters_follow_their_condition(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, {
        "space": {"loss.name": {"choices": ["bce", "focal"]},
                  "loss.gamma": {"low": 1.0, "high": 3.0, "when": {"loss.name": "focal"}},
                  "progressive_sizes": {"choices": [[], [16]]}},
    }))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        params = sample_params(trial, spec, spec.base_config())
        assert ("loss.gamma" in params) == (params["loss.name"] == "focal")
        assert params["progressive_sizes"] in ([], [16])  # lists travel through Optuna as text


def test_a_spec_with_the_old_row_sampler_key_still_loads(tmp_path: Path) -> None:
    spec_data = {"objective": "holdout_auc", "fixed": {"sampler": "balanced"},
                 "space": {"oversample": {"low": 1.5, "high": 3.0, "when": {"sampler": "balanced"}}}}
    with pytest.warns(FutureWarning, match="use 'row_sampler'"):
        spec = load_spec(_write(tmp_path, spec_data))
    assert spec.fixed == {"row_sampler": "balanced"} and spec.space["oversample"].when == {"row_sampler": "balanced"}
    assert spec.base_config()["row_sampler"] == "balanced"


@pytest.mark.parametrize("section,values,message", [
    ("pruner", {"name": "hyperband", "n_warmup_steps": 2}, "n_warmup_steps: not read by the 'hyperband' pruner"),
    ("pruner", {"name": "median", "min_resource": 2}, "min_resource: not read by the 'median' pruner"),
    ("pruner", {"name": "none", "patience": 2}, "patience: not read by the 'none' pruner"),
    ("sampler", {"name": "random", "n_startup_trials": 4}, "n_startup_trials: not read by the 'random' sampler"),
    ("sampler", {"name": "qmc", "constant_liar": False}, "constant_liar: not read by the 'qmc' sampler"),
])
def test_a_sampler_or_pruner_key_the_chosen_one_ignores_is_refused(tmp_path: Path, section: str,
                                                                  values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_spec(_write(tmp_path, {"objective": "holdout_auc", section: values}))


def test_a_spec_does_not_choose_the_folds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.folds: chosen by the objective"):
        load_spec(_write(tmp_path, {"objective": "cv_auc", "data": {"folds": [0]}}))


def test_an_unknown_architecture_is_reported_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_spec(_write(tmp_path, {"space": {"model.name": {"choices": ["resnet18", "resnet181"]}}}))
    assert str(info.value).count("unknown timm model 'resnet181'") == 1


def test_a_misspelt_study_name_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="no study spec 'ham-cup' .* did you mean 'ham-cpu'"):
        load_spec("ham-cup")
