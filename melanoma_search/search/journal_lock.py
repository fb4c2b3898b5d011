"""The journal file storage's lock, as an operating-system file lock.

Optuna's journal locks are lock *files* (``JournalFileSymlinkLock`` by default): whoever creates the file holds the
lock, and a lock file older than a grace period is deleted as abandoned. Ctrl-C reaches every worker of a run at
once, and every journal write takes and releases the lock, so an interrupt often lands inside ``release``: there,
Optuna's cleanup unlinks a renamed file the interrupted rename never made, and the ``KeyboardInterrupt`` becomes a
``FileNotFoundError (...log.lock<uuid>.rename)``. The study then catches it as the trial's failure, the worker runs
on into its next trial instead of stopping, and the lock file stays until its grace period (seen in
``tests/search/test_backend_local.py::test_ctrl_c_stops_every_worker`` on a busy machine).

``flock`` has none of this: the kernel holds the lock for the open file, closing the file releases it whatever
interrupts, an interrupted wait holds nothing, and a process that dies (even by SIGKILL) releases it with its files.
It serves one host, which is what the journal file is for (several hosts use PostgreSQL).
"""

from __future__ import annotations

import fcntl
import os
import threading

from optuna.storages.journal import JournalFileOpenLock

__all__ = ["FlockJournalLock"]


class FlockJournalLock(JournalFileOpenLock):
    """An exclusive ``flock`` on ``<journal>.flock``; each thread's hold is its own open file.

    Optuna exports its lock base class only through its two lock classes, so this subclasses one of them and
    replaces all of it (``JournalFileBackend`` calls nothing but ``acquire`` and ``release``).
    """

    def __init__(self, journal_path: str) -> None:  # the parent's lock file and grace period are not used
        self.path = f"{journal_path}.flock"
        self._held = threading.local()

    def __getstate__(self) -> dict[str, str]:
        """Only the path travels: Ray Tune pickles the storage into its trials, and a hold never leaves its process."""
        return {"path": self.path}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.path = state["path"]
        self._held = threading.local()

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:  # interrupted while waiting: close what we opened, touch nobody's lock
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        fd = getattr(self._held, "fd", None)
        if fd is None:
            return
        self._held.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
