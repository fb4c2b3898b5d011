from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from melanoma_search.data.layouts import load_table
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.errors import DataError


def test_features_fitted_on_training_rows_only(ham_dir: Path) -> None:
    table = add_derived_columns(load_table(ham_dir))
    train, valid = table.iloc[:1500], table.iloc[1500:]
    encoder = MetaEncoder().fit(train)
    assert encoder.age_mean == pytest.approx(train["age_approx"].mean())
    assert encoder.size_mean == pytest.approx(np.log(train["file_size"]).mean())
    features = encoder.transform(valid)
    assert features.shape == (len(valid), encoder.n_features) == (len(valid), len(encoder.feature_names))
    assert features.dtype == np.float32 and np.isfinite(features).all()
    # Refitting on validation rows would change the scaling: the encoder must not look at them.
    assert MetaEncoder().fit(valid).age_mean != pytest.approx(encoder.age_mean)


def test_missing_values_get_indicators_not_nans() -> None:
    table = pd.DataFrame({
        "image_name": ["a", "b", "c"], "split": "train", "patient_id": ["p", "p", "q"],
        "sex": ["male", np.nan, "female"], "age_approx": [40.0, np.nan, 60.0],
        "site": ["torso", np.nan, "head/neck"], "image_path": ["", "", ""],
    })
    table = add_derived_columns(table)
    encoder = MetaEncoder().fit(table)
    x = encoder.transform(table)
    names = encoder.feature_names
    assert np.isfinite(x).all()
    assert x[1, names.index("sex_missing")] == 1 and x[1, names.index("age_missing")] == 1
    assert x[1, names.index("site_missing")] == 1 and x[0, names.index("site_torso")] == 1
    assert x[1, names.index("age")] == 0.0
    assert x[:, names.index("file_size_missing")].tolist() == [1, 1, 1]
    # images per patient: p has 2, q has 1
    assert x[0, names.index("log_n_images")] > x[2, names.index("log_n_images")]


def test_round_trip_and_unknown_site() -> None:
    table = add_derived_columns(pd.DataFrame({
        "image_name": ["a", "b"], "split": "train", "patient_id": ["p", "q"], "sex": ["male", "female"],
        "age_approx": [30.0, 70.0], "site": ["torso", "palms/soles"], "image_path": ["", ""],
    }))
    encoder = MetaEncoder().fit(table)
    again = MetaEncoder.from_dict(encoder.to_dict())
    np.testing.assert_array_equal(encoder.transform(table), again.transform(table))
    with pytest.raises(DataError, match="unknown site value"):
        encoder.transform(table.assign(site=["torso", "knee"]))
