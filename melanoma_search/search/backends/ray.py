"""``--backend ray``: Ray Tune places the trials on a cluster's GPUs (CPUs here); Optuna still samples and prunes.

Why not Ray's ``OptunaSearch``: it runs the study inside the Tune driver with ask/tell and a no-op Optuna pruner, so
Optuna's pruner (and the pruned state in the dashboard) is lost, and there is no heartbeat, so a trial of a lost
worker stays RUNNING forever. Here each Tune trial is one Optuna trial run by the same worker code as everywhere
else (:func:`~melanoma_search.search.worker.run_worker` with ``max_trials=1``) against the shared storage:

* Optuna's sampler draws inside the Tune trial from the storage, so TPE's constant liar sees every running trial;
* Optuna's pruner prunes (the trial is recorded PRUNED) and the dashboard shows every trial live;
* Tune only decides where and when: :class:`~.tune_parts.Placement`, a Tune ``Searcher`` that hands out nothing but
  a trial index, stops when the run's budget (trials, deadline) is spent — Tune's own time budget would kill running
  trials;
* a lost Ray actor: its Optuna trial is failed and re-queued (:func:`~melanoma_search.search.recovery.fail_running`)
  and Tune's ``FailureConfig`` restarts the Tune trial, which runs the re-queued one.

The storage must be one every Ray node can reach: PostgreSQL for a cluster; a journal file works on one host.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from melanoma_search.errors import ConfigError, Preempted
from melanoma_search.search.backends.base import Backend, RunOutcome, register_backend
from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.recovery import fail_running
from melanoma_search.search.study import load_shared_study
from melanoma_search.search.study_budget import StudyBudget

if TYPE_CHECKING:
    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.search.worker import WorkerJob

__all__ = ["RayBackend", "RayOptions", "run_on_ray"]


def _say(line: str) -> None:
    print(line, flush=True)


@dataclass(frozen=True, kw_only=True)
class RayOptions:
    address: str | None = None
    """``ray.init`` address (``auto``, ``ray://head:10001``); ``None`` starts a local Ray on this machine."""
    gpus_per_trial: float | None = None
    """``None``: 1 when the cluster has GPUs, else 0."""
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    """At most this many trials at once (default: as many as the resources allow)."""
    max_failures: int = 2
    """Tune restarts of one trial after its actor died."""


@register_backend
class RayBackend(Backend):
    """Ray Tune places the trials (on a cluster's GPUs, or on this machine); Optuna samples and prunes."""

    name = "ray"
    help = "Ray Tune places the trials, on this machine or a cluster (--ray-address)"

    def __init__(self, options: RayOptions) -> None:
        if options.max_concurrent is not None and options.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent {options.max_concurrent}: must be at least 1")
        self.options = options

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--ray-address", help="Ray cluster to join (e.g. auto); default: start Ray on this machine")
        group.add_argument("--gpus-per-trial", type=float, default=None,
                           help="GPUs per trial (default 1 if the cluster has GPUs, else 0)")
        group.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
        group.add_argument("--max-concurrent", type=int, help="at most this many trials at once")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayBackend:
        return cls(RayOptions(address=args.ray_address, gpus_per_trial=args.gpus_per_trial,
                              cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
                              max_concurrent=args.max_concurrent))

    @property
    def description(self) -> str:
        return "Ray Tune"

    @property
    def concurrency(self) -> int:
        """``--max-concurrent`` (a race on a cluster plans for that many at once; 1 when it is not given)."""
        return self.options.max_concurrent or 1

    def run(self, job: WorkerJob, *, runs: Path, data: PreparedData | None,
            log: Callable[[str], None]) -> RunOutcome:
        return run_on_ray(job, options=self.options, experiment_dir=runs, log=log)


def _trainable(config: dict[str, Any], job_json: str) -> None:
    """One Tune trial = one Optuna trial, run by the shared worker code against the shared storage.

    The job (with the storage URL and its password) comes through ``tune.with_parameters``, i.e. Ray's object store:
    Tune writes a trial's ``config`` to disk (params.json, the experiment state), so that holds only the trial index.
    """
    from ray import tune

    from melanoma_search.search.backends.tune_parts import RAY_TRIAL_ATTR
    from melanoma_search.search.worker import WorkerJob, run_worker

    job = WorkerJob.from_json(job_json)
    trial_id = tune.get_context().get_trial_id()
    index = int(config["index"])
    job = dataclasses.replace(job, tags={**job.tags, RAY_TRIAL_ATTR: trial_id}, max_trials=1, label=f"[ray {index}]",
                              seed=None if job.seed is None else job.seed + index)
    if Path(config["cwd"]).is_dir():  # Tune starts each trial in its own folder; relative data paths need ours
        os.chdir(config["cwd"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ran = run_worker(job)
    study_trial = ran[0] if ran else None
    tune.report({
        "optuna_trial": -1 if study_trial is None else study_trial.number,
        "optuna_state": "NONE" if study_trial is None else study_trial.state.name,
        "value": float("nan") if study_trial is None or study_trial.values is None else study_trial.values[0],
        "seconds": 0.0 if study_trial is None or study_trial.duration is None else study_trial.duration.total_seconds(),
    })


def _start_ray(options: RayOptions, job: WorkerJob, *, log: Callable[[str], None]) -> float:
    """``ray.init`` and the GPUs each trial takes, checked against what the cluster has."""
    import ray

    ray.init(address=options.address, include_dashboard=False, log_to_driver=True, configure_logging=False,
             ignore_reinit_error=True)
    resources = ray.cluster_resources()
    cluster_gpus = resources.get("GPU", 0.0)
    gpus = options.gpus_per_trial if options.gpus_per_trial is not None else (1.0 if cluster_gpus else 0.0)
    if gpus > cluster_gpus or options.cpus_per_trial > resources.get("CPU", 0.0):
        ray.shutdown()
        raise ConfigError(f"a trial asks for {options.cpus_per_trial:g} CPU(s) and {gpus:g} GPU(s), but the Ray "
                          f"cluster has {resources.get('CPU', 0):g} CPU(s) and {cluster_gpus:g} GPU(s)")
    log(f"Ray: {resources.get('CPU', 0):g} CPU(s), {cluster_gpus:g} GPU(s); each trial takes "
        f"{options.cpus_per_trial:g} CPU(s) and {gpus:g} GPU(s)"
        + (f", at most {options.max_concurrent} at once" if options.max_concurrent else ""))
    if options.address and job.storage_url.startswith("journal:"):
        log(f"warning: the journal file {job.storage_url.removeprefix('journal:')} must be on a filesystem every Ray "
            "node mounts at the same path; use a PostgreSQL --storage for a cluster")
    return gpus


def run_on_ray(job: WorkerJob, *, options: RayOptions, experiment_dir: Path,
               log: Callable[[str], None] = _say) -> RunOutcome:
    """Run the study's trials as Ray Tune trials until the budget is spent; sweep what Tune left RUNNING.

    ``experiment_dir``: where Tune keeps its experiment state (``ray-<launch>``); the results live in the Optuna
    storage, so the caller may delete it after the run. A stop (Ctrl-C, or SIGTERM: preemption) re-queues every
    running trial; their resume files stay for the retries.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would drown the per-trial lines
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every trial prints its own progress lines; keep them all
    # Ctrl-C must raise here (Tune's own handler ends the run quietly and leaves our caller unaware of it)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:  # Ray reads those variables when it is imported
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError("--backend ray needs Ray Tune: pip install 'melanoma_search[ray]'") from None
    study = load_shared_study(job.storage_url, job.study_name)
    assert job.budget_path is not None, "the launcher creates the run's budget file"
    budget = TrialBudget(job.budget_path)  # read here, in the driver: Tune trials on other nodes need no file
    outcome = RunOutcome()
    gpus = _start_ray(options, job, log=log)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, job_json=dataclasses.replace(job, budget_path=None).to_json()),
        {"cpu": options.cpus_per_trial, "gpu": gpus})
    from melanoma_search.search.backends.tune_parts import Placement, Recover  # Tune's classes, Ray now imported

    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
        search_alg=Placement(budget, study, StudyBudget(job.study_max_trials), n_trials=job.n_trials),
        num_samples=-1, reuse_actors=True, max_concurrent_trials=options.max_concurrent),
        run_config=tune.RunConfig(name=f"ray-{job.launch}", storage_path=str(experiment_dir), verbose=0,
                                  callbacks=[Recover(study, outcome, log=log)],
                                  failure_config=tune.FailureConfig(max_failures=options.max_failures)))
    try:
        results = tuner.fit()
        if results.errors:
            outcome.error = f"{len(results.errors)} Ray trial(s) errored: {str(results.errors[0]).splitlines()[0]}"
        time.sleep(1.0)  # let Ray forward the last trial's output lines before it shuts down
    except KeyboardInterrupt as stop:
        outcome.interrupted, outcome.preempted = True, isinstance(stop, Preempted)
    finally:
        ray.shutdown()  # ends this job's actors (here and on a cluster), so none of them writes a trial after the sweep
        outcome.failed_trials.extend(fail_running(
            study, lambda t: t.user_attrs.get("launch") == job.launch, retry=True,
            reason=("preempted: SIGTERM during this trial" if outcome.preempted else
                    "interrupted: the run was stopped (Ctrl-C) during this trial" if outcome.interrupted
                    else "Ray stopped this trial") + "; re-queued with its saved epochs"))
    return outcome
