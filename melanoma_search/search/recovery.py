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

A trial stopped by a signal its worker caught (SIGTERM: preemption; SIGINT: the user's Ctrl-C) is recorded FAIL by
Optuna and then re-queued by its own worker (:func:`requeue`), its saved epochs kept for the retry. The journal file
has no heartbeat: there a launch that left no live process behind is found by its lock
(:mod:`~melanoma_search.search.launch_lock`) and its RUNNING trials are failed and re-queued (:func:`fail_orphans`).
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "PROCESS_ATTRS",
    "RAY_TRIAL_ATTR",
    "fail_orphans",
    "fail_running",
    "fail_stale",
    "pending_retries",
    "requeue",
    "retried_numbers",
    "tag_trial",
    "worker_id",
]

_log = logging.getLogger(__name__)


#: The user attribute a Ray Tune trial's id is kept in (the Ray backend's recovery fails the trials of a lost one).
RAY_TRIAL_ATTR = "ray_trial"
#: The user attributes that name the process running a trial (:func:`tag_trial`): a retry does not inherit them.
PROCESS_ATTRS = ("worker", "launch", RAY_TRIAL_ATTR)


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
        retry_number = _retry(study, trial, max_retry=max_retry) if retry else None
        _log.warning("trial %d failed: %s%s", trial.number, reason,
                     f"; re-queued as trial {retry_number}" if retry_number is not None else "")
        outcome.append((trial.number, retry_number))
    return outcome


def _retry(study: optuna.Study, trial: FrozenTrial, *, max_retry: int) -> int | None:
    """Re-queue the failed ``trial`` as Optuna's heartbeat would (``failed_trial`` / ``retry_history``); the retry's
    number, or ``None`` when its chain already has ``max_retry`` retries.

    The retry keeps the trial's user attributes but not those naming the failed attempt's process
    (:data:`PROCESS_ATTRS`): between a worker taking the retry (it turns RUNNING) and tagging it as its own, another
    worker's orphan check would otherwise read the dead launch in it and fail it again."""
    before = len(study.get_trials(deepcopy=False))
    unowned = copy.copy(trial)
    unowned.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in PROCESS_ATTRS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, unowned)
    added = [t for t in study.get_trials(deepcopy=False)[before:]
             if trial.number in t.system_attrs.get("retry_history", ())]
    return added[0].number if added else None


def requeue(study: optuna.Study, number: int, *, max_retry: int = 2) -> int | None:
    """Re-queue trial ``number`` if it ended FAIL and has no retry yet (a preempted or interrupted trial: its worker
    calls this once Optuna has recorded the FAIL). Returns the retry's number."""
    trials = study.get_trials(deepcopy=False)
    trial = next((t for t in trials if t.number == number), None)
    if trial is None or trial.state != TrialState.FAIL or number in retried_numbers(trials):
        return None
    return _retry(study, trial, max_retry=max_retry)


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


def fail_orphans(study: optuna.Study, storage_url: str, *, own_launch: str | None = None
                 ) -> list[tuple[int, int | None]]:
    """Journal storage: fail and re-queue the RUNNING trials of launches with no live process (a host crash, a
    ``kill -9`` of a launcher and its workers), with the reason in ``fail_reason``; a no-op for other storages.
    Returns ``(failed, retry)`` numbers."""
    from melanoma_search.search.launch_lock import LaunchLock, launch_folder, launch_is_dead

    if launch_folder(storage_url) is None:
        return []
    launches = {t.user_attrs.get("launch") for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    dead = {launch for launch in launches
            if isinstance(launch, str) and launch != own_launch and launch_is_dead(storage_url, launch)}
    if not dead:
        return []
    failed = fail_running(study, lambda t: t.user_attrs.get("launch") in dead, retry=True,
                          reason="its run (launch " + ", ".join(sorted(dead)) + ") has no live process left (its "
                          "host crashed or it was killed with its workers), so a later worker failed it and re-queued "
                          "it")
    for launch in dead:  # nothing of a dead launch is left to lock
        LaunchLock(storage_url, launch).release(remove=True)
    return failed
