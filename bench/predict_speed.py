"""How fast an exported ensemble scores images on this CPU: ``predict`` (PyTorch) and the portable ONNX scorer, on the
same outside images, and whether their scores stay equal.

The study is exported (without stage two) into a temporary folder, made portable, and both score the labelled
outside images once as a warm-up and then ``--repeats`` times: images per second (median), decoding included. The
ONNX side is also timed with onnxruntime's graph optimisations off, to show what they buy. Paired on the same images:
the largest difference of the two scorers' ``score``, and their AUCs. bf16 is not timed here: ``predict`` runs fp32
on a CPU without native bf16 (``melanoma_search.train.precision``), which the report's ``machine`` line states.

    python bench/predict_speed.py --study ham-cpu --storage-dir storage --images ../shared/data/isic2018-test-ext
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cpu_levers import median_seconds  # the bench next to this one: the same timing
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from melanoma_search.data.layouts import load_table
from melanoma_search.ensemble import load_ensemble
from melanoma_search.export import export_study
from melanoma_search.portable import write_portable
from melanoma_search.train.precision import cpu_bf16_supported


def _unoptimised() -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True)
    parser.add_argument("--storage-dir", default="storage")
    parser.add_argument("--images", required=True, help="a labelled dataset folder (the outside images)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = load_table(Path(args.images))
    rows = table[table["split"].eq("train")].reset_index(drop=True)
    paths = [Path(p) for p in rows["image_path"]]
    with tempfile.TemporaryDirectory() as tmp:
        export_study(args.study, storage_dir=args.storage_dir, out=Path(tmp) / "sub.csv",
                     ensemble_dir=Path(tmp) / "ens", stage_two=False, log=lambda line: None)
        ensemble = load_ensemble(Path(tmp) / "ens")
        folder = write_portable(ensemble, Path(tmp) / "portable", log=lambda line: None)
        spec = importlib.util.spec_from_file_location("score", folder / "score.py")
        assert spec is not None and spec.loader is not None
        scorer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(scorer)
        device = torch.device("cpu")
        torch_scores = ensemble.score(rows, device=device)["score"].to_numpy()
        onnx_scores = scorer.score_images(folder, paths)["score"]
        report = {"images": len(paths), "threads": torch.get_num_threads(),
                  "machine": {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                              "bf16_supported": cpu_bf16_supported()},
                  "members": len(ensemble.members), "fold_models": sum(len(m.weight_files) for m in ensemble.members),
                  "predict_img_s": round(len(paths) / median_seconds(
                      lambda: ensemble.score(rows, device=device), repeats=args.repeats), 1),
                  "onnx_img_s": round(len(paths) / median_seconds(
                      lambda: scorer.score_images(folder, paths), repeats=args.repeats), 1),
                  "onnx_no_graph_optimisation_img_s": round(len(paths) / median_seconds(
                      lambda: scorer.score_images(folder, paths, session_options=_unoptimised()),
                      repeats=args.repeats), 1),
                  "max_score_difference": float(np.abs(torch_scores - onnx_scores).max()),
                  "median_score_difference": float(np.median(np.abs(torch_scores - onnx_scores))),
                  "spearman": float(spearmanr(torch_scores, onnx_scores).statistic),
                  "auc_predict": float(roc_auc_score(rows["target"], torch_scores)),
                  "auc_onnx": float(roc_auc_score(rows["target"], onnx_scores))}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
