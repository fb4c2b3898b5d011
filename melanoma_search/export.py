"""``python -m melanoma_search.export --study NAME``: the best trials as a rank-blended submission and ensemble.

Reads the study's finished trials (their ``oof.csv``/``test.csv`` artifacts), picks the top ``--top-k`` by the
objective (skipping near-duplicate configurations and trials lacking artifacts, with a message), blends them by
rank (``--method rank``: equal weights; ``greedy``: ensemble selection on OOF AUC), and writes:

* ``--out`` (``submission.csv``): ``image_name,target`` for every test image, in [0, 1];
* ``report.html`` beside it: optimisation history, parameter importances, parallel coordinates, learning curves,
  ROC curves of members and blend, the member table (self-contained, opens offline);
* ``--ensemble-dir``: a self-contained folder to score new images with ``python -m melanoma_search.predict``;

and attaches the blend's ROC curve (``blend-roc.svg``) to the study so it shows in optuna-dashboard.
The work is :func:`melanoma_search.ensemble.export_study`; this module only reads the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from melanoma_search.errors import MelanomaSearchError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m melanoma_search.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="study name (default storage sqlite:///storage/NAME.db)")
    parser.add_argument("--storage", help="storage URL (default: the run's default for --study)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--method", choices=["rank", "greedy"], default="rank")
    parser.add_argument("--out", default="submission.csv", help="submission CSV (report.html is written beside it)")
    parser.add_argument("--ensemble-dir", help="also write a self-contained ensemble folder here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from melanoma_search.ensemble import export_study

        export_study(args.study, storage=args.storage, storage_dir=args.storage_dir, top_k=args.top_k,
                     method=args.method, out=args.out, ensemble_dir=args.ensemble_dir)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
