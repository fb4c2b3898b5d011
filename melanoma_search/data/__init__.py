"""Data, the ground floor: the ``data:`` config section, dataset layouts, folds, metadata features, the image
cache, the torch dataset, the synthetic set."""

from __future__ import annotations

from melanoma_search.data.cache import CachedImages, cache_key, load_or_build_cache
from melanoma_search.data.config import DataConfig, SyntheticConfig
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.folds import EXTERNAL_FOLD, assign_folds, drop_duplicates, read_duplicate_list
from melanoma_search.data.images import decode_image
from melanoma_search.data.layouts import COLUMNS, SITES, detect_layout, list_layouts, load_table, register_layout
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.data.prepare import MELANOMA, PreparedData, load_dataset, prepare_data
from melanoma_search.data.synthetic import ensure_synthetic_dataset, render_lesion, write_synthetic_dataset

__all__ = [
    "COLUMNS",
    "EXTERNAL_FOLD",
    "MELANOMA",
    "SITES",
    "CachedImages",
    "DataConfig",
    "LesionDataset",
    "MetaEncoder",
    "PreparedData",
    "add_derived_columns",
    "assign_folds",
    "cache_key",
    "decode_image",
    "detect_layout",
    "list_layouts",
    "load_dataset",
    "drop_duplicates",
    "ensure_synthetic_dataset",
    "load_table",
    "load_or_build_cache",
    "prepare_data",
    "read_duplicate_list",
    "register_layout",
    "render_lesion",
    "SyntheticConfig",
    "write_synthetic_dataset",
]
