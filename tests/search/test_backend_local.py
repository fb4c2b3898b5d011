"""``run --workers N``: GPU pinning, and real multi-process studies on the journal file and PostgreSQL, including a
worker killed with SIGKILL and a Ctrl-C of the launcher."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from melanoma_search.run import main
from melanoma_search.search.backends.local import gpu_slots
from melanoma_search.search.recovery import retried_numbers
from melanoma_search.search.study import open_storage
from tests.studies import TINY, overlapping, run_cli, start_cli, wait_for_training, write_spec

SPACE = {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}}


def test_workers_are_pinned_round_robin_to_the_visible_gpus() -> None:
    assert gpu_slots(3, visible="0,1") == ["0", "1", "0"]
    assert gpu_slots(2, visible="2, 5") == ["2", "5"]
    assert gpu_slots(2, visible="", count=lambda: 4) == [None, None]  # CUDA_VISIBLE_DEVICES="" hides every GPU
    assert gpu_slots(2, visible="-1") == [None, None]
    assert gpu_slots(4, visible=None, count=lambda: 2) == ["0", "1", "0", "1"]
    assert gpu_slots(2, visible=None, count=lambda: 0) == [None, None]


def test_scale_flags_are_checked_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(write_spec(tmp_path, space=SPACE))
    for argv, message in (
        (["--workers", "0"], "--workers 0: must be at least 1"),
        (["--max-concurrent", "2"], "--max-concurrent: only with --backend ray"),
        (["--backend", "ray", "--workers", "2"], "--workers: only with --backend local"),
        (["--heartbeat", "-1"], "--heartbeat -1: must be 0 (off)"),
    ):
        assert main(["--study", spec, *argv]) == 2
        assert message in capsys.readouterr().err


def results(study: optuna.Study) -> list[FrozenTrial]:
    """The run's trials that count: everything but a failed trial that was re-queued."""
    trials = study.get_trials()
    retried = retried_numbers(trials)
    return [t for t in trials if t.number not in retried]


def check_shared_run(study: optuna.Study, *, expected: int) -> None:
    trials = study.get_trials()
    assert len(results(study)) == expected
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    assert overlapping(trials)


@pytest.fixture
def pg_study(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh study name on the test PostgreSQL, deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield postgres_url, name
    try:
        optuna.delete_study(study_name=name, storage=postgres_url)
    except KeyError:
        pass


def test_two_workers_share_a_journal_study_begun_in_sqlite(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(tmp_path, space=SPACE)
    first = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1")
    assert first.returncode == 0, first.stderr

    refused = main(["--study", str(spec), "--workers", "2", "--storage", f"sqlite:///{tmp_path}/x.db"])
    assert refused == 2 and "SQLite, which takes one writer at a time" in capsys.readouterr().err

    run = run_cli(tmp_path, "--study", str(spec), "--workers", "2", "--n-trials", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "continuing study 'tiny' (1 trial(s))" in run.stdout
    assert "[w0] trial" in run.stdout and "[w1] trial" in run.stdout
    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{tmp_path}/storage/tiny.log"))
    assert len(study.trials) == 5 and study.trials[0].user_attrs["launch"] != study.trials[1].user_attrs["launch"]
    launched = optuna.create_study()  # the four trials of the parallel run, checked on their own
    launched.add_trials(study.trials[1:])
    check_shared_run(launched, expected=4)
    assert not list((tmp_path / "storage" / "tiny" / "runs").iterdir())  # budget and job files cleaned up


def test_two_workers_on_postgresql(tmp_path: Path, pg_study: tuple[str, str]) -> None:
    url, name = pg_study
    with_password = url.replace("://postgres@", "://postgres:s3cret-pw@")  # trust auth ignores it
    spec = write_spec(tmp_path, space=SPACE)
    run = run_cli(tmp_path, "--study", str(spec), "--study-name", name, "--storage", with_password, "--workers", "2",
                  "--n-trials", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    check_shared_run(optuna.load_study(study_name=name, storage=url), expected=4)
    assert "s3cret-pw" not in run.stdout + run.stderr and "postgres:***@" in run.stdout
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"s3cret-pw" in p.read_bytes()]


def test_a_worker_killed_mid_trial_loses_nothing(tmp_path: Path, pg_study: tuple[str, str]) -> None:
    url, name = pg_study
    spec = write_spec(tmp_path, space=SPACE, fixed={**TINY["fixed"], "epochs": 6})
    launcher = start_cli(tmp_path, "--study", str(spec), "--study-name", name, "--storage", url, "--workers", "2",
                         "--n-trials", "3", "--heartbeat", "2")
    victim = wait_for_training(url, name)
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    output = launcher.communicate(timeout=600)[0]
    assert launcher.returncode == 0, output
    assert f"died (signal SIGKILL) in trial {victim.number}; re-queued as trial" in output

    study = optuna.load_study(study_name=name, storage=url)
    killed = study.trials[victim.number]
    assert killed.state == TrialState.FAIL and "died (signal SIGKILL)" in killed.user_attrs["fail_reason"]
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params and retries[0].state == TrialState.COMPLETE
    assert len(results(study)) == 3  # every trial accounted for, none counted twice
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in results(study))


def test_ctrl_c_stops_every_worker(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, space=SPACE, fixed={**TINY["fixed"], "epochs": 30})
    launcher = start_cli(tmp_path, "--study", str(spec), "--workers", "2", "--n-trials", "4")
    assert launcher.stdout is not None
    pids, training = [], set()
    for line in launcher.stdout:
        if "] started (pid " in line:
            pids.append(int(line.split("(pid ")[1].split(",")[0]))
        if "epoch 1/30" in line:
            training.add(line.split("]")[0])
        if len(training) == 2:
            break
    launcher.send_signal(signal.SIGINT)
    output = launcher.communicate(timeout=180)[0]
    assert launcher.returncode == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{tmp_path}/storage/tiny.log"))
    states = [t.state for t in study.trials]  # each stopped trial re-queued once, for the same command to continue
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING, TrialState.WAITING], states
    assert all("interrupted" in t.user_attrs["fail_reason"] for t in study.trials[:2])
    assert retried_numbers(study.trials) == {0, 1}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_preempted_worker_re_queues_its_trial_and_a_survivor_finishes_it(tmp_path: Path) -> None:
    """SIGTERM to one worker mid-trial: its trial is re-queued with its saved epochs and the other worker runs the
    retry, which trains only the epochs the preempted attempt lacked."""
    spec = write_spec(tmp_path, space=SPACE, fixed={**TINY["fixed"], "epochs": 8})
    launcher = start_cli(tmp_path, "--study", str(spec), "--workers", "2", "--n-trials", "2")
    url = f"journal:{tmp_path}/storage/tiny.log"
    victim = wait_for_training(url, "tiny", epochs=2)
    os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGTERM)
    output = launcher.communicate(timeout=600)[0]
    assert launcher.returncode == 0, output
    assert "was preempted (SIGTERM); its trial is re-queued with its saved epochs" in output
    assert f"trial {victim.number} preempted (SIGTERM): re-queued as trial" in output
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == study.trials[victim.number].params
    resumed = int(output.split(f"trial {retry.number} fold 0: resuming after epoch ")[1].split("/")[0])
    assert resumed >= 2
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 2  # the run's 2, none counted twice
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_journal_launch_killed_with_its_workers_is_recovered_by_the_next_run(tmp_path: Path) -> None:
    """The journal file has no heartbeat: a launcher and its workers killed with kill -9 leave RUNNING trials that
    would hold the study's places forever. The same command finds their launch dead, re-queues them and finishes."""
    spec = write_spec(tmp_path, space=SPACE, fixed={**TINY["fixed"], "epochs": 8}, budget={"max_trials": 2})
    args = ["--study", str(spec), "--workers", "2", "--n-trials", "2"]
    launcher = start_cli(tmp_path, *args)
    url = f"journal:{tmp_path}/storage/tiny.log"
    wait_for_training(url, "tiny", epochs=2, count=2)
    workers = [int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in optuna.load_study(
        study_name="tiny", storage=open_storage(url)).get_trials(states=(TrialState.RUNNING,))]
    launcher.kill()  # the whole launch dies at once: nobody is left to fail its trials
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    launcher.wait()
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    study = optuna.load_study(study_name="tiny", storage=open_storage(url))
    orphans = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(orphans) == 2 and all("has no live process left" in t.user_attrs["fail_reason"] for t in orphans)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and {t.system_attrs.get("failed_trial") for t in done} == {t.number for t in orphans}
    assert "resuming after epoch" in again.stdout  # the orphans' saved epochs were kept for their retries
    assert not list((tmp_path / "storage").glob("tiny.log.launches/*.lock"))  # each launch removed its lock


def test_backends_come_from_one_table_that_feeds_the_command_line() -> None:
    from melanoma_search.run import build_parser
    from melanoma_search.search.backends import LocalBackend, RayBackend, backend_flags, get_backend, list_backends

    assert list_backends() == ("local", "ray") and get_backend("ray") is RayBackend
    help_text = build_parser().format_help()
    for name in list_backends():
        assert f"--backend {name}" in help_text
        assert all(flag in help_text for _, flag in backend_flags(get_backend(name)))
    assert not LocalBackend().parallel and LocalBackend(workers=3).parallel
    assert LocalBackend(workers=4).workers_for(2).description == "2 worker(s)"


def test_two_launchers_started_together_on_an_empty_database(tmp_path: Path, postgres_url: str) -> None:
    """Both create Optuna's tables and the study at the same moment: both run, and they agree on the study's key."""
    import sqlalchemy

    database = f"empty_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    url = postgres_url.rsplit("/", 1)[0] + f"/{database}"
    try:
        spec = write_spec(tmp_path, space=SPACE)
        launchers = [start_cli(tmp_path, "--study", str(spec), "--storage", url, "--n-trials", "1",
                               "--storage-dir", f"node{i}") for i in range(2)]
        outputs = [launcher.communicate(timeout=600)[0] for launcher in launchers]
        assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
        study = optuna.load_study(study_name="tiny", storage=url)
        assert len(study.trials) == 2 and all(t.state == TrialState.COMPLETE for t in study.trials)
        keys = {p.name for i in range(2) for p in (tmp_path / f"node{i}" / "tiny").glob("study-*")}
        assert keys == {f"study-{study.user_attrs['study_key']}"}  # one key: kept weights in one folder name
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"))
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database}"))
        admin.dispose()
