"""Data: dataset readers, folds, metadata features, the image cache, the torch dataset, the synthetic set."""

from __future__ import annotations

from melanoma_search.data.cache import CachedImages, cache_key, load_or_build_cache
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.folds import EXTERNAL_FOLD, assign_folds, drop_duplicates, read_duplicate_list
from melanoma_search.data.images import decode_image
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.data.prepare import MELANOMA, PreparedData, prepare_data
from melanoma_search.data.synthetic import ensure_synthetic_dataset, render_lesion, write_synthetic_dataset
from melanoma_search.data.tables import COLUMNS, LAYOUTS, SITES, detect_layout, load_table

__all__ = [
    "COLUMNS",
    "EXTERNAL_FOLD",
    "LAYOUTS",
    "MELANOMA",
    "SITES",
    "CachedImages",
    "LesionDataset",
    "MetaEncoder",
    "PreparedData",
    "add_derived_columns",
    "assign_folds",
    "cache_key",
    "decode_image",
    "detect_layout",
    "drop_duplicates",
    "ensure_synthetic_dataset",
    "load_table",
    "load_or_build_cache",
    "prepare_data",
    "read_duplicate_list",
    "render_lesion",
    "write_synthetic_dataset",
]
