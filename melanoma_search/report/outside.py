"""The outside check: score an exported ensemble, member by member, on labelled images from somewhere else.

The in-search AUC says how a configuration ranks lesions of the collection it was searched on; users ship the
ensemble to other clinics and cameras. ``export --validate PATH`` scores every member and the blend on such a set
(any labelled dataset layout) and prints both numbers side by side, with the set's noise: an AUC on a few hundred
images moves by a few hundredths from the sample alone (the Hanley-McNeil standard error is printed beside it).
Members that read patient metadata are scored with the fields the set has; rows lacking them are counted and said.

The blend is scored as ``predict`` scores it (its fold models combined) and described as ``predict`` describes it
(the probability map and the operating points fitted for that combination:
:class:`~melanoma_search.ensemble.scale.DeployedScale`). An export whose study has no test split measures the
combination on these images (reading no label); their own figures are then cross-fitted over their halves, and
printed beside the figures of a calibration that ignores the combination (:mod:`.scale_check`).
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
from melanoma_search.ensemble.scale import per_fold_blend
from melanoma_search.errors import DataError
from melanoma_search.metrics import auc_standard_error, partial_auc
from melanoma_search.report.calibration import Calibration, calibration_summary
from melanoma_search.report.scale_check import Described, ScaleCheck, compare_scales, describe, halves_described

__all__ = ["Validation", "outside_scores", "validate_ensemble"]

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
    """Member name (and ``blend``) -> the AUC the search reported (out of fold, the mean of the folds')."""
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
    scale_check: ScaleCheck | None = None
    """Calibration and operating points without and with the description of the combination, paired on these
    images."""

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
        if self.scale_check is not None:
            out += self.scale_check.lines()
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
                "calibration": None if self.calibration is None else self.calibration.to_dict(),
                "scale_check": None if self.scale_check is None else self.scale_check.to_dict()}


def outside_scores(ensemble: Ensemble, path: str | Path, *, device: torch.device, log: Callable[[str], None]
                   ) -> tuple[pd.DataFrame, dict[str, dict[int, np.ndarray]]]:
    """The labelled images at ``path`` (any layout) and every fold model's percentile of them; refused when they
    lack a class or include images the study trained on."""
    table = load_table(Path(path))
    rows = table[table["split"].eq("train")].reset_index(drop=True)  # the labelled rows of any layout
    if len(np.unique(rows["target"])) < 2:
        raise DataError(f"--validate {path}: needs both melanoma and benign images to score an AUC")
    seen = ensemble.trained_on(rows)
    if seen:
        shown = ", ".join(seen[:3]) + (", ..." if len(seen) > 3 else "")
        raise DataError(f"--validate {path}: {len(seen)} of its {len(rows)} image(s) are images this ensemble's "
                        "study trained on, by name, by file content or as a near-duplicate (a resized or re-encoded "
                        f"copy) ({shown}): an outside check needs images the study never saw")
    if ensemble.training is None:
        log(f"(no training image list in {ensemble.root}: an earlier export; overlap with {path} not checked)")
    rows.attrs["has_meta"] = True  # whatever metadata the set has is used; missing fields are encoded as missing
    log(f"outside check: scoring {len(rows)} image(s) of {path} with {len(ensemble.members)} member(s)")
    return rows, ensemble.fold_scores(rows, device=device, allow_missing_meta=True)


def _described(ensemble: Ensemble, folds: dict[str, dict[int, np.ndarray]], deployed: np.ndarray,
               target: np.ndarray, *, measured_here: bool) -> tuple[Described, ScaleCheck] | None:
    """These images as predict describes them, and beside a calibration that ignores the combination of fold models
    (``None``: an ensemble without a measured combination)."""
    scale, calibration = ensemble.deployed_scale, ensemble.calibration
    per_fold = per_fold_blend(folds, ensemble.weights)
    if scale is None or calibration is None or "oof" not in calibration or per_fold is None:
        return None
    single, oof_target = calibration["oof"].to_numpy(float), calibration["target"].to_numpy(float)
    if measured_here:
        shipped, how = halves_described(per_fold, deployed, single, oof_target), (
            "measured on these images for the export to ship; each half described by the other half's measure")
    else:
        shipped, how = describe(deployed, single, oof_target, removed=scale.variance), f"measured on {scale.source}"
    without = describe(deployed, single, oof_target, removed=0.0)
    return shipped, compare_scales(target, without, shipped, how=how)


def validate_ensemble(ensemble: Ensemble, path: str | Path, *, in_search: dict[str, float], device: torch.device,
                      log: Callable[[str], None] = print, scored: tuple[pd.DataFrame, dict[str, Any]] | None = None,
                      measured_here: bool = False) -> Validation:
    """Score ``ensemble`` on the labelled images at ``path``; ``in_search``: the search's AUC per member and blend.
    ``scored``: :func:`outside_scores` already taken; ``measured_here``: the ensemble's deployed scale was measured
    on these images (their figures are then cross-fitted)."""
    rows, folds = scored if scored is not None else outside_scores(ensemble, path, device=device, log=log)
    target = rows["target"].to_numpy()
    ranked = {name: np.mean(list(by_fold.values()), axis=0) for name, by_fold in folds.items()}
    blended = ensemble.deployed(folds)
    scores = {**ranked, "blend": blended}
    outside = {name: float(roc_auc_score(target, values)) for name, values in scores.items()}
    positives = int(target.sum())
    described = _described(ensemble, folds, blended, target, measured_here=measured_here)
    if described is not None:
        shipped, check = described
        points = {name: (float(flags[target > 0.5].mean()), float(1 - flags[target < 0.5].mean()))
                  for name, flags in shipped.flags.items()}
        calibration: Calibration | None = calibration_summary(target, shipped.probability)
    else:
        check = None
        points = {name: rates(target, blended, p.threshold) for name, p in ensemble.operating_points().items()}
        calibration = (calibration_summary(target, ensemble.probability(blended))
                       if ensemble.calibration is not None else None)
    return Validation(source=str(path), n_images=len(rows), n_melanoma=positives, outside=outside,
                      outside_pauc={name: partial_auc(target, values) for name, values in scores.items()},
                      in_search=dict(in_search),
                      standard_error=auc_standard_error(outside["blend"], positives=positives,
                                                        negatives=len(rows) - positives),
                      rows_without_meta=rows_without_metadata(rows), meta_members=ensemble.meta_members(),
                      target=target, scores=scores, points=points, calibration=calibration, rows=rows,
                      scale_check=check)
