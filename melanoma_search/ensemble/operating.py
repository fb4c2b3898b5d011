"""What a clinic reads off an ensemble: a calibrated probability, and operating points with their sensitivity and
specificity, chosen on the out-of-fold blend and checked on outside images.

The blend's score ranks (it is a mean of percentiles): 0.9 means "above 90 % of the training images", not "90 %
melanoma". ``probability`` maps it through isotonic regression of the labels on the out-of-fold scores (monotone, so
it never reorders images; it reads the training set's melanoma rate). An operating point is a threshold on the score:
``sens90`` / ``sens95`` are the highest thresholds that keep out-of-fold sensitivity at 0.90 / 0.95, ``youden`` the one
maximising sensitivity + specificity - 1. Each comes with its out-of-fold sensitivity and specificity and bootstrap
95 % intervals (images resampled, threshold fixed), because a few hundred melanomas leave them uncertain.

Calibration is summarised with scikit-learn: the Brier score (``brier_score_loss``) and the reliability curve
(``calibration_curve``, equal-width bins), whose count-weighted gap is the expected calibration error. Out of fold,
the isotonic map is fitted on one half of the rows and scored on the other (a map scored on its own rows looks
perfect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, roc_curve

__all__ = [
    "POINTS",
    "Calibration",
    "OperatingPoint",
    "calibration_summary",
    "choose_operating_points",
    "cross_fitted_probability",
    "fit_probability",
    "rates",
]

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

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "sensitivity": self.sensitivity, "specificity": self.specificity,
                "sensitivity_ci": list(self.sensitivity_ci), "specificity_ci": list(self.specificity_ci)}

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> OperatingPoint:
        sens_low, sens_high = (float(v) for v in data["sensitivity_ci"])
        spec_low, spec_high = (float(v) for v in data["specificity_ci"])
        return cls(name=name, threshold=float(data["threshold"]), sensitivity=float(data["sensitivity"]),
                   specificity=float(data["specificity"]), sensitivity_ci=(sens_low, sens_high),
                   specificity_ci=(spec_low, spec_high))

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


def choose_operating_points(target: np.ndarray, score: np.ndarray, *, resamples: int = 1000, seed: int = 0
                            ) -> list[OperatingPoint]:
    """The operating points of :data:`POINTS` on out-of-fold scores, with bootstrap intervals of their rates."""
    target, score = np.asarray(target, dtype=np.float64), np.asarray(score, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(target), len(target)) for _ in range(resamples)]
    points = []
    for name, sensitivity in POINTS.items():
        threshold = _threshold(target, score, sensitivity)
        sens, spec = rates(target, score, threshold)
        boot = np.array([rates(target[d], score[d], threshold) for d in draws
                         if 0 < target[d].sum() < len(d)])
        low, high = np.percentile(boot, [2.5, 97.5], axis=0)
        points.append(OperatingPoint(name=name, threshold=threshold, sensitivity=sens, specificity=spec,
                                     sensitivity_ci=(float(low[0]), float(high[0])),
                                     specificity_ci=(float(low[1]), float(high[1]))))
    return points


def fit_probability(score: np.ndarray, target: np.ndarray) -> IsotonicRegression:
    """The score -> P(melanoma) map: isotonic regression of the labels on the scores."""
    fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    fit.fit(np.asarray(score, dtype=np.float64), np.asarray(target, dtype=np.float64))
    return fit


@dataclass(frozen=True)
class Calibration:
    """How far probabilities are from the rates they claim: Brier score, expected calibration error, and the
    reliability curve (mean predicted vs observed rate per bin)."""

    brier: float
    ece: float
    predicted: list[float]
    observed: list[float]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"brier": self.brier, "ece": self.ece, "predicted": self.predicted, "observed": self.observed,
                "n": self.n}

    def line(self, where: str) -> str:
        return f"calibration {where}: Brier {self.brier:.4f}, expected calibration error {self.ece:.4f} (n {self.n})"


def calibration_summary(target: np.ndarray, probability: np.ndarray, *, bins: int = 10) -> Calibration:
    target, probability = np.asarray(target, dtype=np.float64), np.asarray(probability, dtype=np.float64)
    observed, predicted = calibration_curve(target, probability, n_bins=bins, strategy="uniform")
    # calibration_curve drops empty bins; the same edges give each kept bin's count for the weighted gap
    counts = np.bincount(np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], probability), minlength=bins)
    counts = counts[counts > 0]
    ece = float(np.sum(counts * np.abs(observed - predicted)) / len(target))
    return Calibration(brier=float(brier_score_loss(target, probability)), ece=ece,
                       predicted=[float(v) for v in predicted], observed=[float(v) for v in observed],
                       n=len(target))


def cross_fitted_probability(score: np.ndarray, target: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Each out-of-fold row's probability from an isotonic map fitted on the other half of the rows (so its
    calibration is judged on rows the map never saw)."""
    score, target = np.asarray(score, dtype=np.float64), np.asarray(target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    first = np.zeros(len(target), dtype=bool)
    for label in (0.0, 1.0):
        rows = np.flatnonzero(target == label)
        first[rng.permutation(rows)[: len(rows) // 2]] = True
    out = np.zeros(len(target))
    for fit_rows, score_rows in ((first, ~first), (~first, first)):
        out[score_rows] = fit_probability(score[fit_rows], target[fit_rows]).predict(score[score_rows])
    return out
