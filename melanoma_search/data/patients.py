"""Which rows belong to one patient, for the bootstraps that say how sure a figure is.

A patient's lesions share skin, camera and clinic: resampling them as independent images makes intervals too narrow
(ISIC 2020 has about 16 images per patient, ISIC 2024 a median of 241 crops). Where the rows carry patient ids that
group images, the bootstraps resample whole patients (Obuchowski, Biometrics 1997); where each image is its own
patient (HAM10000's one image per lesion, outside images without ids), they resample images, and say so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["patient_groups"]


def patient_groups(rows: pd.DataFrame) -> np.ndarray | None:
    """Each row's patient id where at least one patient has several rows, else ``None`` (resample images). A row
    without an id is a patient of its own."""
    if "patient_id" not in rows or rows.empty:
        return None
    ids = rows["patient_id"].astype(object)
    missing = ids.isna() | ids.astype(str).str.strip().eq("")
    ids = ids.astype(str).where(~missing, "row:" + pd.Series(np.arange(len(rows)), index=rows.index).astype(str))
    return ids.to_numpy() if ids.duplicated().any() else None
