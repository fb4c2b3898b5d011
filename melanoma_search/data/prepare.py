"""From a data config to one table ready for training: rows, folds, derived columns, class indices.

This is the one place that decides which rows a run sees, so that every fold, trial and worker agrees on them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from melanoma_search.data.cache import load_or_build_cache
from melanoma_search.data.config import DataConfig, PseudoConfig
from melanoma_search.data.folds import assign_folds, drop_duplicates, read_duplicate_list
from melanoma_search.data.layouts import load_table
from melanoma_search.data.meta import add_derived_columns
from melanoma_search.data.pseudo import PSEUDO_SOURCE, read_pseudo_rows
from melanoma_search.data.synthetic import ensure_synthetic_dataset
from melanoma_search.errors import DataError

__all__ = ["MELANOMA", "PreparedData", "load_dataset", "prepare_data"]

_log = logging.getLogger(__name__)

MELANOMA = "melanoma"
_DUPLICATE_LIST = "ISIC_2020_Training_Duplicates.csv"


@dataclass
class PreparedData:
    """The run's table (train and test rows) and what training needs to know about it.

    ``table`` has the normalised columns plus ``fold`` (NaN for test rows, -1 for external and pseudo-labelled rows),
    ``loss_weight`` (1, or ``data.pseudo.weight`` for a pseudo-labelled row), ``n_images``, ``file_size``,
    ``cache_row`` (the row's index in the image cache, stable when bad rows are dropped) and ``class_index`` (the
    diagnosis class, for a multi-class target).
    """

    table: pd.DataFrame
    paths: list[str]
    classes: tuple[str, ...]
    n_folds: int
    origin: str

    @property
    def melanoma_index(self) -> int:
        return self.classes.index(MELANOMA)

    def cached_images(self, *, size: int, cache_dir: str, workers: int = 0, bad_images: str = "error") -> np.ndarray:
        """The image cache at ``size`` (built on first use); rows it could not decode are dropped from the table."""
        cached = load_or_build_cache(self.paths, size=size, cache_dir=cache_dir, workers=workers,
                                     bad_images=bad_images)  # type: ignore[arg-type]
        if cached.bad:
            keep = ~self.table["cache_row"].isin(list(cached.bad))
            self.table = self.table.loc[keep].reset_index(drop=True)
        return cached.array


def prepare_data(
    *,
    root: str | None,
    layout: str = "auto",
    external: tuple[str, ...] = (),
    duplicates: str | None = None,
    n_folds: int = 5,
    fold_seed: int = 42,
    missing_images: str = "error",
    unknown_sites: str = "missing",
    synthetic_dir: str = "storage/cache",
    synthetic_params: dict[str, int] | None = None,
    pseudo: PseudoConfig | None = None,
    near_duplicates: int | None = None,
    cache_dir: str = "storage/cache",
    validate_external: bool = False,
    group_folds_by: str = "patient",
) -> PreparedData:
    """Read the dataset at ``root`` (the synthetic set when ``None``) plus external sets and pseudo-labelled rows,
    and assign folds (near-duplicate images in one fold when ``near_duplicates`` gives their hash distance)."""
    if root is None:
        folder = ensure_synthetic_dataset(synthetic_dir, **(synthetic_params or {}))
    else:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise DataError(f"data folder not found: {folder} (set data.dir, or --data-dir)")
    read = {"missing_images": missing_images, "unknown_sites": unknown_sites}
    table = load_table(folder, layout=layout, **read)  # type: ignore[arg-type]
    extra = [load_table(p, external=True, **read) for p in external]  # type: ignore[arg-type]
    if extra:
        table = pd.concat([table, *extra], ignore_index=True)
    table["loss_weight"] = 1.0
    if pseudo is not None:
        table = pd.concat([table, read_pseudo_rows(pseudo, labelled=table)], ignore_index=True)
    dup_path = Path(duplicates) if duplicates else folder / _DUPLICATE_LIST
    names = read_duplicate_list(dup_path) if (duplicates or dup_path.is_file()) else None
    table = drop_duplicates(table, duplicates=names)
    table = add_derived_columns(table)
    linked = None
    if near_duplicates is not None and root is not None:  # generated lesions are never copies (and alike at 40 px)
        table, linked = _near_duplicate_links(table, near_duplicates, cache_dir=cache_dir,
                                              validate_external=validate_external)
    table["fold"] = assign_folds(table, n_folds=n_folds, seed=fold_seed, linked=linked,
                                 validate_external=validate_external, group_by=group_folds_by)
    table = table.reset_index(drop=True)  # rows may have been dropped (external near-duplicates)
    table["cache_row"] = np.arange(len(table))
    diagnosis = table["diagnosis"].where(table["diagnosis"].notna(), np.nan)
    diagnosis = diagnosis.where(table["target"].ne(1), MELANOMA)
    diagnosis = diagnosis.fillna("other").astype(str)
    train = table["split"].eq("train")
    labelled = train & table["source"].ne(PSEUDO_SOURCE)  # a pseudo label names no diagnosis
    classes = tuple(sorted(set(diagnosis[labelled]) | {MELANOMA}))
    table["class_index"] = np.where(labelled, diagnosis.map({c: i for i, c in enumerate(classes)}), -1).astype(int)
    positives = int(table.loc[train, "target"].gt(0.5).sum())
    pseudo_rows = int(table["source"].eq(PSEUDO_SOURCE).sum()) if pseudo is not None else 0
    _log.info("%s: %d training rows (%d melanoma, %d external, %d pseudo-labelled), %d test rows, %d folds",
              folder, int(train.sum()), positives, int(table["is_external"].sum()) - pseudo_rows, pseudo_rows,
              int((~train).sum()), n_folds)
    return PreparedData(table=table, paths=table["image_path"].tolist(), classes=classes, n_folds=n_folds,
                        origin=str(folder))


def _near_duplicate_links(table: pd.DataFrame, max_distance: int, *, cache_dir: str,
                          validate_external: bool) -> tuple[pd.DataFrame, pd.Series | None]:
    """Each labelled training row's near-duplicate group (:mod:`melanoma_search.data.near_duplicates`), said in one
    line when there are any (``None``: no two images are near-duplicates, and the folds are as before). An external
    row that duplicates a primary one would train every fold model, the one validating its copy included: it is
    dropped (counted) unless external rows are validated too, where its group keeps them in one fold."""
    from melanoma_search.data.near_duplicates import cached_groups

    rows = table.index[table["split"].eq("train") & table["source"].ne(PSEUDO_SOURCE)]
    if len(rows) < 2:
        return table, None
    linked = pd.Series(cached_groups(table.loc[rows, "image_path"].astype(str).tolist(), cache_dir=cache_dir,
                                     max_distance=max_distance), index=rows)
    shared = linked.duplicated(keep=False)
    if not shared.any():
        return table, None
    external = table.loc[rows, "is_external"].astype(bool)
    if not validate_external:
        with_primary = set(linked[~external])
        leaking = external & linked.isin(with_primary)
        if leaking.any():
            _log.warning("near-duplicates: dropping %d external image(s) that duplicate primary images (they would "
                         "train the fold model that validates their copy)", int(leaking.sum()))
            table, linked = table.drop(index=leaking.index[leaking]), linked[~leaking]
            shared = linked.duplicated(keep=False)
    patients = table.loc[shared.index[shared]].groupby(linked[shared])["patient_id"].nunique()
    _log.warning("near-duplicates: %d image(s) in %d group(s) (perceptual hashes within %d of 256 bits), %d of the "
                 "groups across patients; each group is kept in one fold (data.near_duplicates: null turns this off)",
                 int(shared.sum()), int(linked[shared].nunique()), max_distance, int((patients > 1).sum()))
    return table, linked


def load_dataset(config: DataConfig) -> PreparedData:
    """Read the dataset a ``data:`` section names (the synthetic set when ``dir`` is empty)."""
    return prepare_data(root=config.dir, layout=config.layout, external=config.external,
                        duplicates=config.duplicates, n_folds=config.n_folds, fold_seed=config.fold_seed,
                        missing_images=config.missing_images, unknown_sites=config.unknown_sites,
                        synthetic_dir=config.cache_dir,
                        synthetic_params=config.synthetic.model_dump(), pseudo=config.pseudo,
                        near_duplicates=config.near_duplicates, cache_dir=config.cache_dir,
                        validate_external=config.validate_external, group_folds_by=config.group_folds_by)
