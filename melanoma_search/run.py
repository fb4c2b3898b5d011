"""``python -m melanoma_search.run --study NAME``: run (or resume) the Optuna study ``search_spaces/NAME.yaml``.

The study lives in ``--storage`` (default ``sqlite:///storage/NAME.db`` for one worker, the journal file
``storage/NAME.log`` for ``--workers N`` or ``--backend ray``) with its artifacts under ``storage/NAME/artifacts``;
running the same command again adds trials to the same study. Inspect it with::

    optuna-dashboard sqlite:///storage/NAME.db --artifact-dir storage/NAME/artifacts

Stopping it: Ctrl-C (exit 130) and SIGTERM, what Slurm, Kubernetes and spot VMs send before they take a machine back
(exit 143), both end every running trial as FAIL and re-queue it with its saved epochs; the same command (or another
node on the same storage) continues each from its last finished epoch.

The work is :func:`melanoma_search.search.start_run`; this module only reads the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from melanoma_search.cli import handled, parser_for
from melanoma_search.errors import ConfigError, preempt_on_sigterm

if TYPE_CHECKING:
    from melanoma_search.search.spec import StudySpec


def build_parser() -> argparse.ArgumentParser:
    from melanoma_search.search.backends import get_backend, list_backends
    from melanoma_search.search.spec import list_specs

    parser = parser_for("melanoma_search.run", __doc__)
    parser.add_argument("--study", required=True,
                        help=f"spec name in search_spaces/ ({', '.join(list_specs())}) or a path to a YAML spec")
    parser.add_argument("--data-dir", help="dataset folder (overrides the spec's data.dir)")
    parser.add_argument("--n-trials", type=int, help="trials this run adds, all its workers together (default: "
                        "the spec's budget.n_trials); each node and each restart counts its own")
    parser.add_argument("--timeout", type=float, help="Optuna's timeout: no new trial starts after this many "
                        "seconds, but a running one finishes (so a run can end well after it); default: the spec's "
                        "budget.timeout")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS",
                        help="seconds the run may take, kept: no trial starts that its predicted cost cannot finish "
                        "(said in one line), and a spec with a race section races inside it; default: the spec's "
                        "budget.time_limit (see docs/search.md, 'A kept time limit and the race')")
    parser.add_argument("--reserve-export", type=float, default=0.0, metavar="SECONDS",
                        help="with --time-limit: keep this many seconds of it for the export that follows, so run "
                        "+ export end inside the limit")
    parser.add_argument("--cost-model", metavar="FILE",
                        help="a cost model file (storage/NAME/cost_model.json of another study or machine) used as "
                        "a prior; this machine's measurements correct it")
    parser.add_argument("--max-trials", type=int, help="trials for the whole study, counted in its storage across "
                        "every node and restart (default: the spec's budget.max_trials): the same command on every "
                        "node, and again after a preemption, stops at this total")
    parser.add_argument("--storage", help="storage URL: sqlite:///..., postgresql+psycopg://..., journal:PATH")
    parser.add_argument("--study-name", help="name in the storage (default: the spec name)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--seed", type=int, help="sampler seed (default: the spec's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fixed training setting for every trial, e.g. --set epochs=3")
    parser.add_argument("--dry-run", action="store_true", help="print the configs the sampler would try; no training")
    parser.add_argument("--verbose", action="store_true",
                        help="print a failed trial's traceback (default: its reason, in one line)")
    student = parser.add_argument_group("noisy student (see docs/semi-supervised.md)")
    student.add_argument("--student-of", metavar="ENSEMBLE_DIR",
                         help="run a student round: this exported ensemble pseudo-labels --unlabelled, and the "
                         "round's study (NAME-student-rK, in NAME's storage) trains on them with more noise")
    student.add_argument("--unlabelled", metavar="DIR_OR_CSV", help="the images a student round pseudo-labels")
    scale = parser.add_argument_group("scaling out (see docs/scaling.md, 'Scaling out')")
    names = list_backends()
    scale.add_argument("--backend", choices=names, default="local",
                       help="; ".join(f"{n}: {get_backend(n).help}" for n in names))
    scale.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                       help="RDB storages: trial heartbeat; a trial silent for 3 beats is failed and re-queued "
                       "(default 60; 0 disables)")
    for name in names:
        get_backend(name).add_arguments(parser.add_argument_group(f"--backend {name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    restore = preempt_on_sigterm()  # a scheduler's SIGTERM is preemption: running trials are re-queued, not lost
    try:  # a stop before the first trial (reading the data, checking weights, pseudo-labelling) ends here too
        return handled(lambda: _run(args), interrupted="interrupted: no trial is left RUNNING; the same command "
                       "resumes")
    finally:
        restore()


def _backend(args: argparse.Namespace) -> object:
    """The chosen backend built from its flags; another backend's flag is an error naming the backend it needs."""
    from melanoma_search.search.backends import backend_flags, get_backend, list_backends

    for name in list_backends():
        if name == args.backend:
            continue
        given = [flag for dest, flag in backend_flags(get_backend(name)) if getattr(args, dest) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: only with --backend {name}")
    return get_backend(args.backend).from_args(args)


def _run(args: argparse.Namespace) -> int:
    from melanoma_search.search import dry_run, load_spec, start_run
    from melanoma_search.search.backends import Backend
    from melanoma_search.search.study import redact
    from melanoma_search.train.config import parse_override

    _check_numbers(args)
    backend = _backend(args)
    assert isinstance(backend, Backend)
    overrides = [parse_override(text) for text in args.overrides]
    spec = load_spec(args.study)
    _check_export_method(spec, study=args.study)
    storage, study_name, home, attrs = args.storage, args.study_name, None, None
    if args.student_of or args.unlabelled or spec.student.teacher:
        from melanoma_search.search import records
        from melanoma_search.search.study import default_storage_url
        from melanoma_search.semi_supervised.student import plan_student_round

        storage_dir = Path(args.storage_dir).resolve()
        student = plan_student_round(spec, teacher=args.student_of, unlabelled=args.unlabelled,
                                     storage_dir=storage_dir, study_name=args.study_name, label=not args.dry_run)
        overrides = [*student.overrides, *overrides]  # --set still has the last word
        study_name, home, attrs = student.study_name, student.home, {records.STUDENT: student.attrs}
        storage = storage or default_storage_url(home, storage_dir=storage_dir, parallel=backend.parallel)
    if args.dry_run:
        n = args.n_trials or spec.budget.n_trials or 10
        dry_run(args.study, n=n, overrides=overrides, data_dir=args.data_dir, seed=args.seed, backend=backend,
                storage=storage, study_name=study_name, storage_dir=args.storage_dir, time_limit=args.time_limit,
                cost_model=args.cost_model)
        return 0
    summary = start_run(args.study, backend=backend, data_dir=args.data_dir, overrides=overrides,
                        n_trials=args.n_trials, timeout=args.timeout, max_trials=args.max_trials, storage=storage,
                        study_name=study_name, storage_dir=args.storage_dir, seed=args.seed,
                        heartbeat=args.heartbeat, verbose=args.verbose, artifact_home=home, study_attrs=attrs,
                        time_limit=args.time_limit, reserve_export=args.reserve_export, cost_model=args.cost_model)
    shown = redact(summary.storage_url).removeprefix("journal:")
    print(f"dashboard: optuna-dashboard {shown} --artifact-dir {summary.artifact_dir}")
    outcome = summary.outcome
    if outcome.error:
        print(f"error: {outcome.error}", file=sys.stderr)
        return 1
    if outcome.preempted:
        print("preempted (SIGTERM): running trials were re-queued with their saved epochs; the same command "
              "continues them from their last finished epoch", file=sys.stderr)
        return 143
    if outcome.interrupted:
        print("interrupted: running trials were re-queued with their saved epochs; the same command continues them "
              "from their last finished epoch", file=sys.stderr)
        return 130
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts and seconds that mean nothing (a negative heartbeat, no trials, a limit of zero) are refused at once."""
    if args.heartbeat < 0:
        raise ConfigError(f"--heartbeat {args.heartbeat}: must be 0 (off) or a number of seconds")
    if args.n_trials is not None and args.n_trials < 1:
        raise ConfigError(f"--n-trials {args.n_trials}: must be at least 1 (leave it out for the spec's budget)")
    if args.max_trials is not None and args.max_trials < 1:
        raise ConfigError(f"--max-trials {args.max_trials}: must be at least 1")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit {args.time_limit:g}: must be a positive number of seconds")
    if args.reserve_export and args.time_limit is None:
        raise ConfigError("--reserve-export: only with --time-limit (the seconds it keeps are part of the limit)")


def _check_export_method(spec: StudySpec, *, study: str) -> None:
    """The spec's ``export.method`` names a registered blend method, and its ``stage_two`` section registered
    learners and groups (the tables live with the stages after the search, which the spec module sits below, so the
    run checks them before any trial rather than the export after the search)."""
    from melanoma_search.ensemble.methods import get_blend_method
    from melanoma_search.export.stage_two import check_stage_two_spec

    try:
        get_blend_method(spec.export.method)
    except ConfigError as exc:
        raise ConfigError(f"study spec {study}: export.method: {exc}") from None
    check_stage_two_spec(spec.stage_two, where=f"study spec {study}")


if __name__ == "__main__":
    sys.exit(main())
