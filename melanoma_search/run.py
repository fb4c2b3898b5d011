"""``python -m melanoma_search.run --study NAME``: run (or resume) the Optuna study ``search_spaces/NAME.yaml``.

The study lives in ``--storage`` (default ``sqlite:///storage/NAME.db`` for one worker, the journal file
``storage/NAME.log`` for ``--workers N`` or ``--backend ray``) with its artifacts under ``storage/NAME/artifacts``;
running the same command again adds trials to the same study. Inspect it with::

    optuna-dashboard sqlite:///storage/NAME.db --artifact-dir storage/NAME/artifacts
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melanoma_search.errors import MelanomaSearchError

if TYPE_CHECKING:
    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.search import Objective, StudySpec
    from melanoma_search.search.worker import WorkerJob


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m melanoma_search.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="spec name in search_spaces/ (or a path to a YAML spec)")
    parser.add_argument("--data-dir", help="dataset folder (overrides the spec's data.dir)")
    parser.add_argument("--n-trials", type=int, help="trials to run now, all workers together (default: the spec's)")
    parser.add_argument("--timeout", type=float, help="seconds for this run (default: the spec's budget)")
    parser.add_argument("--storage", help="storage URL: sqlite:///..., postgresql+psycopg://..., journal:PATH")
    parser.add_argument("--study-name", help="name in the storage (default: the spec name)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the spec's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fixed training setting for every trial, e.g. --set epochs=3")
    parser.add_argument("--dry-run", action="store_true", help="print the configs the sampler would try; no training")
    scale = parser.add_argument_group("scaling out (see the README's 'Scaling out')")
    scale.add_argument("--workers", type=int, default=1,
                       help="worker processes on this host, one GPU each when there are GPUs (default 1)")
    scale.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: --workers processes here; ray: Ray Tune places the trials")
    scale.add_argument("--ray-address", help="Ray cluster to join (e.g. auto); default: start Ray on this machine")
    scale.add_argument("--gpus-per-trial", type=float, default=None, help="Ray: GPUs per trial (default 1 if the "
                       "cluster has GPUs, else 0)")
    scale.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray: CPUs per trial (default 1)")
    scale.add_argument("--max-concurrent", type=int, help="Ray: at most this many trials at once")
    scale.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                       help="RDB storages: trial heartbeat; a trial silent for 3 beats is failed and re-queued "
                       "(default 60; 0 disables)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill` of the launcher stops like Ctrl-C
    try:
        return _run(args)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_scale_flags(args: argparse.Namespace) -> None:
    from melanoma_search.errors import ConfigError

    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be at least 1")
    if args.backend == "ray" and args.workers != 1:
        raise ConfigError("--workers is for --backend local; with --backend ray use --max-concurrent")
    ray_only = [flag for flag, value in (("--ray-address", args.ray_address), ("--gpus-per-trial", args.gpus_per_trial),
                                         ("--max-concurrent", args.max_concurrent)) if value is not None]
    if args.backend != "ray" and ray_only:
        raise ConfigError(f"{', '.join(ray_only)}: only with --backend ray")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent {args.max_concurrent}: must be at least 1")
    if args.heartbeat < 0:
        raise ConfigError(f"--heartbeat {args.heartbeat}: must be 0 (off) or a number of seconds")


def _run(args: argparse.Namespace) -> int:
    import optuna

    from melanoma_search.errors import ConfigError
    from melanoma_search.search import leaderboard, load_objective, load_spec, open_storage, open_study, redact
    from melanoma_search.search.budget import TrialBudget
    from melanoma_search.search.recovery import pending_retries
    from melanoma_search.search.spec import find_spec
    from melanoma_search.search.study import adopt_sqlite_study, default_storage_url, single_writer
    from melanoma_search.search.worker import WorkerJob
    from melanoma_search.train.config import parse_config
    from melanoma_search.train.loop import prepare_for

    _check_scale_flags(args)
    spec = load_spec(args.study)
    objective = load_objective(spec.objective)
    overrides = list(args.overrides) + ([f"data.dir={Path(args.data_dir).expanduser().resolve()}"]
                                        if args.data_dir else [])
    base = spec.base_config(overrides=tuple(overrides))
    base_config = parse_config(base, source=f"study {spec.name}: base config")
    n_trials = args.n_trials if args.n_trials is not None else spec.budget.n_trials
    timeout = args.timeout if args.timeout is not None else spec.budget.timeout
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if args.dry_run:
        return _dry_run(spec, objective, base, n_trials or 10, args.seed)

    storage_dir = Path(args.storage_dir).resolve()
    study_name = args.study_name or spec.name
    parallel = args.workers > 1 or args.backend == "ray"
    url = args.storage or default_storage_url(study_name, storage_dir=storage_dir, parallel=parallel)
    if parallel and single_writer(url):
        raise ConfigError(f"--storage {redact(url)} is SQLite, which takes one writer at a time: for "
                          f"{'--backend ray' if args.backend == 'ray' else f'--workers {args.workers}'} use "
                          f"journal:{storage_dir / study_name}.log (one host) or a PostgreSQL URL")
    data = prepare_for(base_config)  # a missing or malformed dataset fails here, before any trial
    if args.storage is None and (adopted := adopt_sqlite_study(study_name, storage_dir=storage_dir, url=url)):
        print(f"continuing study {study_name!r} ({adopted} trial(s)) in {url}, which several workers can share; "
              f"{storage_dir / study_name}.db is left as it was")
    storage = open_storage(url, heartbeat_interval=args.heartbeat or None)
    study = open_study(spec, objective, storage=storage, study_name=study_name, seed=args.seed)
    study.set_user_attr("spec", spec.model_dump(mode="json", by_alias=True))
    study.set_user_attr("objective", objective.name)
    study.set_user_attr("data", data.origin)
    before = len(study.trials)
    for params in spec.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    study_dir = storage_dir / study_name
    launch = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started = time.time()
    runs = study_dir / "runs"  # this run's budget, job files and Ray's experiment folder: they hold the storage URL
    runs.mkdir(parents=True, exist_ok=True)
    runs.chmod(0o700)
    budget = TrialBudget(runs / f"{launch}.budget", limit=n_trials,
                         deadline=started + timeout if timeout else None, create=True)
    job = WorkerJob(spec_path=str(find_spec(args.study).resolve()), study_name=study_name, storage_url=url,
                    storage_dir=str(storage_dir), budget_path=str(budget.path), launch=launch,
                    overrides=tuple(overrides), seed=args.seed if args.seed is not None else spec.sampler.seed,
                    n_trials=n_trials, timeout=timeout, started=started, heartbeat=args.heartbeat)
    workers = min(args.workers, n_trials) if n_trials else args.workers  # no worker without a trial to run
    how = {"local": f"{workers} worker(s)" if workers > 1 else "1 worker", "ray": "Ray Tune"}[args.backend]
    print(f"study {study_name!r} in {redact(url)}: {before} earlier trial(s); objective {objective.name} "
          f"({', '.join(objective.directions)}); running {n_trials or 'unlimited'} trial(s)"
          + (f" within {timeout:.0f}s" if timeout else "") + f" on {how} (run {launch})", flush=True)
    try:
        interrupted, error = _launch(args, job, workers=workers, data=data, runs=runs)
    finally:
        for leftover in runs.glob(f"*{launch}*"):  # nothing of a finished run stays on disk with a password in it
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    print(leaderboard(study, metric_names=objective.metric_names), flush=True)
    if waiting := pending_retries(study):
        print(f"{len(waiting)} re-queued trial(s) wait for the next run: {[t.number for t in waiting]}")
    shown = redact(url).removeprefix("journal:")
    print(f"dashboard: optuna-dashboard {shown} --artifact-dir {study_dir / 'artifacts'}")
    if error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if interrupted:
        print("interrupted: running trials were marked FAIL; run the same command to resume", file=sys.stderr)
        return 130
    return 0


def _launch(args: argparse.Namespace, job: WorkerJob, *, workers: int, data: PreparedData, runs: Path
            ) -> tuple[bool, str | None]:
    """Run the workers the flags ask for; returns (interrupted, error)."""
    if args.backend == "ray":
        from melanoma_search.search.ray_backend import RayOptions, run_on_ray

        options = RayOptions(address=args.ray_address, gpus_per_trial=args.gpus_per_trial,
                             cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent)
        ray_outcome = run_on_ray(job, options=options, experiment_dir=runs)
        return ray_outcome.interrupted, ray_outcome.error
    if workers > 1:
        from melanoma_search.search.launcher import run_local_workers

        outcome = run_local_workers(job, workers=workers, job_dir=runs)
        if outcome.restarts:
            print(f"{outcome.restarts} worker(s) were replaced after dying; their trials were re-queued")
        return outcome.interrupted, outcome.error
    from melanoma_search.search.worker import run_worker

    try:
        run_worker(job, data=data)
    except KeyboardInterrupt:  # Optuna has marked the running trial FAIL
        return True, None
    return False, None


def _dry_run(spec: StudySpec, objective: Objective, base: dict[str, Any], n: int, seed: int | None) -> int:
    import optuna

    from melanoma_search.errors import ConfigError
    from melanoma_search.search import build_sampler, sample_params, trial_config

    study = optuna.create_study(sampler=build_sampler(spec.sampler, seed=seed), directions=list(objective.directions))
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    print(f"dry run of study {spec.name!r}: {n} configuration(s) the sampler would try first "
          "(a fresh study; TPE starts random, then learns from results)")
    for number in range(n):
        trial = study.ask()
        params = sample_params(trial, spec, base)
        try:
            trial_config(base, params, objective)
            status = "ok"
        except ConfigError as exc:
            status = "INVALID: " + " ".join(str(exc).split())
        print(f"  {number:>3}: " + ", ".join(f"{k}={v}" for k, v in params.items()) + f"  [{status}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
