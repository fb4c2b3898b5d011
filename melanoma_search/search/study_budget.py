"""The study's own trial budget, shared by every node, worker and restart: ``budget.max_trials`` / ``--max-trials``.

``--n-trials N`` is what one run adds, counted by that run's launcher (:mod:`~melanoma_search.search.budget`): two
nodes started with ``--n-trials 100`` run 200 trials, and a node restarted after a preemption starts its 100 again.
``max_trials`` is counted in the study's storage instead, so the same command on every node, and again after any
restart, stops at the same total: the finished trials (complete or pruned) plus those running, plus the re-queued
retries of killed trials (a retry takes its original's place, so a killed trial is never both retried and replaced).
A failed trial does not count: its work is lost, and its retry (or a new trial) takes the place.

A worker that finds every place taken while some are still running elsewhere waits (failing trials whose heartbeat
stopped, which re-queues them) until they finish, or go stale and are retried here: so the nodes that outlive a
preempted one finish its trials, and every launcher ends when the study has its total.

Counting before a trial starts cannot be exact when two workers look at the same moment, so a trial checks again
once Optuna has given it its number (numbers are handed out in order by the storage): it runs only if fewer than
``max_trials`` counted trials have lower numbers. The one that loses such a race ends at once as FAIL with the reason
``over the study's budget``, without training.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["StudyBudget"]

_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
OVER_BUDGET = "over the study's budget"


def _counts(trial: FrozenTrial) -> bool:
    return trial.state in _COUNTED or (trial.state == TrialState.WAITING and "failed_trial" in trial.system_attrs)


@dataclass(frozen=True)
class StudyBudget:
    """``max_trials`` trials for the whole study (``None``: no study-wide limit)."""

    max_trials: int | None

    def used(self, study: optuna.Study) -> int:
        return sum(_counts(t) for t in study.get_trials(deepcopy=False))

    def spent(self, study: optuna.Study) -> bool:
        """No room for another trial (checked before asking Optuna for one)."""
        return self.max_trials is not None and self.used(study) >= self.max_trials

    def done(self, study: optuna.Study) -> bool:
        """Every place is taken by a finished trial: the study has run its budget."""
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
        return self.max_trials is not None and finished >= self.max_trials

    def admits(self, study: optuna.Study, number: int) -> bool:
        """Whether trial ``number`` (just started) is within the budget: fewer than ``max_trials`` counted trials
        came before it."""
        if self.max_trials is None:
            return True
        before = sum(_counts(t) for t in study.get_trials(deepcopy=False) if t.number < number)
        return before < self.max_trials

    def reason(self) -> str:
        return (f"{OVER_BUDGET}: budget.max_trials ({self.max_trials}) trials were already finished or running when "
                "this one started (another worker or node took the last place)")
