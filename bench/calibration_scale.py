"""Does the exported probability, and the sensitivity promised at each operating point, hold for what predict does?

One exported study, its ensemble scored once on labelled outside images (ISIC 2018 Task 3 test: another collection,
read only to score), described two ways and compared on the same images:

  before (the exports up to #30): the blend of each member's mean fold percentile; the isotonic probability map and
      the operating points fitted on the out-of-fold blend as the export's AUC reads it (for greedy, each half of
      the rows blended with the weights chosen on the other half);
  now: the fold models combined by their probits; the map and the points fitted on the final weights' out-of-fold
      blend, read as that combination scores those rows (the variance combining removes, measured without labels on
      these outside images for a study with no test split, each half described by the other half's measure).

Printed: the outside expected calibration error (10 equal-width bins), the Brier score, the mean probability against
the observed rate in the top decile, and the sensitivity and specificity at sens90, sens95 and youden, each
difference (now minus before) with its paired bootstrap interval. The AUC barely moves (only the fold combination
changes the order); what this shows is whether the numbers a clinician reads describe the ensemble they get. It
cannot show more than one collection: the outside set is 242 images with 57 melanomas.

    python bench/calibration_scale.py --study ham-cpu --validate ../shared/data/isic2018-test-ext \\
        [--storage-dir storage] [--out storage/bench-calibration-scale]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score

from melanoma_search.ensemble import load_ensemble
from melanoma_search.ensemble.calibration import calibrate
from melanoma_search.ensemble.scale import per_fold_blend
from melanoma_search.export import export_study
from melanoma_search.metrics import paired_auc_difference
from melanoma_search.report.calibration import calibration_summary
from melanoma_search.report.scale_check import halves_described


def _figures(target: np.ndarray, score: np.ndarray, probability: np.ndarray,
             flags: dict[str, np.ndarray]) -> dict[str, Any]:
    top = score >= np.quantile(score, 0.9)
    out: dict[str, Any] = {"auc": float(roc_auc_score(target, score)),
                           "ece": calibration_summary(target, probability).ece,
                           "brier": float(brier_score_loss(target, probability)),
                           "top_decile_probability": float(probability[top].mean()),
                           "top_decile_observed": float(target[top].mean())}
    for name, flagged in flags.items():
        out[f"{name}_sensitivity"] = float(flagged[target > 0.5].mean())
        out[f"{name}_specificity"] = float(1 - flagged[target < 0.5].mean())
    return out


def _paired(target: np.ndarray, now: tuple[np.ndarray, ...], before: tuple[np.ndarray, ...]) -> dict[str, str]:
    def ece(labels: np.ndarray, probability: np.ndarray) -> float:
        return calibration_summary(labels, probability).ece

    def sensitivity(labels: np.ndarray, flags: np.ndarray) -> float:
        return float(flags[labels > 0.5].mean())

    out = {"ece": str(paired_auc_difference(target, now[0], before[0], metric=ece))}
    for i, name in enumerate(("sens90", "sens95", "youden"), start=1):
        out[f"{name}_sensitivity"] = str(paired_auc_difference(target, now[i], before[i], metric=sensitivity))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True)
    parser.add_argument("--validate", required=True)
    parser.add_argument("--storage-dir", default="storage")
    parser.add_argument("--out", default="storage/bench-calibration-scale")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_study(args.study, storage_dir=args.storage_dir, out=Path(tmp) / "submission.csv",
                                ensemble_dir=Path(tmp) / "ensemble", validate=args.validate, device="cpu")
        blend, validation = exported.blend, exported.validation
        assert validation is not None and validation.rows is not None
        ensemble = load_ensemble(Path(tmp) / "ensemble")
        target = validation.target
        folds = ensemble.fold_scores(validation.rows, device=torch.device("cpu"), allow_missing_meta=True)
    old_score = ensemble.blend({n: np.mean(list(f.values()), axis=0) for n, f in folds.items()})
    old_map, old_points = calibrate(blend.oof_blend, blend.target, removed=0.0)
    before = (np.asarray(old_map.predict(old_score)),
              *((old_score >= old_points[n]).astype(float) for n in ("sens90", "sens95", "youden")))
    per_fold = per_fold_blend(folds, ensemble.weights)
    assert per_fold is not None, "the members' fold models do not correspond"
    now_score = validation.scores["blend"]
    described = halves_described(per_fold, now_score, blend.shipped, blend.target) \
        if blend.deployed_scale is not None and "outside" in blend.deployed_scale.source else None
    if described is None:  # measured on a test split: the shipped description applies as it is
        new_map, new_points = calibrate(blend.shipped, blend.target, removed=(
            blend.deployed_scale.variance if blend.deployed_scale is not None else 0.0))
        now = (np.asarray(new_map.predict(now_score)),
               *((now_score >= new_points[n]).astype(float) for n in ("sens90", "sens95", "youden")))
    else:
        now = (described.probability, *(described.flags[n] for n in ("sens90", "sens95", "youden")))
    names = ("sens90", "sens95", "youden")
    report = {"study": args.study, "outside": args.validate, "images": len(target), "melanomas": int(target.sum()),
              "deployed_scale": None if blend.deployed_scale is None else blend.deployed_scale.to_dict(),
              "before": _figures(target, old_score, before[0], dict(zip(names, before[1:], strict=True))),
              "now": _figures(target, now_score, now[0], dict(zip(names, now[1:], strict=True))),
              "paired_now_minus_before": _paired(target, now, before)}
    (out / "result.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
