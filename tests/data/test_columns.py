"""Per-lesion columns read as numbers: text and infinite values refused in one line naming the column and rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from melanoma_search.data.columns import numeric_columns
from melanoma_search.errors import DataError


def _rows(**values: list[object]) -> pd.DataFrame:
    return pd.DataFrame({"image_name": ["a", "b", "c"], **values})


def test_blank_is_missing_and_numbers_are_floats() -> None:
    read = numeric_columns(_rows(diameter_mm=["4.5", "", None]), ["diameter_mm"])
    assert read["diameter_mm"].iloc[0] == 4.5 and read["diameter_mm"].iloc[1:].isna().all()


@pytest.mark.parametrize("bad", [np.inf, -np.inf, "inf", "-Infinity"])
def test_an_infinite_value_is_refused_naming_the_column_and_row(bad: object) -> None:
    with pytest.raises(DataError, match=r"column 'diameter_mm' holds infinite value\(s\) in 1 row\(s\), e\.g\. b"):
        numeric_columns(_rows(diameter_mm=[4.0, bad, 3.0]), ["diameter_mm"])


def test_text_and_an_absent_column_are_refused() -> None:
    with pytest.raises(DataError, match=r"'diameter_mm' holds non-numeric value\(s\), e\.g\. \['big'\], in 1 row"):
        numeric_columns(_rows(diameter_mm=[4.0, "big", 3.0]), ["diameter_mm"])
    with pytest.raises(DataError, match="'area' is not a column"):
        numeric_columns(_rows(diameter_mm=[4.0, 1.0, 3.0]), ["area"])
