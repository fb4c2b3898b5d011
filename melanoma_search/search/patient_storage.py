"""An RDB storage that rides out a short database outage: a restart, a failover, a dropped connection.

A PostgreSQL restart of a second or two used to kill a run: every storage call in flight (a trial's report, a
heartbeat, the tell) raised, Optuna's heartbeat thread died silently, and the worker exited after a page of
tracebacks. Here each of Optuna's storage calls is retried with backoff while the error is a lost or refused
connection (SQLAlchemy's ``OperationalError``, ``InterfaceError``, ``DisconnectionError``, also inside Optuna's
``StorageInternalError``), for at most ``patience`` seconds; after that the call raises a
:class:`~melanoma_search.errors.StorageError` naming the storage, which ends the worker in one line. Errors that are
not about the connection (a constraint, bad data) are never retried.

It subclasses Optuna's ``RDBStorage``, so Optuna still caches it and still runs its heartbeat; only the outermost
call of a thread retries (a call made inside another is not retried twice). One case stays ambiguous, as with any
database client: a commit that reached the server just before the connection dropped. Recording a trial's end is
made safe against it (a retried tell that finds the trial already in that state succeeds); creating a trial is not,
and could in that rare window leave a duplicate RUNNING trial, which the heartbeat then fails like any dead one.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from melanoma_search.errors import StorageError

__all__ = ["DEFAULT_PATIENCE", "PatientRDBStorage", "is_connection_error"]

_log = logging.getLogger(__name__)

#: Seconds a storage call keeps retrying a lost connection: longer than a restart, shorter than the heartbeat's grace
#: period (3 beats of 60 s), so no live trial looks stale to another node meanwhile.
DEFAULT_PATIENCE = 120.0

#: Optuna's storage calls that talk to the database (what a worker, the launcher and Optuna's heartbeat thread use).
_DATABASE_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "get_trial_params", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_trials", "get_n_trials", "get_best_trial",
    "record_heartbeat", "_get_stale_trial_ids", "_get_trials",
)


def _connection_error(exc: BaseException) -> BaseException | None:
    """The lost, refused or broken database connection behind ``exc`` (itself or what caused it), if any."""
    from sqlalchemy import exc as sql

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (sql.OperationalError, sql.InterfaceError, sql.DisconnectionError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a lost, refused or broken database connection."""
    return _connection_error(exc) is not None


class PatientRDBStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage`` whose database calls ride out an outage of up to ``patience`` seconds."""

    def __init__(self, url: str, *, patience: float = DEFAULT_PATIENCE, shown: str = "", **kwargs: Any) -> None:
        self.patience = patience
        self.shown = shown or url
        super().__init__(url, **kwargs)


_depth = threading.local()


def _patient(name: str) -> Callable[..., Any]:
    plain = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(plain)
    def call(self: PatientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_depth, "inside", False):  # an inner call: the outer one retries the whole
            return plain(self, *args, **kwargs)
        _depth.inside = True
        try:
            return _retrying(self, name, plain, args, kwargs)
        finally:
            _depth.inside = False

    return call


def _retrying(storage: PatientRDBStorage, name: str, plain: Callable[..., Any], args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
    deadline = time.monotonic() + storage.patience
    wait, attempt = 0.5, 0
    while True:
        try:
            return plain(storage, *args, **kwargs)
        except UpdateFinishedTrialError:
            if attempt and name == "set_trial_state_values" and _already(storage, args, kwargs):
                return True  # the first attempt's commit went through before its connection dropped
            raise
        except Exception as exc:
            cause = _connection_error(exc)
            if cause is None:
                raise
            why = getattr(cause, "orig", None) or cause  # the driver's own words ("Connection refused")
            why_text = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
            if time.monotonic() + wait > deadline:
                raise StorageError(f"the study's storage {storage.shown} has been unreachable for "
                                   f"{storage.patience:.0f}s ({why_text}): the run stops here; start the same command "
                                   "once the database is back") from None
            if attempt == 0:
                _log.warning("storage %s: connection lost (%s); retrying for up to %.0fs", storage.shown, why_text,
                             storage.patience)
            attempt += 1
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


def _already(storage: PatientRDBStorage, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    trial_id = kwargs.get("trial_id", args[0] if args else None)
    state = kwargs.get("state", args[1] if len(args) > 1 else None)
    try:
        return bool(trial_id is not None and optuna.storages.RDBStorage.get_trial(storage, trial_id).state == state
                    and state != TrialState.RUNNING)
    except Exception:  # cannot tell: let the original error stand
        return False


for _name in _DATABASE_CALLS:
    setattr(PatientRDBStorage, _name, _patient(_name))
