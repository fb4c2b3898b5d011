"""Search efficiency at a fixed wall-clock budget: TPE + pruning against random search without pruning.

Both arms run the ``ham-cpu`` search space on the real HAM10000 sample, one after the other in this process, each
for the same number of seconds, with the same data, cache and trial code as ``python -m melanoma_search.run``. It
prints, for each arm, the trials finished (completed + pruned), the trials completed, and the best holdout AUC, then
the TPE-arm / random-arm ratios. A trial that starts before the deadline runs to its end, so each arm's real wall
time is printed too.

    python bench/search_efficiency.py --data-dir ../shared/data/ham10000-224 --budget 480
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

from melanoma_search.search import TrialRunner, build_pruner, build_sampler, load_objective, load_spec
from melanoma_search.search.artifacts import ArtifactWriter
from melanoma_search.search.spec import PrunerSpec, SamplerSpec
from melanoma_search.train.config import parse_config
from melanoma_search.train.loop import prepare_for


def run_arm(name: str, *, sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
            budget: float, spec_name: str, data_dir: str, work: Path) -> dict[str, float]:
    spec = load_spec(spec_name)
    objective = load_objective(spec.objective)
    base = spec.base_config(overrides={"data.dir": str(Path(data_dir).resolve())})
    data = prepare_for(parse_config(base))
    study = optuna.create_study(sampler=sampler, pruner=pruner, directions=list(objective.directions))
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    artifacts = ArtifactWriter(work / name / "artifacts", weights_root=work / name / "weights", top_k=0)
    runner = TrialRunner(spec=spec, objective=objective, base=base, artifacts=artifacts, work_dir=work / name,
                         log=lambda line: None, data=data)
    start = time.perf_counter()
    study.optimize(runner, timeout=budget, catch=(Exception,))
    seconds = time.perf_counter() - start
    states = [t.state for t in study.trials]
    complete = sum(s == optuna.trial.TrialState.COMPLETE for s in states)
    pruned = sum(s == optuna.trial.TrialState.PRUNED for s in states)
    best = study.best_value if complete else float("nan")
    print(f"{name:<22} finished {complete + pruned:>3} trials ({complete} complete, {pruned} pruned) in "
          f"{seconds:.0f}s | best holdout AUC {best:.4f}", flush=True)
    return {"finished": complete + pruned, "complete": complete, "best": best, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--study", default="ham-cpu", help="search space to use")
    parser.add_argument("--budget", type=float, default=480, help="seconds per arm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(args.study)
    print(f"search space {spec.name!r}, {args.budget:.0f}s per arm, real HAM images from {args.data_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tpe = run_arm("TPE + Hyperband", sampler=build_sampler(spec.sampler, seed=args.seed),
                      pruner=build_pruner(spec.pruner if spec.pruner.name != "none" else PrunerSpec()),
                      budget=args.budget, spec_name=args.study, data_dir=args.data_dir, work=work)
        rnd = run_arm("random, no pruning", sampler=build_sampler(SamplerSpec(name="random"), seed=args.seed),
                      pruner=optuna.pruners.NopPruner(), budget=args.budget, spec_name=args.study,
                      data_dir=args.data_dir, work=work)
    print(f"ratios (TPE+pruning / random): trials finished {tpe['finished'] / max(rnd['finished'], 1):.2f}x, "
          f"best AUC {tpe['best'] / rnd['best']:.3f}x ({tpe['best']:.4f} vs {rnd['best']:.4f})")


if __name__ == "__main__":
    main()
