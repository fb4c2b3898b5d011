"""Where a run's trials execute: this process or local worker processes (``local``), or Ray Tune (``ray``).

Importing this package registers the built-in backends; :func:`get_backend` looks one up by its ``--backend`` name.
"""

from __future__ import annotations

from melanoma_search.search.backends.base import (
    Backend,
    RunOutcome,
    backend_flags,
    get_backend,
    list_backends,
    register_backend,
)
from melanoma_search.search.backends.local import LocalBackend
from melanoma_search.search.backends.ray import RayBackend

__all__ = [
    "Backend",
    "LocalBackend",
    "RayBackend",
    "RunOutcome",
    "backend_flags",
    "get_backend",
    "list_backends",
    "register_backend",
]
