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


def test_the_isic_2024_clinical_figures_match_a_hand_count() -> None:
    from melanoma_search.metrics import lesions_per_cancer, top_k_sensitivity

    target = np.array([1, 0, 0, 1, 0, 0, 0, 0, 1, 0], dtype=float)
    score = np.arange(10, 0, -1, dtype=float)  # already in review order
    # 80 % of 3 melanomas needs all 3: the review reaches the 9th lesion, 9 reviewed for 3 found
    assert lesions_per_cancer(target, score, sensitivity=0.8) == 3.0
    assert lesions_per_cancer(target, score, sensitivity=0.6) == 2.0  # 2 found by the 4th lesion
    patient = np.array(["a"] * 5 + ["b"] * 5)
    assert top_k_sensitivity(target, score, patient, k=1) == 1 / 3  # only a's top lesion is a melanoma
    assert top_k_sensitivity(target, score, patient, k=4) == 3 / 3


def _clustered(patients: int = 60, each: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Patients whose lesions share a label and most of their score: ten images of a patient are about one
    patient's worth of evidence, not ten."""
    rng = np.random.default_rng(seed)
    label = rng.random(patients) < 0.3
    shared = rng.normal(0, 1, patients) + 0.8 * label
    groups = np.repeat(np.arange(patients), each)
    target = np.repeat(label, each).astype(float)
    ours = np.repeat(shared, each) + rng.normal(0, 0.1, patients * each)
    theirs = np.repeat(rng.normal(0, 1, patients) + 0.6 * label, each) + rng.normal(0, 0.1, patients * each)
    return target, ours, theirs, groups


def test_bootstraps_resample_whole_patients_where_the_rows_have_them() -> None:
    from melanoma_search.ensemble.calibration import choose_operating_points
    from melanoma_search.metrics import bootstrap_draws, paired_auc_difference

    target, ours, theirs, groups = _clustered()
    for draw in bootstrap_draws(len(target), groups=groups, resamples=20):
        counts = np.bincount(groups[draw], minlength=60)
        assert set(np.unique(counts)) <= {0, 10, 20, 30, 40, 50}  # whole patients, never part of one
    by_image = paired_auc_difference(target, ours, theirs, resamples=400)
    by_patient = paired_auc_difference(target, ours, theirs, resamples=400, groups=groups)
    assert by_patient.difference == by_image.difference
    assert by_patient.standard_error > 2 * by_image.standard_error  # images as independent: far too sure
    points = {p.name: p for p in choose_operating_points(target, ours, groups=groups, resamples=300)}
    alone = {p.name: p for p in choose_operating_points(target, ours, resamples=300)}
    width = {name: p.sensitivity_ci[1] - p.sensitivity_ci[0] for name, p in points.items()}
    assert points["youden"].resampled == "patients" and alone["youden"].resampled == "images"
    assert width["youden"] > alone["youden"].sensitivity_ci[1] - alone["youden"].sensitivity_ci[0]


def test_a_table_without_patients_that_group_images_resamples_images() -> None:
    import pandas as pd

    from melanoma_search.data.patients import patient_groups

    assert patient_groups(pd.DataFrame({"image_name": ["a", "b"], "patient_id": ["a", "b"]})) is None
    grouped = patient_groups(pd.DataFrame({"patient_id": ["p1", "p1", None, ""]}))
    assert grouped is not None and list(grouped[:2]) == ["p1", "p1"] and grouped[2] != grouped[3]
