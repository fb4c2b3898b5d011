"""Start (or resume) a run of a study: the library form of ``python -m melanoma_search.run``.

:func:`start_run` loads and checks the spec, reads the dataset once (a missing or malformed dataset fails before any
trial), opens the study in its storage (adopting a SQLite study into a shared journal when the backend needs several
writers), sets the run's trial budget and hands the trials to the backend. :func:`dry_run` prints what the sampler
would try first, without training.
"""

from __future__ import annotations

import functools
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from melanoma_search.augment.policies import check_augment_files
from melanoma_search.budget import CostModel, TimeLimit, machine_name, minutes, read_prior
from melanoma_search.budget.estimate import Estimator
from melanoma_search.data.layouts import load_table
from melanoma_search.data.prepare import load_dataset
from melanoma_search.errors import ConfigError, StorageError
from melanoma_search.model.network import ModelConfig, check_pretrained
from melanoma_search.search import records
from melanoma_search.search.backends import Backend, LocalBackend, RunOutcome
from melanoma_search.search.budget import TrialBudget
from melanoma_search.search.launch_lock import LaunchLock
from melanoma_search.search.objective import Objective, load_objective
from melanoma_search.search.progress import leaderboard
from melanoma_search.search.recovery import pending_retries
from melanoma_search.search.spec import StudySpec, find_spec, load_spec
from melanoma_search.search.study import (
    adopt_sqlite_study,
    build_sampler,
    default_storage_url,
    open_storage,
    open_study,
    redact,
    single_writer,
)
from melanoma_search.search.study_budget import StudyBudget
from melanoma_search.search.trial import sample_params, trial_config
from melanoma_search.search.worker import WorkerJob
from melanoma_search.train.config import TrainConfig, apply_overrides, parse_config
from melanoma_search.train.loop import prepare_for

__all__ = ["RunSummary", "candidate_models", "dry_run", "start_run"]

Log = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


@dataclass
class RunSummary:
    """The study after the run and what happened to the run's workers."""

    study: optuna.Study
    outcome: RunOutcome
    storage_url: str
    artifact_dir: Path


def start_run(
    study: str, *, backend: Backend | None = None, data_dir: str | None = None,
    overrides: Sequence[tuple[str, Any]] = (), n_trials: int | None = None, timeout: float | None = None,
    max_trials: int | None = None, storage: str | None = None, study_name: str | None = None,
    storage_dir: str | Path = "storage", seed: int | None = None, heartbeat: int = 60, verbose: bool = False,
    artifact_home: str | None = None, study_attrs: Mapping[str, Any] | None = None,
    time_limit: float | None = None, reserve_export: float = 0.0, cost_model: str | None = None, log: Log = _say,
) -> RunSummary:
    """Run ``n_trials`` trials (default: the spec's budget) of the spec ``study`` on ``backend`` (default: local).

    ``overrides``: ``(key path, value)`` pairs set on every trial's config after the spec's ``fixed`` and ``data``;
    ``verbose``: a failed trial's traceback too; ``artifact_home``: the folder under ``storage_dir`` whose
    ``artifacts/`` the study uses; ``study_attrs``: user attributes set on the study (a student round's).
    ``time_limit`` (default: the spec's): seconds the run may take, kept; a spec with a ``race`` races inside it,
    any other runs trials (no ``n_trials`` limit by default) until the next one's predicted cost no longer fits.
    ``reserve_export``: seconds of it kept for the export; ``cost_model``: a cost model file used as a prior.
    """
    from melanoma_search.search.worker import process_start_time

    started = process_start_time() or time.time()  # a kept limit counts the imports and the data check too
    backend = backend or LocalBackend()
    spec = load_spec(study)
    objective = load_objective(spec.objective)
    storage_dir = Path(storage_dir).resolve()
    pairs, base, base_config = _checked_base(spec, overrides=overrides, data_dir=data_dir, storage_dir=storage_dir)
    time_limit = _race_checked(spec, objective, time_limit if time_limit is not None else spec.budget.time_limit)
    prior = read_prior(cost_model) if cost_model else None
    n_trials, timeout, study_budget = _budgets(spec, n_trials=n_trials, timeout=timeout, max_trials=max_trials,
                                               time_limit=time_limit)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = study_name or spec.name
    url = _storage_url(storage, name=name, storage_dir=storage_dir, backend=backend)
    data = prepare_for(base_config)  # a missing or malformed dataset fails here, before any trial
    _check_files(spec, base, base_config, origin=Path(data.origin), log=log)
    artifact_dir = storage_dir / (artifact_home or name) / "artifacts"
    opened, before = _open_for_run(spec, objective, url=url, name=name, storage=storage, storage_dir=storage_dir,
                                   heartbeat=heartbeat, seed=seed, attrs={records.DATA: data.origin,
                                   records.ARTIFACT_DIR: str(artifact_dir), **(study_attrs or {})}, log=log)
    limit, race_id = _limit_for(opened, spec, seconds=time_limit, reserve=reserve_export, started=started)
    launch = functools.partial(_launch, study, spec, name=name, url=url, storage_dir=storage_dir, pairs=pairs,
                               seed=seed, timeout=timeout, heartbeat=heartbeat, verbose=verbose,
                               artifact_dir=artifact_dir, max_trials=study_budget.max_trials, limit=limit,
                               cost_model=cost_model)
    line = functools.partial(_start_line, name, url=url, before=before, budget=study_budget, study=opened,
                             objective=objective, timeout=timeout, limit=limit)
    execute = functools.partial(_execute, launch=launch, line=line, url=url, backend=backend, data=data, log=log)
    if spec.race is not None and limit is not None and race_id is not None:
        outcome = _race(opened, spec, objective, base=base, limit=limit, race_id=race_id, data=data, prior=prior,
                        workers=backend.concurrency, seed=seed, execute=execute, log=log)
    else:
        outcome = execute(n_trials)
    _after_run(opened, objective, limit=limit, storage_dir=storage_dir / name, prior=prior, log=log)
    return RunSummary(study=opened, outcome=outcome, storage_url=url, artifact_dir=artifact_dir)


def _limit_for(study: optuna.Study, spec: StudySpec, *, seconds: float | None, reserve: float, started: float
               ) -> tuple[TimeLimit | None, str | None]:
    """The run's kept limit (``None``: none) and, for a spec with a race, the race it starts or resumes."""
    from melanoma_search.budget.race import race_limit  # the race plans with the search's own parts

    if seconds is None:
        return None, None
    if spec.race is not None:
        return race_limit(study, seconds=seconds, reserve=reserve, started=started)
    return TimeLimit(seconds, reserve=reserve, started=started), None


def _race(study: optuna.Study, spec: StudySpec, objective: Objective, *, base: dict[str, Any], limit: TimeLimit,
          race_id: str, data: Any, prior: CostModel | None, workers: int, seed: int | None,
          execute: Callable[..., RunOutcome], log: Log) -> RunOutcome:
    """Drive the race: it plans each rung and hands its trials to ``execute`` (one launch of workers each)."""
    from melanoma_search.budget.race import Race

    race = Race(study=study, spec=spec, objective=objective, base=base, limit=limit, race_id=race_id,
                estimator=Estimator(study, data=data, prior=prior, log=log), workers=workers,
                seed=seed if seed is not None else spec.sampler.seed, log=log)
    return race.run(lambda count: execute(count, say=False)) or RunOutcome()


def _budgets(spec: StudySpec, *, n_trials: int | None, timeout: float | None, max_trials: int | None,
             time_limit: float | None) -> tuple[int | None, float | None, StudyBudget]:
    """The run's trials (none counted by default under a kept time limit), Optuna timeout and study-wide budget."""
    n_trials = n_trials if n_trials is not None else (None if time_limit else spec.budget.n_trials)
    timeout = timeout if timeout is not None else spec.budget.timeout
    return n_trials, timeout, StudyBudget(max_trials if max_trials is not None else spec.budget.max_trials)


def _race_checked(spec: StudySpec, objective: Objective, time_limit: float | None) -> float | None:
    """The run's time limit, once a spec with a race is known to have one and a single-valued objective."""
    if spec.race is not None and len(objective.directions) > 1:
        raise ConfigError(f"study {spec.name!r}: a race ranks candidates by one value; objective {objective.name} "
                          f"has {len(objective.directions)} (remove race:, or choose a single-objective one)")
    if spec.race is not None and time_limit is None:
        raise ConfigError(f"study {spec.name!r} races inside a time limit: give --time-limit SECONDS (or set "
                          "budget.time_limit in its spec)")
    return time_limit


def _execute(count: int | None, *, launch: Callable[..., tuple[WorkerJob, Path]], line: Callable[..., str],
             url: str, backend: Backend, data: Any, log: Log, say: bool = True) -> RunOutcome:
    """Run ``count`` trials (``None``: until a limit) as one launch of the run: its job and budget (``launch``),
    its start line (``line``, unless ``say`` is off: a race says what it runs itself), its workers."""
    job, runs = launch(n_trials=count)
    workers = backend.workers_for(count)
    if say:
        log(line(n_trials=count, started=job.started or time.time(), where=workers.description, launch=job.launch))
    try:
        return workers.run(job, runs=runs, data=data, log=log)
    finally:
        for leftover in runs.glob(f"*{job.launch}*"):  # nothing of a finished run stays on disk with a password
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        LaunchLock(url, job.launch).release(remove=True)  # every process of the launch has ended


def _after_run(study: optuna.Study, objective: Objective, *, limit: TimeLimit | None, storage_dir: Path,
               prior: CostModel | None, log: Log) -> None:
    """What the run used of its limit, the study's cost model written for ``--cost-model`` elsewhere, the
    leaderboard, and the re-queued trials left for the next run."""
    if limit is not None:
        log(f"time limit: {minutes(limit.spent())} of {minutes(limit.seconds)} used"
            + (f" ({minutes(limit.reserve)} kept for the export)" if limit.reserve else ""))
    _save_cost_model(study, storage_dir=storage_dir, prior=prior)
    log(leaderboard(study, metric_names=objective.metric_names))
    if waiting := pending_retries(study):
        log(f"{len(waiting)} re-queued trial(s) wait for the next run: {[t.number for t in waiting]}")


def _check_files(spec: StudySpec, base: dict[str, Any], base_config: TrainConfig, *, origin: Path | None,
                 log: Log) -> None:
    """What a run checks before any trial beside the dataset: the pretrained weights every searched backbone loads,
    the hair overlays, and the per-lesion columns stage two reads at export from the dataset at ``origin`` (a
    misspelt column would otherwise surface only after the whole search)."""
    from melanoma_search.data.columns import numeric_columns

    check_pretrained(candidate_models(spec, base), log=log)
    check_augment_files(base_config.augment)
    if origin is not None and spec.stage_two.enabled and spec.stage_two.columns:
        table = load_table(origin, layout=base_config.data.layout, keep=spec.stage_two.columns,
                           require_images=False)
        numeric_columns(table, spec.stage_two.columns)  # text or inf, in training or test rows: refused now


def _launch(study: str, spec: StudySpec, *, name: str, url: str, storage_dir: Path, pairs: list[tuple[str, Any]],
            seed: int | None, n_trials: int | None, timeout: float | None, heartbeat: int, verbose: bool,
            artifact_dir: Path, max_trials: int | None, limit: TimeLimit | None = None,
            cost_model: str | None = None) -> tuple[WorkerJob, Path]:
    """This run's name (``launch``), its trial budget file and the job every worker of it runs; the folder of its
    per-run files (owner-only: they hold the storage URL)."""
    launch = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    started = time.time()
    runs = storage_dir / name / "runs"  # this run's budget, job files and Ray's experiment folder
    runs.mkdir(parents=True, exist_ok=True)
    runs.chmod(0o700)
    budget = TrialBudget(runs / f"{launch}.budget", limit=n_trials,
                         deadline=started + timeout if timeout else None, create=True)
    job = WorkerJob(spec_path=str(find_spec(study).resolve()), study_name=name, storage_url=url,
                    storage_dir=str(storage_dir), budget_path=str(budget.path), launch=launch,
                    overrides=tuple(pairs), seed=seed if seed is not None else spec.sampler.seed,
                    n_trials=n_trials, timeout=timeout, started=started, heartbeat=heartbeat,
                    verbose=verbose, artifact_dir=str(artifact_dir), study_max_trials=max_trials,
                    deadline=None if limit is None else limit.deadline,
                    cost_prior=str(Path(cost_model).resolve()) if cost_model else None)
    return job, runs


def _save_cost_model(study: optuna.Study, *, storage_dir: Path, prior: CostModel | None) -> None:
    """``storage/NAME/cost_model.json``: what this study measured (and its prior's), for ``--cost-model`` of a
    later study or another machine."""
    model = CostModel.from_study(study, machine=machine_name(), prior=prior)
    if model.observations or model.probes:
        storage_dir.mkdir(parents=True, exist_ok=True)
        tmp = storage_dir / "cost_model.json.tmp"
        tmp.write_text(model.to_json())
        tmp.replace(storage_dir / "cost_model.json")


def _open_for_run(spec: StudySpec, objective: Objective, *, url: str, name: str, storage: str | None,
                  storage_dir: Path, heartbeat: int, seed: int | None, attrs: Mapping[str, Any],
                  log: Log) -> tuple[optuna.Study, int]:
    """The study the run adds to (adopting a single-worker SQLite study into a new shared journal), with the spec,
    objective and ``attrs`` recorded and the spec's first configurations enqueued; returns it and how many trials it
    had before."""
    if storage is None and (adopted := adopt_sqlite_study(name, storage_dir=storage_dir, url=url)):
        log(f"continuing study {name!r} ({adopted} trial(s)) in {url}, which several workers can share; "
            f"{storage_dir / name}.db is left as it was")
    _refuse_split_study(url, name=name, storage_dir=storage_dir)
    opened = open_study(spec, objective, storage=open_storage(url, heartbeat_interval=heartbeat or None),
                        study_name=name, seed=seed)
    opened.set_user_attr(records.SPEC, spec.model_dump(mode="json", by_alias=True))
    opened.set_user_attr(records.OBJECTIVE, objective.name)
    opened.set_user_attr(records.METRIC, objective.metric.name)
    for key, value in attrs.items():  # the data's origin, the artifact store (export finds the trials' files there)
        opened.set_user_attr(key, value)
    before = len(opened.trials)
    if records.first_step(opened) == 0 and objective.report_each == "fold":
        log(f"study {name!r} was started before cross-validated values became the mean of the folds' figures: its "
            "earlier trials hold one AUC of the pooled fold predictions (lower by up to about 0.02), so they and the "
            "new trials rank on slightly different scales; a new --study-name starts a study on one definition")
    for params in spec.enqueue if spec.race is None else ():  # a race screens its portfolio itself
        opened.enqueue_trial(dict(params), skip_if_exists=True)
    return opened, before


def _start_line(name: str, *, url: str, before: int, budget: StudyBudget, study: optuna.Study,
                objective: Objective, n_trials: int | None, timeout: float | None, started: float, where: str,
                launch: str, limit: TimeLimit | None = None) -> str:
    study_total = ("" if budget.max_trials is None else
                   f" ({budget.used(study)} of the study's {budget.max_trials} used)")
    kept = ("" if limit is None else f" inside a kept time limit of {limit.seconds:.0f}s (ends by "
            f"{time.strftime('%H:%M', time.localtime(limit.deadline))}: no trial starts that cannot finish)")
    return (f"study {name!r} in {redact(url)}: {before} earlier trial(s){study_total}; objective {objective.name} "
            f"({', '.join(objective.directions)}); running {n_trials or 'unlimited'} trial(s)"
            + (f" within {timeout:.0f}s (no new trial after "
               f"{time.strftime('%H:%M', time.localtime(started + timeout))}: Optuna's timeout)" if timeout else "")
            + kept + f" on {where} (run {launch})")


def dry_run(study: str, *, n: int = 10, overrides: Sequence[tuple[str, Any]] = (), data_dir: str | None = None,
            seed: int | None = None, backend: Backend | None = None, storage: str | None = None,
            study_name: str | None = None, storage_dir: str | Path = "storage", time_limit: float | None = None,
            cost_model: str | None = None, log: Log = _say) -> None:
    """Print the first ``n`` configurations the sampler would try, each checked; nothing is trained or stored.

    Checks what a run checks before its first trial: the spec, the base config, the dataset folder, the pretrained
    weights and the storage for the backend. A spec with a race prints the race's plan instead, for the machine of
    ``cost_model`` (required: a dry run measures nothing) inside ``time_limit`` (default: the spec's).
    """
    spec = load_spec(study)
    objective = load_objective(spec.objective)
    storage_dir = Path(storage_dir).resolve()
    _, base, base_config = _checked_base(spec, overrides=overrides, data_dir=data_dir, storage_dir=storage_dir)
    name = study_name or spec.name
    url = _storage_url(storage, name=name, storage_dir=storage_dir, backend=backend or LocalBackend())
    if base_config.data.dir:  # reads the table and checks the images are there; writes nothing
        data = base_config.data
        if data.pseudo is not None and not Path(data.pseudo.file).is_file():  # a student round not labelled yet
            log(f"pseudo-labels {data.pseudo.file} are not written yet (the round's first real run writes them): "
                "checking the labelled data alone")
            data = data.model_copy(update={"pseudo": None})
        origin: Path | None = Path(load_dataset(data).origin)
    else:  # a synthetic dataset is written by the first real run
        origin = None
    _check_files(spec, base, base_config, origin=origin, log=log)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.race is not None:
        _race_plan(spec, objective, base=base, base_config=base_config, time_limit=time_limit,
                   cost_model=cost_model, backend=backend or LocalBackend(), seed=seed, log=log)
        return
    earlier = _existing_trials(url, name)
    sampler_study = optuna.create_study(sampler=build_sampler(spec.sampler, seed=seed),
                                        directions=list(objective.directions))  # type: ignore[arg-type]
    for params in spec.enqueue:
        sampler_study.enqueue_trial(dict(params))
    log(f"dry run of study {name!r}: {n} configuration(s) the sampler would try first in a fresh study "
        "(TPE starts random, then learns from results)"
        + (f"; {redact(url)} already holds {earlier} trial(s), which a real run would continue from, so its "
           "first configurations will differ" if earlier else ""))
    for number in range(n):
        trial = sampler_study.ask()
        params = sample_params(trial, spec, base)
        try:
            trial_config(base, params, objective)
            status = "ok"
        except ConfigError as exc:
            status = "INVALID: " + " ".join(str(exc).split())
        log(f"  {number:>3}: " + ", ".join(f"{k}={v}" for k, v in params.items()) + f"  [{status}]")


def _race_plan(spec: StudySpec, objective: Objective, *, base: dict[str, Any], base_config: TrainConfig,
               time_limit: float | None, cost_model: str | None, backend: Backend, seed: int | None,
               log: Log) -> None:
    """The race a fresh study of ``spec`` would run on the machine ``cost_model`` was measured on."""
    from melanoma_search.budget.race import Race

    seconds = time_limit if time_limit is not None else spec.budget.time_limit
    if seconds is None or not cost_model:
        raise ConfigError(f"study {spec.name!r} races inside a time limit: its dry run needs --time-limit SECONDS "
                          "(or budget.time_limit) and --cost-model FILE (the machine it plans for; it measures "
                          "nothing)")
    prior = read_prior(cost_model)
    machines = sorted({o["machine"] for o in prior.observations})
    if len(machines) != 1:
        raise ConfigError(f"--cost-model {cost_model}: a dry run plans for one machine; the file measured "
                          f"{len(machines)} ({', '.join(machines) or 'none'})")
    study = optuna.create_study(direction="maximize", sampler=build_sampler(spec.sampler, seed=seed))
    data = prepare_for(base_config)
    race = Race(study=study, spec=spec, objective=objective, base=base, limit=TimeLimit(seconds), race_id="dry-run",
                estimator=Estimator(study, data=data, prior=prior, log=log, machine=machines[0]),
                workers=backend.concurrency, seed=seed if seed is not None else spec.sampler.seed, log=log)
    log(f"dry run of study {spec.name!r}: the race a fresh study would run in {seconds:.0f}s on {machines[0]} "
        "(from the cost model; candidates assumed to rank in the order they are screened)")
    for line in race.preview():
        log(f"  {line}")


def _checked_base(spec: StudySpec, *, overrides: Sequence[tuple[str, Any]], data_dir: str | None,
                  storage_dir: Path) -> tuple[list[tuple[str, Any]], dict[str, Any], TrainConfig]:
    """The ``--set`` pairs every trial gets, the base config they make, and that config parsed.

    The pairs are the ``--set`` ones, then ``--data-dir`` (made absolute, so workers in other folders read the same
    data), then the image cache under ``storage_dir`` unless the spec or ``--set`` places it. A spec with neither a
    dataset folder nor a ``data.synthetic`` section is meant for real images: it stops here instead of quietly
    training on the built-in synthetic lesions.
    """
    pairs = list(overrides) + ([("data.dir", str(Path(data_dir).expanduser().resolve()))] if data_dir else [])
    data = spec.base_config(overrides=pairs).get("data", {})
    if not data.get("dir") and "synthetic" not in data:
        raise ConfigError(f"study {spec.name!r} trains on a dataset folder and none is given: pass --data-dir PATH "
                          "(or set data.dir); only a spec with a data.synthetic section runs on the built-in "
                          "synthetic lesions")
    if "cache_dir" not in data:
        pairs.append(("data.cache_dir", str(storage_dir / "cache")))
    base = spec.base_config(overrides=pairs)
    return pairs, base, parse_config(base, source=f"study {spec.name}: base config")


def _storage_url(storage: str | None, *, name: str, storage_dir: Path, backend: Backend) -> str:
    """``--storage`` or the default, refused when it is SQLite and the backend writes from several processes."""
    url = storage or default_storage_url(name, storage_dir=storage_dir, parallel=backend.parallel)
    if backend.parallel and single_writer(url):
        raise ConfigError(f"--storage {redact(url)} is SQLite, which takes one writer at a time: for "
                          f"{backend.description} use journal:{storage_dir / name}.log (one host) or a PostgreSQL URL")
    return url


def _existing_trials(url: str, name: str) -> int:
    """How many trials the study ``name`` already has at ``url`` (0 when neither the storage nor the study exists;
    looking never creates the storage)."""
    try:
        storage = open_storage(url, heartbeat_interval=None, create=False)
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except (KeyError, StorageError):
        return 0


def _refuse_split_study(url: str, *, name: str, storage_dir: Path) -> None:
    """Stop a run that would start study ``name`` empty at ``url`` while the other default storage of that name
    holds its trials (a mistyped ``--storage``, or a journal left by an earlier ``--workers`` run): continuing there
    would split one study's trials, kept weights and export between two storages."""
    if _existing_trials(url, name):
        return
    for other in (f"sqlite:///{storage_dir / name}.db", f"journal:{storage_dir / name}.log"):
        if other != url and (count := _existing_trials(other, name)):
            raise ConfigError(f"study {name!r} has {count} trial(s) in {redact(other)}, but {redact(url)} holds "
                              f"none of them: give --storage {redact(other)} to continue it there, or --study-name "
                              "NEW to start another study")


def candidate_models(spec: StudySpec, base: dict[str, Any]) -> list[ModelConfig]:
    """Every ``model:`` section a trial of ``spec`` may build: each searched (or fixed) name and pretrained choice."""
    def choices(path: str, fixed: Any) -> list[Any]:
        dimension = spec.space.get(path)
        return list(dimension.choices) if dimension is not None and dimension.choices is not None else [fixed]

    model = base.get("model", {})
    return [parse_config(apply_overrides(base, {"model.name": name, "model.pretrained": pretrained})).model
            for name in choices("model.name", model.get("name", ModelConfig().name))
            for pretrained in choices("model.pretrained", model.get("pretrained", False))]
