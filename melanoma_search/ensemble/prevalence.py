"""The melanoma rate where the ensemble is used: the probability moved to it, and what each operating point means
there.

A probability calibrated on the training rows carries their melanoma rate: HAM's sample is 22 % melanoma, ISIC 2020
1.8 %, a screening clinic lower still. A 0.50 at 22 % is about 0.07 at 2 %. Given the rate where the ensemble is
used (``--prevalence P``), the probability is moved by the prior-shift correction of Saerens, Latinne and Decaestecker
(Neural Computation 14, 2002): each class's likelihood is kept and the prior replaced,

    p' = (P / t) p / ((P / t) p + ((1 - P) / (1 - t)) (1 - p))       t: the training rows' rate,

which never reorders images (so ``score``, AUC and the operating points' thresholds are unchanged). A threshold's
sensitivity and specificity do not depend on the rate, but what a flag means does: the share of flagged lesions that
are melanoma (PPV), of unflagged ones that are not (NPV), and how many lesions are flagged (biopsied or referred)
per melanoma found, 1 / PPV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from melanoma_search.ensemble.calibration import OperatingPoint
from melanoma_search.errors import ConfigError

__all__ = ["PredictiveValues", "check_prevalence", "predictive_values", "prevalence_lines", "shift_prior"]


def check_prevalence(value: float, *, option: str = "--prevalence") -> float:
    """A melanoma rate strictly between 0 and 1, or one line saying what is wrong."""
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{option} {value:g}: the melanoma rate where the ensemble is used, strictly between 0 and 1 "
                          "(e.g. 0.02 for 2 %)")
    return float(value)


def shift_prior(probability: np.ndarray, *, trained: float, deployed: float) -> np.ndarray:
    """``probability`` (calibrated at the training rate ``trained``) at the rate ``deployed`` (Saerens et al.)."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    up, down = deployed / trained, (1.0 - deployed) / (1.0 - trained)
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = up * p / (up * p + down * (1.0 - p))
    return np.where(np.isnan(p), np.nan, np.nan_to_num(shifted, nan=0.0))


@dataclass(frozen=True)
class PredictiveValues:
    """What an operating point's flag means at a melanoma rate."""

    point: str
    prevalence: float
    ppv: float
    """Share of flagged lesions that are melanoma."""
    npv: float
    """Share of unflagged lesions that are not."""
    flagged_per_melanoma: float
    """Lesions flagged (biopsied or referred) per melanoma found: 1 / PPV."""

    def line(self) -> str:
        return (f"{self.point} at {self.prevalence:.1%} melanoma: PPV {self.ppv:.3f}, NPV {self.npv:.4f}, "
                f"{self.flagged_per_melanoma:.1f} lesions flagged per melanoma found")


def predictive_values(point: OperatingPoint, *, prevalence: float) -> PredictiveValues:
    """PPV, NPV and lesions flagged per melanoma found at ``point``'s out-of-fold sensitivity and specificity."""
    sens, spec, rate = point.sensitivity, point.specificity, prevalence
    flagged_true, flagged_false = sens * rate, (1.0 - spec) * (1.0 - rate)
    missed, cleared = (1.0 - sens) * rate, spec * (1.0 - rate)
    ppv = flagged_true / (flagged_true + flagged_false) if flagged_true + flagged_false > 0 else float("nan")
    npv = cleared / (cleared + missed) if cleared + missed > 0 else float("nan")
    return PredictiveValues(point=point.name, prevalence=rate, ppv=ppv, npv=npv,
                            flagged_per_melanoma=1.0 / ppv if ppv > 0 else float("inf"))


def prevalence_lines(points: list[OperatingPoint], *, prevalence: float, trained: float) -> list[str]:
    """What the export and ``predict`` print for a melanoma rate: the probability's move and each point's meaning."""
    lines = [f"prevalence {prevalence:.1%}: probabilities moved from the training rows' melanoma rate {trained:.1%} "
             "(prior shift, Saerens et al. 2002; the ranking and thresholds are unchanged); at each operating point "
             "(its out-of-fold sensitivity and specificity):"]
    return lines + [f"  {predictive_values(p, prevalence=prevalence).line()}" for p in points]
