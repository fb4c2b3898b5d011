"""The seam for execution backends: one abstract method, one outcome type, a table the command line is built from.

A backend decides *where* a run's trials execute; Optuna's storage stays the one source of truth, so every backend
runs the same worker code (:func:`~melanoma_search.search.worker.run_worker`) and only places it. A new backend is one
subclass of :class:`Backend` decorated with :func:`register_backend`: its flags appear in ``run --help`` under its
name, and ``run --backend NAME`` builds it from them.
"""

from __future__ import annotations

import abc
import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from melanoma_search.registry import Registry

if TYPE_CHECKING:
    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.search.worker import WorkerJob

__all__ = ["Backend", "RunOutcome", "backend_flags", "get_backend", "list_backends", "register_backend"]


@dataclass
class RunOutcome:
    """What happened to a run's workers: stopped by Ctrl-C or SIGTERM, an error that ended it, replaced workers,
    lost trials."""

    interrupted: bool = False
    preempted: bool = False
    """The stop was SIGTERM (a scheduler's preemption), not a user's Ctrl-C; ``interrupted`` is true too."""
    error: str | None = None
    restarts: int = 0
    failed_trials: list[tuple[int, int | None]] = field(default_factory=list)
    """``(failed trial, its retry or None)`` for every trial a lost worker or the stop left behind."""


class Backend(abc.ABC):
    """Runs a study's trials somewhere. Subclasses set :attr:`name` and :attr:`help` and implement :meth:`run`."""

    name: ClassVar[str]
    help: ClassVar[str]

    @classmethod  # noqa: B027 (not abstract: a backend may have no flags of its own)
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this backend's flags (each with ``default=None``, so an unused one can be told from a given one)."""

    @classmethod
    @abc.abstractmethod
    def from_args(cls, args: argparse.Namespace) -> Backend:
        """Build the backend from the parsed flags, raising ``ConfigError`` for a bad combination."""

    @property
    def parallel(self) -> bool:
        """Whether several processes write to the storage at once (SQLite is then refused)."""
        return True

    @property
    def description(self) -> str:
        """How the run's header names where trials run ("1 worker", "Ray Tune")."""
        return self.name

    @property
    def concurrency(self) -> int:
        """How many trials run at once (a race plans its rungs for this many)."""
        return 1

    def workers_for(self, n_trials: int | None) -> Backend:
        """This backend with no more workers than trials to run (no worker without a trial)."""
        return self

    @abc.abstractmethod
    def run(self, job: WorkerJob, *, runs: Path, data: PreparedData | None,
            log: Callable[[str], None]) -> RunOutcome:
        """Run the job's trials until its budget is spent; ``runs``: an owner-only folder for per-run files."""


_BACKENDS: Registry[type[Backend]] = Registry("backend")


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS.add(cls.name, cls)
    return cls


def list_backends() -> tuple[str, ...]:
    return _BACKENDS.names()


def get_backend(name: str) -> type[Backend]:
    return _BACKENDS.get(name)


def backend_flags(cls: type[Backend]) -> list[tuple[str, str]]:
    """``(dest, --flag)`` of every flag a backend adds (for refusing another backend's flags)."""
    parser = argparse.ArgumentParser(add_help=False)
    cls.add_arguments(parser.add_argument_group())
    return [(a.dest, a.option_strings[0]) for a in parser._actions]
