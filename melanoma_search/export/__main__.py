"""``python -m melanoma_search.export --study NAME``: the best trials as a rank-blended submission and ensemble.

Reads the study's finished trials (their ``oof.csv``/``test.csv`` artifacts), picks the top ``--top-k`` by the
objective (skipping near-duplicate configurations and trials lacking artifacts, with a message), retrains each on
the folds it lacks so that every member is the average of its fold models (``--no-refit`` skips this; finished folds
are kept, so a killed refit resumes), blends them by rank (``--method rank``: equal weights; ``greedy``: ensemble
selection, its AUC scored on the half of the rows its weights were not chosen on), and writes:

* ``--out`` (default ``storage/NAME/export/submission.csv``): ``image_name,target`` for every test image, in [0, 1];
* ``report.html`` beside it: optimisation history, parameter importances, parallel coordinates, learning curves,
  ROC curves of members and blend, the member table (self-contained, opens offline);
* ``--ensemble-dir``: a self-contained folder to score new images with ``python -m melanoma_search.predict``;
* with ``--validate PATH`` (labelled images from elsewhere, any dataset layout): every member and the blend scored on
  them, printed beside the in-search AUC, in the report and in the ensemble's manifest;
* with ``--calibrate-on DIR_OR_CSV`` (unlabelled images like those you will score): the operating points and the
  probability fitted for what ``predict`` returns (each member's fold models averaged), measured on them without
  reading a label; without it (and without a test split or ``--validate``) they describe one fold model, and the
  export, the model card and ``predict`` say so;
* with ``--stage-two`` (or the spec's ``stage_two.enabled``): the stage-two study (trees over the members' out-of-fold
  scores, the metadata and the patient's other lesions), its comparison with the blend on rows it was not chosen on,
  and, when it beats the blend there, its models in the ensemble folder;

and attaches the blend's ROC curve (``blend-roc.svg``) to the study so it shows in optuna-dashboard.
The work is :func:`melanoma_search.export.export_study`; this module only reads the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from melanoma_search.cli import handled, parser_for
from melanoma_search.ensemble.methods import get_blend_method, list_blend_methods


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("melanoma_search.export", __doc__)
    parser.add_argument("--study", required=True, help="study name (default storage sqlite:///storage/NAME.db)")
    parser.add_argument("--storage", help="storage URL (default: the run's default for --study)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--top-k", type=int, help="the best this-many trials are the blend's candidates (default: the "
                        "spec's export.top_k, else 5)")
    parser.add_argument("--method", choices=list_blend_methods(),
                        help="blend method (default: the spec's export.method, else rank): "
                        + "; ".join(f"{m}: {get_blend_method(m).summary}" for m in list_blend_methods()))
    parser.add_argument("--out", help="submission CSV, report.html beside it (default: "
                        "<storage-dir>/<study>/export/submission.csv)")
    parser.add_argument("--ensemble-dir", help="also write a self-contained ensemble folder here")
    parser.add_argument("--no-refit", dest="refit", action="store_false", default=None,
                        help="do not retrain members on the folds they lack (default: refit, so each member is the "
                        "average of its fold models and its cv_auc covers every fold)")
    parser.add_argument("--validate", metavar="PATH", help="labelled images from elsewhere (any dataset layout): "
                        "score every member and the blend on them, beside the in-search AUC")
    parser.add_argument("--calibrate-on", metavar="DIR_OR_CSV",
                        help="unlabelled images like those you will score (a folder, or a CSV as predict reads it; "
                        "no label is read): measure on them how much averaging each member's fold models changes its "
                        "score, so the operating points and probabilities describe what predict returns (without "
                        "it, and without a test split or --validate, they describe one fold model and promise fewer "
                        "flags than predict gives)")
    parser.add_argument("--device", default="auto", help="for --validate and --calibrate-on: cpu, cuda, cuda:N or auto")
    parser.add_argument("--prevalence", type=float, metavar="P",
                        help="the melanoma rate where the ensemble will be used (e.g. 0.02): each operating point's "
                             "PPV, NPV and lesions flagged per melanoma found there, in the output, report and card; "
                             "recorded in the ensemble, so predict moves the probability to it")
    stage = parser.add_mutually_exclusive_group()
    stage.add_argument("--stage-two", dest="stage_two", action="store_true", default=None,
                       help="run stage two: trees over the members' out-of-fold scores, the metadata and the "
                       "patient's other lesions, searched in the study NAME-stage-two (default: the spec's "
                       "stage_two.enabled); shipped only when it beats the blend on rows it was not chosen on by more "
                       "than one standard error")
    stage.add_argument("--no-stage-two", dest="stage_two", action="store_false",
                       help="do not run stage two, whatever the spec says")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def export() -> int:
        from melanoma_search.export import export_study

        export_study(args.study, storage=args.storage, storage_dir=args.storage_dir, top_k=args.top_k,
                     method=args.method, out=args.out, ensemble_dir=args.ensemble_dir, refit=args.refit,
                     validate=args.validate, calibrate_on=args.calibrate_on, device=args.device,
                     stage_two=args.stage_two, prevalence=args.prevalence)
        return 0

    return handled(export, interrupted="interrupted: finished refit folds are kept (in the study's refit folder) "
                   "and no ensemble folder was replaced; the same command resumes")


if __name__ == "__main__":
    sys.exit(main())
