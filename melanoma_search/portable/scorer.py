"""Score images with a portable ensemble: ONNX fold models, needing only onnxruntime, numpy and Pillow.

Copied as ``score.py`` into the folder ``python -m melanoma_search.portable`` writes, beside ``ensemble.json`` and
one ``.onnx`` file per fold model; it imports nothing of melanoma_search. Usage::

    python score.py IMAGES_DIR_OR_FILES... [--out scores.csv]

The folder is sealed: ``manifest.json`` lists every file's SHA-256 and ``manifest.sha256`` holds the manifest's own;
a folder whose files do not match (a file changed, truncated, swapped or missing) is refused in one line before
anything is scored.

Each fold model takes uint8 pixels (N, 3, S, S) and returns P(melanoma) with the member's test-time augmentation;
its output is ranked against that fold model's own out-of-fold predictions; per fold the members' ranks are blended
with their weights, and the folds are combined by averaging their probits (``score``); the score is calibrated to
a probability by the isotonic map the export fitted (``probability``), exactly as ``predict`` does. Images are
decoded with Pillow (libjpeg's draft mode for JPEGs) and resized with Pillow (box filter when shrinking, bilinear
when enlarging): the same calls as the toolkit's own decoding (melanoma_search/data/images.py), so both see the same
pixels.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from PIL import Image

SUFFIXES = (".jpg", ".jpeg", ".png")


def decode(path: Path, size: int) -> np.ndarray:
    """(3, size, size) uint8 RGB pixels of ``path``, squashed to a square."""
    with Image.open(path) as image:
        if image.format == "JPEG":
            image.draft("RGB", (size, size))
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            shrinking = rgb.size[0] > size or rgb.size[1] > size
            rgb = rgb.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


def percentiles(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each score's percentile among ``reference`` (sorted), ties counting half."""
    below = np.searchsorted(reference, scores, side="left")
    at_or_below = np.searchsorted(reference, scores, side="right")
    return (below + at_or_below) / (2.0 * max(len(reference), 1))


class SealError(Exception):
    """The folder is not as it was written."""


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_seal(folder: Path) -> None:
    """Refuse a portable folder whose manifest or files changed since it was written."""
    manifest, seal = folder / "manifest.json", folder / "manifest.sha256"
    for path in (manifest, seal):
        if not path.is_file():
            raise SealError(f"portable ensemble file missing: {path}")
    if seal.read_text().strip() != _digest(manifest):
        raise SealError(f"portable ensemble file changed since it was written (SHA-256 mismatch with "
                        f"manifest.sha256): {manifest}")
    for name, digest in json.loads(manifest.read_text())["files"].items():
        path = folder / name
        if not path.is_file():
            raise SealError(f"portable ensemble file missing: {path}")
        if _digest(path) != digest:
            raise SealError(f"portable ensemble file changed since it was written (SHA-256 mismatch): {path}")


def combine(ranks: dict[str, dict[int, np.ndarray]], weights: dict[str, float], *, rule: str, edge: float
            ) -> np.ndarray:
    """The blend, as ``predict`` forms it: ``probit`` (per fold the members' weighted percentiles, then the folds'
    probits averaged and turned back by the normal CDF), or ``mean`` (each member's mean percentile, weighted)."""
    total = sum(weights.values())
    if rule == "mean":
        return sum(np.mean(list(ranks[m].values()), axis=0) * w / total for m, w in weights.items())
    normal = NormalDist()
    folds = sorted(next(iter(ranks.values())))
    per_fold = np.stack([sum(ranks[m][k] * w / total for m, w in weights.items()) for k in folds], axis=1)
    if per_fold.shape[1] == 1:
        return per_fold[:, 0]
    probit = np.vectorize(normal.inv_cdf)(np.clip(per_fold, edge, 1.0 - edge))
    return np.vectorize(normal.cdf)(probit.mean(axis=1))


def score_images(folder: Path, paths: Sequence[Path], *, batch: int = 32,
                 session_options: Any = None) -> dict[str, np.ndarray]:
    """``score`` and ``probability`` of each image in ``paths``, with the ensemble in ``folder``.

    ``session_options``: an ``onnxruntime.SessionOptions`` for every fold model (threads, graph optimisations); the
    default is onnxruntime's own (every graph optimisation on)."""
    import onnxruntime

    spec: dict[str, Any] = json.loads((folder / "ensemble.json").read_text())
    ranks: dict[str, dict[int, np.ndarray]] = {}
    for member in spec["members"]:
        size = int(member["image_size"])
        pixels = np.stack([decode(p, size) for p in paths])
        ranks[member["name"]] = {}
        for fold in member["folds"]:
            session = onnxruntime.InferenceSession(str(folder / fold["file"]), sess_options=session_options,
                                                   providers=["CPUExecutionProvider"])
            raw = np.concatenate([session.run(None, {"pixels": pixels[i:i + batch]})[0]
                                  for i in range(0, len(pixels), batch)])
            ranks[member["name"]][int(fold["fold"])] = percentiles(raw.astype(np.float64),
                                                                   np.asarray(fold["reference"], dtype=np.float64))
    blended = combine(ranks, {m["name"]: m["weight"] for m in spec["members"]}, rule=spec.get("combine", "mean"),
                      edge=float(spec.get("edge", 1e-3)))
    calibration = spec["calibration"]
    probability = np.interp(blended, calibration["score"], calibration["probability"])
    return {"score": blended, "probability": probability}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files, or folders of them")
    parser.add_argument("--out", default="scores.csv")
    args = parser.parse_args(argv)
    paths: list[Path] = []
    for given in map(Path, args.images):
        paths += sorted(p for p in given.iterdir() if p.suffix.lower() in SUFFIXES) if given.is_dir() else [given]
    if not paths:
        print("error: no images given", file=sys.stderr)
        return 2
    folder = Path(__file__).resolve().parent
    try:
        check_seal(folder)
    except SealError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scores = score_images(folder, paths)
    with open(args.out, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_name", "score", "probability"])
        for path, score, probability in zip(paths, scores["score"], scores["probability"], strict=True):
            writer.writerow([path.stem, f"{score:.10f}", f"{probability:.10f}"])
    print(f"scored {len(paths)} image(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
