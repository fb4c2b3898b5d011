"""Scaling out on one machine: trials per hour with 1 and 2 workers, and what each storage costs per trial.

Part 1 runs the same fixed-cost study (every trial the same architecture, size and epochs on the built-in synthetic
lesions; only the learning rate is sampled) through ``python -m melanoma_search.run --workers N`` for N = 1 and 2,
each on a fresh journal storage, and times the whole command (worker start-up included). It prints trials per hour
for each and their ratio. On a CPU the workers share the cores (each gets cores / N threads), so the ratio says how
much the trial engine leaves idle in one process, not what a GPU node gains (there, one worker per GPU).

Part 2 measures the storage alone: a trial without training that makes the storage calls a real trial makes (ask,
8 sampled parameters, 8 reported epochs with a pruning check each, 10 user attributes, tell, through
``study.optimize`` as the workers run it, heartbeat included), timed over ``--storage-trials`` trials on SQLite,
the journal file and PostgreSQL (skipped, and said so, when PostgreSQL is not reachable). It prints milliseconds per
trial for each.

    python bench/scaling.py [--trials 8] [--epochs 3] [--storage-trials 40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import yaml

POSTGRES = os.environ.get("MELANOMA_SEARCH_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def fixed_cost_spec(folder: Path, *, epochs: int) -> Path:
    spec = {
        "objective": "holdout_auc",
        "data": {"n_folds": 4, "num_workers": 0, "synthetic": {"n_train": 400, "n_test": 40, "size": 96, "seed": 0}},
        "fixed": {"epochs": epochs, "batch_size": 32, "image_size": 64, "model": {"name": "resnet18"}},
        "space": {"lr": {"low": 5.0e-4, "high": 3.0e-3, "log": True}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "top_k_weights": 0,
    }
    path = folder / "scaling.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def trials_per_hour(workers: int, *, spec: Path, trials: int, folder: Path) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "melanoma_search.run", "--study", str(spec), "--workers",
                          str(workers), "--n-trials", str(trials), "--storage", f"journal:{folder}/study.log",
                          "--storage-dir", str(folder)], capture_output=True, text=True, cwd=folder)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"--workers {workers} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    study = optuna.load_study(study_name="scaling", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "study.log"))))
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    rate = done / seconds * 3600
    print(f"  {workers} worker(s): {done} trials in {seconds:.0f}s -> {rate:.0f} trials/hour", flush=True)
    return rate


def storage_ms_per_trial(url: str, *, trials: int) -> float:
    from melanoma_search.search.study import open_storage

    storage = open_storage(url, heartbeat_interval=60 if "://" in url else None)
    study = optuna.create_study(study_name=f"bench-{uuid.uuid4().hex[:8]}", storage=storage, direction="maximize",
                                pruner=optuna.pruners.MedianPruner())

    def objective(trial: optuna.Trial) -> float:
        for k in range(8):
            trial.suggest_float(f"p{k}", 0.0, 1.0)
        for epoch in range(8):
            trial.report(0.5 + epoch / 100, step=epoch)
            trial.should_prune()
        for k in range(10):
            trial.set_user_attr(f"attr{k}", k)
        return 0.6

    try:
        study.optimize(objective, n_trials=3)  # warm-up: connections, table caches
        start = time.perf_counter()
        study.optimize(objective, n_trials=trials)  # Optuna's real path: heartbeat thread and all
        return (time.perf_counter() - start) / trials * 1000
    finally:
        if "postgresql" in url:
            optuna.delete_study(study_name=study.study_name, storage=storage)


def postgres_reachable() -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("select 1"))
        return True
    except Exception:  # any driver or connection error means: no PostgreSQL here
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials per worker count")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    parser.add_argument("--storage-trials", type=int, default=40, help="timed trials per storage")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"machine: {os.cpu_count()} CPU core(s); python {sys.version.split()[0]}; optuna {optuna.__version__}")
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        root = Path(tmp)
        spec = fixed_cost_spec(root, epochs=args.epochs)
        print(f"trials per hour, {args.trials} fixed-cost trials (resnet18, 64 px, {args.epochs} epochs, synthetic "
              "lesions), whole command timed:", flush=True)
        rates = {}
        for workers in (1, 2):
            folder = root / f"w{workers}"
            folder.mkdir()
            rates[workers] = trials_per_hour(workers, spec=spec, trials=args.trials, folder=folder)
        print(f"  ratio 2 workers / 1 worker: {rates[2] / rates[1]:.2f}x")

        print(f"storage overhead per trial (8 params, 8 reports + pruning checks, 10 attributes; mean of "
              f"{args.storage_trials} trials through study.optimize):", flush=True)
        urls = {"sqlite": f"sqlite:///{root}/bench.db", "journal file": f"journal:{root}/bench.log"}
        if postgres_reachable():
            urls["postgresql"] = POSTGRES
        else:
            print(f"  postgresql: SKIPPED, not reachable at {POSTGRES}")
        for name, url in urls.items():
            print(f"  {name:<13} {storage_ms_per_trial(url, trials=args.storage_trials):7.1f} ms/trial", flush=True)


if __name__ == "__main__":
    main()
