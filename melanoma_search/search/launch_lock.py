"""Which launches of a study are alive, where the storage has no heartbeat (Optuna's journal file).

An RDB storage's heartbeat tells a dead worker's trial from a live one. The journal file has none, so after a host
crash, or a ``kill -9`` of a launcher together with its workers, their RUNNING trials would stay RUNNING forever:
never retried, each holding a place of ``--max-trials``. Instead every process of a launch (the launcher and each of
its workers, a Ray trial's included) holds a *shared* ``flock`` on ``<journal>.launches/<launch>.lock`` for its
life. The kernel drops a process's locks when it dies, however it dies; so a launch whose lock can be taken
*exclusively* has no process left, and its RUNNING trials are orphans that the next worker fails and re-queues
(:func:`~melanoma_search.search.recovery.fail_orphans`). A journal serves one host, and so do these locks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["LaunchLock", "launch_folder", "launch_is_dead"]


def launch_folder(storage_url: str) -> Path | None:
    """Where a journal storage's launch locks live (``None``: the storage has heartbeats or needs none)."""
    if storage_url.startswith("journal:") or storage_url.endswith(".log"):
        return Path(f"{storage_url.removeprefix('journal:')}.launches")
    return None


class LaunchLock:
    """This process's shared hold on its launch's lock (a no-op for storages without launch locks)."""

    def __init__(self, storage_url: str, launch: str) -> None:
        folder = launch_folder(storage_url)
        self.path = None if folder is None else folder / f"{launch}.lock"
        self._fd: int | None = None

    def hold(self) -> LaunchLock:
        if self.path is not None and self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        return self

    def release(self, *, remove: bool = False) -> None:
        """Let go; ``remove``: also delete the file (the launcher, once its run is over)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove and self.path is not None:
            self.path.unlink(missing_ok=True)


def launch_is_dead(storage_url: str, launch: str) -> bool:
    """Whether no process of ``launch`` is alive: its lock can be taken exclusively, or it has none (a launch of a
    version without locks, or one whose launcher finished and removed it: it holds no RUNNING trial then)."""
    folder = launch_folder(storage_url)
    if folder is None:
        return False
    path = folder / f"{launch}.lock"
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the exclusive lock if it was taken
    return True
