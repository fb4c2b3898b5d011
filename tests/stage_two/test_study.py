"""The stage-two study on a real SQLite storage: it resumes to its total, and its choice is scored on rows it was
not chosen on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from melanoma_search.metrics import AUC, rank_metric
from melanoma_search.stage_two.study import StageTwoData, ablation, choose, run_study, subsets


def _data(seed: int = 0, n: int = 240) -> StageTwoData:
    rng = np.random.default_rng(seed)
    patient = np.repeat([f"P{i}" for i in range(n // 4)], 4)
    baseline = np.repeat(rng.normal(5, 1.5, n // 4), 4)
    target = (rng.random(n) < 0.3).astype(float)
    rows = pd.DataFrame({"patient_id": patient, "sex": "female", "age_approx": 50.0, "site": "torso",
                         "size": baseline + 2 * target + rng.normal(0, 0.5, n)}, index=[f"i{i}" for i in range(n)])
    images = pd.DataFrame({"m1": (0.3 * target + rng.random(n)).argsort().argsort() / n}, index=rows.index)
    folds = np.repeat(np.arange(n // 4) % 3, 4)  # a patient's lesions in one fold
    return StageTwoData(rows=rows, images=images, target=target, folds=folds, columns=("size",))


def test_the_study_resumes_to_its_total_and_its_choice_is_honest(tmp_path: Path) -> None:
    data = _data()
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="x-stage-two", storage=storage, direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    kept: dict[int, np.ndarray] = {}

    def upload(trial: optuna.Trial, oof: pd.DataFrame) -> None:
        kept[trial.number] = oof.set_index("image_name").loc[data.rows.index, "stage_two"].to_numpy()

    metric = AUC.per_fold
    lines: list[str] = []
    options = {"learners": ("lightgbm",), "groups": ("image", "tabular", "patient"), "seeds": 1, "metric": metric,
               "upload": upload, "log": lines.append}
    run_study(data, study=study, n_trials=3, **options)  # type: ignore[arg-type]
    again = optuna.load_study(study_name="x-stage-two", storage=storage)
    run_study(data, study=again, n_trials=3, **options)  # type: ignore[arg-type]
    assert len(again.trials) == 3 and "3 trial(s) finished, 0 to run" in lines[-1]  # resumed, nothing added
    assert set(again.trials[0].params["groups"].split("+")) <= {"image", "tabular", "patient"}
    blend = data.images["m1"].to_numpy()
    choice = choose(again, data, oofs=kept, blend_honest=blend, metric=AUC)
    best_everywhere = max(kept.values(), key=lambda oof: metric(data.target, oof))
    assert choice.auc[0] <= metric(data.target, best_everywhere) + 1e-12  # chosen elsewhere: never flatters
    assert choice.auc[1] == metric(data.target, blend)
    # the one-standard-error rule decides, with the bootstrap over the synthetic patients (they have several lesions)
    assert choice.ships == (choice.difference.difference > choice.difference.standard_error)
    assert choice.difference.difference == pytest.approx(choice.auc_difference.difference)
    assert choice.resampled == "patients"
    assert choice.ships  # the within-patient size step is far stronger than the image score here
    assert "it ships only above one standard error; bootstrap over patients" in choice.rule()
    assert set(ablation(data, choice.trial, seeds=1, metric=metric)) == set(choice.trial.params["groups"].split("+"))


def test_a_trial_draws_a_non_empty_set_of_groups() -> None:
    choices = subsets(("image", "metadata", "patient"))
    assert len(choices) == 7 and all(choices.values()) and choices["image+patient"] == ("image", "patient")
    assert rank_metric("pauc").name == "pauc@0.8" and rank_metric("holdout_auc") is AUC  # older studies' names


def test_stage_two_ships_only_above_one_standard_error() -> None:
    """A positive difference inside the comparison's noise keeps the blend (on d4b4a5f any difference above 0
    shipped stage two); one above a standard error ships it, and the output says the rule with its figures."""
    from melanoma_search.metrics import PairedDifference
    from melanoma_search.stage_two.study import Choice

    trial = optuna.trial.create_trial(params={"learner": "lightgbm", "groups": "image"},
                                      distributions={"learner": optuna.distributions.CategoricalDistribution(
                                          ["lightgbm"]), "groups": optuna.distributions.CategoricalDistribution(
                                          ["image"])}, value=0.9)
    noisy = PairedDifference(difference=0.004, standard_error=0.009, low=-0.013, high=0.022)
    clear = PairedDifference(difference=0.030, standard_error=0.009, low=0.012, high=0.048)
    rows = np.zeros(4)

    def choice(difference: PairedDifference) -> Choice:
        return Choice(trial=trial, honest=rows, blend=rows, target=rows, auc=(0.9, 0.89), pauc=(0.1, 0.1),
                      auc_difference=difference, pauc_difference=difference, metric="auc", difference=difference,
                      resampled="patients")

    assert not choice(noisy).ships and choice(clear).ships
    assert "not shipped: on auc, stage two minus the blend is +0.0040 against one standard error of 0.0090" in \
        choice(noisy).lines()[-1]
