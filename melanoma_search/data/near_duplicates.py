"""Near-duplicate images: the same lesion photographed again, re-encoded or resized, found by perceptual hash.

A list of duplicate names and an exact file digest miss a copy that was resized or saved again as JPEG, and the ISIC
releases hold many: Cassidy et al. (Medical Image Analysis 75, 2022) found 14,310 duplicates within and between the
ISIC 2016-2020 archives, some across their training and test sets. A copy on both sides of a fold boundary, or in the
outside images an ensemble is checked on, makes the check score what the model has already seen.

Each image gets a 256-bit DCT perceptual hash (``imagehash.phash`` with ``hash_size=16`` on its greyscale), which
survives resizing, re-encoding and small colour changes; two images whose hashes differ in at most ``max_distance``
of the 256 bits are near-duplicates (40 by default). Measured on the HAM sample (2,238 images) and the 242 ISIC 2018
test images: the closest two images of different lesions differ in 62 bits (most in 80 or more), a copy resized to
150-300 px and saved again at JPEG quality 40-90 in at most 28 (60 images, three copies each). The common 64-bit
hash does not separate them: a dermoscopy image is a dark blob in the middle of skin, and different lesions came
within 4 bits of each other, as close as the copies. Near-duplicates form groups (connected components), which the
folds keep together like a patient's images, and which ``export --validate`` and ``--calibrate-on`` refuse as new
images.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["DEFAULT_MAX_DISTANCE", "cached_groups", "hashes_from_hex", "hashes_to_hex", "near_duplicate_groups",
           "near_duplicates_of", "perceptual_hash", "perceptual_hashes"]

#: Bits (of 256) two hashes may differ in for their images to count as one.
DEFAULT_MAX_DISTANCE = 40
_HASH_SIZE = 16  # 16 x 16 DCT coefficients: 256 bits, 32 bytes
_BYTES = _HASH_SIZE * _HASH_SIZE // 8


def perceptual_hash(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The image's 256-bit perceptual hash as 32 bytes; ``None`` when it cannot be decoded (the image cache names
    such files)."""
    import imagehash
    from PIL import Image, UnidentifiedImageError

    from melanoma_search.data.images import _source

    try:
        with Image.open(_source(path)) as image:
            image.draft("L", (128, 128))  # a JPEG is decoded at a fraction of its size: the hash reads 64 px
            value = imagehash.phash(image.convert("L"), hash_size=_HASH_SIZE)
    except (OSError, UnidentifiedImageError, FileNotFoundError, ValueError):
        return None
    return np.packbits(np.asarray(value.hash, dtype=bool).flatten())


def _cache_file(paths: Sequence[str], cache_dir: str | os.PathLike[str], what: str) -> Path:
    from melanoma_search.data.cache import cache_key

    key = hashlib.sha1(cache_key(paths, size=0).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{key}-{what}.npy"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npy")
    np.save(partial, array)
    partial.replace(path)  # atomic: a reader never sees half a file


def perceptual_hashes(paths: Sequence[str], *, cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Every image's hash, an (N, 33) uint8 array: 32 bytes of hash and a last byte 1 where the image decoded (0:
    undecodable, never a near-duplicate of anything), cached in ``cache_dir`` under the file list's key (any changed
    file gives a new key)."""
    cached = None if cache_dir is None else _cache_file(paths, cache_dir, f"phash{_HASH_SIZE}")
    if cached is not None and cached.is_file():
        return np.load(cached)
    out = np.zeros((len(paths), _BYTES + 1), dtype=np.uint8)
    for i, path in enumerate(paths):
        value = perceptual_hash(path)
        if value is not None:
            out[i, :_BYTES], out[i, _BYTES] = value, 1
    if cached is not None:
        _save(cached, out)
    return out


def cached_groups(paths: Sequence[str], *, cache_dir: str | os.PathLike[str], max_distance: int) -> np.ndarray:
    """:func:`near_duplicate_groups` of ``paths``' hashes, both cached in ``cache_dir`` (grouping 33,000 images
    takes about a minute; every trial of a study prepares the same table)."""
    cached = _cache_file(paths, cache_dir, f"groups{_HASH_SIZE}-{max_distance}")
    if cached.is_file():
        return np.load(cached)
    groups = near_duplicate_groups(perceptual_hashes(paths, cache_dir=cache_dir), max_distance=max_distance)
    _save(cached, groups)
    return groups


def hashes_to_hex(hashes: np.ndarray) -> list[str]:
    """Each hash as 64 hex digits ("" where the image did not decode), for a CSV."""
    return [bytes(row[:_BYTES]).hex() if row[_BYTES] else "" for row in hashes]


def hashes_from_hex(values: Sequence[str] | Iterable[str]) -> np.ndarray:
    """:func:`hashes_to_hex`' text back as a :func:`perceptual_hashes` array (anything else: undecoded)."""
    texts = [str(v) for v in values]
    out = np.zeros((len(texts), _BYTES + 1), dtype=np.uint8)
    for i, text in enumerate(texts):
        if len(text) == 2 * _BYTES and all(c in "0123456789abcdef" for c in text):
            out[i, :_BYTES], out[i, _BYTES] = np.frombuffer(bytes.fromhex(text), dtype=np.uint8), 1
    return out


def _distances(block: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Hamming distances between each hash of ``block`` and each of ``others`` ((n, 32) and (m, 32) bytes), read
    as four 64-bit words each."""
    a = np.ascontiguousarray(block).view(np.uint64)
    b = np.ascontiguousarray(others).view(np.uint64)
    return np.bitwise_count(np.bitwise_xor(a[:, None, :], b[None, :, :])).sum(axis=-1, dtype=np.int32)


def _near_blocks(hashes: np.ndarray, index: np.ndarray, reference: np.ndarray, *, max_distance: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``index`` of ``hashes`` in blocks of 256 (memory stays at 256 x M x 32 bytes), each with its matrix of
    "within ``max_distance`` bits" against the hash bytes ``reference`` (M, 32)."""
    for start in range(0, len(index), 256):
        block = index[start:start + 256]
        yield block, _distances(hashes[block, :_BYTES], reference) <= max_distance


def near_duplicate_groups(hashes: np.ndarray, *, max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """Each image's group: images within ``max_distance`` bits of each other, chained, share one (the smallest
    index of the group); an undecodable image is its own. ``hashes``: :func:`perceptual_hashes`' array."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    index = np.flatnonzero(hashes[:, _BYTES])
    rows, cols = [np.array([], dtype=int)], [np.array([], dtype=int)]
    for block, near in _near_blocks(hashes, index, hashes[index, :_BYTES], max_distance=max_distance):
        a, b = np.nonzero(near)
        rows.append(block[a])
        cols.append(index[b])
    r, c, n = np.concatenate(rows), np.concatenate(cols), len(hashes)
    _, labels = connected_components(coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n)),
                                     directed=False)
    _, first = np.unique(labels, return_index=True)  # each group's smallest index
    return first[labels]


def near_duplicates_of(hashes: np.ndarray, reference: np.ndarray, *,
                       max_distance: int = DEFAULT_MAX_DISTANCE) -> np.ndarray:
    """For each image of ``hashes``, whether it is within ``max_distance`` bits of any image of ``reference``
    (both :func:`perceptual_hashes` arrays)."""
    out = np.zeros(len(hashes), dtype=bool)
    theirs = reference[reference[:, _BYTES].astype(bool), :_BYTES]
    if len(theirs):
        for block, near in _near_blocks(hashes, np.flatnonzero(hashes[:, _BYTES]), theirs,
                                        max_distance=max_distance):
            out[block] = near.any(axis=1)
    return out
