"""Partial AUC above a sensitivity floor, against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from melanoma_search.metrics import partial_auc


def test_partial_auc_against_hand_checked_curves() -> None:
    # ROC of [mel 0.9, benign 0.8, mel 0.7, benign 0.1]: TPR is 0.5 until FPR 0.5, then 1. Above TPR 0.8 only the
    # part from FPR 0.5 to 1 counts, at height 1 - 0.8: 0.5 * 0.2 = 0.1
    assert partial_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(0.1)
    assert partial_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.2)  # a perfect ranking: 1 - floor
    assert partial_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)  # all wrong: nothing above 0.8
    # the floor is a parameter: above TPR 0.5 the first curve has 0.5 * 0.5 (FPR 0.5 to 1 at height 1 - 0.5)
    assert partial_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], min_tpr=0.5) == pytest.approx(0.25)
    # with no floor it is the AUC
    assert partial_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], min_tpr=0.0) == pytest.approx(0.75)


def test_chance_scores_half_the_square_above_the_floor() -> None:
    rng = np.random.default_rng(0)
    target = rng.random(40_000) < 0.3
    assert partial_auc(target, rng.random(40_000)) == pytest.approx(0.5 * 0.2**2, abs=0.003)
    with pytest.raises(ValueError, match="min_tpr"):
        partial_auc([1, 0], [0.5, 0.4], min_tpr=1.0)
