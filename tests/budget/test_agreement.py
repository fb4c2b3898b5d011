"""The race's record of whether its cheap rungs can choose: rank agreement with the final cv score."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial
from scipy.stats import kendalltau, spearmanr

from melanoma_search.budget.agreement import rank_agreement


def _trial(lr: float, *, rung: int | str, value: float) -> optuna.trial.FrozenTrial:
    race = {"id": "r", "rung": rung, "candidate": 0, "folds": [0] if rung != "final" else [0, 1, 2], "epochs": 1}
    if rung == "final":
        return create_trial(params={"lr": lr}, distributions={"lr": CategoricalDistribution([1, 2, 3, 4, 5])},
                            value=value, user_attrs={"race": race})
    return create_trial(params={"lr": lr}, distributions={"lr": CategoricalDistribution([1, 2, 3, 4, 5])},
                        state=TrialState.PRUNED, intermediate_values={1: value},
                        user_attrs={"race": {**race, "score": value}})


def test_each_rung_is_ranked_against_the_final_score_of_the_same_configurations() -> None:
    study = optuna.create_study(direction="maximize")
    screened = {1: 0.61, 2: 0.70, 3: 0.64, 4: 0.58, 5: 0.66}
    final = {1: 0.80, 2: 0.83, 3: 0.86, 4: 0.79}  # lr 5 never reached the end: not counted
    study.add_trials([_trial(lr, rung=0, value=v) for lr, v in screened.items()]
                     + [_trial(lr, rung="final", value=v) for lr, v in final.items()])
    agreement = rank_agreement(study)
    (label, figures), = agreement.items()
    assert label == "rung 0 (1 fold(s) x 1 epoch(s))"
    low, high = [screened[k] for k in (1, 2, 3, 4)], [final[k] for k in (1, 2, 3, 4)]
    assert figures["n"] == 4
    assert figures["spearman"] == pytest.approx(spearmanr(low, high).statistic, abs=1e-4)
    assert figures["kendall"] == pytest.approx(kendalltau(low, high).statistic, abs=1e-4)
    assert figures["spearman"] == pytest.approx(0.8)  # lr 2 and 3 swap places at the end


def test_fewer_than_three_pairs_give_a_count_and_no_figure() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trials([_trial(1, rung=0, value=0.6), _trial(2, rung=0, value=0.7), _trial(1, rung="final", value=0.8),
                      _trial(2, rung="final", value=0.9)])
    assert list(rank_agreement(study).values()) == [{"n": 2, "spearman": None, "kendall": None}]
