"""What an ensemble folder's manifest says of how its images are read."""

from __future__ import annotations

import pytest

from melanoma_search.ensemble.folder import EnsembleError, _resize_of


def test_an_ensemble_exported_before_the_one_resize_keeps_opencvs() -> None:
    """An older manifest names no resize: its fold models trained on OpenCV-resized pixels, and keep scoring so."""
    assert _resize_of({"format": 3}) == "opencv"
    assert _resize_of({"format": 3, "resize": "pillow"}) == "pillow"
    with pytest.raises(EnsembleError, match="unknown image resize 'lanczos'"):
        _resize_of({"resize": "lanczos"})
