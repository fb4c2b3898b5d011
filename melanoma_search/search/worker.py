"""One worker of a study: open the shared study and run trials until the run's budget is spent.

The same code runs the study in three places: in the ``run`` process itself (one worker), in each process that
``--workers N`` starts (``python -m melanoma_search.search.worker JOB.json``) and inside each Ray Tune trial
(``--backend ray``, one trial per Tune trial). Everything a worker needs travels in a :class:`WorkerJob` — plain data,
so it crosses a process or a machine boundary as JSON — and everything it produces goes to the study's storage.

A worker first runs any re-queued trial left by a dead worker (those already hold a ticket of the budget), then takes
a ticket per new trial (:class:`~melanoma_search.search.budget.TrialBudget`). A trial stopped by SIGTERM (a
scheduler's preemption) or Ctrl-C is recorded FAIL by Optuna and re-queued by its worker, its saved epochs kept, so
the same command (or a surviving worker) continues it from its last finished epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from melanoma_search.budget import read_prior
from melanoma_search.data.prepare import PreparedData
from melanoma_search.errors import DiskFullError, MelanomaSearchError, Preempted, preempt_on_sigterm
from melanoma_search.search.artifacts import ArtifactWriter
from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.gpu_share import GpuShare
from melanoma_search.search.launch_lock import LaunchLock
from melanoma_search.search.objective import load_objective
from melanoma_search.search.progress import TrialProgress, one_line_trial_failures
from melanoma_search.search.recovery import fail_orphans, fail_stale, pending_retries, requeue, tag_trial
from melanoma_search.search.spec import load_spec
from melanoma_search.search.study import open_storage, open_study, study_folder
from melanoma_search.search.study_budget import StudyBudget
from melanoma_search.search.trial import TrialRunner

__all__ = ["StudyBudgetSpent", "WorkerJob", "run_worker"]


class StudyBudgetSpent(Exception):
    """A trial that started after the study's last place was taken: Optuna records it FAIL, untrained."""


@dataclass(frozen=True, kw_only=True)
class WorkerJob:
    """What a worker needs to join a run; all paths absolute so the job means the same in any working folder."""

    spec_path: str
    study_name: str
    storage_url: str
    storage_dir: str
    budget_path: str | None
    """The run's :class:`TrialBudget` file; ``None`` under Ray, where Tune's searcher hands out the trials."""
    launch: str
    overrides: tuple[tuple[str, Any], ...] = ()
    """``(key path, value)`` pairs from ``--set``, values as parsed once on the command line (JSON-able)."""
    seed: int | None = None
    n_trials: int | None = None
    """The run's trial budget, for the progress line's "k/N" and ETA (the budget file enforces it)."""
    timeout: float | None = None
    started: float | None = None
    """Unix time the run started (for the ETA of a worker that joined later)."""
    heartbeat: int = 60
    label: str = ""
    """Prefix for this worker's output lines (``[w1]``), empty for a lone worker."""
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    """Extra user attributes the backend puts on each trial (e.g. the Ray Tune trial that ran it)."""
    max_trials: int | None = None
    """Stop after this many trials of this worker (a Ray Tune trial runs exactly one)."""
    study_max_trials: int | None = None
    """The study-wide budget (:class:`~melanoma_search.search.study_budget.StudyBudget`), shared by every node."""
    gpu_lock: str | None = None
    """The lock file of this worker's GPU when several workers share it (see :mod:`~.gpu_share`)."""
    verbose: bool = False
    """Keep Optuna's record of a failed trial with its traceback (else one line per failure)."""
    artifact_dir: str | None = None
    """The artifact store (default ``<storage_dir>/<study_name>/artifacts``; student rounds share their first
    study's, so one dashboard shows every round's artifacts)."""
    deadline: float | None = None
    """Unix time of the run's kept time limit (``--time-limit``): no trial starts that its predicted cost cannot
    finish before it (:mod:`melanoma_search.budget`)."""
    cost_prior: str | None = None
    """A cost model file (``--cost-model``) whose measurements the study's own correct."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> WorkerJob:
        data = json.loads(text)
        data["overrides"] = tuple((str(k), v) for k, v in data.get("overrides", ()))
        return cls(**data)


@dataclass
class _Session:
    """A worker's open study and what runs its trials."""

    study: optuna.Study
    runner: TrialRunner
    budget: TrialBudget | None
    study_budget: StudyBudget
    heartbeat: int
    """Seconds between a storage heartbeat's beats (0: the storage has none)."""
    current: int | None = None
    """The number of the trial this worker is running."""


def _open(job: WorkerJob, *, log: Callable[[str], None], data: PreparedData | None) -> _Session:
    spec = load_spec(job.spec_path)
    objective = load_objective(spec.objective)
    storage = open_storage(job.storage_url, heartbeat_interval=job.heartbeat or None)
    storage_beats = isinstance(storage, optuna.storages.RDBStorage) and bool(job.heartbeat)
    study = open_study(spec, objective, storage=storage, study_name=job.study_name, seed=job.seed)
    own = study_folder(study, storage_dir=job.storage_dir)
    artifacts = ArtifactWriter(job.artifact_dir or Path(job.storage_dir) / job.study_name / "artifacts",
                               weights_root=own / "weights", top_k=spec.top_k_weights)
    share = GpuShare(job.gpu_lock) if job.gpu_lock else None
    prior = read_prior(job.cost_prior) if job.cost_prior else None
    runner = TrialRunner(spec=spec, objective=objective, base=spec.base_config(overrides=job.overrides),
                         artifacts=artifacts, work_dir=own / "work", log=log, data=data,
                         process_started=_unpaid_startup(), gpu_share=share, deadline=job.deadline,
                         cost_prior=prior)
    return _Session(study=study, runner=runner, budget=TrialBudget(job.budget_path) if job.budget_path else None,
                    study_budget=StudyBudget(job.study_max_trials), heartbeat=job.heartbeat if storage_beats else 0)


def run_worker(job: WorkerJob, *, log: Callable[[str], None] | None = None, data: PreparedData | None = None
               ) -> list[FrozenTrial]:
    """Run trials for ``job`` until its budget is spent; returns the trials this worker finished.

    ``data``: the dataset already read by the caller (the lone in-process worker), else read on first use.
    A trial stopped by SIGTERM (preemption) or Ctrl-C is re-queued here, its saved epochs kept for the retry.
    """
    prefix = f"{job.label} " if job.label else ""
    emit = log or (lambda line: print(f"{prefix}{line}", flush=True))
    if not job.verbose:
        one_line_trial_failures()
    lock = LaunchLock(job.storage_url, job.launch).hold()  # journal storages: this launch has a live process
    session = _open(job, log=emit, data=data)
    try:
        return _trials(job, session, log=emit)
    except KeyboardInterrupt as stop:
        if session.current is not None and (retry := requeue(session.study, session.current)) is not None:
            what = "preempted (SIGTERM)" if isinstance(stop, Preempted) else "interrupted (Ctrl-C)"
            emit(f"trial {session.current} {what}: re-queued as trial {retry}, which continues from its last "
                 "finished epoch")
        raise
    finally:
        lock.release()


def _trials(job: WorkerJob, session: _Session, *, log: Callable[[str], None]) -> list[FrozenTrial]:
    study, budget, study_budget = session.study, session.budget, session.study_budget
    progress = TrialProgress(metric_names=session.runner.objective.metric_names, n_trials=job.n_trials,
                             timeout=job.timeout, log=log, launch=job.launch, started=job.started)
    ran: list[FrozenTrial] = []
    ticketless = False  # the next trial starts without a ticket, as the retry of this run's killed worker's trial

    def tagged(trial: optuna.Trial) -> float | tuple[float, ...]:
        session.current = trial.number
        tag_trial(trial, launch=job.launch, tags=job.tags)
        if not study_budget.admits(study, trial.number):  # lost a race for the study's last place: train nothing
            trial.set_user_attr("fail_reason", study_budget.reason())
            raise StudyBudgetSpent(study_budget.reason())
        if ticketless and not _is_retry(trial) and budget is not None and not budget.take():
            # another worker took the retry and Optuna gave this one a new trial, which needs a ticket: none is left
            # (checked before training: afterwards the run would hold one trial more than it was given)
            reason = "the run's trials were all taken while this worker waited for a re-queued trial: trains nothing"
            trial.set_user_attr("fail_reason", reason)
            raise StudyBudgetSpent(reason)
        return session.runner(trial)

    def finished(_: optuna.Study, trial: FrozenTrial) -> None:
        session.current = None
        ran.append(trial)
        if budget is not None and trial.duration is not None:
            budget.record(trial.duration.total_seconds())

    while job.max_trials is None or len(ran) < job.max_trials:
        retry = budget is not None and bool(pending_retries(study))  # this run's own killed workers' trials
        fail_stale(study)  # a dead node's trials: failed with their reason and re-queued (their rerun takes a ticket)
        fail_orphans(study, job.storage_url, own_launch=job.launch)  # a dead launch's, on a journal
        if not retry and study_budget.spent(study):
            if _wait_for_places(study, study_budget, budget=budget, heartbeat=session.heartbeat, log=log):
                continue  # a place came free, or a stale trial was re-queued
            break
        if budget is not None and not budget.take(ticket=not retry):
            break
        ticketless = retry
        share = session.runner.gpu_share
        with share.shared() if share is not None else contextlib.nullcontext():
            study.optimize(tagged, n_trials=1, catch=(Exception,), callbacks=[progress, finished],
                           gc_after_trial=True)
        if session.runner.not_started is not None:  # the next trial would not fit either: the limit is kept
            log(session.runner.not_started)
            break
        if (fault := session.runner.run_fault) is not None:  # the next trial would fail on the same disk or image
            if ran and (retry_number := requeue(study, ran[-1].number)) is not None:
                what = "a full disk" if isinstance(fault, DiskFullError) else "an image that cannot be decoded"
                log(f"trial {ran[-1].number} stopped on {what}: re-queued as trial {retry_number}")
            raise fault
    return ran


def _is_retry(trial: optuna.Trial) -> bool:
    """A re-queued trial of a killed or preempted worker (its ticket was taken when it first started)."""
    return "failed_trial" in trial.study._storage.get_trial_system_attrs(trial._trial_id)


def _wait_for_places(study: optuna.Study, study_budget: StudyBudget, *, budget: TrialBudget | None, heartbeat: int,
                     log: Callable[[str], None]) -> bool:
    """Every place of the study's budget is taken: ``False`` when the study is done (or this run's time is up, or
    nothing can tell a dead node's trial from a live one), else wait until a place comes free (``True``).

    A place held by a RUNNING trial of another node is either finished there or, if that node died, failed once its
    heartbeat is stale and re-queued; this worker then runs the retry, so the study still reaches its total.
    """
    said = False
    while True:
        if study_budget.done(study):
            log(f"the study's budget is done: {study_budget.max_trials} trial(s) finished (budget.max_trials)")
            return False
        if pending_retries(study):  # a dead launch's trial re-queued just now (journal storages too): run it here
            return True
        if not heartbeat or (budget is not None and budget.out_of_time()):
            log(f"the study's budget of {study_budget.max_trials} trial(s) is taken (finished or running elsewhere)")
            return False
        fail_stale(study)  # a dead node's trial: FAIL with its reason, and re-queued once
        if pending_retries(study) or not study_budget.spent(study):
            return True
        if not said:
            log(f"every place of the study's budget ({study_budget.max_trials}) is taken; waiting for the trials "
                "running elsewhere to finish (or to go stale and be retried here)")
            said = True
        time.sleep(max(1.0, heartbeat / 2))


_startup_paid: list[bool] = []
"""Set once a worker of this process has charged its start-up to a trial: a race runs one in-process worker per
rung, and only the first trial of the process paid for its imports."""


def _unpaid_startup() -> float | None:
    """This process's start time, the first time a worker asks; ``None`` after (nothing left to charge)."""
    if _startup_paid:
        return None
    _startup_paid.append(True)
    return process_start_time()


def process_start_time() -> float | None:
    """Unix time this process started (Linux ``/proc``), so a trial can count the imports before any of our code."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def main(argv: list[str] | None = None) -> int:
    """``python -m melanoma_search.search.worker JOB.json``: what ``run --workers N`` starts in each process."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m melanoma_search.search.worker JOB.json (started by melanoma_search.run --workers N)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    preempt_on_sigterm()  # a scheduler's SIGTERM (or the launcher's, forwarded) is preemption, not an error
    try:
        run_worker(WorkerJob.from_json(Path(args[0]).read_text()))
    except Preempted:  # the trial is re-queued with its saved epochs
        return 143
    except KeyboardInterrupt:  # the launcher forwards Ctrl-C; the trial is re-queued with its saved epochs
        return 130
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
