"""Opening a study: its storage, Optuna sampler and pruner, all from the spec and the command line.

Storage URLs:

* ``sqlite:///storage/NAME.db`` (the default): one writer; waits up to ``lock_timeout`` seconds for a lock;
* ``postgresql+psycopg://user:pass@host/db`` (or ``postgresql://``): many workers and hosts;
* ``journal:storage/NAME.log`` (or any path ending in ``.log``): Optuna's journal file, safe for many processes on
  one host without a database server.

RDB storages get a heartbeat, so a trial whose process died is failed when the next worker starts and re-queued once
with the same parameters (``RetryHeartbeatStaleTrialCallback``). Credentials in a URL are never printed.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from melanoma_search.errors import ConfigError, StorageError
from melanoma_search.search import records
from melanoma_search.search.objective import Objective
from melanoma_search.search.patient_storage import DEFAULT_PATIENCE, PatientRDBStorage
from melanoma_search.search.spec import PrunerSpec, SamplerSpec, StudySpec

__all__ = [
    "adopt_sqlite_study",
    "best_first",
    "build_pruner",
    "build_sampler",
    "default_storage_url",
    "load_shared_study",
    "open_storage",
    "open_study",
    "redact",
    "single_writer",
    "storage_home",
    "student_study_name",
    "study_folder",
]

_log = logging.getLogger(__name__)


def best_first(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials, best first by the first objective (how the leaderboard and the export rank them)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values]
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    return sorted(done, key=lambda t: t.values[0], reverse=maximize)


def default_storage_url(name: str, *, storage_dir: Path, parallel: bool = False) -> str:
    """The study's storage when no ``--storage`` is given.

    ``sqlite:///<storage_dir>/<name>.db`` for one worker; ``journal:<storage_dir>/<name>.log`` for several (SQLite
    takes one writer at a time) and, once that journal exists, for every later run, so a study stays in one place.
    """
    journal = storage_dir / f"{name}.log"
    if parallel or journal.exists():
        return f"journal:{journal}"
    return f"sqlite:///{storage_dir / name}.db"


def single_writer(url: str) -> bool:
    """Whether the storage at ``url`` takes one writing process at a time (SQLite)."""
    return url.startswith("sqlite")


def adopt_sqlite_study(name: str, *, storage_dir: Path, url: str) -> int:
    """Copy the study ``name`` from its single-worker SQLite file into the new default journal ``url``.

    A study begun with one worker continues when the same command is rerun with ``--workers N``. Returns the number
    of trials copied (0 when there was nothing to adopt). The SQLite file is left as it was.
    """
    sqlite = storage_dir / f"{name}.db"
    journal = Path(url.removeprefix("journal:"))
    if not url.startswith("journal:") or journal.exists() or not sqlite.is_file():
        return 0
    source = open_storage(f"sqlite:///{sqlite}", heartbeat_interval=None, create=False)
    if name not in {s.study_name for s in optuna.get_all_study_summaries(source, include_best_trial=False)}:
        return 0
    target = open_storage(url)
    optuna.copy_study(from_study_name=name, from_storage=source, to_storage=target)
    return len(optuna.load_study(study_name=name, storage=target).trials)


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    if url.startswith("journal:") or "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: hide everything between :// and @
        head, _, rest = url.partition("://")
        return f"{head}://***@{rest.rpartition('@')[2]}" if "@" in rest else url


def open_storage(url: str, *, lock_timeout: float = 30.0, heartbeat_interval: int | None = 60,
                 create: bool = True, patience: float = DEFAULT_PATIENCE) -> BaseStorage:
    """Open the storage at ``url``; any failure is a :class:`StorageError` naming the URL.

    ``create=False`` is how every reader opens a study (export, the launcher's watch): a journal file or SQLite file
    that does not exist, or a database without Optuna's tables, is an error instead of a new empty storage, so a
    mistyped ``--storage`` cannot leave an empty study behind for later runs to adopt. A database server's storage
    rides out an outage of up to ``patience`` seconds (:mod:`~melanoma_search.search.patient_storage`).
    """
    shown = redact(url)
    if not create:
        _check_exists(url, shown=shown)
    if url.startswith("journal:") or url.endswith(".log"):
        return _journal(url, shown=shown)
    if "://" not in url:
        raise ConfigError(f"--storage {shown}: expected a database URL (sqlite:///..., postgresql+psycopg://...) "
                          "or journal:PATH")
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": lock_timeout}
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": max(1, int(lock_timeout))}
    for attempt in range(4):
        try:
            return _rdb(url, shown=shown, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                        patience=patience)
        except Exception as exc:  # sqlalchemy raises many kinds; they all mean "cannot use this storage"
            if attempt < 3 and _lost_table_race(exc):
                # another process created Optuna's tables at the same moment (an empty database, two nodes started
                # together): the second CREATE fails on PostgreSQL's catalogue; the tables exist now, so open again
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StorageError(_storage_message(shown, exc)) from None
    raise AssertionError("unreachable")


def _journal(url: str, *, shown: str) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from melanoma_search.search.journal_lock import FlockJournalLock

    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return JournalStorage(JournalFileBackend(str(path), lock_obj=FlockJournalLock(str(path))))
    except OSError as exc:
        raise StorageError(f"cannot open journal storage {shown}: {exc}") from None


def _rdb(url: str, *, shown: str, engine_kwargs: dict[str, Any], heartbeat_interval: int | None,
         patience: float) -> BaseStorage:
    """Optuna's RDB storage with a heartbeat; for a database server, one that rides out a short outage (SQLite is
    a file: its errors are locks, which have their own timeout)."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and have been for years
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1) if heartbeat_interval else None
        options: dict[str, Any] = {"engine_kwargs": engine_kwargs, "heartbeat_interval": heartbeat_interval,
                                   "grace_period": heartbeat_interval * 3 if heartbeat_interval else None,
                                   "heartbeat_stale_trial_callback": retry}
        if single_writer(url):
            return optuna.storages.RDBStorage(url, **options)
        return PatientRDBStorage(url, patience=patience, shown=shown, **options)


def _lost_table_race(exc: BaseException) -> bool:
    text = str(exc)
    return any(mark in text for mark in ("UniqueViolation", "pg_type_typname_nsp_index", "already exists",
                                         "duplicate key value"))


def _check_exists(url: str, *, shown: str) -> None:
    """A :class:`StorageError` unless the storage at ``url`` already holds Optuna's data."""
    if url.startswith("journal:") or url.endswith(".log"):
        if not Path(url.removeprefix("journal:")).is_file():
            raise StorageError(f"no study storage at {shown} (no such journal file)")
        return
    if url.startswith("sqlite"):
        if not Path(url.split(":///", 1)[-1]).is_file():
            raise StorageError(f"no study storage at {shown} (no such SQLite file)")
        return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        try:
            has_tables = sqlalchemy.inspect(engine).has_table("studies")
        finally:
            engine.dispose()
    except Exception as exc:  # sqlalchemy raises many kinds; they all mean "cannot use this storage"
        raise StorageError(_storage_message(shown, exc)) from None
    if not has_tables:
        raise StorageError(f"no study storage at {shown} (the database holds no Optuna tables)")


def _storage_message(shown: str, exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "locked" in text:
        return (f"storage {shown} is locked by another process ({text}). SQLite allows one writer: stop the other "
                "process, or use --storage journal:storage/NAME.log or a PostgreSQL URL for several workers")
    return f"cannot open storage {shown}: {text}"


def load_shared_study(url: str, study_name: str) -> optuna.Study:
    """The existing study ``study_name`` at ``url`` as a launcher sees it: to watch and mend trials, not run them."""
    storage = open_storage(url, heartbeat_interval=None, create=False)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise StorageError(f"study {study_name!r} is not in {redact(url)} (was it deleted meanwhile?)") from None


def build_sampler(spec: SamplerSpec, *, seed: int | None) -> optuna.samplers.BaseSampler:
    seed = spec.seed if seed is None else seed
    if spec.name == "tpe":
        with warnings.catch_warnings():  # `group` is "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(n_startup_trials=spec.n_startup_trials,
                                              multivariate=spec.multivariate, group=spec.group and spec.multivariate,
                                              constant_liar=spec.constant_liar, seed=seed)
    if spec.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=spec.n_startup_trials)


def build_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    pruner: optuna.pruners.BasePruner
    if spec.name == "hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=spec.min_resource,
                                                reduction_factor=spec.reduction_factor)
    elif spec.name == "successive_halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=spec.min_resource,
                                                        reduction_factor=spec.reduction_factor)
    elif spec.name == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials,
                                             n_warmup_steps=spec.n_warmup_steps)
    elif spec.name == "threshold":
        pruner = optuna.pruners.ThresholdPruner(lower=spec.lower, n_warmup_steps=spec.n_warmup_steps)
    else:
        return optuna.pruners.NopPruner()
    if spec.patience:
        with warnings.catch_warnings():  # PatientPruner is "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            pruner = optuna.pruners.PatientPruner(pruner, patience=spec.patience)
    return pruner


def open_study(
    spec: StudySpec,
    objective: Objective,
    *,
    storage: BaseStorage,
    study_name: str,
    seed: int | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume; a resumed study must have the objective's directions."""
    directions = [StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE for d in objective.directions]
    sampler, pruner = build_sampler(spec.sampler, seed=seed), build_pruner(spec.pruner)
    created = False
    try:
        try:  # exactly one of several processes opening a new study at once creates it (the storage's unique name)
            study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                                        directions=directions)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    except ValueError as exc:
        raise ConfigError(f"study {study_name!r}: {exc}") from None
    except Exception as exc:
        raise StorageError(_storage_message(study_name, exc)) from None
    existing = [d.name.lower() for d in study.directions]
    if existing != list(objective.directions):
        raise ConfigError(f"study {study_name!r} exists with directions {existing}, but objective "
                          f"{objective.name!r} needs {list(objective.directions)}; use another --study-name")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objective.metric_names))
    if created:  # the creator names the study's folder; everyone else reads it (see _study_key)
        study.set_user_attr(records.STUDY_KEY, uuid.uuid4().hex[:12])
    _study_key(study)
    records.settle_first_step(study, created=created)
    return study


def student_study_name(base: str, *, round: int) -> str:
    """The study of noisy-student round ``round`` of study ``base`` (kept in ``base``'s storage)."""
    return f"{base}-student-r{round}"


def storage_home(study_name: str, *, storage_dir: Path) -> str:
    """The name whose default storage holds ``study_name``: its own, or for a student round whose own file does
    not exist, its first study's (rounds live beside it, so one dashboard shows them side by side)."""
    match = re.fullmatch(r"(.+)-student-r\d+", study_name)
    own = [storage_dir / f"{study_name}{suffix}" for suffix in (".db", ".log")]
    if match and not any(path.is_file() for path in own):
        return match.group(1)
    return study_name


def study_folder(study: optuna.Study, *, storage_dir: str | Path) -> Path:
    """The folder of this study's kept weights, refits and trial work: ``<storage_dir>/<name>/study-<key>``.

    Two storages can hold a study of the same name (a SQLite file, then PostgreSQL; a deleted and recreated file).
    Keyed by the name alone they would share ``trial-N`` folders and the kept-weights ledger, and one study's top k
    would evict or overwrite the other's weights. The key is a random id stored in the study itself on first open,
    so it travels with the study to any worker and to the export.
    """
    return Path(storage_dir) / study.study_name / f"study-{_study_key(study)}"


def _study_key(study: optuna.Study, *, wait: float = 10.0) -> str:
    """The study's key, set once by the process that created it.

    Two nodes starting a new study together must agree on it (read-then-set would let each write its own, and each
    keep weights in its own folder): only the creator writes it, right after creating the study, and the others wait
    for it. A study made by an earlier version or another tool has none: after ``wait`` seconds one is written.
    """
    deadline = time.monotonic() + wait
    while True:
        key = study.user_attrs.get(records.STUDY_KEY)  # read from the storage each time
        if isinstance(key, str):
            return key
        if time.monotonic() >= deadline:
            key = uuid.uuid4().hex[:12]
            study.set_user_attr(records.STUDY_KEY, key)
            return key
        time.sleep(0.2)
