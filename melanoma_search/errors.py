"""Errors a user can act on.

Every problem caused by input (a dataset folder, an image, a config) is raised as a subclass of
:class:`MelanomaSearchError`, whose message names the file, column or value at fault. Entry points print the message
and exit non-zero instead of dumping a traceback from deep inside a library.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "ImageError",
    "MelanomaSearchError",
    "NonFiniteLossError",
    "StorageError",
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


class StorageError(MelanomaSearchError, RuntimeError):
    """The study's storage cannot be opened or written (locked, unreachable, wrong credentials)."""
