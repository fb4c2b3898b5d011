from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma_search.data.layouts import load_table
from melanoma_search.data.synthetic import ensure_synthetic_dataset, render_lesion


def test_rendering_is_deterministic() -> None:
    a = render_lesion(np.random.default_rng([1, 2]), malignant=True, size=64)
    b = render_lesion(np.random.default_rng([1, 2]), malignant=True, size=64)
    c = render_lesion(np.random.default_rng([1, 3]), malignant=True, size=64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_written_set_reads_as_labels_layout(tmp_path: Path) -> None:
    root = ensure_synthetic_dataset(tmp_path, n_train=60, n_test=10, size=48, seed=5)
    again = ensure_synthetic_dataset(tmp_path, n_train=60, n_test=10, size=48, seed=5)
    assert root == again
    table = load_table(root)
    assert table["split"].value_counts().to_dict() == {"train": 60, "test": 10}
    assert 0.1 < table.loc[table.split == "train", "target"].mean() < 0.45
    assert table["patient_id"].nunique() < len(table)  # several images per patient, as in real data


def test_malignant_lesions_are_more_varied_in_colour() -> None:
    """The label is carried by the picture: a crude colour-variety statistic of the lesion centre ranks melanomas
    well above benign lesions, but not perfectly (the classes overlap, so the task is not trivial)."""
    from sklearn.metrics import roc_auc_score

    def variety(malignant: bool) -> list[float]:
        values = []
        for i in range(60):
            centre = render_lesion(np.random.default_rng([9, i]), malignant=malignant, size=64)[22:42, 22:42]
            pixels = centre.reshape(-1, 3).astype(float)
            values.append(float(np.median(np.abs(pixels - np.median(pixels, 0)).sum(1))))
        return values

    auc = roc_auc_score([1] * 60 + [0] * 60, variety(True) + variety(False))
    assert 0.75 < auc < 0.99
