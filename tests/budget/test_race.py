"""The race end to end, on the synthetic lesions with real timm models and a real SQLite storage: it screens many
candidates, trains the best on every fold, starts nothing that its predicted cost cannot finish, resumes after a
preemption inside what is left of its limit, records its rank agreement, and refuses a limit that holds nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from melanoma_search.budget.cost import CostModel, machine_name
from melanoma_search.budget.race import RACE, RACE_AGREEMENT
from tests.studies import run_cli, write_spec

RACING: dict[str, Any] = {
    "objective": "cv_auc",
    "data": {"n_folds": 3, "num_workers": 0, "synthetic": {"n_train": 120, "n_test": 12, "size": 40, "seed": 1}},
    "fixed": {"batch_size": 16, "image_size": 32, "model": {"name": "resnet18", "pretrained": False}},
    "space": {"model.name": {"choices": ["resnet18", "mobilenetv3_small_100"]},
              "lr": {"choices": [0.001, 0.002, 0.003, 0.004]}},
    "sampler": {"name": "tpe", "n_startup_trials": 4, "seed": 0},
    "pruner": {"name": "median"},
    "race": {"rungs": [{"folds": 1, "epochs": 1}], "finalists": 2, "final_epochs": [1, 3], "screen_share": 0.5,
             "max_candidates": 6},
    "top_k_weights": 2,
    "enqueue": [{"model.name": "resnet18", "lr": 0.002}],
}


def _cost_file(tmp_path: Path, *, per_image: float = 0.004, fixed: float = 2.0) -> Path:
    """A cost model given to the run: rates for both backbones at 32 px on this machine."""
    observations = [{"key": CostModel.key(name, 32, "fp32"), "machine": machine_name(), "train": per_image,
                     "val": per_image / 4, "fold_fixed": fixed, "trial_fixed": fixed, "at": 0}
                    for name in ("resnet18", "mobilenetv3_small_100")]
    path = tmp_path / "cost_model.json"
    path.write_text(CostModel(machine=machine_name(), observations=observations).to_json())
    return path


def _spec(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "race.yaml"
    path.write_text(yaml.safe_dump({**RACING, **changes}))
    return path


def _study(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="race", storage=f"sqlite:///{tmp_path}/storage/race.db")


def test_the_race_screens_many_trains_the_best_on_every_fold_and_keeps_its_limit(tmp_path: Path) -> None:
    limit = 75.0
    started = time.time()
    run = run_cli(tmp_path, "--study", str(_spec(tmp_path)), "--time-limit", str(limit),
                  "--cost-model", str(_cost_file(tmp_path)))
    elapsed = time.time() - started
    assert run.returncode == 0, run.stdout + run.stderr
    study = _study(tmp_path)
    trials = study.trials
    rung0 = [t for t in trials if t.user_attrs[RACE]["rung"] == 0]
    finals = [t for t in trials if t.user_attrs[RACE]["rung"] == "final"]
    screened = [t for t in rung0 if t.state == TrialState.PRUNED]
    assert len(rung0) >= 4 and len(screened) >= 3, run.stdout  # many candidates, each one fold x one epoch ...
    assert all(t.user_attrs[RACE]["folds"] == [0] and len(t.user_attrs["fold_aucs"]) == 1
               and "score" in t.user_attrs[RACE] for t in screened)
    # on a busy machine the screening share can run out: the rest did not start, and said so
    assert all(t.user_attrs["fail_reason"].startswith("not started: ") for t in rung0 if t not in screened)
    assert rung0[0].params == RACING["enqueue"][0]  # the portfolio first
    assert len({tuple(sorted(t.params.items())) for t in rung0}) == len(rung0)  # no candidate raced twice
    assert finals and all(t.state == TrialState.COMPLETE for t in finals)  # ... the best trained on every fold
    assert all(len(t.user_attrs["fold_aucs"]) == 3 for t in finals)
    best_screened = max(screened, key=lambda t: t.user_attrs[RACE]["score"])
    assert finals[0].params == best_screened.params
    # nothing started that its prediction (made at its start) said would end after the limit
    for trial in trials:
        predicted = trial.user_attrs["cost_predicted"]["seconds"]
        assert trial.datetime_start.timestamp() + predicted <= started + limit, (trial.number, predicted)
        assert trial.user_attrs["cost"]["predicted"] == pytest.approx(predicted, abs=0.1)  # beside its real cost
    overrun = sum(max(0.0, t.user_attrs["cost"]["wall"] - t.user_attrs["cost_predicted"]["seconds"]) for t in trials)
    assert elapsed <= limit + overrun + 15, (elapsed, overrun)  # the limit, up to the predictions' errors
    assert study.user_attrs[RACE]["done"] is True
    assert set(study.user_attrs[RACE_AGREEMENT]) == {"rung 0 (1 fold(s) x 1 epoch(s))"}
    assert study.user_attrs[RACE_AGREEMENT]["rung 0 (1 fold(s) x 1 epoch(s))"]["n"] == len(finals)
    assert "vs final cv score over" in run.stdout and "time limit: " in run.stdout
    assert (tmp_path / "storage" / "race" / "cost_model.json").is_file()  # for --cost-model of a later study


def test_a_preempted_race_resumes_inside_what_is_left_of_its_limit(tmp_path: Path) -> None:
    spec, cost = _spec(tmp_path, race={**RACING["race"], "final_epochs": [3, 3], "finalists": 1}), _cost_file(tmp_path)
    args = ["--study", str(spec), "--time-limit", "300", "--cost-model", str(cost)]  # room on a busy machine too
    process = subprocess.Popen([sys.executable, "-m", "melanoma_search.run", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # the finalist is training (screening trials run one epoch): preempt it
        if " fold 0 epoch 2/3" in line:  # the first epoch of the first finalist is saved by then
            break
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output
    first = _study(tmp_path)
    race = first.user_attrs[RACE]
    assert race["done"] is False and race["spent"] > 0
    screened = [t.number for t in first.trials if t.user_attrs[RACE]["rung"] == 0]
    again = run_cli(tmp_path, *args)
    assert again.returncode == 0, again.stdout + again.stderr
    study = _study(tmp_path)
    assert study.user_attrs[RACE]["id"] == race["id"] and study.user_attrs[RACE]["done"] is True
    assert study.user_attrs[RACE]["spent"] > race["spent"]  # the limit continued, it did not start again
    assert [t.number for t in study.trials if t.user_attrs[RACE]["rung"] == 0] == screened  # nothing re-screened
    finals = [t for t in study.trials if t.user_attrs[RACE]["rung"] == "final"]
    assert [t.state for t in finals][:2] == [TrialState.FAIL, TrialState.COMPLETE]  # preempted, then its retry
    assert finals[1].params == finals[0].params and "resuming after epoch" in again.stdout


def test_a_limit_too_small_for_one_candidate_is_one_line_naming_what_would_do(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--study", str(_spec(tmp_path)), "--time-limit", "8",
                  "--cost-model", str(_cost_file(tmp_path, fixed=20.0)))
    assert run.returncode == 2, run.stdout
    error = run.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the time limit is too small for even one candidate: the first needs "), error
    assert "give at least --time-limit " in error and "Traceback" not in run.stderr
    assert not [t for t in _study(tmp_path).trials if t.state != TrialState.WAITING]  # nothing trained


def test_a_race_needs_a_limit_and_owns_the_epochs(tmp_path: Path) -> None:
    run = run_cli(tmp_path, "--study", str(_spec(tmp_path)))
    assert run.returncode == 2 and "races inside a time limit: give --time-limit SECONDS" in run.stderr
    searched = {**RACING["space"], "epochs": {"choices": [1, 2]}}
    run = run_cli(tmp_path, "--study", str(_spec(tmp_path, space=searched)), "--time-limit", "60")
    assert run.returncode == 2 and "space.epochs: a race sets each trial's epochs" in run.stderr


def test_without_a_race_a_trial_that_cannot_finish_does_not_start(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)  # holdout_auc, resnet18 at 32 px
    slow = _cost_file(tmp_path, per_image=1.0)  # the cost model says: minutes per trial
    run = run_cli(tmp_path, "--study", str(spec), "--time-limit", "60", "--cost-model", str(slow))
    assert run.returncode == 0, run.stderr
    assert "not started: trial 0 predicted " in run.stdout, run.stdout
    trials = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/storage/tiny.db").trials
    assert len(trials) == 1 and trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"].startswith("not started: trial 0 predicted ")
    assert "fold 0 epoch 1" not in run.stdout  # nothing trained
    bad = run_cli(tmp_path, "--study", str(spec), "--time-limit", "-3")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: --time-limit -3: must be a positive number of seconds")
    (tmp_path / "junk.json").write_text("not json")
    junk = run_cli(tmp_path, "--study", str(spec), "--time-limit", "60", "--cost-model", str(tmp_path / "junk.json"))
    assert junk.returncode == 2 and junk.stderr.strip().splitlines()[-1].startswith(
        f"error: --cost-model: cost model {tmp_path / 'junk.json'}: not a readable JSON file")


def _gpu_cost_file(tmp_path: Path) -> Path:
    """An H100's rates for every backbone and size of ``b5-search`` (bf16: what ``amp: auto`` picks there)."""
    gpu = "cuda NVIDIA H100 80GB HBM3"
    observations = []
    for name, per_second in (("efficientnet_b5", 330.0), ("tf_efficientnet_b5.ns_jft_in1k", 330.0),
                             ("efficientnet_b4", 520.0)):
        for size in (384, 448, 456, 512):
            per_image = (size / 456) ** 2 / per_second
            observations.append({"key": CostModel.key(name, size, "bf16"), "machine": gpu, "train": per_image,
                                 "val": per_image / 3, "fold_fixed": 20.0, "trial_fixed": 10.0, "at": 0})
    path = tmp_path / "h100.json"
    path.write_text(CostModel(machine=gpu, observations=observations).to_json())
    return path


def test_the_gpu_spec_plans_its_race_inside_the_limit_in_a_dry_run(tmp_path: Path, ham_subset: Path) -> None:
    """``b5-search`` planned for an H100 from a given cost model, on this CPU machine, training nothing."""
    args = ["--study", "b5-search", "--dry-run", "--cost-model", str(_gpu_cost_file(tmp_path)), "--data-dir",
            str(ham_subset), "--set", "model.pretrained=false"]
    run = run_cli(tmp_path, *args, "--time-limit", "900")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    rung0 = next(line for line in lines if line.startswith("race dry-run: rung 0 screens "))
    screened = int(rung0.split("screens ")[1].split()[0])
    assert 3 <= screened < 40, rung0  # held by the screening share, not by max_candidates
    assert any(line.strip().startswith(f"rung 1: the best {-(-screened // 3)} at 1 fold(s) x 5 epoch(s)")
               for line in lines), run.stdout
    finals = [line for line in lines if line.strip().startswith("finalist ")]
    assert 1 <= len(finals) <= 3
    epochs = [int(line.split("5 fold(s) x ")[1].split()[0]) for line in finals]
    assert all(8 <= e <= 15 for e in epochs), finals
    planned = next(line for line in lines if line.strip().startswith("planned "))
    used, left = (float(part.split(" min")[0]) for part in planned.strip().removeprefix("planned ").split(" of the "))
    assert used <= left, planned
    assert not (tmp_path / "storage" / "b5-search.db").exists()  # a dry run stores nothing
    missing = run_cli(tmp_path, *args[:3], "--data-dir", str(ham_subset), "--set", "model.pretrained=false",
                      "--time-limit", "900")
    assert missing.returncode == 2 and "its dry run needs --time-limit SECONDS (or budget.time_limit) and " \
        "--cost-model FILE" in missing.stderr


def test_without_a_limit_trials_record_their_cost_and_nothing_is_probed(tmp_path: Path) -> None:
    """A run without a time limit spends nothing on probes; its trials' measured rates predict the next ones."""
    spec = write_spec(tmp_path, budget={"n_trials": 1})
    first = run_cli(tmp_path, "--study", str(spec))
    assert first.returncode == 0, first.stderr
    assert "predicted" not in first.stdout and "cost probe" not in first.stdout
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path}/storage/tiny.db")
    assert not [k for k in study.user_attrs if k.startswith("cost_probe:")]
    cost = study.trials[0].user_attrs["cost"]
    assert cost["predicted"] is None and cost["train"] > 0 and cost["key"] == CostModel.key("resnet18", 32, "fp32")
    again = run_cli(tmp_path, "--study", str(spec))
    assert again.returncode == 0, again.stderr
    assert "| predicted " in again.stdout and "(measured)" in again.stdout, again.stdout
