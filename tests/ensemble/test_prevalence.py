"""The probability at another melanoma rate, and what an operating point means there, against hand-worked figures."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma_search.ensemble.calibration import OperatingPoint
from melanoma_search.ensemble.prevalence import check_prevalence, predictive_values, shift_prior
from melanoma_search.errors import ConfigError


def test_a_half_at_the_training_rate_is_about_seven_percent_at_two() -> None:
    # odds 1 * (0.02 / 0.98) / (0.22 / 0.78) = 0.0724 -> p = 0.0675 (the "about 0.07")
    assert shift_prior(np.array([0.5]), trained=0.22, deployed=0.02)[0] == pytest.approx(0.0675, abs=1e-4)
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0, np.nan])
    same = shift_prior(p, trained=0.3, deployed=0.3)
    assert np.allclose(same[:5], p[:5]) and np.isnan(same[5])  # the same rate changes nothing
    moved = shift_prior(p[:5], trained=0.22, deployed=0.02)
    assert moved[0] == 0.0 and moved[4] == 1.0 and np.all(np.diff(moved) > 0)  # monotone: never reorders


def test_predictive_values_of_an_operating_point() -> None:
    point = OperatingPoint(name="sens90", threshold=0.5, sensitivity=0.9, specificity=0.7, sensitivity_ci=(0, 1),
                           specificity_ci=(0, 1))
    at = predictive_values(point, prevalence=0.02)
    # flagged: 0.9 * 0.02 = 0.018 melanomas, 0.3 * 0.98 = 0.294 benign -> PPV 0.018 / 0.312
    assert at.ppv == pytest.approx(0.018 / 0.312) and at.flagged_per_melanoma == pytest.approx(0.312 / 0.018)
    assert at.npv == pytest.approx(0.686 / (0.686 + 0.002))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        check_prevalence(0.0)
