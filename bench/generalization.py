"""How far the search's number is from what its models do on images from elsewhere, step by step.

On the HAM10000 sample, for one configuration (the ``ham-cpu`` spec's first enqueued one unless ``--set`` changes it),
trained here with the same code as a search trial, it prints the in-search AUC next to the AUC on the outside set
(ISIC 2018 Task 3 test images, another collection) for:

  (a) fold 0 with the weights of its best epoch, chosen on fold 0: what a search reported before ``checkpoint``;
  (b) fold 0 with the honest checkpoint (``swa``: the mean weights of the last epochs);
  (c) the same configuration bagged over every fold: pooled out-of-fold AUC vs the mean of the K fold models;
  (d) an exported ensemble (``--ensemble DIR`` of ``export --validate``): the figures its manifest recorded;

and, as the reference the issue measured, (0) the earlier ``ham-cpu`` default: resnet18 from scratch at 96 px, 4
epochs, best epoch on fold 0. The outside set is small: its AUC standard error (Hanley-McNeil) is printed with it.

    python bench/generalization.py --ensemble storage/ham-cpu-ensemble
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.data.layouts import load_table
from melanoma_search.data.meta import add_derived_columns
from melanoma_search.data.prepare import PreparedData
from melanoma_search.ensemble.folder import Member, score_member
from melanoma_search.metrics import auc_standard_error
from melanoma_search.search import load_spec
from melanoma_search.train import fit, parse_config, prepare_for
from melanoma_search.train.config import TrainConfig, apply_overrides, parse_override
from melanoma_search.train.device import resolve_device
from melanoma_search.train.results import fold_of_weights

OLD_DEFAULT = {"model.name": "resnet18", "model.pretrained": False, "model.checkpoints": {}, "image_size": 96,
               "epochs": 4, "tta": 1, "checkpoint": "best", "lr": 0.001, "augment.policy": "medium",
               "augment.color_constancy": False, "data.n_folds": 5}


def outside_auc(config: TrainConfig, weights: list[Path], rows: Any, classes: tuple[str, ...]) -> float:
    """The AUC of the fold models' mean probability (one configuration: no scale to share with another)."""
    member = Member(name="m", weight=1.0, config=config, weight_files={fold_of_weights(w): w for w in weights},
                    reference=pd.DataFrame({"fold": [], "pred": []}), classes=classes, encoders={})
    scores = score_member(member, rows, device=resolve_device("auto"))
    return float(roc_auc_score(rows["target"], np.mean(list(scores.values()), axis=0)))


def train(config: TrainConfig, data: PreparedData, folds: list[int], work: Path) -> tuple[Any, list[Path], float]:
    start = time.perf_counter()
    fold_config = parse_config(apply_overrides(config.to_dict(), {"data.folds": folds}))
    result = fit(fold_config, data=data, weights_dir=work, log=lambda line: None)
    weights = [Path(f.weights_path) for f in result.folds if f.weights_path]
    return result, weights, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="ham-cpu", help="spec whose base config and first enqueued params to use")
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--outside", default="../shared/data/isic2018-test-ext")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ensemble", help="an exported ensemble folder whose manifest holds an outside check")
    parser.add_argument("--skip-old", action="store_true", help="skip row (0), the earlier from-scratch default")
    args = parser.parse_args()

    spec = load_spec(args.study)
    base = spec.base_config(overrides=[("data.dir", str(Path(args.data_dir).resolve()))])
    base = apply_overrides(base, dict(spec.enqueue[0]) if spec.enqueue else {})
    config = parse_config(apply_overrides(base, [parse_override(o) for o in args.overrides]))
    outside = add_derived_columns(load_table(Path(args.outside)))
    positives = int(outside["target"].sum())
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_old:
            old = parse_config(apply_overrides(base, OLD_DEFAULT))
            old_data = prepare_for(old)
            result, weights, seconds = train(old, old_data, [0], work / "old")
            rows.append(("(0) earlier default: resnet18 scratch 96 px, best epoch, fold 0", result.folds[0].auc,
                         outside_auc(old, weights, outside, old_data.classes), f"{seconds:.0f}s"))
        data = prepare_for(config)
        best = parse_config(apply_overrides(config.to_dict(), {"checkpoint": "best"}))
        result, weights, seconds = train(best, data, [0], work / "best")
        rows.append(("(a) this config, best epoch on fold 0 (as searches reported)", result.folds[0].auc,
                     outside_auc(best, weights, outside, data.classes), f"{seconds:.0f}s"))
        honest = parse_config(apply_overrides(config.to_dict(), {"checkpoint": "swa"}))
        result, weights, seconds = train(honest, data, list(range(config.data.n_folds)), work / "swa")
        rows.append(("(b) the same, honest checkpoint (swa), fold 0", result.folds[0].auc,
                     outside_auc(honest, weights[:1], outside, data.classes), ""))
        rows.append((f"(c) bagged over {len(weights)} folds: pooled OOF vs mean of fold models", result.auc,
                     outside_auc(honest, weights, outside, data.classes), f"{seconds:.0f}s"))
    if args.ensemble:
        manifest = json.loads((Path(args.ensemble) / "manifest.json").read_text())
        check = manifest.get("validation")
        if check is None:
            print(f"(d) skipped: {args.ensemble} has no outside check (export it with --validate)")
        else:
            rows.append((f"(d) exported ensemble ({len(manifest['members'])} members, {manifest['method']})",
                         check["in_search_auc"]["blend"], check["outside_auc"]["blend"], ""))
    else:
        print("(d) skipped: no --ensemble given")
    se = auc_standard_error(0.85, positives=positives, negatives=len(outside) - positives)
    print(f"\nconfig: {config.model.name} pretrained={config.model.pretrained} size {config.image_size}, "
          f"{config.epochs} epochs, {config.data.n_folds} folds; outside: {len(outside)} images, {positives} "
          f"melanomas (AUC standard error about {se:.3f} near 0.85)")
    print(f"{'':<72}{'in-search':>10}{'outside':>9}{'gap':>8}  time")
    for name, inside, out, seconds in rows:
        print(f"{name:<72}{inside:>10.4f}{out:>9.4f}{inside - out:>8.3f}  {seconds}")


if __name__ == "__main__":
    main()
