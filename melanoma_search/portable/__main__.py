"""``python -m melanoma_search.portable --ensemble DIR [--out DIR]``: an ensemble for machines without this toolkit.

Writes each fold model of an exported ensemble as ONNX (normalisation, test-time augmentation and the melanoma
read-out inside the graph), ``ensemble.json`` (each fold model's out-of-fold scale, the blend weights, the score ->
probability map, the operating points) and ``score.py``, a scorer that needs only onnxruntime, numpy and Pillow::

    python DIR/score.py IMAGES... --out scores.csv

It writes the same ``score`` and ``probability`` columns as ``predict`` (tested to agree within 0.02 on the score; the
images are resized with Pillow rather than OpenCV). Members that read patient metadata cannot be made portable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from melanoma_search.cli import handled, parser_for


def main(argv: Sequence[str] | None = None) -> int:
    parser = parser_for("melanoma_search.portable", __doc__)
    parser.add_argument("--ensemble", required=True, help="folder written by export --ensemble-dir")
    parser.add_argument("--out", help="a new folder (default: <storage-dir>/<the ensemble's study>/portable)")
    parser.add_argument("--storage-dir", default="storage", help="where the default --out goes")
    args = parser.parse_args(argv)
    return handled(lambda: _portable(args), interrupted="interrupted: nothing written")


def _portable(args: argparse.Namespace) -> int:
    from melanoma_search.ensemble import load_ensemble
    from melanoma_search.portable.onnx import write_portable

    ensemble = load_ensemble(args.ensemble)
    out = Path(args.out) if args.out else Path(args.storage_dir) / ensemble.study / "portable"
    folder = write_portable(ensemble, out)
    print(f"portable ensemble: {folder} (score images with: python {folder / 'score.py'} IMAGES... --out scores.csv;"
          " needs onnxruntime, numpy and Pillow)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
