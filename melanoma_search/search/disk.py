"""A full disk under a run: told apart from a trial's own failure, so the run stops once instead of failing every
trial on the same disk.

A write that finds no space fails in whichever library was writing: Python and numpy raise ``OSError`` with
``ENOSPC``; safetensors says "No space left on device (os error 28)"; torch's zip writer only "unexpected pos".
:func:`disk_full` reads the exception's whole chain for the first two and, for a failure that names no cause, looks
at the folders the trial writes to: one with almost no free space is the cause. The run then ends in one line naming
the folder (:class:`~melanoma_search.errors.DiskFullError`); the trial is re-queued, and the same command continues
it once there is space. Every file the search writes is written beside its destination and renamed into place, so
nothing half-written is ever taken for a finished file by the next run.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterable
from pathlib import Path

from melanoma_search.errors import DiskFullError

__all__ = ["LOW_SPACE_BYTES", "disk_full", "free_bytes"]

#: Below this much free space a folder is full for a trial's purposes (a fold's state is tens of megabytes).
LOW_SPACE_BYTES = 16 * 1024 * 1024

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "database or disk is full")
_WRITER_WORDS = ("unexpected pos", "file write failed", "i/o error")


def free_bytes(folder: Path) -> int:
    """Free space on the filesystem holding ``folder`` (or its nearest existing parent)."""
    path = folder
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def disk_full(exc: BaseException, *, folders: Iterable[Path]) -> DiskFullError | None:
    """A :class:`DiskFullError` naming the fullest of ``folders`` (the first of them on a tie: give the one a user
    knows first) when ``exc`` was caused by a full disk."""
    if isinstance(exc, DiskFullError):
        return exc
    chain = list(_chain(exc))
    says_full = any(isinstance(e, OSError) and e.errno in _NO_SPACE for e in chain) or any(
        word in str(e).lower() for e in chain for word in _NO_SPACE_WORDS)
    fullest = min(((free_bytes(Path(f)), Path(f)) for f in folders), key=lambda pair: pair[0], default=None)
    looks_full = fullest is not None and fullest[0] < LOW_SPACE_BYTES and any(
        word in str(e).lower() for e in chain for word in _WRITER_WORDS)
    if not (says_full or looks_full) or fullest is None:
        return None
    free, folder = fullest
    return DiskFullError(f"the disk holding {folder} is full ({free / 2**20:.1f} MB free): the run stops here "
                         "instead of failing every trial on it; free some space (or point --storage-dir elsewhere) "
                         "and run the same command, which continues the stopped trial")
