"""What describing the combination of fold models changes on labelled images: the probability's calibration error
and the sensitivity and specificity at each operating point, with the calibration fitted on one fold model's
out-of-fold scores as they are ("without") and on those scores shrunk by what combining the fold models removes
("with", :class:`~melanoma_search.ensemble.scale.DeployedScale`), paired on the same images.

"With" is what ``predict`` gives. Where the removed variance was measured on these very images (an export whose
study has no test split measures it on the outside images of ``--validate``; it reads no label), each half of the
images gets a calibration measured on the other half, so no image is described by a figure fitted on itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from melanoma_search.ensemble.calibration import calibrate
from melanoma_search.ensemble.scale import DeployedScale
from melanoma_search.metrics import PairedDifference, paired_auc_difference
from melanoma_search.report.calibration import calibration_summary

__all__ = ["Described", "ScaleCheck", "compare_scales", "describe", "halves_described"]


@dataclass(frozen=True)
class Described:
    """Labelled images as one calibration describes them: each image's probability, and per operating point
    whether it is flagged."""

    probability: np.ndarray
    flags: dict[str, np.ndarray]


def describe(deployed: np.ndarray, single: np.ndarray, oof_target: np.ndarray, *, removed: float) -> Described:
    """``deployed`` scores described by the calibration fitted for ``removed`` on the out-of-fold rows."""
    probability_map, thresholds = calibrate(single, oof_target, removed=removed)
    return Described(probability=np.asarray(probability_map.predict(deployed)),
                     flags={name: (deployed >= t).astype(float) for name, t in thresholds.items()})


def halves_described(per_fold: np.ndarray, deployed: np.ndarray, single: np.ndarray, oof_target: np.ndarray, *,
                     seed: int = 0) -> Described:
    """Each half of the images described with the variance measured on the other half (random halves: the
    measurement reads no label)."""
    order = np.random.default_rng(seed).permutation(len(deployed))
    halves = (order[: len(order) // 2], order[len(order) // 2:])
    probability = np.zeros(len(deployed))
    flags: dict[str, np.ndarray] = {}
    for measure_rows, rows in (halves, halves[::-1]):
        scale = DeployedScale.measure(per_fold[measure_rows], source="half")
        part = describe(deployed[rows], single, oof_target, removed=scale.variance if scale else 0.0)
        probability[rows] = part.probability
        for name, flagged in part.flags.items():
            flags.setdefault(name, np.zeros(len(deployed)))[rows] = flagged
    return Described(probability=probability, flags=flags)


def _sensitivity(labels: np.ndarray, flags: np.ndarray) -> float:
    return float(flags[labels > 0.5].mean())


def _specificity(target: np.ndarray, flags: np.ndarray) -> float:
    return float(1.0 - flags[target < 0.5].mean())


def _ece(labels: np.ndarray, probability: np.ndarray) -> float:
    return calibration_summary(labels, probability).ece


@dataclass(frozen=True)
class ScaleCheck:
    """Without and with the deployed scale, on the same labelled images (differences: with minus without)."""

    how: str
    ece: tuple[float, float]
    ece_difference: PairedDifference
    points: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Operating point -> sensitivity and specificity without and with, and the sensitivity's paired difference."""

    def lines(self) -> list[str]:
        out = [f"  describing the combination of fold models ({self.how}): without -> with, paired on these images",
               f"    expected calibration error {self.ece[0]:.4f} -> {self.ece[1]:.4f} (difference "
               f"{self.ece_difference})"]
        for name, point in self.points.items():
            out.append(f"    {name}: sensitivity {point['sensitivity'][0]:.3f} -> {point['sensitivity'][1]:.3f} "
                       f"(difference {point['difference']}), specificity {point['specificity'][0]:.3f} -> "
                       f"{point['specificity'][1]:.3f}")
        return out

    def to_dict(self) -> dict[str, Any]:
        def paired(d: PairedDifference) -> dict[str, float]:
            return {"difference": d.difference, "standard_error": d.standard_error, "low": d.low, "high": d.high}

        return {"how": self.how, "ece_without": self.ece[0], "ece_with": self.ece[1],
                "ece_difference": paired(self.ece_difference),
                "points": {n: {"sensitivity_without": p["sensitivity"][0], "sensitivity_with": p["sensitivity"][1],
                               "specificity_without": p["specificity"][0], "specificity_with": p["specificity"][1],
                               "sensitivity_difference": paired(p["difference"])} for n, p in self.points.items()}}


def compare_scales(target: np.ndarray, without: Described, with_scale: Described, *, how: str,
                   resamples: int = 1000) -> ScaleCheck:
    """The :class:`ScaleCheck` of two descriptions of the same labelled images."""
    def paired(ours: np.ndarray, theirs: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float]
               ) -> PairedDifference:
        return paired_auc_difference(target, ours, theirs, metric=metric, resamples=resamples)

    points: Mapping[str, dict[str, Any]] = {
        name: {"sensitivity": (_sensitivity(target, without.flags[name]), _sensitivity(target, flags)),
               "specificity": (_specificity(target, without.flags[name]), _specificity(target, flags)),
               "difference": paired(flags, without.flags[name], _sensitivity)}
        for name, flags in with_scale.flags.items()}
    return ScaleCheck(how=how, ece=(_ece(target, without.probability), _ece(target, with_scale.probability)),
                      ece_difference=paired(with_scale.probability, without.probability, _ece), points=dict(points))
