from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from melanoma_search.errors import ConfigError
from melanoma_search.train.config import TrainConfig, apply_overrides, load_config, parse_config, parse_override


def test_defaults_round_trip_through_yaml(tmp_path: Path) -> None:
    config = parse_config({"model": {"name": "efficientnet_b0"}, "data": {"folds": [0, 2]}})
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    assert config.data.fold_list() == [0, 2]
    with pytest.raises(ValidationError):
        config.epochs = 3  # type: ignore[misc]  # frozen


def test_typo_gets_key_path_and_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"model\.nmae: unknown key; did you mean 'name'\?"):
        parse_config({"model": {"nmae": "resnet18"}})


def test_bad_value_names_key_allowed_values_and_input() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"loss": {"name": "hinge"}, "tta": 3, "augment": {"hair": 1.5}})
    message = str(info.value)
    assert "loss.name: unknown loss 'hinge'; available: bce, ce, focal" in message and "(got 'hinge')" in message
    assert "tta: Input should be 1, 2, 4 or 8 (got 3)" in message
    assert "augment.hair: Input should be less than or equal to 1 (got 1.5)" in message


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match="'arcface' and model.head 'arcface' go together"):
        parse_config({"loss": {"name": "arcface"}})
    with pytest.raises(ConfigError, match="needs target 'binary'"):
        parse_config({"target": "diagnosis", "loss": {"name": "auc"}})
    with pytest.raises(ConfigError, match=r"folds \[7\] out of range for n_folds=5"):
        parse_config({"data": {"folds": [7]}})
    with pytest.raises(ConfigError, match="freeze_epochs"):
        parse_config({"epochs": 2, "freeze_epochs": 2})


def test_a_loss_option_the_loss_ignores_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"loss.smoothing does nothing with loss 'margin_focal' for a binary target "
                                          r"\(it reads gamma, alpha, margin\)"):
        parse_config({"loss": {"name": "margin_focal", "smoothing": 0.05}})
    with pytest.raises(ConfigError, match="loss.smoothing does nothing with loss 'auc'"):
        parse_config({"loss": {"name": "auc", "smoothing": 0.1}})
    with pytest.raises(ConfigError, match="loss.alpha does nothing with loss 'focal' for a diagnosis target"):
        parse_config({"target": "diagnosis", "loss": {"name": "focal", "alpha": 0.5}})
    assert parse_config({"loss": {"name": "focal", "alpha": 0.5}}).loss.alpha == 0.5  # binary focal reads it
    assert parse_config({"loss": {"name": "auc", "smoothing": 0.0}}).loss.name == "auc"  # the default does nothing


def test_overrides_parse_yaml_values() -> None:
    texts = ["model.name=efficientnet_b0", "lr=auto", "data.folds=[0, 1]", "augment.hair=0.3"]
    data = apply_overrides({"model": {"name": "resnet18"}}, [parse_override(t) for t in texts])
    config = parse_config(data)
    assert config.model.name == "efficientnet_b0" and config.lr == "auto"
    assert config.data.folds == (0, 1) and config.augment.hair == 0.3
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_override("lr")


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: 3\nmodel: {name: resnet18\n")
    with pytest.raises(ConfigError, match=r"broken.yaml, line 3, column 1: not valid YAML") as error:
        load_config(broken)
    assert len(str(error.value).splitlines()) == 1
    assert isinstance(load_config(None), TrainConfig)


def test_key_paths_have_one_codec_that_keeps_values_as_objects() -> None:
    from melanoma_search.train.config import check_value, flatten_config, set_path

    tree: dict[str, object] = {}
    set_path(tree, "loss.name", "focal")
    set_path(tree, "progressive_sizes", [64, 96])  # a list stays a list: no text in between
    set_path(tree, "data.synthetic.seed", 3)
    assert tree == {"loss": {"name": "focal"}, "progressive_sizes": [64, 96], "data": {"synthetic": {"seed": 3}}}
    assert flatten_config(tree) == {"loss.name": "focal", "progressive_sizes": [64, 96], "data.synthetic.seed": 3}
    assert parse_config(tree).progressive_sizes == (64, 96)
    assert check_value("augment.policy", "heavy") is None and "unknown augmentation policy" in str(
        check_value("augment.policy", "swirl"))
    with pytest.raises(ConfigError, match="'lr' is not a section"):
        set_path({"lr": 0.1}, "lr.max", 1)


def test_the_row_sampler_keeps_its_old_name_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="'sampler' is deprecated: use 'row_sampler'"):
        config = parse_config({"sampler": "balanced"})
    assert config.row_sampler == "balanced"
    with pytest.warns(FutureWarning):
        assert parse_config(apply_overrides({}, [parse_override("sampler=balanced")])).row_sampler == "balanced"


def test_keys_the_config_would_ignore_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"oversample \(3\) does nothing with row_sampler 'random'"):
        parse_config({"oversample": 3})
    with pytest.raises(ConfigError, match=r"swa_epochs \(2\) does nothing with checkpoint 'best'"):
        parse_config({"checkpoint": "best", "swa_epochs": 2})
    assert parse_config({"row_sampler": "balanced", "oversample": 3}).oversample == 3
    assert parse_config({"checkpoint": "swa", "swa_epochs": 2}).swa_epochs == 2
