"""``run --backend ray`` on a local Ray: Tune places the trials, the Optuna storage records and prunes them."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from melanoma_search.search.study import open_storage
from tests.studies import TINY, overlapping, run_cli, write_spec


def test_ray_runs_two_trials_at_once_and_optuna_prunes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, space={"lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True}},
                      fixed={**TINY["fixed"], "epochs": 4},
                      pruner={"name": "threshold", "lower": 0.999, "n_warmup_steps": 2})
    run = run_cli(tmp_path, "--study", str(spec), "--backend", "ray", "--max-concurrent", "2", "--cpus-per-trial",
                  "1", "--n-trials", "4")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "at most 2 at once" in run.stdout and "[ray 0] trial" in run.stdout

    study = optuna.load_study(study_name="tiny", storage=open_storage(f"journal:{tmp_path}/storage/tiny.log"))
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.PRUNED for t in trials)  # Optuna's pruner, recorded
    assert all(t.user_attrs["epochs_run"] == 2 for t in trials)  # pruned at step 2: the 2 warm-up epochs done
    assert len({t.user_attrs["ray_trial"] for t in trials}) == 4  # one Tune trial per Optuna trial
    assert overlapping(trials)

    again = run_cli(tmp_path, "--study", str(spec), "--backend", "ray", "--n-trials", "1")  # resumes the study
    assert again.returncode == 0, again.stdout + again.stderr
    assert "4 earlier trial(s)" in again.stdout and len(study.get_trials()) == 5
