"""Pseudo-labelled rows: the CSV ``python -m melanoma_search.pseudo`` writes, read as extra training rows.

They join the table as external rows (training folds only, never validated, never out-of-fold), with the teacher's
probability as the target (or its rounding) and a per-row loss weight below a labelled row's 1. The file is
checked like any dataset: a missing column, a probability outside [0, 1] or an image that is also a labelled
training image is refused by name, since training on a made-up label for an image whose real label is in the fold
would leak the fold into its own score.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma_search.data.config import PseudoConfig
from melanoma_search.data.layouts import read_images_to_score
from melanoma_search.errors import DataError

__all__ = ["PSEUDO_SOURCE", "read_pseudo_rows"]

_log = logging.getLogger(__name__)

#: The ``source`` of pseudo-labelled rows in the table.
PSEUDO_SOURCE = "pseudo"

_REQUIRED = ("image_name", "target", "confidence")


def read_pseudo_rows(config: PseudoConfig, *, labelled: pd.DataFrame) -> pd.DataFrame:
    """The pseudo CSV's rows, normalised like a dataset table plus ``loss_weight``; ``labelled`` is the run's table.

    Rows below ``min_confidence`` are dropped (and counted in the log).
    """
    path = Path(config.file).expanduser()
    if not path.is_file():
        raise DataError(f"data.pseudo.file: no such file: {path} (write one with python -m melanoma_search.pseudo)")
    raw = pd.read_csv(path, dtype={"image_name": str})
    missing = [c for c in _REQUIRED if c not in raw.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}: not a pseudo-label file "
                        "(python -m melanoma_search.pseudo writes image_name, image_path, target, confidence, ...)")
    target = pd.to_numeric(raw["target"], errors="coerce")
    if target.isna().any() or not target.between(0.0, 1.0).all():
        raise DataError(f"{path}: column 'target' must be a probability in [0, 1] on every row")
    rows = read_images_to_score(path)  # the images and their metadata, exactly as scoring reads them
    rows["target"] = target.to_numpy(float) if config.soft else np.round(target.to_numpy(float))
    keep = pd.to_numeric(raw["confidence"], errors="coerce").fillna(0.0).to_numpy() >= config.min_confidence
    if not keep.all():
        _log.info("%s: %d of %d pseudo-labelled row(s) below min_confidence %.2f left out", path,
                  int((~keep).sum()), len(keep), config.min_confidence)
    rows = rows.loc[keep].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"{path}: no pseudo-labelled row has confidence >= {config.min_confidence}")
    clash = sorted(set(rows["image_name"]) & set(labelled.loc[labelled["split"].eq("train"), "image_name"]))
    if clash:
        raise DataError(f"{path}: {len(clash)} pseudo-labelled image(s) are labelled training images too, e.g. "
                        f"{clash[:3]}: pseudo-label images the run does not train on")
    rows["split"] = "train"
    rows["source"] = PSEUDO_SOURCE
    rows["is_external"] = True  # training folds only: never validated, never out-of-fold
    rows["diagnosis"] = np.nan
    rows["patient_id"] = PSEUDO_SOURCE + ":" + rows["patient_id"].astype(str)  # never a labelled patient's group
    rows["loss_weight"] = config.weight
    return rows
