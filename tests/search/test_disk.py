"""A full disk under a run: a real tmpfs the test mounts (as root, as on the project machines and in CI)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from melanoma_search.errors import DiskFullError
from melanoma_search.search.disk import disk_full
from tests.studies import TINY, run_cli, write_spec


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs: room for the study's database, images and artifacts, not for one epoch's training state."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but the full-disk test cannot mount a tmpfs (needs root)")
        pytest.skip("mounting a small tmpfs needs root (the project machines and CI have it)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_the_same_command_finishes_with_space(
        tmp_path: Path, small_disk: Path) -> None:
    """Tried before: every trial failed with torch's "unexpected pos 64 vs 0" and the run spent all of them."""
    spec = write_spec(tmp_path, fixed={**TINY["fixed"], "epochs": 2})
    args = ("--study", str(spec), "--storage-dir", str(small_disk), "--n-trials", "3")
    full = run_cli(tmp_path, *args)
    assert full.returncode == 2, full.stdout + full.stderr
    last = full.stderr.strip().splitlines()[-1]  # the log lines above it are the run's INFO lines
    assert last.startswith(f"error: the disk holding {small_disk}") and "is full" in last, full.stderr
    assert "Traceback" not in full.stdout + full.stderr and full.stderr.count("error:") == 1
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{small_disk}/tiny.db")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]  # one trial spent, re-queued
    assert study.trials[0].user_attrs["fail_reason"].startswith("DiskFullError: the disk holding")
    assert not [p for p in small_disk.rglob("*") if ".partial" in p.name or ".tmp" in p.name]  # nothing half-written
    subprocess.run(["mount", "-o", "remount,size=400m", str(small_disk)], check=True)  # space again
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{small_disk}/tiny.db").trials
    assert trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 4  # the retry, then this run's three


def test_a_full_disk_is_told_from_a_trials_own_error(tmp_path: Path) -> None:
    no_space = OSError(errno.ENOSPC, "No space left on device")
    wrapped = RuntimeError("safetensors: Error while serializing")
    wrapped.__cause__ = no_space
    assert isinstance(disk_full(wrapped, folders=[tmp_path]), DiskFullError)
    assert isinstance(disk_full(RuntimeError("I/O error: No space left on device (os error 28)"), folders=[tmp_path]),
                      DiskFullError)
    assert disk_full(ValueError("Expected more than 1 value per channel"), folders=[tmp_path]) is None
    # torch's zip writer names no cause: a disk with plenty of room makes it not a full disk
    assert disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
                     folders=[tmp_path]) is None
