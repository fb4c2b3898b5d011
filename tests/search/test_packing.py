"""``--workers auto`` / ``--trials-per-gpu``: the packing plan from measured memory and cores, a real packed run on
made-up GPU cards (as the pinning tests do: the workers get ``CUDA_VISIBLE_DEVICES`` and, with no driver here, train
on the CPU), and the lease that lets an out-of-memory trial have its card alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from melanoma_search.errors import ConfigError
from melanoma_search.run import main
from melanoma_search.search import start_run
from melanoma_search.search.backends import LocalBackend
from melanoma_search.search.gpu_share import GpuShare
from melanoma_search.search.packing import (
    CONTEXT_MB,
    MEMORY_MARGIN,
    UNMEASURED_PER_GPU,
    GpuCard,
    measured_peak_mb,
    plan_packing,
    visible_gpus,
)
from melanoma_search.search.study import open_storage
from tests.studies import overlapping, write_spec

H100 = GpuCard(device="0", total_mb=81_559.0, name="NVIDIA H100 80GB HBM3")


def test_no_gpu_means_one_worker_on_the_cpu() -> None:
    plan = plan_packing(gpus=[], cpu_cores=16)
    assert (plan.workers, plan.trials_per_gpu) == (1, 0) and "no GPU visible" in plan.reason


def test_the_measured_peak_sizes_the_packing_and_the_cores_cap_it() -> None:
    need = 9_000 * (1 + MEMORY_MARGIN) + CONTEXT_MB
    by_memory = int(H100.total_mb * 0.95 // need)
    plan = plan_packing(gpus=[H100], cpu_cores=64, peak_mb=9_000, measured_trials=5)
    assert plan.trials_per_gpu == plan.workers == by_memory == 6
    assert "largest measured peak of 5 trial(s) is 9,000 MB" in plan.reason
    assert plan.loader_workers == min(8, 64 // 6 - 1)  # the cores shared out among the packed trials' loaders

    few_cores = plan_packing(gpus=[H100, GpuCard(device="1", total_mb=40_000)], cpu_cores=12, peak_mb=9_000,
                             measured_trials=5)
    assert few_cores.trials_per_gpu == 2 and few_cores.workers == 4  # 12 cores / (2 cards x 3 processes a trial)
    assert few_cores.loader_workers == 2
    big = plan_packing(gpus=[H100], cpu_cores=64, peak_mb=70_000, measured_trials=1)
    assert big.trials_per_gpu == 1  # never fewer than one


def test_an_unmeasured_study_assumes_three_and_says_so() -> None:
    plan = plan_packing(gpus=[H100], cpu_cores=16)
    assert plan.trials_per_gpu == UNMEASURED_PER_GPU
    assert "no trial of this study has measured its GPU memory yet" in plan.reason


def test_an_explicit_count_is_kept_with_a_warning_when_it_will_not_fit() -> None:
    plan = plan_packing(gpus=[H100], cpu_cores=16, peak_mb=30_000, measured_trials=2, trials_per_gpu=4,
                        loader_workers=3)
    assert plan.trials_per_gpu == 4 and plan.loader_workers is None  # data.num_workers as configured
    assert "--trials-per-gpu 4 is more than that" in plan.reason


def test_visible_gpus_respect_cuda_visible_devices() -> None:
    cards = [GpuCard(device="0", total_mb=80_000), GpuCard(device="1", total_mb=40_000)]
    assert visible_gpus(visible="1", query=lambda: cards) == [cards[1]]
    assert visible_gpus(visible="", query=lambda: cards) == []
    assert visible_gpus(visible=None, query=lambda: cards) == cards
    assert visible_gpus(visible="GPU-abc", query=lambda: cards)[0].total_mb == 40_000  # a UUID: the smallest card


def test_measured_peak_reads_only_trials_that_ran_on_a_gpu(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", study_name="s")
    for device, peak in (("cuda (NVIDIA H100)", 5_000.0), ("cpu", 90_000.0), ("cuda (NVIDIA H100)", 7_000.0)):
        trial = study.ask()
        trial.set_user_attr("device", device)
        trial.set_user_attr("peak_memory_mb", peak)
        study.tell(trial, 0.5)
    assert measured_peak_mb(study) == (7_000.0, 2)


def test_packing_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(write_spec(tmp_path))
    assert main(["--study", spec, "--workers", "2", "--trials-per-gpu", "2"]) == 2
    assert "--trials-per-gpu: only with --workers auto" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no GPU is visible"):
        LocalBackend(workers="auto", trials_per_gpu=2, gpus=[])
    with pytest.raises(ConfigError, match="--trials-per-gpu 0"):
        LocalBackend(workers="auto", trials_per_gpu=0, gpus=[H100])
    with pytest.raises(SystemExit):
        main(["--study", spec, "--workers", "many"])
    assert "expected a number or 'auto'" in capsys.readouterr().err
    cpu_only = LocalBackend(workers="auto", gpus=[])
    assert not cpu_only.parallel and cpu_only.description == "1 worker"


def test_a_packed_run_shares_one_card_between_two_workers(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, space={"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
                      budget={"n_trials": 4})
    lines: list[str] = []
    backend = LocalBackend(workers="auto", trials_per_gpu=2, gpus=[GpuCard(device="0", total_mb=16_000)])
    summary = start_run(str(spec), backend=backend, storage_dir=tmp_path / "storage", log=lines.append)
    output = "\n".join(lines)
    assert summary.outcome.error is None, output
    assert "packing: 2 trial(s) per GPU on GPU 0" in output and "--trials-per-gpu 2 as asked" in output
    assert output.count("GPU 0, shared with 1 other worker(s)") == 2
    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{tmp_path}/storage/tiny.log"))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert overlapping(trials) and len({t.user_attrs["worker"] for t in trials}) == 2
    for trial in trials:
        phases = trial.user_attrs["time_breakdown"]
        assert phases["train_steps"] > 0 and {"model", "validate", "predict", "artifacts"} <= set(phases)
        assert trial.user_attrs["fixed_seconds"] == pytest.approx(
            trial.duration.total_seconds() + phases.get("startup", 0.0) - phases["train_steps"], abs=0.5)
    assert sum("startup" in t.user_attrs["time_breakdown"] for t in trials) == 2  # each worker process's first trial
    assert not list((tmp_path / "storage" / "tiny" / "runs").iterdir())  # the card's lock files went with the run


def _hold(share: GpuShare, mode: str, events: list[str], name: str, seconds: float) -> None:
    with share.shared() if mode == "shared" else share.alone():
        events.append(f"{name} in")
        time.sleep(seconds)
        events.append(f"{name} out")


def test_a_trial_alone_on_the_card_waits_for_the_others_and_holds_new_ones_back(tmp_path: Path) -> None:
    lock = tmp_path / "gpu0.lock"
    events: list[str] = []
    first = threading.Thread(target=_hold, args=(GpuShare(lock), "shared", events, "a", 0.6))
    second = threading.Thread(target=_hold, args=(GpuShare(lock), "shared", events, "b", 0.6))
    first.start(), second.start()
    time.sleep(0.2)
    assert events[:2] == ["a in", "b in"] or events[:2] == ["b in", "a in"]  # shared leases run side by side
    alone = threading.Thread(target=_hold, args=(GpuShare(lock), "alone", events, "oom", 0.4))
    alone.start()
    time.sleep(0.1)
    late = threading.Thread(target=_hold, args=(GpuShare(lock), "shared", events, "late", 0.1))
    late.start()
    for thread in (first, second, alone, late):
        thread.join(timeout=10)
    assert events.index("oom in") > max(events.index("a out"), events.index("b out"))
    assert events.index("late in") > events.index("oom out")  # the turnstile: no new trial while one waits alone


def test_a_shared_lease_is_taken_back_after_the_trial_ran_alone(tmp_path: Path) -> None:
    share = GpuShare(tmp_path / "gpu0.lock")
    with share.shared():
        assert share.held == "shared"
        with share.alone():
            assert share.held == "alone"
        assert share.held == "shared"
    assert share.held is None
