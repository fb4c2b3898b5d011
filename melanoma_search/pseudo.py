"""``python -m melanoma_search.pseudo --ensemble DIR --images DIR_OR_CSV --out pseudo.csv``: pseudo-label images.

Scores unlabelled images with an exported ensemble and writes soft labels: ``target`` is the blend's probability,
calibrated on its out-of-fold predictions, beside ``confidence`` (``|2p - 1|``) and ``agreement`` (how close the
members' scores are), so a threshold or a weighting can be chosen later (``data.pseudo.min_confidence``, ``weight``).
``--images`` is read exactly as ``predict`` reads it: a folder of images or a CSV of ``image_name`` (+ metadata); a
``target`` column in it is never read. ``pseudo.json`` beside the output records the teacher and its round; a study
trains on the file through ``data.pseudo`` (or ``run --student-of``, which does both steps).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from melanoma_search.cli import add_scoring_arguments, parser_for
from melanoma_search.errors import MelanomaSearchError


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.pseudo", __doc__)
    add_scoring_arguments(parser, ensemble_help="the teacher: a folder written by export --ensemble-dir",
                          images_help="unlabelled images: a folder, or a CSV (image_name + metadata)")
    parser.add_argument("--out", default="pseudo.csv", help="the soft labels (pseudo.json is written beside it)")
    args = parser.parse_args(argv)
    try:
        from melanoma_search.data.layouts import read_images_to_score
        from melanoma_search.ensemble import load_ensemble
        from melanoma_search.ensemble.pseudo import pseudo_label
        from melanoma_search.train.loop import resolve_device

        ensemble = load_ensemble(args.ensemble)
        rows = read_images_to_score(args.images)
        labels = pseudo_label(ensemble, rows, device=resolve_device(args.device),
                              allow_missing_meta=args.allow_missing_meta)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = labels.write(args.out)
    print(f"{labels.summary()} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
