"""``python -m melanoma_search.run --study NAME``: run (or resume) the Optuna study ``search_spaces/NAME.yaml``.

The study lives in ``--storage`` (default ``sqlite:///storage/NAME.db``) with its artifacts under
``storage/NAME/artifacts``; running the same command again adds trials to the same study. Inspect it with::

    optuna-dashboard sqlite:///storage/NAME.db --artifact-dir storage/NAME/artifacts
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from melanoma_search.errors import MelanomaSearchError

if TYPE_CHECKING:
    from melanoma_search.search import Objective, StudySpec


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m melanoma_search.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="spec name in search_spaces/ (or a path to a YAML spec)")
    parser.add_argument("--data-dir", help="dataset folder (overrides the spec's data.dir)")
    parser.add_argument("--n-trials", type=int, help="trials to run now (default: the spec's budget)")
    parser.add_argument("--timeout", type=float, help="seconds for this run (default: the spec's budget)")
    parser.add_argument("--storage", help="storage URL: sqlite:///..., postgresql+psycopg://..., journal:PATH")
    parser.add_argument("--study-name", help="name in the storage (default: the spec name)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the spec's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fixed training setting for every trial, e.g. --set epochs=3")
    parser.add_argument("--dry-run", action="store_true", help="print the configs the sampler would try; no training")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import optuna

    from melanoma_search.search import (
        TrialProgress,
        TrialRunner,
        leaderboard,
        load_objective,
        load_spec,
        open_storage,
        open_study,
        redact,
    )
    from melanoma_search.search.artifacts import ArtifactWriter
    from melanoma_search.search.study import default_storage_url
    from melanoma_search.train.config import parse_config
    from melanoma_search.train.loop import prepare_for

    spec = load_spec(args.study)
    objective = load_objective(spec.objective)
    overrides = list(args.overrides) + ([f"data.dir={Path(args.data_dir).expanduser().resolve()}"]
                                        if args.data_dir else [])
    base = spec.base_config(overrides=tuple(overrides))
    base_config = parse_config(base, source=f"study {spec.name}: base config")
    n_trials = args.n_trials if args.n_trials is not None else spec.budget.n_trials
    timeout = args.timeout if args.timeout is not None else spec.budget.timeout
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if args.dry_run:
        return _dry_run(spec, objective, base, n_trials or 10, args.seed)

    storage_dir = Path(args.storage_dir)
    study_name = args.study_name or spec.name
    url = args.storage or default_storage_url(study_name, storage_dir=storage_dir)
    data = prepare_for(base_config)  # a missing or malformed dataset fails here, before any trial
    storage = open_storage(url)
    study = open_study(spec, objective, storage=storage, study_name=study_name, seed=args.seed)
    study.set_user_attr("spec", spec.model_dump(mode="json", by_alias=True))
    study.set_user_attr("objective", objective.name)
    study.set_user_attr("data", data.origin)
    before = len(study.trials)
    for params in spec.enqueue:
        study.enqueue_trial(dict(params), skip_if_exists=True)
    study_dir = storage_dir / study_name
    artifacts = ArtifactWriter(study_dir / "artifacts", weights_root=study_dir / "weights", top_k=spec.top_k_weights)
    runner = TrialRunner(spec=spec, objective=objective, base=base, artifacts=artifacts,
                         work_dir=study_dir / "work", data=data)
    print(f"study {study_name!r} in {redact(url)}: {before} earlier trial(s); objective {objective.name} "
          f"({', '.join(objective.directions)}); running {n_trials or 'unlimited'} trial(s)"
          + (f" within {timeout:.0f}s" if timeout else ""), flush=True)
    progress = TrialProgress(metric_names=objective.metric_names, n_trials=n_trials, timeout=timeout)
    interrupted = False
    try:
        study.optimize(runner, n_trials=n_trials, timeout=timeout, catch=(Exception,), callbacks=[progress],
                       gc_after_trial=True)
    except KeyboardInterrupt:
        interrupted = True
    print(leaderboard(study, metric_names=objective.metric_names), flush=True)
    print(f"dashboard: optuna-dashboard {redact(url)} --artifact-dir {study_dir / 'artifacts'}")
    if interrupted:
        print("interrupted: the running trial was marked FAIL; run the same command to resume", file=sys.stderr)
        return 130
    return 0


def _dry_run(spec: StudySpec, objective: Objective, base: dict[str, Any], n: int, seed: int | None) -> int:
    import optuna

    from melanoma_search.errors import ConfigError
    from melanoma_search.search import build_sampler, sample_params, trial_config

    study = optuna.create_study(sampler=build_sampler(spec.sampler, seed=seed), directions=list(objective.directions))
    for params in spec.enqueue:
        study.enqueue_trial(dict(params))
    print(f"dry run of study {spec.name!r}: {n} configuration(s) the sampler would try first "
          "(a fresh study; TPE starts random, then learns from results)")
    for number in range(n):
        trial = study.ask()
        params = sample_params(trial, spec, base)
        try:
            trial_config(base, params, objective)
            status = "ok"
        except ConfigError as exc:
            status = "INVALID: " + " ".join(str(exc).split())
        print(f"  {number:>3}: " + ", ".join(f"{k}={v}" for k, v in params.items()) + f"  [{status}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
