"""Leak-free cross-validation folds.

A patient's images look alike, so a patient split across folds inflates validation AUC: folds are formed over
patients, never images. Whole patients are dealt out so that every fold gets about the same number of melanomas
and of images (the aim of the 2020 competition's "triple stratification"). A dataset's own fold key (``tfrecord``)
is honoured instead when present, known duplicates are dropped first, and external rows get fold ``-1``: they only
ever train.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma_search.data.pseudo import PSEUDO_SOURCE
from melanoma_search.errors import DataError

__all__ = ["EXTERNAL_FOLD", "assign_folds", "drop_duplicates", "read_duplicate_list"]

_log = logging.getLogger(__name__)

#: Fold number of rows that only ever train (external data).
EXTERNAL_FOLD = -1


def read_duplicate_list(path: str | os.PathLike[str]) -> set[str]:
    """Image names to drop, read from a two-column list of duplicate pairs (the second of each pair goes)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"duplicate list not found: {path}")
    pairs = pd.read_csv(path, dtype=str)
    if pairs.shape[1] < 2:
        raise DataError(f"{path}: a duplicate list needs two columns (image_name_1, image_name_2)")
    return set(pairs.iloc[:, 1].dropna().str.strip())


def drop_duplicates(table: pd.DataFrame, *, duplicates: set[str] | None = None) -> pd.DataFrame:
    """Drop rows of known duplicates: the listed names and rows whose fold key is ``-1``."""
    drop = table["fold_key"].eq(-1)
    if duplicates:
        drop |= table["image_name"].isin(duplicates) & table["split"].eq("train")
    if drop.any():
        _log.info("dropping %d known duplicate image(s)", int(drop.sum()))
    return table.loc[~drop].reset_index(drop=True)


def assign_folds(
    table: pd.DataFrame,
    *,
    n_folds: int = 5,
    seed: int = 42,
    use_fold_key: bool = True,
    linked: pd.Series | None = None,
    validate_external: bool = False,
    group_by: str = "patient",
) -> pd.Series:
    """Return the fold of every row of ``table`` (test rows get ``NaN``, external rows :data:`EXTERNAL_FOLD`).

    Args:
        table: The normalised table (:mod:`melanoma_search.data.layouts`).
        n_folds: Number of folds, at least 2.
        seed: Shuffling seed; the same table and seed give the same folds.
        use_fold_key: Honour the dataset's own ``fold_key`` (e.g. ``tfrecord``) where it has one, mapped by
            ``key % n_folds`` so that 15 TFRecords make 5 folds of 3 files each, as in the winning solution.
        linked: A group label per row (indexed like ``table``; rows absent have none): rows sharing a label are
            kept in one fold with all their patients' rows (near-duplicate images of different patient ids).
        validate_external: Deal external rows into the folds too (validated like the primary rows) instead of
            :data:`EXTERNAL_FOLD`; pseudo-labelled rows always only train.
        group_by: ``patient`` (each patient's images in one fold) or ``source`` (each collection in one fold).
    """
    if n_folds < 2:
        raise DataError(f"n_folds must be at least 2, got {n_folds}")
    folds = pd.Series(np.nan, index=table.index, dtype=float)
    train = table["split"].eq("train")
    external = train & table["is_external"].astype(bool)
    primary = train & ~external
    if validate_external:  # pseudo-labelled rows are external too, and only ever train
        source = table["source"] if "source" in table else pd.Series("", index=table.index)
        primary |= external & source.ne(PSEUDO_SOURCE)
        external &= ~primary
    folds[external] = EXTERNAL_FOLD
    rows = table.loc[primary]
    if rows.empty:
        raise DataError("no primary (non-external) training rows to split into folds")
    keys = rows["fold_key"]
    if use_fold_key and keys.notna().all() and group_by == "patient" and not validate_external:
        folds[primary] = (keys.astype(int) % n_folds).astype(float)
    else:
        grouped = _linked_patients(rows, linked)
        if group_by == "source":
            grouped = grouped.assign(patient_id=grouped["source"].astype(str))
            if grouped["patient_id"].nunique() < n_folds:
                raise DataError(f"data.group_folds_by: source: {grouped['patient_id'].nunique()} collection(s) "
                                f"({', '.join(sorted(grouped['patient_id'].unique()))}) cannot fill {n_folds} folds "
                                "with one collection each; use n_folds up to that number, or group by patient")
        elif group_by != "patient":
            raise DataError(f"data.group_folds_by: {group_by!r}; allowed: patient, source")
        folds[primary] = _patient_folds(grouped, n_folds=n_folds, seed=seed)
    _check_folds(table, folds, n_folds=n_folds)
    return folds


def _linked_patients(rows: pd.DataFrame, linked: pd.Series | None) -> pd.DataFrame:
    """``rows`` with ``patient_id`` replaced by one id per set of patients that ``linked`` ties together (a patient
    whose image has a near-duplicate in another patient's images joins that patient); unchanged without links."""
    if linked is None:
        return rows
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    label = linked.reindex(rows.index)
    patient_codes, patients = pd.factorize(rows["patient_id"].astype(str))
    tied = label.notna().to_numpy()
    link_codes, _ = pd.factorize(label[tied])
    n = len(patients) + int(link_codes.max(initial=-1)) + 1
    graph = coo_matrix((np.ones(int(tied.sum())), (patient_codes[tied], len(patients) + link_codes)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    # each set of tied patients takes the id of its first patient (in the rows' order)
    named = pd.Series(patients).groupby(component[: len(patients)]).transform("first").to_numpy()
    return rows.assign(patient_id=named[patient_codes])


def _patient_folds(rows: pd.DataFrame, *, n_folds: int, seed: int) -> np.ndarray:
    """Greedy balanced assignment of whole patients: positives first, then image counts.

    Patients are shuffled (seeded), then taken largest first, melanoma patients before the others: each goes to the
    fold with the fewest melanomas so far, ties broken by fewest images, then fewest patients. Unlike stratifying
    on "has a melanoma", this also balances patients with several melanomas, and it evens out image counts, which
    plain ``StratifiedGroupKFold`` does not try to do.
    """
    patients = rows.groupby("patient_id", sort=True).agg(positives=("target", "sum"), images=("target", "size"))
    if len(patients) < n_folds:
        raise DataError(f"{len(patients)} patient(s) cannot be split into {n_folds} folds")
    order = np.random.default_rng(seed).permutation(len(patients))
    patients = patients.iloc[order].sort_values(["positives", "images"], ascending=False, kind="stable")
    load = np.zeros((n_folds, 3))  # positives, images, patients
    patient_fold: dict[str, int] = {}
    for patient, positives, images in zip(patients.index, patients["positives"], patients["images"], strict=True):
        key = (load[:, 0], load[:, 1], load[:, 2]) if positives > 0 else (load[:, 1], load[:, 2], load[:, 0])
        fold = int(np.lexsort(key[::-1])[0])
        load[fold] += (positives, images, 1)
        patient_fold[patient] = fold
    return rows["patient_id"].map(patient_fold).to_numpy(dtype=float)


def _check_folds(table: pd.DataFrame, folds: pd.Series, *, n_folds: int) -> None:
    """Refuse folds that cannot be scored: a validation fold needs both classes for an AUC."""
    validation = folds >= 0
    for fold in range(n_folds):
        targets = table.loc[validation & folds.eq(fold), "target"]
        if targets.empty:
            raise DataError(f"fold {fold} of {n_folds} is empty")
        if targets.sum() == 0:
            raise DataError(
                f"fold {fold} of {n_folds} has no positive (melanoma) row, so its AUC is undefined; "
                f"use fewer folds or more data ({int(table['target'].eq(1).sum())} positives in all)"
            )
        if (targets == 1).all():
            raise DataError(f"fold {fold} of {n_folds} has no negative row, so its AUC is undefined")
