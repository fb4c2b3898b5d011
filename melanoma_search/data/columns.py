"""A dataset's own per-lesion columns (``stage_two.columns``) read as numbers, checked once for every door.

The same check serves the run (before any trial), the export's stage two and ``predict``'s CSV, so a value a tree
cannot read (text, or an infinite number: a division by zero upstream, a spreadsheet's ``inf``) is refused in one line
naming the column and rows wherever it first appears, instead of surfacing as a library's traceback (scikit-learn's
outlier score refuses infinities as "NaN", LightGBM treats them as huge numbers). A blank is missing, and the trees
handle missing values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from melanoma_search.errors import DataError

__all__ = ["numeric_columns"]


def _rows(rows: pd.DataFrame, bad: pd.Series) -> str:
    """The first few offending rows by image name (else by position), and how many there are."""
    names = rows.loc[bad, "image_name"] if "image_name" in rows else pd.Series(np.flatnonzero(bad.to_numpy()))
    shown = ", ".join(names.astype(str).head(3))
    return f"{int(bad.sum())} row(s), e.g. {shown}"


def numeric_columns(rows: pd.DataFrame, columns: Sequence[str], *, what: str = "stage_two.columns") -> pd.DataFrame:
    """``columns`` of ``rows`` as floats (blank: missing); text or an infinite value is a
    :class:`~melanoma_search.errors.DataError` naming the column, the value and the rows."""
    out = {}
    for name in columns:
        if name not in rows:
            raise DataError(f"{what}: {name!r} is not a column of the dataset's table")
        values = pd.to_numeric(rows[name], errors="coerce")
        bad = rows[name].notna() & values.isna() & rows[name].astype(str).str.strip().ne("")
        if bad.any():
            raise DataError(f"{what}: column {name!r} holds non-numeric value(s), e.g. "
                            f"{rows.loc[bad, name].astype(str).head(3).tolist()}, in {_rows(rows, bad)}")
        infinite = pd.Series(np.isinf(values.to_numpy(dtype=float)), index=rows.index)
        if infinite.any():
            raise DataError(f"{what}: column {name!r} holds infinite value(s) in {_rows(rows, infinite)}: give a "
                            "number, or leave the cell blank where it is unknown (blank is read as missing)")
        out[name] = values.astype(float)
    return pd.DataFrame(out, index=rows.index)
