"""Stage two's features, as a table of groups: the image models' scores, the patient's metadata, the dataset's own
per-lesion columns, and the patient's other lesions.

Every feature is computed from the rows' own values and their patient's other lesions, never from a label: the
trees (:mod:`.crossfit`) are the only thing fitted, and only on training folds, so nothing of a held-out fold's
labels reaches a feature. The folds are grouped by patient, so a patient's lesions, and with them its context, sit
in one fold. Missing metadata stays missing (NaN, which every learner here takes as missing); nothing is imputed to
a value a real patient could have.

Patient context follows the ISIC 2024 winners (read for the idea): each numeric feature and each image score as a
z-score and a rank within the patient and as a ratio to the patient's mean; the patient's lesion count and the
count at the lesion's site; per-lesion columns summed per patient and per patient x site (the total lesion area,
for a size column); and an outlier score of the lesion among its patient's lesions (scikit-learn's
LocalOutlierFactor, from 3 lesions on). A patient with one lesion has no context: its z-scores and outlier score are
missing, its rank and ratio 1.

A new group is one registered function from the :class:`Inputs` to named columns::

    @register_group("age_band", summary="age in decades")
    def _age_band(inputs):
        return pd.DataFrame({"age_decade": inputs.rows["age_approx"] // 10}, index=inputs.rows.index)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from melanoma_search.data.columns import numeric_columns
from melanoma_search.data.layouts import SITES
from melanoma_search.errors import DataError
from melanoma_search.registry import Registry

__all__ = ["FeatureGroup", "Inputs", "build_features", "get_group", "list_groups", "register_group"]

IMAGE_PREFIX = "image:"


@dataclass(frozen=True)
class Inputs:
    """What features are made from: ``rows`` (``patient_id``, ``sex``, ``age_approx``, ``site`` and the spec's
    per-lesion ``columns``) and ``images`` (one column per image score, same index)."""

    rows: pd.DataFrame
    images: pd.DataFrame
    columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    make: Callable[[Inputs], pd.DataFrame]
    summary: str
    needs_patients: bool = False
    """Its features look across a patient's lesions (``predict`` says so, and counts the rows without a patient)."""


_GROUPS: Registry[FeatureGroup] = Registry("stage-two feature group", error=DataError)


def register_group(name: str, *, summary: str, needs_patients: bool = False
                   ) -> Callable[[Callable[[Inputs], pd.DataFrame]], Callable[[Inputs], pd.DataFrame]]:
    def decorate(make: Callable[[Inputs], pd.DataFrame]) -> Callable[[Inputs], pd.DataFrame]:
        _GROUPS.add(name, FeatureGroup(name=name, make=make, summary=summary, needs_patients=needs_patients))
        return make

    return decorate


def get_group(name: str) -> FeatureGroup:
    return _GROUPS.get(name)


def list_groups() -> tuple[str, ...]:
    return _GROUPS.names()


@register_group("image", summary="the members' out-of-fold scores (each fold model's percentile) and their mean")
def _image(inputs: Inputs) -> pd.DataFrame:
    images = inputs.images.add_prefix(IMAGE_PREFIX)
    return images.assign(**{f"{IMAGE_PREFIX}mean": inputs.images.mean(axis=1)})


@register_group("metadata", summary="sex, age, anatomical site (one column each), lesions of the patient")
def _metadata(inputs: Inputs) -> pd.DataFrame:
    rows = inputs.rows
    sex = rows["sex"].map({"male": 1.0, "female": 0.0})
    sites = {f"site={s}": rows["site"].eq(s).astype(float).where(rows["site"].notna()) for s in SITES}
    count = rows.groupby("patient_id")["patient_id"].transform("size").astype(float)
    return pd.DataFrame({"male": sex, "age": rows["age_approx"].astype(float), **sites, "lesions": count},
                        index=rows.index)


@register_group("tabular", summary="the dataset's own per-lesion columns named in stage_two.columns")
def _tabular(inputs: Inputs) -> pd.DataFrame:
    return numeric_columns(inputs.rows, inputs.columns)


def _within_patient(values: pd.DataFrame, patient: pd.Series) -> pd.DataFrame:
    """Each column as a z-score and a rank within the patient and as a ratio to the patient's mean."""
    groups = values.groupby(patient)
    mean, std = groups.transform("mean"), groups.transform("std", ddof=0)
    z = (values - mean) / std.where(std > 0)
    rank = groups.rank(pct=True)
    ratio = values / mean.where(mean != 0)
    return pd.concat([z.add_suffix("|z"), rank.add_suffix("|rank"), ratio.add_suffix("|ratio")], axis=1)


def _outlier_score(values: pd.DataFrame, patient: pd.Series) -> pd.Series:
    """LocalOutlierFactor of each lesion among its patient's lesions (3 or more, complete rows only), its
    neighbourhood about half of them (2 to 20): with every other lesion as neighbours, every lesion scores 1."""
    from sklearn.neighbors import LocalOutlierFactor

    score = pd.Series(np.nan, index=values.index)
    complete = values.dropna(axis=1, how="all")
    for _, members in complete.groupby(patient).groups.items():
        block = complete.loc[members].dropna()
        if len(block) < 3 or block.shape[1] == 0:
            continue
        spread = block.std(ddof=0).replace(0, 1.0)
        lof = LocalOutlierFactor(n_neighbors=max(2, min(20, (len(block) - 1) // 2)))  # all the others: every LOF 1
        lof.fit((block - block.mean()) / spread)
        score.loc[block.index] = -lof.negative_outlier_factor_
    return score


@register_group("patient", needs_patients=True, summary="each lesion among its patient's lesions: image scores and "
                "per-lesion columns as z-score, rank and ratio to the patient's mean; counts per patient and site; "
                "per-lesion columns summed per patient and per patient x site; an outlier score")
def _patient(inputs: Inputs) -> pd.DataFrame:
    rows, patient = inputs.rows, inputs.rows["patient_id"]
    tabular = numeric_columns(rows, inputs.columns)
    values = pd.concat([inputs.images.add_prefix(IMAGE_PREFIX), tabular], axis=1)
    site_key = patient.astype(str) + "|" + rows["site"].astype(str)
    parts = [_within_patient(values, patient),
             pd.DataFrame({"patient|site lesions": rows.groupby(site_key)["patient_id"].transform("size")
                           .astype(float).where(rows["site"].notna()),
                           "outlier": _outlier_score(values, patient)}, index=rows.index)]
    if len(tabular.columns):
        parts += [tabular.groupby(patient).transform("sum").add_suffix("|patient total"),
                  tabular.groupby(site_key).transform("sum").add_suffix("|patient site total")
                  .where(rows["site"].notna(), np.nan)]
    return pd.concat(parts, axis=1)


@dataclass(frozen=True)
class Features:
    """The feature table and which group each column came from."""

    table: pd.DataFrame
    groups: dict[str, list[str]] = field(default_factory=dict)


def build_features(inputs: Inputs, groups: Sequence[str]) -> Features:
    """The columns of ``groups``, in that order; an all-missing column is kept (the trees ignore it) and said by
    the caller."""
    if not groups:
        raise DataError("stage two needs at least one feature group")
    frames, owners = [], {}
    for name in groups:
        frame = get_group(name).make(inputs)
        owners[name] = list(frame.columns)
        frames.append(frame)
    table = pd.concat(frames, axis=1).astype(float)
    return Features(table=table, groups=owners)
