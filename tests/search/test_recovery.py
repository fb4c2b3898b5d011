from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from melanoma_search.search.recovery import fail_running, pending_retries, retried_numbers, worker_id
from melanoma_search.search.study import open_storage


def _study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"journal:{tmp_path}/s.log")
    return optuna.create_study(study_name="s", storage=storage, direction="maximize")


def test_a_dead_workers_trial_is_failed_and_requeued_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    orphan = study.ask()
    orphan.suggest_float("lr", 1e-4, 1e-2, log=True)
    orphan.suggest_categorical("loss.name", ["bce", "focal"])
    orphan.set_user_attr("worker", worker_id(pid=4242))
    alive = study.ask()
    alive.set_user_attr("worker", worker_id())

    dead = worker_id(pid=4242)
    outcome = fail_running(study, lambda t: t.user_attrs.get("worker") == dead, reason="worker died", retry=True)
    assert outcome == [(0, 2)]
    assert fail_running(study, lambda t: t.user_attrs.get("worker") == dead, reason="again", retry=True) == []

    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == "worker died"
    assert trials[1].state == TrialState.RUNNING  # another worker's trial is left alone
    retry = trials[2]
    assert retry.state == TrialState.WAITING and retry.params == trials[0].params
    assert retry.system_attrs["failed_trial"] == 0 and "fail_reason" not in retry.user_attrs
    assert [t.number for t in pending_retries(study)] == [2] and retried_numbers(trials) == {0}

    seen = {}
    study.optimize(lambda t: seen.update(t.params) or 0.5, n_trials=1)  # the next worker runs the retry first
    assert seen == trials[0].params and study.trials[2].state == TrialState.COMPLETE
    assert pending_retries(study) == []


def test_a_retry_taken_by_a_new_worker_is_not_failed_as_the_dead_attempts(tmp_path: Path) -> None:
    """The retry does not inherit the dead attempt's process attributes: a worker that takes it (RUNNING, not yet
    tagged as its own) is not mistaken for the dead launch by another worker's orphan check (a race CI once hit)."""
    study = _study(tmp_path)
    orphan = study.ask()
    orphan.set_user_attr("launch", "dead-run")
    orphan.set_user_attr("worker", worker_id(pid=4242))
    orphan.set_user_attr("precision", "fp32")
    assert fail_running(study, lambda t: t.user_attrs.get("launch") == "dead-run", reason="gone", retry=True) \
        == [(0, 1)]
    retry = study.get_trials()[1]
    assert retry.user_attrs == {"precision": "fp32"}  # what the trial recorded stays; who ran it does not
    taken = study.ask()  # a new worker takes the retry: RUNNING before it tags it
    assert taken.number == 1
    assert fail_running(study, lambda t: t.user_attrs.get("launch") == "dead-run", reason="gone", retry=True) == []
    assert study.get_trials()[1].state == TrialState.RUNNING


def test_no_retry_when_stopping(tmp_path: Path) -> None:
    study = _study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("launch", "run-1")
    assert fail_running(study, lambda t: t.user_attrs.get("launch") == "run-1", reason="stopped", retry=False) \
        == [(0, None)]
    assert [t.state for t in study.trials] == [TrialState.FAIL]
