"""Ray Tune's side of ``--backend ray``: the searcher that places trials and the callback that recovers lost ones.

Kept apart from :mod:`~melanoma_search.search.backends.ray` because their base classes are Tune's: importing this
module imports Ray, which reads its environment (output, log and signal settings) when it is imported, so the
backend imports it only after setting that environment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search import Searcher

from melanoma_search.search.backends.base import RunOutcome
from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.recovery import RAY_TRIAL_ATTR, fail_running, pending_retries
from melanoma_search.search.study_budget import StudyBudget

__all__ = ["RAY_TRIAL_ATTR", "Placement", "Recover"]  # RAY_TRIAL_ATTR: owned by recovery, re-exported here


class Placement(Searcher):
    """Hands Tune a trial index while the run's budget lasts (trials, deadline, the study's places; re-queued
    trials always get one); Optuna samples inside the trial."""

    def __init__(self, budget: TrialBudget, study: optuna.Study, study_budget: StudyBudget, *,
                 n_trials: int | None) -> None:
        super().__init__()
        self.budget, self.study, self.study_budget, self.n_trials = budget, study, study_budget, n_trials
        self.suggested = 0

    # Tune's annotation says dict | None, but its documented FINISHED value is a str
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        waiting = bool(pending_retries(self.study))
        if self.budget.out_of_time() or (not waiting and (
                (self.n_trials is not None and self.suggested >= self.n_trials)
                or self.study_budget.spent(self.study))):
            return Searcher.FINISHED
        self.suggested += 1
        return {"cwd": str(Path.cwd()), "index": self.suggested - 1}

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result and result.get("seconds"):  # results live in the Optuna storage; only the duration here
            self.budget.record(float(result["seconds"]))

    def save(self, checkpoint_path: str) -> None:
        pass  # nothing to save: a resumed run reopens the Optuna study

    def restore(self, checkpoint_path: str) -> None:
        pass


class Recover(tune.Callback):
    """A Tune trial whose actor died: its Optuna trial is failed and re-queued (Tune restarts the Tune trial, which
    runs the re-queued one)."""

    def __init__(self, study: optuna.Study, outcome: RunOutcome, *, log: Callable[[str], None]) -> None:
        self.study, self.outcome, self.log = study, outcome, log

    def _reap(self, trial: Any, what: str) -> None:
        failed = fail_running(self.study, lambda t: t.user_attrs.get(RAY_TRIAL_ATTR) == trial.trial_id, retry=True,
                              reason=f"Ray trial {trial.trial_id} {what}")
        self.outcome.failed_trials.extend(failed)
        for number, retry in failed:
            self.log(f"Ray trial {trial.trial_id} {what} in trial {number}; re-queued as trial {retry}")

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._reap(trial, "lost its worker")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._reap(trial, "failed")
