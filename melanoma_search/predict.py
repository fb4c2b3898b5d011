"""``python -m melanoma_search.predict --ensemble DIR --images DIR_OR_CSV --out scores.csv``: score new images.

``--images`` is a folder of images (scored without metadata) or a CSV with ``image_name`` and, for members that use
metadata, ``sex``, ``age_approx``, ``anatom_site_general_challenge``, ``patient_id`` and ``n_images`` (images found
through an ``image_path`` column, else by name in ``images/`` beside the CSV). Each member's output is mapped to its
percentile among that member's out-of-fold predictions before the weighted average, so an image's score does not
depend on what else is in the batch, with one exception the output names: a metadata member's images-per-patient
feature is counted in the file by ``patient_id`` unless an ``n_images`` column gives it. Output: ``image_name,target``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from melanoma_search.cli import add_scoring_arguments, parser_for
from melanoma_search.errors import MelanomaSearchError


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.predict", __doc__)
    add_scoring_arguments(parser, ensemble_help="folder written by export --ensemble-dir",
                          images_help="a folder of images, or a CSV (image_name + metadata)")
    parser.add_argument("--out", default="scores.csv")
    args = parser.parse_args(argv)
    try:
        from melanoma_search.data.layouts import read_images_to_score
        from melanoma_search.ensemble import load_ensemble
        from melanoma_search.train.loop import resolve_device

        ensemble = load_ensemble(args.ensemble)
        rows = read_images_to_score(args.images)
        scores = ensemble.score(rows, device=resolve_device(args.device), allow_missing_meta=args.allow_missing_meta)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out, index=False)
    print(f"scored {len(scores)} image(s) with {len(ensemble.members)} member(s) -> {out}")
    if meta_members := ensemble.meta_members():
        from melanoma_search.data.meta import rows_without_metadata

        lacking = rows_without_metadata(rows)
        print(f"members using metadata: {', '.join(meta_members)}; {lacking} of {len(rows)} image(s) had none "
              "(scored with every metadata field missing)")
        print(f"images per patient: {rows.attrs['n_images']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
