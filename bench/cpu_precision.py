"""Does bf16 on the CPU keep the outside AUC where it is faster? One configuration trained twice, fp32 and bf16.

``bench/cpu_levers.py`` times one training step per backbone and size; ``amp: auto`` trains in bf16 on a CPU only
where that step measured faster. Speed alone does not earn a lever its place: this bench trains the same
configuration (default: the ``ham-cpu`` portfolio's Lite2 at 192 px, diagnosis target), bagged over the spec's
folds with the same seeds, once with ``amp: off`` and once with ``amp: bf16``; exports each (the real ``run`` and
``export`` commands, ``bench/search_value.py``'s no-search arm); and scores both ensembles on the same outside images
(ISIC 2018 Task 3 test, never used to choose anything). It prints each arm's wall time (run and export), the speed
ratio, the in-search AUCs, and the paired bootstrap difference of the outside AUCs (bf16 minus fp32).

It cannot show the speed on a CPU without native bf16 (it refuses to run there: it would time emulation), nor any
configuration but the one it trains; with 242 outside images, only a difference whose interval excludes zero says
that bf16 changed the quality.

    python bench/cpu_precision.py [--model tf_efficientnet_lite2] [--image-size 192] [--target diagnosis]
        [--epochs 4] [--workdir storage/bench-cpu-precision]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
from search_value import _arm, _no_search, _shipped  # the bench next to this one: the same arm, run and scored

from melanoma_search.metrics import paired_auc_difference
from melanoma_search.train.precision import cpu_bf16_supported


def _arms(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    shipped = _shipped(args.spec, Path(args.data_dir).resolve())
    params = {"model.name": args.model, "image_size": args.image_size, "target": args.target}
    work, outside = Path(args.workdir).resolve(), Path(args.outside).resolve()
    rows = {}
    for amp in ("off", "bf16"):
        spec = _no_search(shipped, {**params, "amp": amp}, epochs=args.epochs, name=f"amp-{amp}")
        rows[amp] = _arm(work, f"amp-{amp}", spec, timeout=None, outside=outside)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="ham-cpu", help="the shipped spec whose fixed settings and data are used")
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--outside", default="../shared/data/isic2018-test-ext")
    parser.add_argument("--model", default="tf_efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--target", default="diagnosis")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workdir", default="storage/bench-cpu-precision")
    args = parser.parse_args()
    if not cpu_bf16_supported():
        raise SystemExit("this CPU has no native bf16 (AVX512-BF16 or AMX): the bench would time its emulation")
    print(f"{args.model} at {args.image_size} px, {args.target}, {args.epochs} epochs, fp32 then bf16 "
          f"({platform.processor() or platform.machine()})", flush=True)
    rows = _arms(args)
    fp32, bf16 = rows["off"], rows["bf16"]
    diff = paired_auc_difference(np.asarray(fp32["target"]), np.asarray(bf16["scores"]), np.asarray(fp32["scores"]))
    summary = {"model": args.model, "image_size": args.image_size, "target": args.target, "epochs": args.epochs,
               "run_s": {"fp32": fp32["run_s"], "bf16": bf16["run_s"]},
               "run_speedup": fp32["run_s"] / bf16["run_s"],
               "wall_s": {"fp32": fp32["wall_s"], "bf16": bf16["wall_s"]},
               "in_search": {"fp32": fp32["in_search"], "bf16": bf16["in_search"]},
               "outside": {"fp32": fp32["outside"], "bf16": bf16["outside"]},
               "outside_bf16_minus_fp32": {"difference": diff.difference, "low": diff.low, "high": diff.high}}
    (Path(args.workdir) / "result.json").write_text(json.dumps(summary, indent=1))
    print(f"\nrun: fp32 {fp32['run_s']:.0f}s, bf16 {bf16['run_s']:.0f}s ({summary['run_speedup']:.2f}x); "
          f"in-search AUC fp32 {fp32['in_search']:.4f}, bf16 {bf16['in_search']:.4f}; outside fp32 "
          f"{fp32['outside']:.4f}, bf16 {bf16['outside']:.4f}\noutside bf16 - fp32: {diff}")


if __name__ == "__main__":
    main()
