"""End to end: ``python -m melanoma_search.run`` on tiny studies, a real SQLite storage, the dashboard over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from melanoma_search.run import main
from tests.studies import TINY, run_cli, write_spec


def _study(tmp_path: Path, name: str = "tiny") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/storage/{name}.db")


def test_study_runs_records_and_resumes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, enqueue=[{"loss.name": "bce", "lr": 0.002}, {"loss.name": "arcface"},
                                    {"loss.name": "focal"}])
    first = run_cli(tmp_path, "--study", str(spec), "--n-trials", "3")
    assert first.returncode == 0, first.stderr
    assert "leaderboard of study 'tiny'" in first.stdout
    assert "trial 0 fold 0 epoch 2/2" in first.stdout  # per-epoch progress
    assert "| fp32 (" in first.stdout  # each trial's start line names its precision and why
    assert "trial 1 fail: FAIL (impossible config" in first.stdout  # arcface loss without its head
    assert "Traceback" not in first.stdout + first.stderr  # the failure in one line (run --verbose for Optuna's)
    study = _study(tmp_path)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    done = study.trials[0]
    assert 0.0 <= done.value <= 1.0
    # the learning curve: step k after k epochs
    assert done.intermediate_values and sorted(done.intermediate_values) == [1, 2]
    for key in ("fold_aucs", "epochs_run", "wall_seconds", "images_per_s", "peak_memory_mb", "device"):
        assert key in done.user_attrs, key
    assert "arcface" in study.trials[1].user_attrs["fail_reason"]
    names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(done, storage=study._storage)}
    assert names >= {"config.yaml", "oof.csv", "test.csv", "roc.svg", "metrics.yaml"}
    kept = study.user_attrs["weights"]  # top-1 weights only
    assert list(kept) == [str(study.best_trial.number)]
    assert sorted(p.name for p in Path(kept[str(study.best_trial.number)]).iterdir()) == ["fold0.safetensors"]

    again = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1")  # the same command resumes
    assert again.returncode == 0, again.stderr
    assert "3 earlier trial(s)" in again.stdout
    assert len(_study(tmp_path).trials) == 4
    dry = run_cli(tmp_path, "--study", str(spec), "--dry-run", "--n-trials", "1")
    assert dry.returncode == 0, dry.stderr
    assert f"{tmp_path}/storage/tiny.db already holds 4 trial(s), which a real run would continue" in dry.stdout


def test_pruning_is_recorded(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, pruner={"name": "threshold", "lower": 0.999, "n_warmup_steps": 0},
                 space={"lr": {"low": 1.0e-3, "high": 3.0e-3}})
    run = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1", "--timeout", "3600")
    assert run.returncode == 0, run.stderr
    assert "running 1 trial(s) within 3600s (no new trial after " in run.stdout  # Optuna's timeout, said as such
    trial = _study(tmp_path).trials[0]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_run"] == 1
    assert "trial 0 pruned at fold 0 epoch 1" in run.stdout


def test_dry_run_trains_nothing(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--study", str(write_spec(tmp_path)), "--dry-run", "--n-trials", "4")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("[ok]") + run.stdout.count("[INVALID") == 4
    assert not (tmp_path / "storage" / "tiny.db").exists()


def test_bad_inputs_exit_cleanly(tmp_path: Path) -> None:
    missing = run_cli(tmp_path, "--study", str(write_spec(tmp_path)), "--data-dir", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "data folder not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run_cli(tmp_path, "--study", "no-such-study")
    assert unknown.returncode == 2 and "no study spec 'no-such-study'" in unknown.stderr
    bad_storage = run_cli(tmp_path, "--study", str(write_spec(tmp_path)), "--storage", "mysql://u:pw@127.0.0.1:1/x")
    assert bad_storage.returncode == 2 and "cannot open storage mysql://u:***@127.0.0.1:1/x" in bad_storage.stderr


def test_command_line_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(write_spec(tmp_path))
    real = write_spec(tmp_path, "real", data={"n_folds": 3})  # no folder, no synthetic section
    broken = tmp_path / "broken.yaml"
    broken.write_text("objective: holdout_auc\nspace:\n  lr: {low: 1.0e-3, high: 3.0e-3\nbudget: {n_trials: 1}\n")
    for argv, message in (
        (["--study", spec, "--n-trials", "-1"], "--n-trials -1: must be at least 1"),
        (["--study", spec, "--n-trials", "0"], "--n-trials 0: must be at least 1"),
        (["--study", spec, "--timeout", "-5"], "--timeout -5: must be a positive number of seconds"),
        (["--study", spec, "--set", "model.name=resnet_nope"], "model.name: unknown timm model 'resnet_nope'"),
        (["--study", spec, "--dry-run", "--set", "model.name=resnet_nope"], "unknown timm model 'resnet_nope'"),
        (["--study", str(broken)], f"{broken}, line 4, column 7: not valid YAML: expected ',' or '}}'"),
        (["--study", spec, "--set", "lr=[1,"], "--set lr=[1,, line 1, column 4: not valid YAML"),
        (["--study", str(real), "--dry-run"], "study 'real' trains on a dataset folder and none is given"),
        (["--study", str(real)], "pass --data-dir PATH"),
        (["--study", spec, "--dry-run", "--data-dir", str(tmp_path / "absent")], "data folder not found"),
        (["--study", spec, "--dry-run", "--workers", "2", "--storage", f"sqlite:///{tmp_path}/x.db"],
         "is SQLite, which takes one writer at a time"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "storage").exists() and not (tmp_path / "x.db").exists()  # nothing started or written


def test_help_lists_the_shipped_studies_in_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    shown = capsys.readouterr().out
    assert stop.value.code == 0
    assert "demo, effnet-sweep, ham-cpu" in " ".join(shown.split())  # the option's help wraps lines
    assert "`" not in shown and ":func:" not in shown  # plain text: no reStructuredText markup at all


def test_verbose_keeps_optunas_traceback_of_a_failed_trial(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, enqueue=[{"loss.name": "arcface"}])
    run = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1", "--verbose", "--storage-dir", "elsewhere")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "elsewhere" / "cache").is_dir() and not (tmp_path / "storage").exists()  # caches follow
    assert "trial 0 fail: FAIL (impossible config" in run.stdout
    assert "Trial 0 failed with parameters" in run.stderr and "Traceback" in run.stderr


def test_missing_pretrained_weights_stop_the_run_once_before_any_trial(tmp_path: Path) -> None:
    """Without a hub, every trial used to fail in turn after the client's retries; now the run stops at once."""
    space = {"model.name": {"choices": ["resnet18", "resnet34"]}}
    fixed = {**TINY["fixed"], "model": {"pretrained": True}}
    spec = write_spec(tmp_path, space=space, fixed=fixed)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "melanoma_search.run", "--study", str(spec), "--n-trials", "2"],
                         cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stdout
    assert "cannot load pretrained weights of 'resnet18'" in run.stderr
    assert "model.checkpoints: {resnet18: PATH}" in run.stderr and "Traceback" not in run.stderr
    assert "running 2 trial(s)" not in run.stdout  # stopped before the study started any trial


def test_a_missing_hair_overlay_folder_stops_the_run_once_before_any_trial(tmp_path: Path) -> None:
    fixed = {**TINY["fixed"], "augment": {"hair": 0.5, "hair_dir": str(tmp_path / "no-such-hair")}}
    run = run_cli(tmp_path, "--study", str(write_spec(tmp_path, fixed=fixed)), "--n-trials", "2")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    last = run.stderr.strip().splitlines()[-1]  # (after the dataset's INFO log lines)
    assert last.startswith("error: augment.hair_dir: hair overlay folder not found") and "no-such-hair" in last
    assert "running 2 trial(s)" not in run.stdout


def _stop_mid_trial(tmp_path: Path, signum: int, *, epochs: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Start a one-trial run, send ``signum`` once its second epoch is logged (the first epoch's state is saved by
    then), and return what the run printed and its spec."""
    spec = write_spec(tmp_path, fixed={**TINY["fixed"], "epochs": epochs})
    process = subprocess.Popen([sys.executable, "-m", "melanoma_search.run", "--study", str(spec), "--n-trials", "1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # wait until training is under way
        if f"epoch 2/{epochs}" in line:
            break
    process.send_signal(signum)
    output = process.communicate(timeout=120)[0]
    return subprocess.CompletedProcess(process.args, process.returncode, output, ""), spec


def _resume_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "storage" / "tiny").glob("study-*/resume/trial-00000/attempt-0/fold0.state.*"))


def test_ctrl_c_re_queues_the_trial_with_its_saved_epochs(tmp_path: Path) -> None:
    stopped, _ = _stop_mid_trial(tmp_path, signal.SIGINT, epochs=30)
    assert stopped.returncode == 130, stopped.stdout
    assert "Traceback" not in stopped.stdout and "KeyboardInterrupt" not in stopped.stdout, stopped.stdout
    trials = _study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]  # no trial left RUNNING
    assert "interrupted" in trials[0].user_attrs["fail_reason"]
    assert trials[1].system_attrs["failed_trial"] == 0 and trials[1].params == trials[0].params
    assert _resume_files(tmp_path), "the interrupted trial's saved epochs were thrown away"


def test_sigterm_is_preemption_and_the_same_command_continues_the_trial(tmp_path: Path) -> None:
    """What Slurm, Kubernetes and spot VMs send: one line, exit 143, the trial re-queued with its state; the same
    command then trains only the epochs it lacked."""
    stopped, spec = _stop_mid_trial(tmp_path, signal.SIGTERM, epochs=8)
    assert stopped.returncode == 143, stopped.stdout
    assert "Traceback" not in stopped.stdout and stopped.stdout.strip().splitlines()[-1].startswith(
        "preempted (SIGTERM): running trials were re-queued with their saved epochs"), stopped.stdout
    first = _study(tmp_path).trials
    assert [t.state for t in first] == [TrialState.FAIL, TrialState.WAITING]
    assert first[0].user_attrs["fail_reason"].startswith("preempted: SIGTERM")
    assert _resume_files(tmp_path)
    again = run_cli(tmp_path, "--study", str(spec), "--n-trials", "1", "--max-trials", "1")  # the retry alone
    assert again.returncode == 0, again.stderr
    resumed = int(again.stdout.split("trial 1 fold 0: resuming after epoch ")[1].split("/")[0])
    assert resumed >= 1  # the preempted attempt's last saved epoch
    assert sum(f"trial 1 fold 0 epoch {k}/8" in again.stdout for k in range(1, 9)) == 8 - resumed
    trials = _study(tmp_path).trials
    retry = trials[1]
    assert retry.state == TrialState.COMPLETE and sorted(retry.intermediate_values) == list(range(1, 9))
    assert len(trials) == 2  # the retry took the preempted trial's place; nothing else ran
    assert not _resume_files(tmp_path)  # removed once the retry finished


def test_ctrl_c_before_the_first_trial_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while the run reads its dataset (here: writes the synthetic set) ends in one line, exit 130."""
    spec = write_spec(tmp_path, data={**TINY["data"], "synthetic": {"n_train": 3000, "n_test": 0, "size": 96,
                                                                    "seed": 9}})
    process = subprocess.Popen([sys.executable, "-m", "melanoma_search.run", "--study", str(spec), "--n-trials", "1"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "storage" / "cache").glob("synthetic-*")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the synthetic lesions are being drawn: no study opened yet
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output and output.strip().splitlines()[-1].startswith("interrupted"), output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dashboard_serves_the_study_and_an_artifact(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--study", str(write_spec(tmp_path, space={"lr": {"low": 1.0e-3, "high": 3.0e-3}})),
               "--n-trials", "1")
    assert run.returncode == 0, run.stderr
    study = _study(tmp_path)
    trial = study.trials[0]
    roc = next(m for m in optuna.artifacts.get_all_artifact_meta(trial, storage=study._storage)
               if m.filename == "roc.svg")
    port = _free_port()
    dashboard = subprocess.Popen(
        [sys.executable, "-c", "from optuna_dashboard._cli import main; main()",
         f"sqlite:///{tmp_path}/storage/tiny.db", "--port", str(port),
         "--host", "127.0.0.1", "--artifact-dir", str(tmp_path / "storage" / "tiny" / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                studies = urllib.request.urlopen(f"{base}/api/studies", timeout=5).read().decode()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        assert '"study_name": "tiny"' in studies
        detail = urllib.request.urlopen(f"{base}/api/studies/{study._study_id}", timeout=10).read().decode()
        assert "roc.svg" in detail and "holdout_auc" in detail
        svg = urllib.request.urlopen(f"{base}/artifacts/{study._study_id}/{trial._trial_id}/{roc.artifact_id}",
                                     timeout=10).read().decode()
        assert svg.startswith("<svg") and "AUC" in svg
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
