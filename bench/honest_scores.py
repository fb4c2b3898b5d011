"""What the search trusts, before and after, on one study: the objective's definition, the export's members, the
outside AUC, and the bias-corrected in-search figure.

  1. Every finished trial of ``--study`` scored both ways from its own ``oof.csv``: d4b4a5f's objective (one AUC of
     the pooled raw out-of-fold probabilities of K fold models) and today's (the mean of the folds' AUCs); the
     Spearman correlation of the two rankings and the top k by each.
  2. Two ensemble folders exported from the same study, one by the code before (``--before``, e.g. exported from a
     checkout of cd00ee2) and one by today's (``--after``), score the same labelled outside images: their members,
     in-search and outside AUC, and the paired bootstrap difference of the outside AUC (after minus before).
  3. Today's export's BBC-CV estimate (its manifest's ``bias_corrected``) beside its in-search figure and the
     outside AUC.

It cannot show more than one collection's outside images (a few hundred: one AUC is about +-0.03 there), nor a
ranking over more trials than the study holds.

    python bench/honest_scores.py --study ham-cpu --storage-dir storage --before OLD_ENSEMBLE --after NEW_ENSEMBLE \\
        --outside ../shared/data/isic2018-test-ext
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
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from melanoma_search.data.layouts import load_table
from melanoma_search.ensemble import load_ensemble
from melanoma_search.ensemble.candidates import collect_candidates
from melanoma_search.metrics import AUC, paired_auc_difference
from melanoma_search.search import records


def _objectives(study_name: str, storage_dir: Path, top_k: int) -> dict[str, Any]:
    """Each finished trial's pooled-raw and fold-mean AUC, their rank agreement and the top k by each."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    from melanoma_search.search.study import default_storage_url, storage_home

    url = default_storage_url(storage_home(study_name, storage_dir=storage_dir), storage_dir=storage_dir)
    study = optuna.load_study(study_name=study_name, storage=url)
    store = FileSystemArtifactStore(str(records.artifact_dir(study, storage_dir=storage_dir)))
    with tempfile.TemporaryDirectory() as tmp:
        trials = collect_candidates(study, store, top_k=len(study.trials), need_weights=False, work=Path(tmp),
                                    log=lambda line: None)
    rows = []
    for trial in trials:
        oof = trial.oof
        rows.append({"trial": trial.number, "params": trial.params, "folds": len(trial.folds),
                     "pooled_raw": round(float(roc_auc_score(oof["target"], oof["pred"])), 4),
                     "fold_mean": round(AUC(oof["target"], oof["pred"], oof["fold"]), 4)})
    table = pd.DataFrame(rows)
    rho = float(spearmanr(table["pooled_raw"], table["fold_mean"]).statistic) if len(table) > 2 else float("nan")
    top = {how: table.sort_values(how, ascending=False)["trial"].head(top_k).tolist()
           for how in ("pooled_raw", "fold_mean")}
    return {"trials": rows, "spearman": rho, "top_k": top_k, "top_by_pooled_raw": top["pooled_raw"],
            "top_by_fold_mean": top["fold_mean"]}


def _scored(folder: Path, rows: pd.DataFrame) -> tuple[dict[str, Any], np.ndarray]:
    ensemble = load_ensemble(folder)  # the before-folder is an ensemble exported by the earlier code: it must load
    scored = ensemble.score(rows, device=torch.device("cpu"), allow_missing_meta=True)
    target = rows["target"].to_numpy(float)
    about = {"members": {m["name"]: round(float(m["weight"]), 3) for m in ensemble.manifest["members"]},
             "in_search_auc": ensemble.manifest.get("blend_oof_auc"),
             "outside_auc": round(float(roc_auc_score(target, scored["score"])), 4),
             "bias_corrected": ensemble.manifest.get("bias_corrected")}
    return about, scored["score"].to_numpy(float)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage-dir", default="storage")
    parser.add_argument("--before", required=True, help="ensemble folder exported by the code before")
    parser.add_argument("--after", required=True, help="ensemble folder exported by today's code")
    parser.add_argument("--outside", required=True, help="labelled outside images (any layout)")
    parser.add_argument("--top-k", type=int, default=6)
    args = parser.parse_args()
    report: dict[str, Any] = {"objective": _objectives(args.study, Path(args.storage_dir), args.top_k)}
    table = load_table(Path(args.outside))
    rows = table[table["split"].eq("train")].reset_index(drop=True)
    target = rows["target"].to_numpy(float)
    scores = {}
    for arm, folder in (("before", args.before), ("after", args.after)):
        report[arm], scores[arm] = _scored(Path(folder), rows)
    report["outside"] = {"images": len(rows), "melanomas": int(target.sum()),
                         "after_minus_before_auc": str(paired_auc_difference(target, scores["after"],
                                                                             scores["before"]))}
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
