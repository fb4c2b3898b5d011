"""How far an ensemble's probability is from the rates it claims: the Brier score, the expected calibration error and
the reliability curve, out of fold (cross-fitted) and on outside images.

Summarised with scikit-learn: the Brier score (``brier_score_loss``) and the reliability curve
(``calibration_curve``, equal-width bins), whose count-weighted gap is the expected calibration error. Out of fold,
the isotonic map is fitted on one half of the rows and scored on the other (a map scored on its own rows looks
perfect).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from melanoma_search.ensemble.calibration import fit_probability

__all__ = ["Calibration", "calibration_summary", "cross_fitted_probability"]


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
