"""A worker killed mid-trial: the launcher re-queues its trial, and the retry continues from the last finished epoch;
and the preemption case, two "nodes" on one PostgreSQL study under one study-wide budget."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from melanoma_search.search.study import open_storage
from tests.studies import TINY, rdb, start_cli, write_spec

SPACE = {"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}}
SLOW = {**TINY, "data": {**TINY["data"], "synthetic": {"n_train": 240, "n_test": 0, "size": 64, "seed": 5}}}
FIXED = {"epochs": 4, "batch_size": 16, "image_size": 48, "model": {"name": "resnet18"}}


def _wait(condition: object, *, timeout: float = 300, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _pid(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs["worker"].rsplit(":", 1)[1])


def test_a_killed_trial_continues_from_its_last_finished_epoch(tmp_path: Path) -> None:
    spec = tmp_path / "slow.yaml"
    # two trials on two worker processes (one trial would run in the launcher itself)
    spec.write_text(yaml.safe_dump({**SLOW, "fixed": FIXED, "space": SPACE, "budget": {"n_trials": 2}}))
    launcher = start_cli(tmp_path, "--study", str(spec), "--workers", "2")
    url = f"journal:{tmp_path}/storage/slow.log"

    def trial_zero() -> optuna.trial.FrozenTrial | None:
        if not (tmp_path / "storage" / "slow.log").is_file():
            return None
        try:
            trials = optuna.load_study(study_name="slow", storage=open_storage(url)).trials
        except KeyError:
            return None
        return trials[0] if trials else None

    _wait(lambda: (t := trial_zero()) is not None and len(t.intermediate_values) >= 2, what="epoch 2 of trial 0")
    victim = trial_zero()
    assert victim is not None
    os.kill(_pid(victim), signal.SIGKILL)
    output = launcher.communicate(timeout=600)[0]
    assert launcher.returncode == 0, output
    study = optuna.load_study(study_name="slow", storage=open_storage(url))
    killed = study.trials[0]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert killed.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.params == killed.params and retry.user_attrs["resumes_trial"] == 0
    resumed = next(int(line.split("resuming after epoch ")[1].split("/")[0]) for line in output.splitlines()
                   if f"trial {retry.number} fold 0: resuming after epoch" in line)
    assert resumed >= 2  # the state of every epoch the killed attempt finished (it may have finished a third)
    trained = [line for line in output.splitlines() if f"trial {retry.number} fold 0 epoch " in line]
    assert len(trained) == 4 - resumed  # the retry trained only the epochs the killed attempt lacked
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]  # step k: k epochs done
    for step in sorted(killed.intermediate_values)[:resumed]:  # the inherited curve, unchanged
        assert retry.intermediate_values[step] == killed.intermediate_values[step]
    assert not list((tmp_path / "storage" / "slow").glob("study-*/resume/*"))  # removed when the retry ended


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a launcher's workers), from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_two_nodes_one_preempted_share_one_budget(tmp_path: Path, postgres_url: str, pg_name: str) -> None:
    """Node A (a launcher and its workers) is killed with kill -9 mid-trial and started again; node B loses a
    worker to kill -9. The study's budget is 4 trials (one per worker), whatever the nodes and restarts."""
    spec = write_spec(tmp_path, name="shared", space=SPACE, fixed={**FIXED, "epochs": 3}, data=SLOW["data"],
                      budget={"n_trials": 100, "max_trials": 4})
    args = ["--study", str(spec), "--study-name", pg_name, "--storage", postgres_url, "--workers", "2",
            "--heartbeat", "2"]

    with rdb(postgres_url) as storage:  # one connection pool for the polls, closed at the end
        def training() -> list[optuna.trial.FrozenTrial]:
            try:
                study = optuna.load_study(study_name=pg_name, storage=storage)
            except KeyError:
                return []
            return [t for t in study.get_trials(states=(TrialState.RUNNING,))
                    if t.intermediate_values and "worker" in t.user_attrs]

        def on(node: object) -> list[optuna.trial.FrozenTrial]:  # the trials a node's workers are training
            workers = set(_children(node.pid))  # type: ignore[attr-defined]
            return [t for t in training() if _pid(t) in workers]

        node_a = start_cli(tmp_path, *args)  # both nodes started at once, as a cluster job starts them
        node_b = start_cli(tmp_path, *args)
        _wait(lambda: bool(on(node_a)) and bool(on(node_b)), what="both nodes training")
        # node A is preempted: its launcher and every worker under it die at once, nobody left to fail their trials
        a_workers = _children(node_a.pid)
        a_running = [t.number for t in on(node_a)]
        node_a.kill()
        for pid in a_workers:
            os.kill(pid, signal.SIGKILL)
        node_a.wait()
        # node B loses one worker mid-trial (its launcher sees it die)
        b_victim = on(node_b)[0]
        os.kill(_pid(b_victim), signal.SIGKILL)
        restarted = start_cli(tmp_path, *args)  # node A comes back with the same command
        out_b = node_b.communicate(timeout=900)[0]
        out_a = restarted.communicate(timeout=900)[0]
        assert node_b.returncode == 0 and restarted.returncode == 0, out_a + out_b

        trials = optuna.load_study(study_name=pg_name, storage=storage).trials
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(finished) == 4  # exactly the study-wide budget, across two nodes, a preemption and a restart
        killed = [t for t in trials if t.state == TrialState.FAIL
                  and not t.user_attrs.get("fail_reason", "").startswith("over the study's budget")]
        assert {t.number for t in killed} >= {*a_running, b_victim.number}
        for trial in killed:
            assert trial.user_attrs.get("fail_reason")
            retries = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
            assert len(retries) == 1 and retries[0].params == trial.params  # re-queued exactly once, same parameters
        for trial in finished:
            names = {m.filename for m in optuna.artifacts.get_all_artifact_meta(trial, storage=storage)}
            assert {"config.yaml", "oof.csv"} <= names, (trial.number, names)
