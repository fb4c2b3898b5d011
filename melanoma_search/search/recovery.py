"""Trials that outlive their worker: who runs each trial, and failing + re-queueing the ones a dead worker left.

Every trial records which process runs it (user attributes ``worker`` = ``host:pid``, ``launch`` = the run that
started it, plus any tags the backend adds, e.g. the Tune trial under Ray). When a launcher sees a worker die
(``kill -9``, out of host memory, a lost Ray actor) it fails that worker's RUNNING trials at once and re-queues each
with the same parameters through Optuna's own ``RetryHeartbeatStaleTrialCallback``, so the retry looks exactly like
one made by the storage heartbeat (``failed_trial`` / ``retry_history`` system attributes). The heartbeat remains
the safety net for workers no launcher watches (another node on a shared PostgreSQL): a surviving worker fails their
trials before it starts its next one (:func:`fail_stale`, which, unlike Optuna's own sweep, says why in the trial's
``fail_reason``). Failing a trial is a compare-and-set in every storage, so a trial failed by both paths is retried
once.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "fail_running",
    "fail_stale",
    "pending_retries",
    "retried_numbers",
    "tag_trial",
    "worker_id",
]

_log = logging.getLogger(__name__)


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of ``pid`` on this host)."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def tag_trial(trial: optuna.Trial, *, launch: str, tags: Mapping[str, str] | None = None) -> None:
    """Record which process and which run execute ``trial`` (read by :func:`fail_running` and the dashboard)."""
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("launch", launch)
    for key, value in (tags or {}).items():
        trial.set_user_attr(key, value)


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that have a retry (those are not counted as results of their own)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def pending_retries(study: optuna.Study) -> list[FrozenTrial]:
    """Re-queued trials still waiting for a worker."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if "failed_trial" in t.system_attrs]


def fail_running(
    study: optuna.Study,
    belongs: Callable[[FrozenTrial], bool],
    *,
    reason: str,
    retry: bool,
    max_retry: int = 2,
) -> list[tuple[int, int | None]]:
    """Fail the RUNNING trials for which ``belongs`` holds; re-queue each when ``retry``.

    Returns ``(failed trial number, retry trial number or None)`` pairs. A trial that another process finished or
    failed meanwhile is left alone.
    """
    storage = study._storage  # Optuna's storage API: the only way to change another process's trial
    outcome: list[tuple[int, int | None]] = []
    for trial in study.get_trials(deepcopy=True, states=(TrialState.RUNNING,)):
        if not belongs(trial):
            continue
        try:  # the reason first: a finished trial takes no attributes, and FAIL is what makes it finished
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:  # another process finished or failed it meanwhile
            continue
        retry_number = None
        if retry:
            before = len(study.get_trials(deepcopy=False))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)
            added = [t for t in study.get_trials(deepcopy=False)[before:]
                     if trial.number in t.system_attrs.get("retry_history", ())]
            retry_number = added[0].number if added else None
        _log.warning("trial %d failed: %s%s", trial.number, reason,
                     f"; re-queued as trial {retry_number}" if retry_number is not None else "")
        outcome.append((trial.number, retry_number))
    return outcome


def fail_stale(study: optuna.Study) -> list[tuple[int, int | None]]:
    """Fail and re-queue the RUNNING trials whose heartbeat went silent (their process or node is gone), with the
    reason in ``fail_reason``; a no-op for storages without heartbeats. Returns ``(failed, retry)`` numbers."""
    from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or not is_heartbeat_enabled(storage):
        return []
    stale = set(storage._get_stale_trial_ids(study._study_id))  # Optuna's own test of silence (grace period)
    if not stale:
        return []
    interval = storage.get_heartbeat_interval()
    return fail_running(study, lambda t: t._trial_id in stale, retry=True,
                        reason=f"its worker stopped sending heartbeats (killed, or its node was lost): silent for "
                        f"more than {3 * (interval or 0)}s, so another worker failed it and re-queued it")
