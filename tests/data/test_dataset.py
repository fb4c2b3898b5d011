from __future__ import annotations

import numpy as np
import pytest
import torch

from melanoma_search.data.dataset import LesionDataset


def test_meta_dropout_swaps_in_the_missing_encoding_at_its_rate() -> None:
    images = np.zeros((40, 8, 8, 3), np.uint8)
    meta = np.ones((40, 5), np.float32)
    missing = np.zeros((40, 5), np.float32)
    torch.manual_seed(0)
    always = LesionDataset(images, rows=np.arange(40), targets=np.zeros(40), meta=meta, meta_missing=missing,
                           meta_dropout=0.999)
    assert all(float(always[i]["meta"].sum()) == 0 for i in range(40))
    half = LesionDataset(images, rows=np.arange(40), targets=np.zeros(40), meta=meta, meta_missing=missing,
                         meta_dropout=0.5)
    dropped = sum(float(half[i % 40]["meta"].sum()) == 0 for i in range(2000))
    assert 850 < dropped < 1150
    never = LesionDataset(images, rows=np.arange(40), targets=np.zeros(40), meta=meta)
    assert all(float(never[i]["meta"].sum()) == 5 for i in range(40))
    with pytest.raises(ValueError, match="meta_dropout needs meta and meta_missing"):
        LesionDataset(images, rows=np.arange(40), targets=np.zeros(40), meta=meta, meta_dropout=0.5)
