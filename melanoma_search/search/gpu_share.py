"""Trials that share one GPU, and the one that must have it alone: a reader-writer lease on a lock file per card.

Every trial of a packed worker holds a shared lease on its card while it runs. A trial that ran out of memory even
at half its batch asks for the card alone: new trials on that card wait (the turnstile), the running ones finish,
and the retry runs with the card's whole memory. Plain ``flock`` locks on files in the run's folder, so the workers
need no server, and a worker that dies releases its lease with its file descriptors.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["GpuShare"]


class GpuShare:
    """The lease of one worker process on its card (``path``: the card's lock file, the same for all its workers)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._held: str | None = None
        self._lease: int | None = None
        self._turnstile: int | None = None

    def _open(self, suffix: str) -> int:
        return os.open(f"{self.path}{suffix}", os.O_RDWR | os.O_CREAT, 0o600)

    @property
    def held(self) -> str | None:
        """``"shared"``, ``"alone"`` or ``None``."""
        return self._held

    def _acquire(self, mode: str) -> None:
        self._lease = self._lease if self._lease is not None else self._open("")
        self._turnstile = self._turnstile if self._turnstile is not None else self._open(".turnstile")
        fcntl.flock(self._turnstile, fcntl.LOCK_EX)  # behind a trial waiting to be alone, no new trial starts
        try:
            fcntl.flock(self._lease, fcntl.LOCK_SH if mode == "shared" else fcntl.LOCK_EX)
        finally:
            if mode == "shared":
                fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._held = mode

    def _release(self) -> None:
        if self._lease is not None:
            fcntl.flock(self._lease, fcntl.LOCK_UN)
        if self._held == "alone" and self._turnstile is not None:
            fcntl.flock(self._turnstile, fcntl.LOCK_UN)
        self._held = None

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Run a trial beside the card's other trials."""
        self._acquire("shared")
        try:
            yield
        finally:
            self._release()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Wait until no other trial runs on the card, and keep new ones out until the block ends."""
        previous = self._held
        self._release()  # a shared lease is given up first (flock upgrades are not atomic anyway)
        self._acquire("alone")
        try:
            yield
        finally:
            self._release()
            if previous == "shared":
                self._acquire("shared")
