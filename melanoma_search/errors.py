"""Errors a user can act on.

Every problem caused by input (a dataset folder, an image, a config) is raised as a subclass of
:class:`MelanomaSearchError`, whose message names the file, column or value at fault. Entry points print the message
and exit non-zero instead of dumping a traceback from deep inside a library. :class:`Preempted` is not an error but a
stop: SIGTERM, which a run treats as preemption (see its docstring).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = [
    "ConfigError",
    "DataError",
    "DiskFullError",
    "ImageError",
    "MelanomaSearchError",
    "NonFiniteLossError",
    "Preempted",
    "StorageError",
    "preempt_on_sigterm",
]


class MelanomaSearchError(Exception):
    """Base class of the errors whose message is meant for the user."""


class ConfigError(MelanomaSearchError, ValueError):
    """An invalid configuration value; the message gives the key path and what is allowed."""


class DataError(MelanomaSearchError, ValueError):
    """A dataset problem: missing folder or column, unknown value, a fold without positives."""


class ImageError(DataError):
    """An image that cannot be decoded (missing, corrupt, truncated); the message names the file."""


class NonFiniteLossError(MelanomaSearchError, FloatingPointError):
    """The training loss became NaN or infinite; the search marks such a trial as failed."""


class DiskFullError(MelanomaSearchError):
    """A disk a run writes to is full; the message names the folder and its free space."""


class StorageError(MelanomaSearchError, RuntimeError):
    """The study's storage cannot be opened or written (locked, unreachable, wrong credentials)."""


class Preempted(KeyboardInterrupt):
    """SIGTERM: a scheduler (Slurm, Kubernetes, a spot or preemptible VM) is taking the machine back.

    A ``KeyboardInterrupt`` so that it stops a run wherever it lands, as Ctrl-C does (Optuna records the running
    trial FAIL and re-raises it); the search then re-queues the trial and keeps its saved epochs, so the same command,
    or another node, continues it from its last finished epoch.
    """


def _raise_preempted(signum: int, frame: object) -> None:
    raise Preempted("preempted (SIGTERM)")


def preempt_on_sigterm() -> Callable[[], None]:
    """Turn this process's SIGTERM into :class:`Preempted`; returns the function that restores the old handler."""
    previous: Any = signal.signal(signal.SIGTERM, _raise_preempted)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
