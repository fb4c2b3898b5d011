"""Trials per hour, GPU busy share and fixed seconds per trial of finished study runs, side by side.

``bench/gpu_proof.sh`` runs the same study with one trial per card and packed (``--workers auto``), samples
``nvidia-smi`` during each, and calls this to print one line per run:

    python bench/study_throughput.py --storage URL --study NAME:util.csv [NAME:util.csv ...]

Trials per hour counts every trial that ended (complete, pruned or failed) over the span from the first trial's
start to the last one's end; the GPU share is the mean of the samples taken during that run.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import optuna
from optuna.trial import TrialState

from melanoma_search.search.packing import measured_peak_mb, plan_packing, visible_gpus
from melanoma_search.search.study import open_storage


def _util(path: Path) -> float | None:
    values = [float(v) for v in path.read_text().split() if v.replace(".", "").isdigit()] if path.is_file() else []
    return statistics.mean(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", nargs="+", required=True, metavar="NAME:UTIL_CSV")
    args = parser.parse_args()
    storage = open_storage(args.storage)
    rows = []
    for item in args.study:
        name, _, util_path = item.partition(":")
        study = optuna.load_study(study_name=name, storage=storage)
        ended = [t for t in study.get_trials(deepcopy=False)
                 if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) and t.datetime_complete]
        if not ended:
            print(f"{name}: no trial ended")
            continue
        start = min(t.datetime_start for t in ended if t.datetime_start)
        span = (max(t.datetime_complete for t in ended if t.datetime_complete) - start).total_seconds()
        fixed = [t.user_attrs["fixed_seconds"] for t in ended if "fixed_seconds" in t.user_attrs]
        breakdowns = [t.user_attrs["time_breakdown"] for t in ended if "time_breakdown" in t.user_attrs]
        util = _util(Path(util_path)) if util_path else None
        rows.append((name, len(ended), sum(t.state == TrialState.PRUNED for t in ended), span,
                     3600 * len(ended) / span, util, statistics.mean(fixed) if fixed else None))
        if breakdowns:
            phases = sorted({k for b in breakdowns for k in b},
                            key=lambda k: -statistics.mean(b.get(k, 0.0) for b in breakdowns))
            print(f"{name}: where a trial's seconds go (mean): "
                  + ", ".join(f"{k} {statistics.mean(b.get(k, 0.0) for b in breakdowns):.1f}" for k in phases))
        oom = [t.number for t in ended if "oom_retry" in t.user_attrs or "oom_retry_alone" in t.user_attrs]
        if oom:
            print(f"{name}: out-of-memory retries in trials {oom}")
    print(f"{'study':<14} {'trials':>6} {'pruned':>6} {'span s':>7} {'trials/h':>9} {'GPU busy %':>10} "
          f"{'fixed s/trial':>13}")
    for name, n, pruned, span, per_hour, util, fixed in rows:
        print(f"{name:<14} {n:>6} {pruned:>6} {span:>7.0f} {per_hour:>9.1f} "
              f"{'-' if util is None else f'{util:.1f}':>10} {'-' if fixed is None else f'{fixed:.1f}':>13}")
    if len(rows) > 1:
        print(f"trials per hour, {rows[1][0]} / {rows[0][0]}: {rows[1][4] / rows[0][4]:.2f}x")
    first = optuna.load_study(study_name=rows[0][0], storage=storage) if rows else None
    if first is not None:
        peak, measured = measured_peak_mb(first)
        plan = plan_packing(gpus=visible_gpus(), cpu_cores=os.cpu_count() or 1, peak_mb=peak,
                            measured_trials=measured)
        print(f"what --workers auto would choose now, from {rows[0][0]}'s measured trials: {plan.reason}")


if __name__ == "__main__":
    main()
