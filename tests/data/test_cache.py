from __future__ import annotations

import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest

from melanoma_search.data.cache import load_or_build_cache
from melanoma_search.data.images import decode_image
from melanoma_search.errors import ImageError


@pytest.fixture()
def jpegs(tmp_path: Path, ham_dir: Path) -> list[str]:
    folder = tmp_path / "images"
    folder.mkdir()
    paths = []
    for src in sorted((ham_dir / "images").glob("*.jpg"))[:24]:
        shutil.copy(src, folder / src.name)
        paths.append(str(folder / src.name))
    return paths


def test_cache_holds_decoded_pixels_and_is_reused(tmp_path: Path, jpegs: list[str]) -> None:
    cache = load_or_build_cache(jpegs, size=48, cache_dir=tmp_path / "cache", workers=2, progress=False)
    assert cache.array.shape == (24, 48, 48, 3) and cache.array.dtype == np.uint8
    np.testing.assert_array_equal(cache.array[5], decode_image(jpegs[5], 48))
    assert not cache.array.flags.writeable  # a shared, read-only memory map
    mtime = cache.path.stat().st_mtime_ns
    again = load_or_build_cache(jpegs, size=48, cache_dir=tmp_path / "cache", progress=False)
    assert again.path == cache.path and again.path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    other_size = load_or_build_cache(jpegs, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert other_size.path != cache.path and other_size.array.shape[1] == 32


def test_changed_file_list_invalidates(tmp_path: Path, jpegs: list[str]) -> None:
    first = load_or_build_cache(jpegs, size=32, cache_dir=tmp_path / "cache", progress=False)
    fewer = load_or_build_cache(jpegs[:-1], size=32, cache_dir=tmp_path / "cache", progress=False)
    assert fewer.path != first.path and len(fewer.array) == 23
    Path(jpegs[0]).write_bytes(Path(jpegs[1]).read_bytes())  # same name, new content
    rewritten = load_or_build_cache(jpegs, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert rewritten.path != first.path
    np.testing.assert_array_equal(rewritten.array[0], rewritten.array[1])


def test_bad_images_error_or_skip(tmp_path: Path, jpegs: list[str]) -> None:
    Path(jpegs[3]).write_bytes(Path(jpegs[3]).read_bytes()[:1500])  # truncated
    Path(jpegs[7]).write_bytes(b"garbage")
    with pytest.raises(ImageError, match=r"2 image\(s\) could not be decoded, first: .*" + Path(jpegs[3]).name):
        load_or_build_cache(jpegs, size=32, cache_dir=tmp_path / "cache", progress=False)
    cache = load_or_build_cache(jpegs, size=32, cache_dir=tmp_path / "cache", bad_images="skip", progress=False)
    assert sorted(cache.bad) == [3, 7] and cache.ok.sum() == 22


def _build(args: tuple[list[str], str]) -> str:
    paths, cache_dir = args
    return str(load_or_build_cache(paths, size=40, cache_dir=cache_dir, workers=1, progress=False).path)


def test_concurrent_processes_share_one_build(tmp_path: Path, jpegs: list[str]) -> None:
    cache_dir = str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(3) as pool:
        results = pool.map(_build, [(jpegs, cache_dir)] * 3)
    assert len(set(results)) == 1
    leftovers = [p.name for p in Path(cache_dir).iterdir() if ".tmp" in p.name]
    assert leftovers == []
    assert len(list(Path(cache_dir).glob("*.npy"))) == 1
