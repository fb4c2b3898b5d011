"""The study-wide budget counts finished, running and re-queued trials, in the order the storage numbered them."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from melanoma_search.search import records
from melanoma_search.search.study_budget import StudyBudget


def test_what_takes_a_place_and_what_does_not() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.8, state=TrialState.COMPLETE))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={0: 0.7}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # killed: its work is lost, no place
    study.enqueue_trial({})  # an enqueued configuration: no place until it runs
    retry = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 2})
    study.add_trial(retry)  # the killed trial's retry keeps its place
    running = study.ask()  # the enqueued one (number 3), now RUNNING
    budget = StudyBudget(4)
    assert running.number == 3 and budget.used(study) == 4 and budget.spent(study) and not budget.done(study)
    assert budget.admits(study, running.number)  # 3 places were taken before it
    retried = study.ask()  # the retry (number 4) runs in the place its original held
    assert retried.number == 4 and budget.admits(study, retried.number)
    late = study.ask()  # a new trial: 4 places taken before it, over the budget
    assert late.number == 5 and not budget.admits(study, late.number)
    assert StudyBudget(None).admits(study, late.number) and not StudyBudget(None).spent(study)
    study.tell(running, 0.9)
    study.tell(retried, 0.85)
    study.tell(late, state=TrialState.FAIL)
    assert StudyBudget(4).done(study) and not StudyBudget(5).done(study)  # 3 complete + 1 pruned


def test_the_study_attributes_round_trip() -> None:
    study = optuna.create_study(direction="maximize")
    records.record_cv_aucs(study, {3: 0.81234567})
    records.record_cv_aucs(study, {1: 0.7})
    assert records.cv_aucs(study) == {1: 0.7, 3: 0.81235}
    records.set_kept_weights(study, {2: Path("/tmp/w/trial-00002")})
    assert records.kept_weights(study) == {2: Path("/tmp/w/trial-00002")}
    assert records.lineage(study) is None and records.export_section(study) == {}
