"""The outside check: score an exported ensemble, member by member, on labelled images from somewhere else.

The in-search AUC says how a configuration ranks lesions of the collection it was searched on; users ship the
ensemble to other clinics and cameras. ``export --validate PATH`` scores every member and the blend on such a set
(any labelled dataset layout) and prints both numbers side by side, with the set's noise: an AUC on a few hundred
images moves by a few hundredths from the sample alone (the Hanley-McNeil standard error is printed beside it).
Members that read patient metadata are scored with the fields the set has; rows lacking them are counted and said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from melanoma_search.data.layouts import load_table
from melanoma_search.data.meta import rows_without_metadata
from melanoma_search.ensemble.calibration import rates
from melanoma_search.ensemble.folder import Ensemble
from melanoma_search.errors import DataError
from melanoma_search.metrics import auc_standard_error, partial_auc
from melanoma_search.report.calibration import Calibration, calibration_summary

__all__ = ["Validation", "validate_ensemble"]

@dataclass
class Validation:
    """In-search vs outside AUC of every member and of the blend, and what the outside scores were."""

    source: str
    n_images: int
    n_melanoma: int
    outside: dict[str, float]
    """Member name (and ``blend``) -> AUC on the outside images."""
    outside_pauc: dict[str, float]
    """Member name (and ``blend``) -> partial AUC above 80 % sensitivity on the outside images (0 to 0.2)."""
    in_search: dict[str, float]
    """Member name (and ``blend``) -> the AUC the search reported (pooled out-of-fold)."""
    standard_error: float
    """Of the blend's outside AUC (Hanley-McNeil)."""
    rows_without_meta: int
    meta_members: list[str]
    target: np.ndarray
    scores: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    points: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Operating point -> the (sensitivity, specificity) its out-of-fold threshold gives on these images."""
    calibration: Calibration | None = None
    """Of the calibrated probability on these images (``None`` for an ensemble without calibration)."""
    rows: pd.DataFrame | None = field(repr=False, default=None)
    """The images scored, with what their layout says of them (sex, age, site, source): for subgroups."""

    @property
    def gap(self) -> float:
        """In-search minus outside AUC of the blend: how much the search's number flattered the shipped ensemble."""
        return self.in_search["blend"] - self.outside["blend"]

    def lines(self) -> list[str]:
        out = [f"outside check on {self.source}: {self.n_images} image(s), {self.n_melanoma} melanoma(s); "
               f"AUC standard error about {self.standard_error:.3f}",
               f"  {'':<14}{'in-search':>10}{'outside':>10}{'gap':>8}{'outside pAUC':>14}"]
        for name in [*sorted(k for k in self.outside if k != "blend"), "blend"]:
            inside = self.in_search.get(name, float("nan"))
            out.append(f"  {name:<14}{inside:>10.4f}{self.outside[name]:>10.4f}{inside - self.outside[name]:>8.3f}"
                       f"{self.outside_pauc[name]:>14.4f}")
        for name, (sensitivity, specificity) in self.points.items():
            out.append(f"  operating point {name} outside: sensitivity {sensitivity:.3f}, specificity "
                       f"{specificity:.3f}")
        if self.calibration is not None:
            out.append("  " + self.calibration.line("of the calibrated probability, outside"))
        if self.meta_members:
            out.append(f"  members using metadata: {', '.join(self.meta_members)}; {self.rows_without_meta} of "
                       f"{self.n_images} row(s) have none (scored with every field missing)")
        else:
            out.append("  no member uses metadata")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "n_images": self.n_images, "n_melanoma": self.n_melanoma,
                "outside_auc": self.outside, "outside_pauc": self.outside_pauc, "in_search_auc": self.in_search,
                "gap": self.gap,
                "standard_error": self.standard_error, "rows_without_meta": self.rows_without_meta,
                "meta_members": self.meta_members,
                "operating_points": {n: {"sensitivity": a, "specificity": b} for n, (a, b) in self.points.items()},
                "calibration": None if self.calibration is None else self.calibration.to_dict()}


def validate_ensemble(ensemble: Ensemble, path: str | Path, *, in_search: dict[str, float], device: torch.device,
                      log: Callable[[str], None] = print) -> Validation:
    """Score ``ensemble`` on the labelled images at ``path``; ``in_search``: the search's AUC per member and blend."""
    table = load_table(Path(path))
    rows = table[table["split"].eq("train")].reset_index(drop=True)  # the labelled rows of any layout
    target = rows["target"].to_numpy()
    if len(np.unique(target)) < 2:
        raise DataError(f"--validate {path}: needs both melanoma and benign images to score an AUC")
    seen = ensemble.trained_on(rows)
    if seen:
        shown = ", ".join(seen[:3]) + (", ..." if len(seen) > 3 else "")
        raise DataError(f"--validate {path}: {len(seen)} of its {len(rows)} image(s) are images this ensemble's "
                        f"study trained on, by name or by file content ({shown}): an outside check needs images the "
                        "study never saw")
    if ensemble.training is None:
        log(f"(no training image list in {ensemble.root}: an earlier export; overlap with {path} not checked)")
    rows.attrs["has_meta"] = True  # whatever metadata the set has is used; missing fields are encoded as missing
    log(f"outside check: scoring {len(rows)} image(s) of {path} with {len(ensemble.members)} member(s)")
    ranked = ensemble.member_scores(rows, device=device, allow_missing_meta=True)
    blended = ensemble.blend(ranked)
    scored = {**ranked, "blend": blended}
    outside = {name: float(roc_auc_score(target, scores)) for name, scores in scored.items()}
    outside_pauc = {name: partial_auc(target, scores) for name, scores in scored.items()}
    positives = int(target.sum())
    no_meta = rows_without_metadata(rows)
    points = {name: rates(target, blended, point.threshold) for name, point in ensemble.operating_points().items()}
    calibration = (calibration_summary(target, ensemble.probability(blended)) if ensemble.calibration is not None
                   else None)
    return Validation(source=str(path), n_images=len(rows), n_melanoma=positives, outside=outside,
                      outside_pauc=outside_pauc, in_search=dict(in_search),
                      standard_error=auc_standard_error(outside["blend"], positives=positives,
                                                        negatives=len(rows) - positives),
                      rows_without_meta=no_meta, meta_members=ensemble.meta_members(), target=target,
                      scores={**ranked, "blend": blended}, points=points, calibration=calibration, rows=rows)
