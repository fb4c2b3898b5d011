"""Pruning steps count resources: under every shipped spec's pruner a clearly bad trial stops within its first fold
model, and a study that reported from step 0 before keeps its base.

The trial's own reporter (:class:`melanoma_search.search.trial._Reporter`) reports real fold and epoch results to a
real in-memory study opened as a run opens it, with the spec's pruner: no training, so every shipped spec is checked.
On d4b4a5f fold k was step k - 1, and b5-search's Hyperband (first rung at step 1) let a bad 5-fold trial train two
fold models before it could stop.
"""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

from melanoma_search.search import records
from melanoma_search.search.objective import Objective, load_objective
from melanoma_search.search.spec import load_spec
from melanoma_search.search.study import open_study
from melanoma_search.search.trial import _Reporter
from melanoma_search.train.results import EpochStats, FoldResult

SHIPPED = ("demo", "ham-cpu", "b0-search", "b5-search", "effnet-sweep")


def _fold(fold: int, signal: float, rng: np.random.Generator) -> FoldResult:
    target = (np.arange(120) % 4 == 0).astype(float)
    oof = pd.DataFrame({"image_name": [f"{fold}-{i}" for i in range(120)], "target": target, "fold": fold,
                        "pred": signal * target + rng.normal(0, 1, 120)})
    return FoldResult(fold=fold, checkpoint="last", best_epoch=1, best_epoch_auc=0.5, auc=0.5, oof=oof, test=None,
                      history=[], lr=1e-3, seconds=1.0, images_per_s=1.0)


def _epoch(step: int, auc: float) -> EpochStats:
    return EpochStats(fold=0, epoch=step + 1, epochs=0, step=step, image_size=64, train_loss=0.5, val_loss=0.5,
                      val_auc=auc, lr=1e-3, seconds=1.0, images_per_s=1.0)


def _run_trial(study: optuna.Study, objective: Objective, *, folds: list[int], epochs: int, good: bool,
               rng: np.random.Generator) -> tuple[optuna.trial.TrialState, int]:
    """One simulated trial through the real reporter; returns its state and how many fold models it trained."""
    trial = study.ask()
    reporter = _Reporter(trial, objective=objective, earlier=set(), log=lambda line: None)
    trained = 0
    try:
        for position, fold in enumerate(folds):
            trained += 1
            for epoch in range(epochs):
                quality = (0.85 + 0.01 * epoch + rng.normal(0, 0.005)) if good else 0.55
                reporter.epoch(_epoch(position * epochs + epoch, quality))
            reporter.fold(_fold(fold, 2.5 if good else 0.0, rng))
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return optuna.trial.TrialState.PRUNED, trained
    values = [v for _, v in sorted(trial.storage.get_trial(trial._trial_id).intermediate_values.items())]
    study.tell(trial, values[-1] if values else 0.9)
    return optuna.trial.TrialState.COMPLETE, trained


@pytest.mark.parametrize("name", SHIPPED)
def test_a_clearly_bad_trial_stops_within_its_first_fold_model_under_each_shipped_spec(name: str) -> None:
    spec = load_spec(name)
    objective = load_objective(spec.objective)
    study = open_study(spec, objective, storage=optuna.storages.InMemoryStorage(), study_name=name, seed=0)
    folds = list(objective.folds(int(spec.data.get("n_folds", 5))))
    epochs = int(spec.fixed.get("epochs", 4))
    rng = np.random.default_rng(0)
    for _ in range(8):  # good trials fill every bracket's first rung
        _run_trial(study, objective, folds=folds, epochs=epochs, good=True, rng=rng)
    if spec.pruner.name == "none" or not objective.reports:
        pytest.skip(f"{name}: pruner {spec.pruner.name}, objective {objective.name} (nothing is pruned: checked "
                    "only that its trials run)")
    # four bad trials: each lands in some bracket
    outcomes = [_run_trial(study, objective, folds=folds, epochs=epochs, good=False, rng=rng) for _ in range(4)]
    assert all(state == optuna.trial.TrialState.PRUNED for state, _ in outcomes), (name, outcomes)
    assert all(trained == 1 for _, trained in outcomes), (name, outcomes)  # one fold model each
    if objective.report_each == "fold":  # pruned at the step after the first fold model: step 1
        bad = study.trials[-1]
        assert sorted(bad.intermediate_values) == [1], (name, bad.intermediate_values)


def test_a_study_that_reported_from_zero_keeps_its_base() -> None:
    """A study whose trials reported from step 0 before the base was recorded keeps reporting from 0 (its old and
    new trials stay comparable step by step); a new study counts from 1."""
    spec, objective = load_spec("ham-cpu"), load_objective("cv_auc")
    storage = optuna.storages.InMemoryStorage()
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    trial = old.ask()
    trial.report(0.8, step=0)
    old.tell(trial, 0.8)
    assert records.first_step(open_study(spec, objective, storage=storage, study_name="old")) == 0
    assert records.first_step(open_study(spec, objective, storage=storage, study_name="new")) == 1
    again = open_study(spec, objective, storage=storage, study_name="new")
    again.enqueue_trial({})
    assert records.first_step(again) == 1  # recorded once, read back
