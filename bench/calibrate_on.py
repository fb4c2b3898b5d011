"""Do the operating points an export promises hold outside, with and without ``--calibrate-on``?

One exported study (its trials already run), exported twice with the real ``export_study`` and the same members:

  plain: the default export without a test split or ``--validate`` (``ham-cpu`` as the README runs it): the
      probability map and the operating points describe one fold model per member;
  calibrate-on: the same export with ``--calibrate-on`` the outside images (no label read): the variance that
      averaging each member's fold models removes is measured on them, and the map and points describe the
      combination ``predict`` returns.

Both ensembles then score the labelled outside images exactly as ``predict`` does (the same fold outputs: the score
is identical, only the thresholds and the map differ). Printed for each operating point: the sensitivity and
specificity promised (out of fold) and delivered outside, the paired bootstrap difference of the delivered figures
(calibrate-on minus plain, images resampled), the expected calibration error of the probability, and the AUC in
search and outside (the same in both arms: the score does not change). The outside
set is small (242 images, 57 melanomas): a few melanomas move a sensitivity by 0.02 each. It cannot show another
collection, nor images other than those calibrated on (here the images calibrated on are the images scored, as a
user scoring a batch would give them).

    python bench/calibrate_on.py --study ham-cpu --outside ../shared/data/isic2018-test-ext [--storage-dir storage]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from melanoma_search.data.layouts import load_table
from melanoma_search.ensemble import load_ensemble
from melanoma_search.export import export_study
from melanoma_search.metrics import paired_auc_difference
from melanoma_search.report.calibration import calibration_summary

POINTS = ("sens90", "sens95", "youden")


def _sensitivity(labels: np.ndarray, flags: np.ndarray) -> float:
    return float(flags[labels > 0.5].mean())


def _specificity(labels: np.ndarray, flags: np.ndarray) -> float:
    return float(1 - flags[labels < 0.5].mean())


def _delivered(ensemble_dir: Path, rows: pd.DataFrame) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """The ensemble's promises, its flags on ``rows`` at each point, and its probability there."""
    ensemble = load_ensemble(ensemble_dir)
    scored = ensemble.score(rows, device=torch.device("cpu"), allow_missing_meta=True)
    target = rows["target"].to_numpy(float)
    points = ensemble.operating_points()
    flags = {n: (scored["score"].to_numpy() >= points[n].threshold).astype(float) for n in POINTS}
    figures: dict[str, Any] = {"deployed_scale": ensemble.manifest.get("deployed_scale"),
                               "in_search_auc": ensemble.manifest.get("blend_oof_auc"),
                               "outside_auc": float(roc_auc_score(target, scored["score"].to_numpy())),
                               "ece": calibration_summary(target, scored["probability"].to_numpy()).ece}
    for name in POINTS:
        figures[name] = {"promised_sensitivity": points[name].sensitivity,
                         "promised_specificity": points[name].specificity,
                         "delivered_sensitivity": _sensitivity(target, flags[name]),
                         "delivered_specificity": _specificity(target, flags[name])}
    return figures, flags, scored["probability"].to_numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True)
    parser.add_argument("--outside", required=True, help="labelled outside images (any layout)")
    parser.add_argument("--storage-dir", default="storage")
    parser.add_argument("--out", default="storage/bench-calibrate-on")
    args = parser.parse_args()
    table = load_table(Path(args.outside))
    rows = table[table["split"].eq("train")].reset_index(drop=True)
    images = Path(rows["image_path"].iloc[0]).parent  # the unlabelled images: the folder, no labels.csv read
    report: dict[str, Any] = {"study": args.study, "outside": args.outside, "images": len(rows),
                              "melanomas": int(rows["target"].sum())}
    flags, probability = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for arm, calibrate_on in (("plain", None), ("calibrate-on", images)):
            export_study(args.study, storage_dir=args.storage_dir, out=Path(tmp) / arm / "submission.csv",
                         ensemble_dir=Path(tmp) / f"{arm}-ensemble", calibrate_on=calibrate_on, device="cpu",
                         stage_two=False)
            report[arm], flags[arm], probability[arm] = _delivered(Path(tmp) / f"{arm}-ensemble", rows)
    target = rows["target"].to_numpy(float)
    paired: dict[str, str] = {"ece": str(paired_auc_difference(
        target, probability["calibrate-on"], probability["plain"],
        metric=lambda y, p: calibration_summary(y, p).ece))}
    for name in POINTS:
        for figure, metric in (("sensitivity", _sensitivity), ("specificity", _specificity)):
            paired[f"{name}_{figure}"] = str(paired_auc_difference(target, flags["calibrate-on"][name],
                                                                   flags["plain"][name], metric=metric))
    report["paired_calibrate_on_minus_plain"] = paired
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
