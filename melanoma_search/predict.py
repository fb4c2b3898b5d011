"""``python -m melanoma_search.predict --ensemble DIR --images DIR_OR_CSV [--out scores.csv]``: score new images.

``--images`` is a folder of images (scored without metadata) or a CSV with ``image_name`` and, for members that use
metadata, ``sex``, ``age_approx``, ``anatom_site_general_challenge``, ``patient_id`` and ``n_images`` (images found
through an ``image_path`` column, else by name in ``images/`` beside the CSV). Output columns:

* ``score``: the blend (each member's fold models ranked against their own out-of-fold predictions, then averaged):
  for ranking, and what a Kaggle submission's ``target`` is (the 2020 and 2024 metrics read only the order);
* ``probability``: P(melanoma), the score calibrated on the blend's out-of-fold predictions (isotonic); it carries
  the training set's melanoma rate, so it is right for images from a similar population;
* with ``--operating-point NAME`` (``sens90``, ``sens95``, ``youden``: thresholds the export chose on the out-of-fold
  blend, listed in the output), ``flag_NAME``: 1 where ``score`` reaches it.

An image's score does not depend on what else is in the batch, with one exception the output names: a metadata
member's images-per-patient feature is counted in the file by ``patient_id`` unless an ``n_images`` column gives it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from melanoma_search.cli import add_scoring_arguments, handled, parser_for


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.predict", __doc__)
    add_scoring_arguments(parser, ensemble_help="folder written by export --ensemble-dir",
                          images_help="a folder of images, or a CSV (image_name + metadata)")
    parser.add_argument("--out", help="the scores (default: <storage-dir>/<the ensemble's study>/predict/scores.csv)")
    parser.add_argument("--operating-point", metavar="NAME",
                        help="add a flag_NAME column (1: flagged) at one of the ensemble's operating points")
    args = parser.parse_args(argv)
    return handled(lambda: _predict(args), interrupted="interrupted: no scores written")


def _predict(args: argparse.Namespace) -> int:
    from melanoma_search.data.layouts import read_images_to_score
    from melanoma_search.ensemble import load_ensemble
    from melanoma_search.errors import ConfigError
    from melanoma_search.train.loop import resolve_device

    ensemble = load_ensemble(args.ensemble)
    points = ensemble.operating_points()
    if args.operating_point is not None and args.operating_point not in points:
        raise ConfigError(f"--operating-point {args.operating_point}: this ensemble has "
                          f"{', '.join(points) or 'none (exported by an earlier version)'}")
    rows = read_images_to_score(args.images)
    scores = ensemble.score(rows, device=resolve_device(args.device), allow_missing_meta=args.allow_missing_meta)
    if args.operating_point is not None:
        point = points[args.operating_point]
        scores[f"flag_{point.name}"] = (scores["score"] >= point.threshold).astype(int)
    out = Path(args.out) if args.out else Path(args.storage_dir) / ensemble.study / "predict" / "scores.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out, index=False)
    print(f"scored {len(scores)} image(s) with {len(ensemble.members)} member(s) -> {out}")
    print("columns: score (the blend, for ranking), probability (calibrated P(melanoma) on the out-of-fold blend)"
          + (f", flag_{args.operating_point} (1: score >= {points[args.operating_point].threshold:.4f})"
             if args.operating_point else ""))
    for point in points.values():
        print(f"  operating point {point.line()} (out of fold)")
    if meta_members := ensemble.meta_members():
        from melanoma_search.data.meta import rows_without_metadata

        lacking = rows_without_metadata(rows)
        print(f"members using metadata: {', '.join(meta_members)}; {lacking} of {len(rows)} image(s) had none "
              "(scored with every metadata field missing)")
        print(f"images per patient: {rows.attrs['n_images']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
