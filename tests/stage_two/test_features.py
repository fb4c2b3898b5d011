"""Stage two's features against values worked out by hand, and bad input in one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melanoma_search.errors import DataError
from melanoma_search.stage_two.features import Inputs, build_features, register_group


def _inputs(columns: tuple[str, ...] = ("diameter_mm",)) -> Inputs:
    """Patient A: five lesions, one of them unlike the others (i2, at an unknown site); patient B: one lesion."""
    rows = pd.DataFrame({"patient_id": ["A", "A", "A", "A", "A", "B"], "sex": ["male"] * 5 + [None],
                         "age_approx": [50.0] * 5 + [np.nan],
                         "site": ["torso", "torso", np.nan, "upper extremity", "upper extremity", "head/neck"],
                         "diameter_mm": [2.0, 2.2, 9.0, 1.9, 2.1, 5.0]}, index=["i0", "i1", "i2", "a3", "a4", "i3"])
    images = pd.DataFrame({"m1": [0.1, 0.12, 0.9, 0.11, 0.1, 0.5]}, index=rows.index)
    return Inputs(rows=rows, images=images, columns=columns)


def test_patient_context_matches_the_hand_computed_values() -> None:
    table = build_features(_inputs(), ["patient"]).table
    a = np.array([2.0, 2.2, 9.0, 1.9, 2.1])  # patient A's diameters
    assert table.loc["i2", "diameter_mm|z"] == pytest.approx((9.0 - a.mean()) / a.std())
    assert table.loc["i0", "diameter_mm|ratio"] == pytest.approx(2.0 / a.mean())
    assert table.loc["i2", "diameter_mm|rank"] == pytest.approx(1.0) and table.loc["a3", "diameter_mm|rank"] == \
        pytest.approx(1 / 5)
    images = np.array([0.1, 0.12, 0.9, 0.11, 0.1])
    assert table.loc["i1", "image:m1|z"] == pytest.approx((0.12 - images.mean()) / images.std())
    assert table.loc["i0", "diameter_mm|patient total"] == pytest.approx(a.sum())
    assert table.loc["i0", "diameter_mm|patient site total"] == pytest.approx(4.2)  # the two torso lesions
    assert np.isnan(table.loc["i2", "diameter_mm|patient site total"])  # its site is unknown: no site total
    assert table.loc["i0", "patient|site lesions"] == 2.0
    patient_a = table.loc[["i0", "i1", "i2", "a3", "a4"], "outlier"]
    assert np.isfinite(patient_a).all() and patient_a.idxmax() == "i2"  # the odd one out
    # a patient with one lesion has no context: no z-score, no outlier score; rank and ratio 1
    assert np.isnan(table.loc["i3", "diameter_mm|z"]) and np.isnan(table.loc["i3", "outlier"])
    assert table.loc["i3", "diameter_mm|rank"] == 1.0 and table.loc["i3", "diameter_mm|ratio"] == 1.0


def test_metadata_stays_missing_where_it_is_missing() -> None:
    table = build_features(_inputs(), ["metadata"]).table
    assert table.loc["i0", "male"] == 1.0 and table.loc["i0", "age"] == 50.0
    assert table.loc["i0", "site=torso"] == 1.0 and table.loc["i0", "site=head/neck"] == 0.0
    assert np.isnan(table.loc["i3", "male"]) and np.isnan(table.loc["i3", "age"])  # never imputed
    assert table.loc[["i2"], [c for c in table if c.startswith("site=")]].isna().all(axis=None)
    assert list(table["lesions"]) == [5.0] * 5 + [1.0]


def test_bad_columns_end_in_one_line_naming_them() -> None:
    inputs = _inputs()
    with pytest.raises(DataError, match="'tbp_lv_H' is not a column"):
        build_features(Inputs(rows=inputs.rows, images=inputs.images, columns=("tbp_lv_H",)), ["tabular"])
    text = inputs.rows.assign(diameter_mm=["2", "big", "9", "", "2", "3"])
    with pytest.raises(DataError, match=r"column 'diameter_mm' holds non-numeric value\(s\), e.g. \['big'\]"):
        build_features(Inputs(rows=text, images=inputs.images, columns=("diameter_mm",)), ["tabular"])
    empty = inputs.rows.assign(diameter_mm=np.nan)  # all missing: kept (the trees ignore it), not an error
    assert build_features(Inputs(rows=empty, images=inputs.images, columns=("diameter_mm",)),
                          ["tabular"]).table["diameter_mm"].isna().all()
    with pytest.raises(DataError, match="unknown stage-two feature group 'colour'"):
        build_features(inputs, ["colour"])


def test_a_new_feature_group_is_one_registered_function() -> None:
    @register_group("test_age_band", summary="age in decades")
    def _age_band(inputs: Inputs) -> pd.DataFrame:
        return pd.DataFrame({"age_decade": inputs.rows["age_approx"] // 10}, index=inputs.rows.index)

    features = build_features(_inputs(), ["image", "test_age_band"])
    assert features.groups["test_age_band"] == ["age_decade"] and features.table.loc["i0", "age_decade"] == 5.0
    assert features.groups["image"] == ["image:m1", "image:mean"]
