"""One small registry for every family a config names (timm's ``register_model`` / ``create_model`` shape).

Losses, augmentation policies, dataset layouts, execution backends, blend methods, stage-two feature groups and
learners are each a table of one kind: a name on the command line or in a spec is a lookup, a new entry is one
registration, a name registered twice is refused (two modules defining ``focal`` must not silently shadow each
other), and an unknown name is the family's own error class with the names that exist. Each family declares its table
in one line and keeps its own ``register_*`` / ``get_*`` / ``list_*`` facade, which says what an entry holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to entries of one family, in registration order.

    ``family``: how an error names an entry (``"loss"``, ``"dataset layout"``); ``error``: the exception an unknown
    name raises (the family's own: a config value is a :class:`~melanoma_search.errors.ConfigError`, a dataset's
    a :class:`~melanoma_search.errors.DataError`)."""

    def __init__(self, family: str, *, error: type[Exception] = ValueError) -> None:
        self.family = family
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a name is registered once (``ValueError``: a programming error)."""
        if name in self._entries:
            raise ValueError(f"{self.family} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry of ``name``, or the family's error naming what is available."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(f"unknown {self.family} {name!r}; available: {', '.join(self._entries)}") from None

    def copy(self) -> Registry[T]:
        """The same family and entries in a new table (a test registers into the copy, leaving the real one)."""
        twin: Registry[T] = Registry(self.family, error=self.error)
        twin._entries = dict(self._entries)
        return twin

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)
