"""Patient metadata as model features.

The 2020 solutions fed a small MLP with sex, age, anatomical site, the number of images of the patient and the
image's file size (a proxy for its original resolution and so for the clinic it came from). Scaling statistics are
fitted on training rows only, so a validation fold never leaks into its own features. Missing values get an
indicator column instead of an imputed guess the model cannot tell from a real value.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from melanoma_search.data.layouts import SITES
from melanoma_search.errors import DataError

__all__ = ["PATIENT_FIELDS", "MetaEncoder", "add_derived_columns", "rows_without_metadata", "without_metadata"]

#: The metadata a patient record gives (the other features come from the image file and the patient's image count).
PATIENT_FIELDS: tuple[str, ...] = ("sex", "age_approx", "site")


def without_metadata(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` as they read when their patient metadata is missing (an outside collection, a folder of JPEGs)."""
    return rows.assign(**{field: np.nan for field in PATIENT_FIELDS})


def rows_without_metadata(rows: pd.DataFrame) -> int:
    """How many rows have none of the patient metadata."""
    return int(rows[list(PATIENT_FIELDS)].isna().all(axis=1).sum())


def add_derived_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``n_images`` (images of the patient) and ``file_size`` (bytes, NaN if unknown).

    ``n_images`` already given for a row (a scoring CSV's column: the patient's images in the clinic's records) is
    kept; otherwise it is counted within the row's split, by ``patient_id``. The count is what training saw, but it
    makes a score depend on which other images of the patient are in the same file, hence the column.
    """
    out = table.copy()
    counted = out.groupby(["split", "patient_id"])["image_name"].transform("size").astype(float)
    given = out["n_images"].astype(float) if "n_images" in out else pd.Series(np.nan, index=out.index)
    out["n_images"] = given.fillna(counted)
    sizes = []
    for path in out["image_path"]:
        try:
            sizes.append(float(os.path.getsize(path)) if path else np.nan)
        except OSError:
            sizes.append(np.nan)
    out["file_size"] = sizes
    return out


@dataclass
class MetaEncoder:
    """Turn table rows into a float32 feature matrix; ``fit`` on training rows, ``transform`` on any rows."""

    age_mean: float = 50.0
    age_std: float = 15.0
    count_mean: float = 0.0
    count_std: float = 1.0
    size_mean: float = 0.0
    size_std: float = 1.0
    fitted: bool = False

    def fit(self, table: pd.DataFrame) -> MetaEncoder:
        """Learn scaling statistics from ``table`` (training rows only: that is the caller's promise)."""
        _require(table)
        self.age_mean, self.age_std = _moments(table["age_approx"], default=(50.0, 15.0))
        self.count_mean, self.count_std = _moments(np.log1p(table["n_images"]), default=(0.0, 1.0))
        self.size_mean, self.size_std = _moments(np.log(table["file_size"]), default=(0.0, 1.0))
        self.fitted = True
        return self

    @property
    def feature_names(self) -> list[str]:
        """Names of :meth:`transform`'s columns, in order."""
        return ["sex_male", "sex_missing", "age", "age_missing", *(f"site_{s}" for s in SITES), "site_missing",
                "log_n_images", "log_file_size", "file_size_missing"]

    @property
    def n_features(self) -> int:
        """Width of :meth:`transform`'s output."""
        return len(self.feature_names)

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """Encode rows; NaN metadata becomes 0 plus a missing indicator, never a NaN feature."""
        if not self.fitted:
            raise RuntimeError("MetaEncoder.transform called before fit")
        _require(table)
        n = len(table)
        sex = table["sex"]
        age = table["age_approx"].astype(float)
        sites = table["site"]
        unknown = set(sites.dropna()) - set(SITES)
        if unknown:
            raise DataError(f"unknown site value(s) {sorted(unknown)[:5]}; allowed: {', '.join(SITES)} or blank")
        size = np.log(table["file_size"].astype(float))
        columns = [
            sex.eq("male").to_numpy(float),
            sex.isna().to_numpy(float),
            ((age - self.age_mean) / self.age_std).fillna(0.0).to_numpy(float),
            age.isna().to_numpy(float),
            *(sites.eq(s).to_numpy(float) for s in SITES),
            sites.isna().to_numpy(float),
            ((np.log1p(table["n_images"].astype(float)) - self.count_mean) / self.count_std).fillna(0.0).to_numpy(),
            ((size - self.size_mean) / self.size_std).fillna(0.0).to_numpy(float),
            size.isna().to_numpy(float),
        ]
        features = np.stack(columns, axis=1).astype(np.float32) if n else np.zeros((0, self.n_features), np.float32)
        if not np.isfinite(features).all():
            raise DataError("metadata features contain a non-finite value after encoding")
        return features

    def to_dict(self) -> dict[str, Any]:
        """Plain data, to store beside a model so a prediction encodes metadata the way training did."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetaEncoder:
        return cls(**data)


def _require(table: pd.DataFrame) -> None:
    missing = [c for c in ("sex", "age_approx", "site", "n_images", "file_size") if c not in table.columns]
    if missing:
        raise DataError(f"metadata table lacks column(s) {missing}; call add_derived_columns first")


def _moments(values: pd.Series, *, default: tuple[float, float]) -> tuple[float, float]:
    finite = values.replace([np.inf, -np.inf], np.nan).dropna().astype(float)
    if finite.empty:
        return default
    std = float(finite.std(ddof=0))
    return float(finite.mean()), std if std > 1e-8 else 1.0
