"""What ships beside the score (operating points on the out-of-fold blend) and how honestly its calibration is
described (cross-fitted)."""

from __future__ import annotations

import numpy as np

from melanoma_search.ensemble.calibration import choose_operating_points, rates
from melanoma_search.report.calibration import calibration_summary, cross_fitted_probability


def test_operating_points_keep_their_sensitivity_and_calibration_is_scored_honestly() -> None:
    rng = np.random.default_rng(3)
    target = (rng.random(2000) < 0.2).astype(float)
    score = 1 / (1 + np.exp(-(2.0 * target + rng.normal(0, 1, 2000))))
    points = {p.name: p for p in choose_operating_points(target, score, resamples=200)}
    assert points["sens90"].sensitivity >= 0.90 and points["sens95"].sensitivity >= 0.95
    assert points["sens95"].threshold <= points["sens90"].threshold  # more sensitive: a lower bar
    assert points["sens95"].specificity <= points["sens90"].specificity
    low, high = points["sens90"].specificity_ci
    assert low < points["sens90"].specificity < high and high - low < 0.1
    assert rates(target, score, points["youden"].threshold) == (points["youden"].sensitivity,
                                                                points["youden"].specificity)
    # a probability that is the true rate is well calibrated; one squeezed to 0.5 is not
    truth = 1 / (1 + np.exp(-np.log(0.25) - 2.0 * (score > 0.6)))
    labels = (rng.random(2000) < truth).astype(float)
    good, bad = calibration_summary(labels, truth), calibration_summary(labels, np.full(2000, 0.5))
    assert good.ece < 0.03 < bad.ece and good.brier < bad.brier
    fitted = cross_fitted_probability(score, target)  # an isotonic map scored on rows it never saw
    assert calibration_summary(target, fitted).ece < 0.05 and fitted.min() >= 0 and fitted.max() <= 1
