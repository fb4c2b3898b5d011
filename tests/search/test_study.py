from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import optuna
import pytest

from melanoma_search.errors import ConfigError, StorageError
from melanoma_search.search.objective import load_objective
from melanoma_search.search.spec import PrunerSpec, SamplerSpec, StudySpec
from melanoma_search.search.study import build_pruner, build_sampler, open_storage, open_study, redact


def test_redact_hides_passwords() -> None:
    assert redact("postgresql+psycopg://bob:s3cret@db.example:5432/optuna") == \
        "postgresql+psycopg://bob:***@db.example:5432/optuna"
    assert redact("sqlite:///storage/demo.db") == "sqlite:///storage/demo.db"


def test_sqlite_study_resumes_with_the_same_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    spec, objective = StudySpec(), load_objective("holdout_auc")
    first = open_study(spec, objective, storage=open_storage(url), study_name="s")
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    again = open_study(spec, objective, storage=open_storage(url), study_name="s")
    assert len(again.trials) == 2
    with pytest.raises(ConfigError, match="exists with directions"):
        open_study(spec, load_objective("auc_vs_cost"), storage=open_storage(url), study_name="s")


def test_locked_sqlite_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    open_storage(f"sqlite:///{path}")  # create the schema
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="is locked by another process.*journal"):
            storage = open_storage(f"sqlite:///{path}", lock_timeout=0.5)
            open_study(StudySpec(), load_objective("holdout_auc"), storage=storage, study_name="x")
    finally:
        holder.rollback()
        holder.close()


def test_unreachable_postgres_hides_the_password() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://user:topsecret@127.0.0.1:{port}/optuna"
    with pytest.raises(StorageError) as info:
        open_storage(url, lock_timeout=1)
    assert "topsecret" not in str(info.value) and "user:***@127.0.0.1" in str(info.value)


def test_journal_storage(tmp_path: Path) -> None:
    storage = open_storage(f"journal:{tmp_path}/j.log")
    study = optuna.create_study(storage=storage, study_name="j")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert (tmp_path / "j.log").stat().st_size > 0


@pytest.mark.parametrize("name", ["tpe", "random", "qmc", "gp"])
def test_samplers(name: str) -> None:
    assert isinstance(build_sampler(SamplerSpec(name=name), seed=0), optuna.samplers.BaseSampler)


def test_pruners() -> None:
    assert isinstance(build_pruner(PrunerSpec(name="hyperband")), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner(PrunerSpec(name="median", patience=2)), optuna.pruners.PatientPruner)
    assert isinstance(build_pruner(PrunerSpec(name="none")), optuna.pruners.NopPruner)


def test_heartbeat_requeues_the_trial_of_a_worker_nobody_watches(tmp_path: Path, postgres_url: str) -> None:
    """A lone worker (another node, no launcher) killed mid-trial: the next run fails its trial and reruns it."""
    import os
    import signal
    import time
    import uuid

    from optuna.trial import TrialState

    from tests.studies import TINY, run_cli, start_cli, wait_for_training, write_spec

    name = f"test-{uuid.uuid4().hex[:10]}"
    spec = write_spec(tmp_path, space={"lr": {"low": 1.0e-3, "high": 3.0e-3}}, fixed={**TINY["fixed"], "epochs": 30})
    args = ("--study", str(spec), "--study-name", name, "--storage", postgres_url, "--heartbeat", "1")
    try:
        lone = start_cli(tmp_path, *args, "--n-trials", "1")
        victim = wait_for_training(postgres_url, name)
        os.kill(lone.pid, signal.SIGKILL)
        lone.communicate(timeout=60)
        time.sleep(4)  # three missed heartbeats make the trial stale
        rerun = run_cli(tmp_path, *args, "--n-trials", "1", "--set", "epochs=1")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
        assert study.trials[1].params == victim.params
        assert study.trials[1].system_attrs["failed_trial"] == victim.number
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)
