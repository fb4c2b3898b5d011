"""Every registered learner fits, predicts and round-trips through its own file format, never a pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from melanoma_search.errors import ConfigError
from melanoma_search.stage_two.learners import get_learner, list_learners


@pytest.mark.parametrize("name", list_learners())
def test_a_learner_round_trips_through_its_own_format(name: str, tmp_path: Path) -> None:
    learner = get_learner(name)
    learner.check_installed()  # the dev install has the trees extra; a missing one is refused in one line
    rng = np.random.default_rng(0)
    target = (rng.random(300) < 0.3).astype(float)
    features = pd.DataFrame({"a": target + rng.normal(0, 1, 300), "b": rng.normal(0, 1, 300)})
    features.loc[:20, "a"] = np.nan
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    params = learner.suggest(study.ask())
    params["rounds"] = 50
    model = learner.fit(features, target, params, 0)
    path = tmp_path / f"model{learner.suffix}"
    learner.save(model, path)
    assert path.read_bytes()[:1] != b"\x80"  # not a pickle (protocol 2+ starts with 0x80)
    again = learner.load(path)
    assert np.allclose(learner.predict(again, features), learner.predict(model, features), atol=1e-6)
    assert learner.predict(model, features).min() >= 0 and learner.predict(model, features).max() <= 1


def test_an_unknown_learner_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="unknown stage-two learner 'random_forest'; available: lightgbm"):
        get_learner("random_forest")
