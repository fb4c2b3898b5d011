"""What an ensemble ships beside its score: the score -> probability map and the operating points (thresholds with
their sensitivity and specificity), chosen on the out-of-fold blend; ``predict`` applies both.

The blend's score ranks (it is a mean of percentiles): 0.9 means "above 90 % of the training images", not "90 %
melanoma". ``probability`` maps it through isotonic regression of the labels on the out-of-fold scores (monotone, so
it never reorders images; it reads the training set's melanoma rate). An operating point is a threshold on the score:
``sens90`` / ``sens95`` are the highest thresholds that keep out-of-fold sensitivity at 0.90 / 0.95, ``youden`` the one
maximising sensitivity + specificity - 1. Each comes with its out-of-fold sensitivity and specificity and bootstrap
95 % intervals (threshold fixed; whole patients resampled where the rows have patient ids that group images, images
otherwise), because a few hundred melanomas leave them uncertain.

How well the probability holds (Brier score, expected calibration error, reliability curve) is described in
:mod:`melanoma_search.report.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_curve

__all__ = ["POINTS", "OperatingPoint", "calibrate", "choose_operating_points", "fit_probability", "rates"]

#: Operating points every export records: name -> the sensitivity it keeps (None: Youden's J).
POINTS: dict[str, float | None] = {"sens90": 0.90, "sens95": 0.95, "youden": None}


@dataclass(frozen=True)
class OperatingPoint:
    name: str
    threshold: float
    """On the blend's score (``predict``'s ``score`` column): at or above it, the image is flagged."""
    sensitivity: float
    specificity: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    resampled: str = "images"
    """What the intervals' bootstrap resampled: ``patients`` or ``images``."""

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "sensitivity": self.sensitivity, "specificity": self.specificity,
                "sensitivity_ci": list(self.sensitivity_ci), "specificity_ci": list(self.specificity_ci),
                "resampled": self.resampled}

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> OperatingPoint:
        sens_low, sens_high = (float(v) for v in data["sensitivity_ci"])
        spec_low, spec_high = (float(v) for v in data["specificity_ci"])
        return cls(name=name, threshold=float(data["threshold"]), sensitivity=float(data["sensitivity"]),
                   specificity=float(data["specificity"]), sensitivity_ci=(sens_low, sens_high),
                   specificity_ci=(spec_low, spec_high), resampled=str(data.get("resampled", "images")))

    def line(self) -> str:
        s_lo, s_hi = self.sensitivity_ci
        p_lo, p_hi = self.specificity_ci
        return (f"{self.name}: score >= {self.threshold:.4f} -> sensitivity {self.sensitivity:.3f} "
                f"[{s_lo:.3f}, {s_hi:.3f}], specificity {self.specificity:.3f} [{p_lo:.3f}, {p_hi:.3f}]")


def rates(target: np.ndarray, score: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of flagging ``score >= threshold``."""
    target, flagged = np.asarray(target) > 0.5, np.asarray(score) >= threshold
    return float(flagged[target].mean()), float((~flagged[~target]).mean())


def _threshold(target: np.ndarray, score: np.ndarray, sensitivity: float | None) -> float:
    fpr, tpr, thresholds = roc_curve(target, score)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if sensitivity is None:
        return float(thresholds[int(np.argmax(tpr - fpr))])
    return float(thresholds[int(np.argmax(tpr >= sensitivity - 1e-12))])  # the first (highest) that keeps it


def choose_operating_points(target: np.ndarray, score: np.ndarray, *, resamples: int = 1000, seed: int = 0,
                            groups: np.ndarray | None = None) -> list[OperatingPoint]:
    """The operating points of :data:`POINTS` on out-of-fold scores, with bootstrap intervals of their rates
    (``groups``: the rows' patients, resampled whole; see :func:`~melanoma_search.metrics.bootstrap_draws`)."""
    from melanoma_search.metrics import bootstrap_draws, resampled_unit

    target, score = np.asarray(target, dtype=np.float64), np.asarray(score, dtype=np.float64)
    draws = bootstrap_draws(len(target), groups=groups, resamples=resamples, seed=seed)
    points = []
    for name, sensitivity in POINTS.items():
        threshold = _threshold(target, score, sensitivity)
        sens, spec = rates(target, score, threshold)
        boot = np.array([rates(target[d], score[d], threshold) for d in draws
                         if 0 < target[d].sum() < len(d)])
        low, high = np.percentile(boot, [2.5, 97.5], axis=0)
        points.append(OperatingPoint(name=name, threshold=threshold, sensitivity=sens, specificity=spec,
                                     sensitivity_ci=(float(low[0]), float(high[0])),
                                     specificity_ci=(float(low[1]), float(high[1])),
                                     resampled=resampled_unit(groups)))
    return points


def fit_probability(score: np.ndarray, target: np.ndarray) -> IsotonicRegression:
    """The score -> P(melanoma) map: isotonic regression of the labels on the scores."""
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    fit.fit(np.asarray(score, dtype=np.float64), np.asarray(target, dtype=np.float64))
    return fit


def calibrate(single: np.ndarray, target: np.ndarray, *, removed: float
              ) -> tuple[IsotonicRegression, dict[str, float]]:
    """The probability map and the operating points' thresholds for the combination of fold models, from the
    out-of-fold rows scored by one fold model (``single``) and the variance that combining them removes (0: read
    the combination as one fold model; see :func:`~melanoma_search.ensemble.scale.on_deployed_scale`)."""
    from melanoma_search.ensemble.scale import on_deployed_scale

    scores = on_deployed_scale(single, target, removed=removed) if removed > 0 else np.asarray(single, float)
    return (fit_probability(scores, target),
            {name: _threshold(np.asarray(target, float), scores, sensitivity) for name, sensitivity in POINTS.items()})
