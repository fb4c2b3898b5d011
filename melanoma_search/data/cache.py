"""Decode each image once per (file list, size) into a memory-mapped uint8 array shared by everything after.

A small model at low resolution trains faster than a CPU decodes JPEGs, so decoding every epoch starves it. The
cache decodes the files once (in parallel), stores ``(N, size, size, 3)`` uint8 pixels in a ``.npy`` file on disk and
hands out a read-only memory map: every epoch, trial and worker process then reads pages the OS already holds.

Safety across processes: the cache is keyed by a hash of the file list (paths, sizes, modification times) and the
image size, so a changed file list makes a new cache. It is written under an exclusive file lock into a temporary
file and renamed into place together with its manifest, so a reader never sees a half-written array; a second
process asking for the same cache waits on the lock and then reuses the finished file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from melanoma_search.data.images import decode_image
from melanoma_search.errors import DataError, ImageError

__all__ = ["CachedImages", "cache_key", "load_or_build_cache"]

_log = logging.getLogger(__name__)
_FORMAT_VERSION = 2  # 2: images resized with Pillow (data/images.py), no longer OpenCV


@dataclass(frozen=True)
class CachedImages:
    """A read-only view of cached pixels; ``bad`` lists the rows whose file could not be decoded (skip policy)."""

    array: np.ndarray
    bad: dict[int, str]
    path: Path

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows holding a real image."""
        mask = np.ones(len(self.array), dtype=bool)
        mask[list(self.bad)] = False
        return mask


def cache_key(paths: Sequence[str], size: int) -> str:
    """Hash of the file list and size: any added, removed, renamed or rewritten file gives a new key."""
    digest = hashlib.sha1(f"v{_FORMAT_VERSION}:{size}".encode())
    for path in paths:
        try:
            stat = os.stat(str(path).split("::", 1)[0])  # an image inside an HDF5 file: that file's stat
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:20]


def load_or_build_cache(
    paths: Sequence[str],
    *,
    size: int,
    cache_dir: str | os.PathLike[str],
    workers: int = 0,
    bad_images: Literal["error", "skip"] = "error",
    progress: bool = True,
) -> CachedImages:
    """Return the cached pixels of ``paths`` at ``size``, decoding them first if no valid cache exists.

    Args:
        paths: Image files, in table order.
        size: Side of the square the images are resized to.
        cache_dir: Folder of the cache files (created on demand).
        workers: Decoding processes; ``0`` means one per CPU core.
        bad_images: ``"error"`` raises :class:`ImageError` naming the first undecodable file; ``"skip"`` keeps going
            and reports every bad file in :attr:`CachedImages.bad` so the caller drops those rows.
        progress: Print decoding progress to stderr (decoding 30k large JPEGs takes minutes).
    """
    if not paths:
        raise DataError("no images to cache")
    folder = Path(cache_dir).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size)
    data_path = folder / f"{key}-{size}px.npy"
    manifest_path = folder / f"{key}-{size}px.json"
    with open(folder / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the finished cache
        try:
            cached = _open(data_path, manifest_path, n=len(paths), size=size)
            if cached is None:
                _build(paths, size=size, data_path=data_path, manifest_path=manifest_path,
                       workers=workers, progress=progress)
                cached = _open(data_path, manifest_path, n=len(paths), size=size)
                assert cached is not None, "cache unreadable right after it was written"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    if cached.bad and bad_images == "error":
        index, reason = next(iter(cached.bad.items()))
        raise ImageError(
            f"{len(cached.bad)} image(s) could not be decoded, first: {reason} "
            "(set data.bad_images=skip to drop and count them)"
        )
    if cached.bad:
        _log.warning("skipping %d undecodable image(s), e.g. %s", len(cached.bad), next(iter(cached.bad.values())))
    return cached


def _open(data_path: Path, manifest_path: Path, *, n: int, size: int) -> CachedImages | None:
    if not (data_path.is_file() and manifest_path.is_file()):
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        array = np.load(data_path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        _log.warning("ignoring unreadable cache %s (%s); rebuilding", data_path, exc)
        return None
    if array.shape != (n, size, size, 3) or manifest.get("version") != _FORMAT_VERSION:
        return None
    return CachedImages(array=array, bad={int(k): v for k, v in manifest["bad"].items()}, path=data_path)


def _reserve(path: Path) -> None:
    """Allocate the whole cache file on disk now: the decoders write it through memory maps, where a disk that fills
    midway kills the process with SIGBUS instead of raising; reserving it first makes a full disk an ``OSError``
    (ENOSPC) here, before any decoding."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):  # a filesystem without fallocate: write as before
            return
        path.unlink(missing_ok=True)
        raise OSError(exc.errno, f"cannot reserve the image cache ({exc.strerror})", str(path)) from None
    finally:
        os.close(fd)


def _build(
    paths: Sequence[str], *, size: int, data_path: Path, manifest_path: Path, workers: int, progress: bool
) -> None:
    start = time.perf_counter()
    tmp = data_path.with_suffix(f".tmp{os.getpid()}.npy")
    tmp_manifest = manifest_path.with_suffix(f".tmp{os.getpid()}")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
    del array  # workers open the file themselves
    _reserve(tmp)
    n_workers = workers if workers > 0 else (os.cpu_count() or 1)
    chunk = max(64, len(paths) // (n_workers * 8) + 1)
    jobs = [(str(tmp), list(paths[i : i + chunk]), i, size) for i in range(0, len(paths), chunk)]
    bad: dict[int, str] = {}
    done = 0
    try:
        if n_workers == 1 or len(jobs) == 1:
            results = map(_decode_chunk, jobs)
            for result in results:
                done = _collect(result, bad, done, len(paths), start, progress)
        else:
            with ProcessPoolExecutor(max_workers=n_workers) as pool:
                for result in pool.map(_decode_chunk, jobs):
                    done = _collect(result, bad, done, len(paths), start, progress)
        manifest = {"version": _FORMAT_VERSION, "size": size, "n": len(paths), "bad": bad}
        tmp_manifest.write_text(json.dumps(manifest))
        os.replace(tmp, data_path)
        os.replace(tmp_manifest, manifest_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_manifest.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    _log.info("cached %d images at %d px in %.1fs (%.0f img/s) -> %s",
              len(paths), size, seconds, len(paths) / max(seconds, 1e-9), data_path)


def _collect(result: tuple[int, dict[int, str]], bad: dict[int, str], done: int, total: int,
             start: float, progress: bool) -> int:
    count, errors = result
    bad.update(errors)
    before, done = done, done + count
    if progress:
        rate = done / max(time.perf_counter() - start, 1e-9)
        message = f"caching images: {done}/{total} ({rate:.0f} img/s)"
        if sys.stderr.isatty():
            print("\r" + message, end="" if done < total else "\n", file=sys.stderr, flush=True)
        elif done == total or before * 4 // total != done * 4 // total:  # a line per quarter in logs
            print(message, file=sys.stderr, flush=True)
    return done


def _decode_chunk(job: tuple[str, list[str], int, int]) -> tuple[int, dict[int, str]]:
    file, paths, offset, size = job
    array = np.load(file, mmap_mode="r+")
    errors: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            array[offset + i] = decode_image(path, size)
        except ImageError as exc:
            errors[offset + i] = str(exc)
    array.flush()
    return len(paths), errors
