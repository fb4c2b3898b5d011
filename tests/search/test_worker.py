"""A worker's loop and the run's tickets: a retry of a killed worker's trial starts without a ticket, any other
trial needs one, and that is decided before the trial trains."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.recovery import fail_running, pending_retries
from melanoma_search.search.worker import WorkerJob, run_worker
from tests.studies import TINY, run_cli, write_spec


def test_a_worker_that_waited_for_a_retry_and_got_a_new_trial_trains_it_only_with_a_ticket(tmp_path: Path) -> None:
    """CI caught it once with two workers and a SIGKILL: both saw the retry pending, one took it, Optuna gave the
    other a new trial it trained without a ticket, and the run held one trial more than asked. Here, made certain:
    an ordinary enqueued trial is older than the retry, so Optuna hands it out first, and every ticket is taken."""
    spec = write_spec(tmp_path, fixed={**TINY["fixed"], "epochs": 1})
    first = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1")  # the study, its attributes and one trial
    assert first.returncode == 0, first.stderr
    url = f"sqlite:///{tmp_path}/storage/tiny.db"
    study = optuna.load_study(study_name="tiny", storage=url)
    study.enqueue_trial({"lr": 0.002, "loss.name": "focal"})  # trial 1: waiting, not a retry
    killed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 3e-3, log=True),
                        "loss.name": optuna.distributions.CategoricalDistribution(["bce", "focal", "arcface"])})
    assert killed.number == 1  # ask takes the enqueued trial: enqueue another ordinary one behind the killed one
    study.enqueue_trial({"lr": 0.002, "loss.name": "bce"})  # trial 2: the new trial Optuna hands out first
    killed.set_user_attr("worker", "dead")
    assert fail_running(study, lambda t: t.user_attrs.get("worker") == "dead", reason="worker died",
                        retry=True) == [(1, 3)]
    assert [t.number for t in pending_retries(study)] == [3]
    budget = TrialBudget(tmp_path / "budget.json", limit=2, create=True)
    assert budget.take() and budget.take()  # the killed trial's ticket and one more: none left
    job = WorkerJob(spec_path=str(spec), study_name="tiny", storage_url=url, storage_dir=str(tmp_path / "storage"),
                    budget_path=str(tmp_path / "budget.json"), launch="test-launch", started=time.time())
    run_worker(job, log=lambda line: None)
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert trials[2].state == TrialState.FAIL and "trains nothing" in trials[2].user_attrs["fail_reason"]
    assert "val_auc" not in str(trials[2].user_attrs) and not trials[2].intermediate_values  # never trained
    assert trials[3].state == TrialState.COMPLETE and trials[3].params == trials[1].params  # the retry ran
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # the first run's trial and the retry
