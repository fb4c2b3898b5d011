"""Stage two, measured: what trees over metadata and patient context add, which learner to ship, and what it costs.

Three measurements, each its own command:

  isic2020   the SIIM-ISIC 2020 training metadata (33,126 lesions, 2,056 patients, 584 melanomas; no images here):
             trees on the metadata alone, without and with the patient-context features, 5 folds grouped by
             patient, out-of-fold AUC and partial AUC paired on the same rows (the one real-patient measurement
             these machines allow); then LightGBM, XGBoost and CatBoost on the same features, fit time and AUC.
  scale      stage two's fit and predict time and peak memory on that 33k-row table and on a 400k-row synthetic
             table in the ISIC 2024 shape (1,042 patients, ~40 per-lesion columns, one image score).
  ham        an exported ham-cpu study: stage two (image scores + HAM's metadata) against the blend, out of fold,
             paired; and on the outside images (no metadata), the fallback against the blend.

    python bench/stage_two.py isic2020 --csv ../shared/data/isic2020-meta/train.csv
    python bench/stage_two.py scale --csv ../shared/data/isic2020-meta/train.csv
    python bench/stage_two.py ham --study ham-cpu --storage-dir storage --validate ../shared/data/isic2018-test-ext

Each prints what it measured as JSON (and writes it under --out). What it cannot show: the 2020 table has no
per-lesion measurements (ISIC 2024's tbp_lv_* columns carried most of the 2024 gain) and no images; the 400k table
is synthetic (it times the code, it says nothing about accuracy).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.data.folds import assign_folds
from melanoma_search.data.layouts import SITES, load_table
from melanoma_search.metrics import lesions_per_cancer, paired_auc_difference, partial_auc, top_k_sensitivity
from melanoma_search.stage_two.crossfit import cross_fit
from melanoma_search.stage_two.features import Inputs, build_features
from melanoma_search.stage_two.learners import get_learner

#: The same fixed parameters for every arm (a measurement of features, not of a search).
PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {"num_leaves": 15, "learning_rate": 0.05, "rounds": 300, "min_child_samples": 50,
                 "feature_fraction": 0.8, "bagging_fraction": 0.8, "lambda_l2": 1.0},
    "xgboost": {"max_depth": 4, "eta": 0.05, "rounds": 300, "subsample": 0.8, "colsample_bytree": 0.8,
                "min_child_weight": 5.0, "lambda": 1.0},
    "catboost": {"depth": 5, "learning_rate": 0.05, "rounds": 300, "l2_leaf_reg": 3.0},
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _isic2020(csv: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The 2020 metadata as stage two reads it, with 5 patient-grouped folds (duplicates dropped)."""
    from melanoma_search.data.folds import drop_duplicates, read_duplicate_list

    table = load_table(csv.parent, layout="kaggle2020", require_images=False)
    duplicates = csv.parent / "ISIC_2020_Training_Duplicates.csv"
    if duplicates.is_file():
        table = drop_duplicates(table, duplicates=read_duplicate_list(duplicates))
    table = table.reset_index(drop=True)
    folds = assign_folds(table, n_folds=5, seed=42).to_numpy()
    return table.set_index("image_name", drop=False), table["target"].to_numpy(float), folds


def _arm(rows: pd.DataFrame, images: pd.DataFrame, target: np.ndarray, folds: np.ndarray, *, groups: tuple[str, ...],
         learner: str = "lightgbm", columns: tuple[str, ...] = (), seeds: int = 3) -> dict[str, Any]:
    start = time.perf_counter()
    features = build_features(Inputs(rows=rows, images=images, columns=columns), groups).table
    built = time.perf_counter()
    fitted = cross_fit(features, target, folds, learner=get_learner(learner), params=PARAMS[learner],
                       seeds=range(seeds))
    done = time.perf_counter()
    return {"groups": list(groups), "learner": learner, "features": features.shape[1], "oof": fitted.oof,
            "auc": float(roc_auc_score(target, fitted.oof)), "pauc": partial_auc(target, fitted.oof),
            "feature_seconds": round(built - start, 2), "fit_seconds": round(done - built, 2), "fitted": fitted}


def isic2020(args: argparse.Namespace) -> dict[str, Any]:
    rows, target, folds = _isic2020(Path(args.csv))
    none = pd.DataFrame(index=rows.index)
    without = _arm(rows, none, target, folds, groups=("metadata",))
    with_context = _arm(rows, none, target, folds, groups=("metadata", "patient"))
    paired = {"auc": str(paired_auc_difference(target, with_context["oof"], without["oof"])),
              "pauc": str(paired_auc_difference(target, with_context["oof"], without["oof"], metric=partial_auc))}
    patient = rows["patient_id"].to_numpy()
    clinical = {name: {"lesions_per_cancer_80": lesions_per_cancer(target, arm["oof"], sensitivity=0.8),
                       "top15_sensitivity": top_k_sensitivity(target, arm["oof"], patient, k=15)}
                for name, arm in (("metadata", without), ("metadata+patient", with_context))}
    learners = {name: {k: v for k, v in _arm(rows, none, target, folds, groups=("metadata", "patient"),
                                             learner=name, seeds=1).items() if k not in ("oof", "fitted")}
                for name in args.learners.split(",")}
    return {"rows": len(target), "melanomas": int(target.sum()), "patients": int(rows["patient_id"].nunique()),
            "folds": "5, grouped by patient", **{name: {k: v for k, v in arm.items() if k not in ("oof", "fitted")}
                                                  for name, arm in (("metadata", without),
                                                                    ("metadata+patient", with_context))},
            "paired_with_minus_without": paired, "clinical": clinical, "learners_one_seed": learners}


def _synthetic_2024(n: int = 400_000, patients: int = 1042, columns: int = 40, seed: int = 0
                    ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, tuple[str, ...]]:
    """A table in the ISIC 2024 shape (timing only: its numbers mean nothing)."""
    rng = np.random.default_rng(seed)
    patient = rng.integers(patients, size=n)
    target = (rng.random(n) < 0.001).astype(float)
    names = tuple(f"tbp_lv_c{i}" for i in range(columns)) + ("clin_size_long_diam_mm",)
    data = {name: rng.normal(0, 1, n) + 0.5 * target for name in names}
    rows = pd.DataFrame({"patient_id": [f"IP_{p}" for p in patient], "sex": rng.choice(["male", "female"], n),
                         "age_approx": rng.choice(np.arange(30, 85, 5), n).astype(float),
                         "site": rng.choice(list(SITES), n), **data}, index=[f"ISIC_{i:07d}" for i in range(n)])
    images = pd.DataFrame({"m1": rng.random(n)}, index=rows.index)
    folds = patient % 5
    return rows, images, target, folds, names


def scale(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows, target, folds = _isic2020(Path(args.csv))
    arm = _arm(rows, pd.DataFrame(index=rows.index), target, folds, groups=("metadata", "patient"))
    out["isic2020_33k"] = _timings(arm, rows, pd.DataFrame(index=rows.index), ())
    big = _synthetic_2024()
    before = _peak_mb()
    arm = _arm(big[0], big[1], big[2], big[3], groups=("image", "metadata", "tabular", "patient"), columns=big[4],
               seeds=1)
    out["synthetic_2024_400k"] = {**_timings(arm, big[0], big[1], big[4]), "peak_mb_before": round(before, 0)}
    return out


def _timings(arm: dict[str, Any], rows: pd.DataFrame, images: pd.DataFrame, columns: tuple[str, ...]
             ) -> dict[str, Any]:
    sample = rows.iloc[:10_000]
    start = time.perf_counter()
    features = build_features(Inputs(rows=sample, images=images.loc[sample.index], columns=columns),
                              arm["groups"]).table
    arm["fitted"].learners.score(features)
    seconds = time.perf_counter() - start
    return {"rows": len(rows), "features": arm["features"], "feature_seconds": arm["feature_seconds"],
            "fit_seconds (5 folds x seeds)": arm["fit_seconds"],
            "predict_rows_per_second (features + every fold learner)": round(len(sample) / seconds, 0),
            "peak_mb": round(_peak_mb(), 0)}


def ham(args: argparse.Namespace) -> dict[str, Any]:
    """The exported ham-cpu study with stage two, and the outside images scored through predict's fallback."""
    import torch

    from melanoma_search.ensemble import load_ensemble
    from melanoma_search.export import export_study
    from melanoma_search.stage_two.model import StageTwo

    with tempfile.TemporaryDirectory() as tmp:
        done = export_study(args.study, storage_dir=args.storage_dir, out=Path(tmp) / "sub.csv",
                            ensemble_dir=Path(tmp) / "ens", validate=args.validate, device="cpu", stage_two=True)
        stage = done.stage_two
        assert stage is not None and done.validation is not None
        report: dict[str, Any] = {"stage_two": stage.about()}
        ensemble = load_ensemble(Path(tmp) / "ens")
        model = StageTwo.read(ensemble)
        if model is None:  # not shipped: built here anyway, to measure what predict's fallback does outside
            model = StageTwo(learners=stage.learners, groups=tuple(stage.choice.trial.params["groups"].split("+")),
                             columns=(), members=tuple(m.name for m in done.blend.members),
                             calibration=pd.DataFrame({"oof": stage.oof, "score": stage.oof,
                                                       "target": done.blend.target}), points={}, about={})
            report["shipped"] = False
        rows = done.validation.rows
        assert rows is not None
        folds = ensemble.fold_scores(rows, device=torch.device("cpu"), allow_missing_meta=True)
        image = ensemble.deployed(folds)
        # the outside images come without metadata or patients: predict falls back to the image blend
        scored = model.with_fallback(rows, folds, patient_given=np.zeros(len(rows), bool), has_meta=False,
                                     image_score=image, image_probability=ensemble.probability(image))
        target = done.validation.target
        report["outside_fallback"] = {
            "rows_scored_by_stage_two": int((scored["scored_by"] == "stage two").sum()),
            "auc_fallback": float(roc_auc_score(target, scored["score"])),
            "auc_blend": float(roc_auc_score(target, image)),
            "paired_fallback_minus_blend_auc": str(paired_auc_difference(target, scored["score"].to_numpy(),
                                                                         image))}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    first = sub.add_parser("isic2020")
    first.add_argument("--csv", required=True)
    first.add_argument("--learners", default="lightgbm,xgboost,catboost")
    second = sub.add_parser("scale")
    second.add_argument("--csv", required=True)
    third = sub.add_parser("ham")
    third.add_argument("--study", default="ham-cpu")
    third.add_argument("--storage-dir", default="storage")
    third.add_argument("--validate", required=True)
    parser.add_argument("--out", default="storage/bench-stage-two")
    args = parser.parse_args()
    result = {"isic2020": isic2020, "scale": scale, "ham": ham}[args.command](args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.command}.json").write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
