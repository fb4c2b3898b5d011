"""Near-duplicate images on real HAM images: a resized, re-encoded copy under another name and patient shares its
original's fold, and the pass says how many it found; distinct lesions are never grouped."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma_search.data.near_duplicates import (
    hashes_from_hex,
    hashes_to_hex,
    near_duplicate_groups,
    near_duplicates_of,
    perceptual_hashes,
)
from melanoma_search.data.prepare import prepare_data


def _copy(source: Path, target: Path, *, size: int, quality: int) -> None:
    """A resized copy saved again as JPEG: what an archive's second release of the same photograph looks like."""
    buffer = io.BytesIO()
    Image.open(source).convert("RGB").resize((size, size)).save(buffer, "JPEG", quality=quality)
    target.write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def with_copies(tmp_path_factory: pytest.TempPathFactory, ham_dir: Path) -> Path:
    """60 HAM images (20 melanomas), plus resized re-encoded copies of three of them under new names and patients."""
    labels = pd.read_csv(ham_dir / "labels.csv")
    rows = pd.concat([labels[labels.target == 1].head(20), labels[labels.target == 0].head(40)], ignore_index=True)
    root = tmp_path_factory.mktemp("near-duplicates")
    (root / "images").mkdir()
    for name in rows["image_name"]:
        shutil.copy(ham_dir / "images" / f"{name}.jpg", root / "images" / f"{name}.jpg")
    copies = []
    for index, (size, quality) in enumerate(((150, 60), (300, 90), (200, 40))):
        original = rows.iloc[index * 7]
        name = f"COPY_{index}"
        _copy(root / "images" / f"{original['image_name']}.jpg", root / "images" / f"{name}.jpg", size=size,
              quality=quality)
        copies.append(original.to_dict() | {"image_name": name, "patient_id": f"OTHER_{index}",
                                            "lesion_id": f"OTHER_{index}"})
    pd.concat([rows, pd.DataFrame(copies)], ignore_index=True).to_csv(root / "labels.csv", index=False)
    return root


def test_a_resized_reencoded_copy_shares_its_originals_fold(with_copies: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="melanoma_search.data.prepare"):
        prepared = prepare_data(root=str(with_copies), n_folds=3, near_duplicates=40, cache_dir=str(tmp_path))
    table = prepared.table.set_index("image_name")
    labels = pd.read_csv(with_copies / "labels.csv")
    for index in range(3):
        original = labels.iloc[index * 7]["image_name"]
        assert table.loc[f"COPY_{index}", "fold"] == table.loc[original, "fold"]
    assert "near-duplicates: 6 image(s) in 3 group(s)" in caplog.text
    assert "3 of the groups across patients" in caplog.text
    off = prepare_data(root=str(with_copies), n_folds=3, near_duplicates=None, cache_dir=str(tmp_path))
    apart = off.table.set_index("image_name")
    split = [i for i in range(3)
             if apart.loc[f"COPY_{i}", "fold"] != apart.loc[labels.iloc[i * 7]["image_name"], "fold"]]
    assert split, "without the pass the copies are dealt out as other patients (the leak the pass closes)"


def test_distinct_lesions_are_never_grouped_and_hashes_round_trip(with_copies: Path, ham_dir: Path) -> None:
    used = {p.name for p in (with_copies / "images").iterdir()}
    paths = sorted(str(p) for p in (ham_dir / "images").glob("*.jpg") if p.name not in used)[:800]
    hashes = perceptual_hashes(paths)
    assert len(set(near_duplicate_groups(hashes))) == 800  # HAM holds one image per lesion
    copies = perceptual_hashes([str(with_copies / "images" / f"COPY_{i}.jpg") for i in range(3)])
    originals = perceptual_hashes([str(p) for p in sorted((with_copies / "images").glob("ISIC_*.jpg"))])
    assert near_duplicates_of(copies, originals).all() and not near_duplicates_of(hashes[:50], copies).any()
    assert np.array_equal(hashes_from_hex(hashes_to_hex(originals)), originals)
    broken = perceptual_hashes([str(with_copies / "labels.csv")])  # not an image: its own, never a duplicate
    assert broken[0, -1] == 0 and not near_duplicates_of(broken, originals).any()


def test_an_external_copy_of_a_primary_image_is_dropped(with_copies: Path, ham_dir: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """An external image that duplicates a primary one would train the fold model validating its copy: dropped,
    counted; with data.validate_external it stays, in its copy's fold."""
    labels = pd.read_csv(with_copies / "labels.csv")
    used = set(labels["image_name"])
    others = pd.read_csv(ham_dir / "labels.csv")
    others = others[~others["image_name"].isin(used)].head(8)
    external = tmp_path / "external"
    (external / "images").mkdir(parents=True)
    for name in others["image_name"]:
        shutil.copy(ham_dir / "images" / f"{name}.jpg", external / "images" / f"{name}.jpg")
    original = labels.iloc[1]
    _copy(with_copies / "images" / f"{original['image_name']}.jpg", external / "images" / "EXT_COPY.jpg", size=180,
          quality=70)
    pd.concat([others, pd.DataFrame([original.to_dict() | {"image_name": "EXT_COPY", "patient_id": "EXT_P"}])],
              ignore_index=True).to_csv(external / "labels.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="melanoma_search.data.prepare"):
        prepared = prepare_data(root=str(with_copies), external=(str(external),), n_folds=3, near_duplicates=40,
                                cache_dir=str(tmp_path / "cache"))
    names = set(prepared.table["image_name"])
    assert "EXT_COPY" not in names and set(others["image_name"]) <= names
    assert "dropping 1 external image(s) that duplicate primary images" in caplog.text
    kept = prepare_data(root=str(with_copies), external=(str(external),), n_folds=3, near_duplicates=40,
                        cache_dir=str(tmp_path / "cache"), validate_external=True).table.set_index("image_name")
    assert kept.loc["EXT_COPY", "fold"] == kept.loc[original["image_name"], "fold"]
