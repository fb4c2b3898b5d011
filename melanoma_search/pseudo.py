"""``python -m melanoma_search.pseudo --ensemble DIR --images DIR_OR_CSV [--out pseudo.csv]``: pseudo-label images.

Scores unlabelled images with an exported ensemble and writes soft labels: ``target`` is the blend's probability,
calibrated on its out-of-fold predictions, beside ``confidence`` (``|2p - 1|``) and ``agreement`` (how close the
members' scores are), so a threshold or a weighting can be chosen later (``data.pseudo.min_confidence``, ``weight``).
``--images`` is read exactly as ``predict`` reads it: a folder of images or a CSV of ``image_name`` (+ metadata); a
``target`` column in it is never read. ``pseudo.json`` beside the output records the teacher and its round; a study
trains on the file through ``data.pseudo`` (or ``run --student-of``, which does both steps).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from melanoma_search.cli import add_scoring_arguments, handled, parser_for


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.pseudo", __doc__)
    add_scoring_arguments(parser, ensemble_help="the teacher: a folder written by export --ensemble-dir",
                          images_help="unlabelled images: a folder, or a CSV (image_name + metadata)")
    parser.add_argument("--out", help="the soft labels, pseudo.json beside them (default: "
                        "<storage-dir>/<the teacher's study>/pseudo/pseudo.csv)")
    args = parser.parse_args(argv)
    return handled(lambda: _pseudo(args), interrupted="interrupted: no pseudo-labels written")


def _pseudo(args: argparse.Namespace) -> int:
    from melanoma_search.data.layouts import read_images_to_score
    from melanoma_search.ensemble import load_ensemble
    from melanoma_search.semi_supervised.pseudo import pseudo_label
    from melanoma_search.train.loop import resolve_device

    ensemble = load_ensemble(args.ensemble)
    rows = read_images_to_score(args.images)
    labels = pseudo_label(ensemble, rows, device=resolve_device(args.device),
                          allow_missing_meta=args.allow_missing_meta)
    out = labels.write(Path(args.out) if args.out else Path(args.storage_dir) / ensemble.study / "pseudo" /
                       "pseudo.csv")
    print(f"{labels.summary()} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
