"""Pseudo-labels: an exported ensemble's calibrated melanoma probability for images nobody labelled.

The 2020 runners-up trained on soft pseudo-labels of the competition's test images, and Noisy Student (Xie et al.
2020) repeats it: a teacher labels unlabelled images, a noisier student learns from labelled + pseudo-labelled
images, the student teaches the next round. It pays most where the images to score come from another collection
than the training set: the student adapts to them without their labels.

Only the images and the metadata they come with are read (:func:`~melanoma_search.data.layouts.read_images_to_score`
has no target column), so a folder with a ``labels.csv`` can be pseudo-labelled without its labels ever being seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from melanoma_search.data.meta import PATIENT_FIELDS
from melanoma_search.ensemble.folder import Ensemble

__all__ = ["PseudoLabels", "pseudo_label", "read_source"]


@dataclass(frozen=True)
class PseudoLabels:
    """The labelled rows and where they came from (written as ``pseudo.csv`` and ``pseudo.json`` beside it)."""

    rows: pd.DataFrame
    """``image_name``, ``image_path``, ``target`` (calibrated P(melanoma)), ``confidence`` (``|2p - 1|``),
    ``agreement`` (1 minus the spread of the members' percentile scores: 1 when they all agree), ``blend_score``
    and the metadata the images came with."""
    source: dict[str, Any]

    def write(self, out: str | Path) -> Path:
        """``out`` and ``pseudo.json`` beside it, written whole: each file is renamed into place once complete, and
        the JSON records the CSV's SHA-256, so a pair a crash split (a new CSV beside an old JSON) is never read as
        one (:func:`read_source`)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        csv = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
        self.rows.to_csv(csv, index=False)
        source = out.with_name(f".{out.stem}.json.partial-{uuid.uuid4().hex[:8]}")
        source.write_text(json.dumps({**self.source, "csv_sha256": _sha256(csv)}, indent=1))
        os.replace(csv, out)
        os.replace(source, out.with_suffix(".json"))
        return out

    def summary(self) -> str:
        target = self.rows["target"]
        return (f"{len(self.rows)} image(s) pseudo-labelled by {self.source['members']} member(s) of "
                f"{self.source['study']} (round {self.source['teacher_round']}): mean P(melanoma) "
                f"{target.mean():.3f}, {int(target.gt(0.5).sum())} above 0.5, median confidence "
                f"{self.rows['confidence'].median():.2f}, median agreement {self.rows['agreement'].median():.2f}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_source(out: str | Path) -> dict[str, Any] | None:
    """Where the pseudo-labels at ``out`` came from (``pseudo.json``), or ``None`` when there are none or the pair
    is not one whole write (missing, unreadable, or the CSV is not the one the JSON was written with)."""
    out = Path(out)
    try:
        source = json.loads(out.with_suffix(".json").read_text())
        return source if isinstance(source, dict) and source.get("csv_sha256") == _sha256(out) else None
    except (OSError, ValueError):
        return None


def pseudo_label(ensemble: Ensemble, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
                 batch_size: int = 32) -> PseudoLabels:
    """Score ``rows`` (read by ``read_images_to_score``) with ``ensemble`` and turn the blend into soft labels."""
    folds = ensemble.fold_scores(rows, device=device, allow_missing_meta=allow_missing_meta, batch_size=batch_size)
    ranked = {name: np.mean(list(by_fold.values()), axis=0) for name, by_fold in folds.items()}
    blended = ensemble.deployed(folds)  # predict's score: what the probability map describes
    probability = ensemble.probability(blended)
    spread = np.ptp(np.stack([ranked[m.name] for m in ensemble.members]), axis=0)
    out = pd.DataFrame({
        "image_name": rows["image_name"].to_numpy(),
        "image_path": rows["image_path"].to_numpy(),
        "target": np.round(probability, 6),
        "confidence": np.round(np.abs(2 * probability - 1), 6),
        "agreement": np.round(1 - spread, 6),
        "blend_score": np.round(blended, 6),
        "patient_id": rows["patient_id"].to_numpy(),
    })
    if rows.attrs.get("has_meta"):
        for field in PATIENT_FIELDS:
            out[field] = rows[field].to_numpy()
    source = {"ensemble": str(ensemble.root.resolve()), "seal": ensemble.seal, "study": ensemble.manifest.get("study"),
              "teacher_round": ensemble.round, "members": len(ensemble.members),
              "images": rows.attrs.get("origin"), "n_images": len(out)}
    return PseudoLabels(rows=out, source=source)
