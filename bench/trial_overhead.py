"""Fixed seconds per trial (everything that is not training steps), before and after, in one run, on the CPU.

A search's throughput on a fast GPU is set by what each trial pays besides its training steps: loader start, model
build, validation and TTA predictions, artifacts. This bench runs the same small study twice, from the same data
cache and on the same machine, one after the other:

* **before**: the code at ``--before`` (a git ref, default the commit before the fixed-cost work), checked out into
  a temporary worktree;
* **after**: this working tree.

For each trial it takes the trial's duration from the study's storage and the training-step seconds from the
engine's per-epoch log line (the same line in both versions), and prints the mean fixed seconds per trial and the
ratio after / before. For the *after* side it also prints where the seconds went (the ``time_breakdown`` user
attribute the search records on every trial).

    python bench/trial_overhead.py                                  # the HAM sample from ../shared/data if present
    python bench/trial_overhead.py --data-dir PATH --trials 4 --before d7013ef
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "ham10000-224"
EPOCH_LINE = re.compile(r"trial (\d+) fold \d+ epoch \d+/\d+ .*\| ([\d.]+)s$")


def _spec(*, data_dir: str | None, cache_dir: Path, size: int, epochs: int, tta: int, workers: int) -> dict:
    data: dict = {"n_folds": 5, "num_workers": workers, "cache_dir": str(cache_dir)}
    if data_dir:
        data["dir"] = data_dir
    else:
        data["synthetic"] = {"n_train": 600, "n_test": 100, "size": 96, "seed": 0}
    return {
        "description": "trial overhead bench",
        "objective": "holdout_auc",
        "data": data,
        "fixed": {"model": {"name": "tf_efficientnet_lite0", "pretrained": False}, "image_size": size,
                  "epochs": epochs, "batch_size": 32, "tta": tta, "amp": "off"},
        "space": {"lr": {"low": 3.0e-4, "high": 3.0e-3, "log": True}},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 1},
    }


def _arm(name: str, *, code: Path, spec: Path, storage_dir: Path, trials: int) -> dict:
    """Run the study with the code at ``code``; the fixed seconds of each trial and the run's wall time."""
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"}
    storage_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "melanoma_search.run", "--study", str(spec), "--n-trials",
                           str(trials), "--storage-dir", str(storage_dir), "--seed", "0"],
                          cwd=storage_dir.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{name}: the run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    steps: dict[int, float] = {}
    for line in proc.stdout.splitlines():
        if match := EPOCH_LINE.search(line):
            steps[int(match[1])] = steps.get(int(match[1]), 0.0) + float(match[2])
    study = optuna.load_study(study_name=spec.stem, storage=f"sqlite:///{storage_dir / spec.stem}.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.duration is not None]
    fixed = [t.duration.total_seconds() - steps.get(t.number, 0.0) for t in done]  # type: ignore[union-attr]
    durations = [t.duration.total_seconds() for t in done]  # type: ignore[union-attr]
    return {"name": name, "fixed": fixed, "durations": durations, "steps": [steps.get(t.number, 0.0) for t in done],
            "wall": wall, "breakdowns": [t.user_attrs.get("time_breakdown") for t in done]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA) if DEFAULT_DATA.is_dir() else None)
    parser.add_argument("--before", default="d7013ef", help="git ref of the 'before' code")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tta", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="data.num_workers (loader processes)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trial-overhead-") as tmp:
        base = Path(tmp)
        before_code = base / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(before_code),
                        args.before], check=True)
        try:
            spec = base / "overhead.yaml"
            spec.write_text(yaml.safe_dump(_spec(data_dir=args.data_dir, cache_dir=base / "cache", size=args.size,
                                                 epochs=args.epochs, tta=args.tta, workers=args.workers)))
            # build the image cache once, outside both arms, so neither pays for it
            _arm("warm-up", code=ROOT, spec=spec, storage_dir=base / "warm" / "storage", trials=1)
            arms = [_arm(name, code=code, spec=spec, storage_dir=base / name / "storage", trials=args.trials)
                    for name, code in (("before", before_code), ("after", ROOT))]
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before_code)], check=False)

    data = args.data_dir or "the synthetic lesions"
    print(f"trial overhead: {args.trials} trials of tf_efficientnet_lite0 @ {args.size}px, {args.epochs} epoch(s), "
          f"tta {args.tta}, {args.workers} loader worker(s), holdout fold, on {data}; CPU, {os.cpu_count()} core(s)")
    print(f"{'code':<8} {'trials':>6} {'fixed s/trial':>14} {'steps s/trial':>14} {'trial s':>8} {'run wall s':>11}")
    for arm in arms:
        print(f"{arm['name']:<8} {len(arm['fixed']):>6} {statistics.mean(arm['fixed']):>14.2f} "
              f"{statistics.mean(arm['steps']):>14.2f} {statistics.mean(arm['durations']):>8.2f} "
              f"{arm['wall']:>11.1f}")
    before, after = (statistics.mean(a["fixed"]) for a in arms)
    print(f"fixed seconds per trial, after / before: {after / before:.2f} ({before:.2f}s -> {after:.2f}s; "
          f"before = {args.before})")
    shown = [b for b in arms[1]["breakdowns"] if b]
    if shown:
        phases = sorted({k for b in shown for k in b}, key=lambda k: -statistics.mean(b.get(k, 0.0) for b in shown))
        print("after, where a trial's seconds go (mean over its trials; startup: the process's, paid by trial 0):")
        print("  " + ", ".join(f"{k} {statistics.mean(b.get(k, 0.0) for b in shown):.2f}" for k in phases))


if __name__ == "__main__":
    main()
