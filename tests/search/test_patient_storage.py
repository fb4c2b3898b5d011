"""A database outage under a running study: a real PostgreSQL restarted while two workers train."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from melanoma_search.errors import StorageError
from melanoma_search.search.patient_storage import PatientRDBStorage, is_connection_error
from tests.studies import TINY, rdb, start_cli, wait_for_training, write_spec


def _postgres(action: str) -> None:
    """``stop`` or ``start`` this machine's PostgreSQL cluster (as root, which the project machines and CI are)."""
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not Path("/etc/postgresql").is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but this machine's PostgreSQL cannot be restarted (needs root and pg_ctlcluster)")
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster (the project machines and CI have both)")
    for version in sorted(p.name for p in Path("/etc/postgresql").iterdir()):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True,
                       capture_output=True, timeout=120)


@contextlib.contextmanager
def _postgres_down(seconds: float) -> Iterator[None]:
    """PostgreSQL stopped (every connection dropped) for at least ``seconds``, then started again whatever
    happens: a restart with a failover's few seconds of downtime (an instant restart can fall between two storage
    calls and provoke nothing)."""
    _postgres("stop")
    try:
        time.sleep(seconds)
        yield
    finally:
        _postgres("start")


def test_two_workers_ride_out_a_postgresql_restart(tmp_path: Path, postgres_url: str, pg_name: str) -> None:
    """Tried before: a worker exited 1 after seven tracebacks. Now the calls in flight wait for the server and the
    run finishes: every trial complete, none left RUNNING, none counted twice."""
    spec = write_spec(tmp_path, space={"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
                      fixed={**TINY["fixed"], "epochs": 8})
    launcher = start_cli(tmp_path, "--study", str(spec), "--study-name", pg_name, "--storage", postgres_url,
                         "--workers", "2", "--n-trials", "2")
    wait_for_training(postgres_url, pg_name, count=2)
    with _postgres_down(3.0):
        pass
    output = launcher.communicate(timeout=600)[0]
    assert launcher.returncode == 0, output
    assert "Traceback" not in output and "StorageInternalError" not in output, output
    assert "connection lost" in output  # the outage was met, and waited out
    with rdb(postgres_url) as storage:
        trials = optuna.load_study(study_name=pg_name, storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [(t.number, t.state) for t in trials]


def test_an_outage_longer_than_the_patience_ends_in_one_storage_error(postgres_url: str) -> None:
    """A server that stays away longer than ``patience``: the call raises one StorageError naming the storage."""
    storage = PatientRDBStorage(postgres_url, patience=2.0, shown="the-db")
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], f"gone-{uuid.uuid4().hex[:8]}")
    try:
        with _postgres_down(0.0), pytest.raises(StorageError, match=r"^the study's storage the-db has been "
                                                 r"unreachable for 2s \(.*\): the run stops here"):
            storage.get_all_trials(study_id)
    finally:
        storage.delete_study(study_id)
        storage.engine.dispose()


def test_only_connection_errors_are_retried() -> None:
    from sqlalchemy import exc

    lost = exc.OperationalError("SELECT 1", {}, Exception("the database system is shutting down"))
    wrapped = optuna.exceptions.StorageInternalError("during the commit")
    wrapped.__cause__ = lost
    assert is_connection_error(lost) and is_connection_error(wrapped)
    assert not is_connection_error(exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_connection_error(ValueError("bad data"))
