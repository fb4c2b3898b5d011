"""``python -m melanoma_search.predict --ensemble DIR --images DIR_OR_CSV [--out scores.csv]``: score new images.

``--images`` is a folder of images (scored without metadata) or a CSV with ``image_name`` and, for members that use
metadata, ``sex``, ``age_approx``, ``anatom_site_general_challenge``, ``patient_id`` and ``n_images`` (images found
through an ``image_path`` column, else by name in ``images/`` beside the CSV). Output columns:

* ``score``: the blend (each member's fold models ranked against their own out-of-fold predictions, then averaged):
  for ranking, and what a Kaggle submission's ``target`` is (the 2020 and 2024 metrics read only the order);
* ``probability``: P(melanoma), the score calibrated on the blend's out-of-fold predictions (isotonic); it carries
  the training set's melanoma rate, so it is right for images from a similar population;
* with ``--prevalence P`` (or an ensemble exported with it), ``probability`` is moved from the training rows' melanoma
  rate to P (prior shift, Saerens et al. 2002; the ranking and flags are unchanged) and each operating point's PPV,
  NPV and lesions flagged per melanoma found at P are printed;
* with ``--operating-point NAME`` (``sens90``, ``sens95``, ``youden``: thresholds the export chose on the out-of-fold
  blend, listed in the output), ``flag_NAME``: 1 where ``score`` reaches it.

An image's score does not depend on what else is in the batch, with one exception the output names: a metadata
member's images-per-patient feature is counted in the file by ``patient_id`` unless an ``n_images`` column gives it.

An ensemble that ships stage two (trees over the image scores, the metadata and the patient's other lesions) scores
each row of a CSV that has what its features read (``patient_id``, the metadata, its per-lesion columns) with it:
there a score *does* depend on the patient's other lesions in the file, which is the point. Other rows (and a folder
of images) fall back to the image blend, and the output counts them. ``probability`` is then the calibrated
probability of whichever model scored the row (so rows of both kinds rank together), ``score`` that probability with
its ties broken by the model's own score, ``scored_by`` says which model, and ``image_score`` keeps the image blend's
own score.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from melanoma_search.cli import add_scoring_arguments, handled, parser_for

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from melanoma_search.ensemble import Ensemble
    from melanoma_search.ensemble.calibration import OperatingPoint
    from melanoma_search.stage_two.model import StageTwo


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.predict", __doc__)
    add_scoring_arguments(parser, ensemble_help="folder written by export --ensemble-dir",
                          images_help="a folder of images, or a CSV (image_name + metadata)")
    parser.add_argument("--out", help="the scores (default: <storage-dir>/<the ensemble's study>/predict/scores.csv)")
    parser.add_argument("--operating-point", metavar="NAME",
                        help="add a flag_NAME column (1: flagged) at one of the ensemble's operating points")
    parser.add_argument("--prevalence", type=float, metavar="P",
                        help="the melanoma rate where these images come from (e.g. 0.02): probability is moved to it "
                             "from the training rows' rate (default: the rate the ensemble was exported with, if any)")
    args = parser.parse_args(argv)
    return handled(lambda: _predict(args), interrupted="interrupted: no scores written")


def _with_stage_two(ensemble: Ensemble, stage: StageTwo, rows: pd.DataFrame, *, device: torch.device,
                    allow_missing_meta: bool) -> pd.DataFrame:
    """Stage two where a row has what it reads, the image blend elsewhere (see the module docstring)."""
    import pandas as pd

    folds = ensemble.fold_scores(rows, device=device, allow_missing_meta=allow_missing_meta)
    image_score = ensemble.deployed(folds)
    given = np.asarray(rows.attrs.get("patient_given") or [False] * len(rows), dtype=bool)
    scored = stage.with_fallback(rows, folds, patient_given=given, has_meta=bool(rows.attrs.get("has_meta")),
                                 image_score=image_score, image_probability=ensemble.probability(image_score))
    return pd.DataFrame({"image_name": rows["image_name"].to_numpy(), **{c: scored[c].to_numpy() for c in scored}})


def _say_stage_two(scores: pd.DataFrame, stage: StageTwo, points: dict[str, OperatingPoint], *,
                   flagged: str | None) -> None:
    fell_back = int(scores["scored_by"].eq("images only").sum())
    print(f"stage two ({', '.join(stage.groups)}) scored {len(scores) - fell_back} row(s): each with its patient's "
          f"other lesions in this file; {fell_back} fell back to the image blend (no patient_id, metadata or "
          "per-lesion columns)")
    print("columns: probability (the calibrated P(melanoma) of the model that scored the row: rows of both kinds rank "
          "together), score (that probability, ties broken by the model's own score), scored_by, stage_two_score "
          "(its own scale), image_score (the image blend's)"
          + (f", flag_{flagged} (1: at the row's own model's {flagged})" if flagged else ""))
    for point in stage.points.values():
        print(f"  operating point, stage two: {point.line().replace('score >=', 'stage_two_score >=')} (out of fold)")
    for point in points.values():
        print(f"  operating point, images only: {point.line().replace('score >=', 'image_score >=')} (out of fold)")


def _one_fold_note(ensemble: Ensemble, stage: StageTwo | None) -> str | None:
    """What a clinician must know when the thresholds and probabilities describe one fold model (or one fold
    learner of stage two) while ``score`` combines several: they promise fewer flags than the scores give."""
    folds = max((len(m.weight_files) for m in ensemble.members), default=1)
    parts = []
    if ensemble.deployed_scale is None and folds > 1:
        parts.append(f"the image blend's operating points and probability describe one fold model, while each score "
                     f"here averages {folds}")
    if stage is not None and stage.deployed_scale is None and len(stage.learners.folds) > 1:
        parts.append(f"stage two's describe one fold learner, while its score combines {len(stage.learners.folds)}")
    if not parts:
        return None
    return ("note: " + "; ".join(parts) + ". Expect more images flagged than the stated specificity implies (and "
            "sensitivity above the stated one), and probabilities nearer the middle than the observed rates "
            "(re-export with --calibrate-on IMAGES to fit them to these scores)")


def _prevalence(given: float | None, ensemble: Ensemble) -> float | None:
    """The melanoma rate to move the probability to: ``--prevalence``, else the one the ensemble was exported with;
    refused (one line) outside (0, 1) or for an ensemble without a calibrated probability."""
    from melanoma_search.ensemble.prevalence import check_prevalence
    from melanoma_search.errors import ConfigError

    rate = ensemble.prevalence if given is None else check_prevalence(given)
    if rate is not None and ensemble.trained_prevalence is None:
        raise ConfigError("--prevalence: this ensemble has no calibrated probability (exported by an earlier "
                          "version): export the study again")
    return rate


def _move_probability(scores: pd.DataFrame, ensemble: Ensemble, points: dict[str, OperatingPoint],
                      prevalence: float | None) -> list[str]:
    """``scores``' probability moved to the melanoma rate ``prevalence`` (in place; the score and flags stay), and
    the lines that say so with each operating point's PPV and NPV there; nothing without a rate."""
    if prevalence is None:
        return []
    from melanoma_search.ensemble.prevalence import prevalence_lines, shift_prior

    trained = ensemble.trained_prevalence
    assert trained is not None  # _prevalence refuses an ensemble without a calibrated probability
    scores["probability"] = shift_prior(scores["probability"].to_numpy(float), deployed=prevalence, trained=trained)
    return prevalence_lines(list(points.values()), prevalence=prevalence, trained=trained)


def _predict(args: argparse.Namespace) -> int:
    from melanoma_search.data.layouts import read_images_to_score
    from melanoma_search.ensemble import load_ensemble
    from melanoma_search.errors import ConfigError
    from melanoma_search.stage_two.model import StageTwo
    from melanoma_search.train.loop import resolve_device

    ensemble = load_ensemble(args.ensemble)
    stage = StageTwo.read(ensemble)
    points = ensemble.operating_points()
    prevalence = _prevalence(args.prevalence, ensemble)
    if args.operating_point is not None and args.operating_point not in points:
        raise ConfigError(f"--operating-point {args.operating_point}: this ensemble has "
                          f"{', '.join(points) or 'none (exported by an earlier version)'}")
    rows = read_images_to_score(args.images, keep=stage.columns if stage is not None else ())
    device = resolve_device(args.device)
    if stage is None:
        scores = ensemble.score(rows, device=device, allow_missing_meta=args.allow_missing_meta)
    else:
        scores = _with_stage_two(ensemble, stage, rows, device=device, allow_missing_meta=args.allow_missing_meta)
    if args.operating_point is not None:
        point = points[args.operating_point]
        flags = scores["score"] >= point.threshold
        if stage is not None:  # each row at its own model's operating point
            two = stage.points[args.operating_point]
            flags = np.where(scores["scored_by"].eq("stage two"), scores["stage_two_score"] >= two.threshold,
                             scores["image_score"] >= point.threshold)
        scores[f"flag_{point.name}"] = np.asarray(flags).astype(int)
    at_rate = _move_probability(scores, ensemble, points, prevalence)
    out = Path(args.out) if args.out else Path(args.storage_dir) / ensemble.study / "predict" / "scores.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out, index=False)
    print(f"scored {len(scores)} image(s) with {len(ensemble.members)} member(s) -> {out}")
    if stage is None:
        print("columns: score (the blend, for ranking), probability (calibrated P(melanoma) on the out-of-fold blend)"
              + (f", flag_{args.operating_point} (1: score >= {points[args.operating_point].threshold:.4f})"
                 if args.operating_point else ""))
        for point in points.values():
            print(f"  operating point {point.line()} (out of fold)")
    else:
        _say_stage_two(scores, stage, points, flagged=args.operating_point)
    for line in at_rate:
        print(line)
    if (note := _one_fold_note(ensemble, stage)) is not None:
        print(note)
    if meta_members := ensemble.meta_members():
        from melanoma_search.data.meta import rows_without_metadata

        lacking = rows_without_metadata(rows)
        print(f"members using metadata: {', '.join(meta_members)}; {lacking} of {len(rows)} image(s) had none "
              "(scored with every metadata field missing)")
        print(f"images per patient: {rows.attrs['n_images']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
