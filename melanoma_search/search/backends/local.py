"""``--backend local`` (the default): one worker in this process, or ``--workers N`` processes on this host.

N worker processes share one study, one GPU each when there are GPUs.

The launcher only starts, watches and stops processes; Optuna's storage coordinates them (sampling with TPE's
constant liar sees the other workers' running trials, the pruner compares against everyone's curves) and the budget
file hands out trials. Workers run in their own session so that a terminal's Ctrl-C reaches the launcher alone,
which then sends exactly one SIGINT to each worker: a second one could interrupt Optuna while it records the FAIL.

Faults: a worker that dies by a signal (``kill -9``, the kernel's OOM killer) has its RUNNING trial failed and
re-queued at once (:func:`~melanoma_search.search.recovery.fail_running`), and a replacement starts on the same GPU
while trials remain. A worker preempted by its own SIGTERM re-queues its trial (saved epochs kept) and exits; the
others go on and run the retry. A worker that exits with an error (bad spec, unreachable storage) stops the run:
every other worker would hit the same error. The launcher's own SIGTERM (a whole node preempted) reaches each worker
as SIGTERM, Ctrl-C as SIGINT: every running trial is re-queued with its saved epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from melanoma_search.errors import ConfigError, Preempted
from melanoma_search.search.backends.base import Backend, RunOutcome, register_backend
from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.packing import (
    GpuCard,
    PackingPlan,
    measured_peak_mb,
    plan_packing,
    visible_devices,
    visible_gpus,
)
from melanoma_search.search.recovery import fail_running, pending_retries, worker_id
from melanoma_search.search.study import load_shared_study

if TYPE_CHECKING:
    import optuna

    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.search.worker import WorkerJob

__all__ = ["LocalBackend", "gpu_slots", "run_local_workers"]

#: Replacements per worker slot before the launcher gives up on it (a worker killed again and again is a bug to see).
MAX_RESTARTS = 3
#: Seconds a worker gets to finish after Ctrl-C before it is killed.
STOP_GRACE = 60.0


def _say(line: str) -> None:
    print(line, flush=True)


def _workers_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


@register_backend
class LocalBackend(Backend):
    """Trials on this host: the lone worker runs in this process; ``--workers N`` starts N worker processes.

    ``--workers auto`` packs several trials on each GPU (:func:`~melanoma_search.search.packing.plan_packing`).
    """

    name = "local"
    help = "--workers processes on this host (default 1, in this process)"

    def __init__(self, *, workers: int | str = 1, trials_per_gpu: int | None = None,
                 gpus: Sequence[GpuCard] | None = None) -> None:
        """``gpus``: the cards ``--workers auto`` packs (default: the visible ones; tests pass made-up cards)."""
        if workers != "auto" and (not isinstance(workers, int) or workers < 1):
            raise ConfigError(f"--workers {workers}: must be at least 1, or auto")
        if trials_per_gpu is not None and trials_per_gpu < 1:
            raise ConfigError(f"--trials-per-gpu {trials_per_gpu}: must be at least 1")
        if trials_per_gpu is not None and workers != "auto":
            raise ConfigError(f"--trials-per-gpu: only with --workers auto (--workers {workers} is already a count)")
        self.workers = workers
        self.trials_per_gpu = trials_per_gpu
        self.gpus = list(gpus) if gpus is not None else (visible_gpus() if workers == "auto" else [])
        if trials_per_gpu is not None and not self.gpus:
            raise ConfigError("--trials-per-gpu: no GPU is visible (CUDA_VISIBLE_DEVICES, nvidia-smi)")

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--workers", type=_workers_arg, default=None,
                           help="worker processes on this host, one GPU each when there are GPUs (default 1); "
                           "auto: as many trials per GPU as the study's measured memory and the CPU cores allow")
        group.add_argument("--trials-per-gpu", type=int, default=None, metavar="N",
                           help="with --workers auto: N trials on each GPU instead of the measured choice")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalBackend:
        workers = args.workers if args.workers is not None else ("auto" if args.trials_per_gpu else 1)
        return cls(workers=workers, trials_per_gpu=args.trials_per_gpu)

    @property
    def parallel(self) -> bool:
        return bool(self.gpus) if self.workers == "auto" else int(self.workers) > 1

    @property
    def concurrency(self) -> int:
        return max(1, len(self.gpus)) if self.workers == "auto" else int(self.workers)

    @property
    def description(self) -> str:
        if self.workers == "auto":
            return f"{len(self.gpus)} GPU(s), trials per GPU from measured memory" if self.gpus else "1 worker"
        return f"{self.workers} worker(s)" if int(self.workers) > 1 else "1 worker"

    def workers_for(self, n_trials: int | None) -> LocalBackend:
        if self.workers == "auto" or not n_trials:
            return self
        return LocalBackend(workers=min(int(self.workers), n_trials))

    def plan(self, job: WorkerJob) -> PackingPlan:
        """The packing ``--workers auto`` runs for ``job``: from its study's measured peaks and this host's cores."""
        from melanoma_search.search.spec import load_spec

        peak, measured = measured_peak_mb(load_shared_study(job.storage_url, job.study_name))
        configured = load_spec(job.spec_path).base_config(overrides=job.overrides).get("data", {})
        return plan_packing(gpus=self.gpus, cpu_cores=os.cpu_count() or 1, peak_mb=peak, measured_trials=measured,
                            trials_per_gpu=self.trials_per_gpu, loader_workers=int(configured.get("num_workers", -1)))

    def run(self, job: WorkerJob, *, runs: Path, data: PreparedData | None,
            log: Callable[[str], None]) -> RunOutcome:
        workers = 1 if self.workers == "auto" else int(self.workers)
        gpus: list[str | None] | None = None
        if self.workers == "auto":
            plan = self.plan(job)
            log(f"packing: {plan.reason}")
            if self.gpus:
                workers = min(plan.workers, job.n_trials) if job.n_trials else plan.workers
                gpus = [self.gpus[i % len(self.gpus)].device for i in range(workers)]  # round-robin over the cards
            if plan.loader_workers is not None:
                job = dataclasses.replace(job, overrides=(*job.overrides, ("data.num_workers", plan.loader_workers)))
        if workers > 1 or gpus:
            outcome = run_local_workers(job, workers=workers, job_dir=runs, log=log, gpus=gpus)
            if outcome.restarts:
                log(f"{outcome.restarts} worker(s) were replaced after dying; their trials were re-queued")
            return outcome
        from melanoma_search.search.worker import run_worker

        try:
            run_worker(job, data=data)
        except KeyboardInterrupt as stop:  # the worker has re-queued its trial with its saved epochs
            outcome = RunOutcome(interrupted=True, preempted=isinstance(stop, Preempted))
            study = load_shared_study(job.storage_url, job.study_name)  # and anything a stop left RUNNING
            outcome.failed_trials = fail_running(study, lambda t: t.user_attrs.get("launch") == job.launch,
                                                 retry=True, reason="the run stopped while this trial was running")
            return outcome
        return RunOutcome()


@dataclass
class _Slot:
    index: int
    gpu: str | None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0


def gpu_slots(workers: int, *, visible: str | None = None, count: Callable[[], int] | None = None
              ) -> list[str | None]:
    """The GPU each worker is pinned to (``CUDA_VISIBLE_DEVICES`` value), round-robin; ``None`` without GPUs.

    Respects an existing ``CUDA_VISIBLE_DEVICES`` (``visible``): workers are spread over those devices only.
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = visible_devices(visible)
    else:
        if count is None:
            import torch

            count = torch.cuda.device_count
        devices = [str(i) for i in range(count())]
    if not devices:
        return [None] * workers
    return [devices[i % len(devices)] for i in range(workers)]


class _Pool:
    """The launcher's worker processes: started with their job files, watched, replaced when a signal kills one,
    stopped together. Its collaborators (the study, the run's budget, the job folder) are passed in."""

    def __init__(self, job: WorkerJob, slots: list[_Slot], *, job_dir: Path, study: optuna.Study,
                 budget: TrialBudget, log: Callable[[str], None]) -> None:
        self.job, self.slots, self.job_dir, self.study, self.budget, self.log = job, slots, job_dir, study, budget, log
        self.threads = max(1, (os.cpu_count() or 1) // len(slots))
        self.per_card = Counter(s.gpu for s in slots if s.gpu is not None)
        self.outcome = RunOutcome()

    def start(self, slot: _Slot) -> None:
        job = self.job
        seed = None if job.seed is None else job.seed + slot.index + 1000 * slot.starts
        sharers = self.per_card[slot.gpu] if slot.gpu is not None else 0
        lock = str(self.job_dir / f"{job.launch}-gpu{slot.gpu}.lock") if sharers > 1 else None
        slot_job = dataclasses.replace(job, label=f"[w{slot.index}]", seed=seed, gpu_lock=lock)
        path = self.job_dir / f"{job.launch}-w{slot.index}.json"
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write(slot_job.to_json())  # it holds the storage URL, password included: owner-only, not argv
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if slot.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.gpu
        env.setdefault("OMP_NUM_THREADS", str(self.threads))  # share the cores, not a thread per core in every worker
        slot.process = subprocess.Popen([sys.executable, "-m", "melanoma_search.search.worker", str(path)],
                                        env=env, start_new_session=True)
        slot.starts += 1
        where = f"CPU, {env['OMP_NUM_THREADS']} thread(s)" if slot.gpu is None else f"GPU {slot.gpu}"
        where += f", shared with {sharers - 1} other worker(s)" if lock else ""
        self.log(f"[w{slot.index}] started (pid {slot.process.pid}, {where})")

    def reap(self, slot: _Slot, code: int) -> None:
        """A worker killed by a signal: fail its RUNNING trial and re-queue it; replace it while work remains."""
        assert slot.process is not None
        dead = worker_id(slot.process.pid)
        failed = fail_running(self.study, lambda t: t.user_attrs.get("worker") == dead, retry=True,
                              reason=f"worker {dead} died ({_describe(code)}) during the trial")
        self.outcome.failed_trials.extend(failed)
        for number, retry in failed:
            self.log(f"[w{slot.index}] died ({_describe(code)}) in trial {number}; re-queued as trial {retry}")
        slot.process = None
        more = pending_retries(self.study) or not self.budget.exhausted()
        if more and slot.starts <= MAX_RESTARTS:
            self.outcome.restarts += 1
            self.start(slot)
        elif more:
            self.log(f"[w{slot.index}] died {slot.starts} times; not restarting it")

    def watch(self) -> None:
        """Until every worker has exited: replace the killed ones, stop all on the first error."""
        while any(s.process is not None for s in self.slots):
            time.sleep(0.5)
            for slot in self.slots:
                if slot.process is None or (code := slot.process.poll()) is None:
                    continue
                if code < 0:  # killed by a signal: recover its trial, replace the worker while work remains
                    self.reap(slot, code)
                    continue
                slot.process = None
                if code == 143:  # its own SIGTERM (a preempted worker): its trial is re-queued, the others go on
                    self.log(f"[w{slot.index}] was preempted (SIGTERM); its trial is re-queued with its saved "
                             "epochs")
                elif code != 0:
                    self.outcome.error = f"worker {slot.index} exited with status {code} (its error is printed above)"
                    _stop(self.slots, self.log, signal.SIGINT)

    def finish(self) -> None:
        """Kill what would not stop, then fail (and re-queue) any trial of this launch still RUNNING: a worker that
        had to be killed could not record its own."""
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()
        self.outcome.failed_trials.extend(fail_running(
            self.study, lambda t: t.user_attrs.get("launch") == self.job.launch, retry=True,
            reason="the run stopped while this trial was running"))


def run_local_workers(
    job: WorkerJob,
    *,
    workers: int,
    job_dir: Path,
    log: Callable[[str], None] = _say,
    gpus: Sequence[str | None] | None = None,
) -> RunOutcome:
    """Run ``workers`` processes of ``job`` until the budget is spent, a worker errors, or a stop.

    Ctrl-C reaches each worker as one SIGINT, a SIGTERM of the launcher (preemption) as one SIGTERM: either way each
    worker's trial is re-queued with its saved epochs, for the same command to continue.
    """
    slots = [_Slot(index=i, gpu=gpu) for i, gpu in enumerate(gpus if gpus is not None else gpu_slots(workers))]
    shared = [s.gpu for s in slots if s.gpu is not None]
    if len(shared) != len(set(shared)):
        log(f"note: {workers} workers share {len(set(shared))} GPU(s); each GPU runs several trials at once")
    assert job.budget_path is not None, "the launcher creates the run's budget file"
    job_dir.mkdir(parents=True, exist_ok=True)
    pool = _Pool(job, slots, job_dir=job_dir, study=load_shared_study(job.storage_url, job.study_name),
                 budget=TrialBudget(job.budget_path), log=log)
    for slot in slots:
        pool.start(slot)
    try:
        pool.watch()
    except KeyboardInterrupt as stop:
        pool.outcome.interrupted = True
        pool.outcome.preempted = isinstance(stop, Preempted)
        what = "preempted (SIGTERM)" if pool.outcome.preempted else "interrupted"
        log(f"{what}: stopping the workers (each re-queues its running trial with its saved epochs)")
        _stop(slots, log, signal.SIGTERM if pool.outcome.preempted else signal.SIGINT)
    finally:
        pool.finish()
    return pool.outcome


def _stop(slots: Sequence[_Slot], log: Callable[[str], None], signum: signal.Signals) -> None:
    """``signum`` to every live worker once, then wait up to STOP_GRACE seconds in all before killing the rest."""
    live = [s for s in slots if s.process is not None and s.process.poll() is None]
    for slot in live:
        assert slot.process is not None
        slot.process.send_signal(signum)
    deadline = time.monotonic() + STOP_GRACE
    for slot in live:
        assert slot.process is not None
        try:
            slot.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"[w{slot.index}] did not stop within {STOP_GRACE:.0f}s; killing it")
            slot.process.kill()
            slot.process.wait()
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            slot.process.kill()
            slot.process.wait()
        slot.process = None


def _describe(code: int) -> str:
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"status {code}"
