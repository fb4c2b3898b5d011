"""How many trials a run may still start, shared by every worker of the run.

``--n-trials N --workers 4`` means N trials in all, not N per worker, and no more than N even when trials finish at
the same moment. Optuna's ``MaxTrialsCallback`` counts the study's trials after each one ends, so two workers that
finish together can both start one more. Here each worker takes a ticket before it starts a trial: the count lives in
a small JSON file updated under ``flock``, so taking one is atomic across processes on a host. The deadline
(``--timeout``) is checked at the same moment. A running trial is never interrupted; instead no trial starts that is
unlikely to end in time: once trials of this run have finished, a new one needs at least their median duration
before the deadline (otherwise a 30-minute budget of 4-minute trials ends after 34 minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["TrialBudget"]


class TrialBudget:
    """Tickets for starting trials: ``limit`` of them (``None``: unlimited) before ``deadline`` (a Unix time)."""

    def __init__(self, path: str | os.PathLike[str], *, limit: int | None = None, deadline: float | None = None,
                 create: bool = False) -> None:
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"limit": limit, "taken": 0, "deadline": deadline, "durations": []}))
            os.replace(tmp, self.path)
        elif not self.path.is_file():
            raise FileNotFoundError(f"trial budget file {self.path} is missing (was the launcher's folder removed?)")

    def take(self, *, ticket: bool = True) -> bool:
        """Claim the start of one trial: ``False`` when no trial would end before the deadline or, for a new trial,
        once the limit is reached.

        A dead worker's re-queued trial starts with ``ticket=False``: its ticket was taken when it first started, so
        only the deadline applies to it.
        """
        with self._update() as state:
            if _out_of_time(state) or (ticket and _all_taken(state)):
                return False
            if ticket:
                state["taken"] += 1
            return True

    def record(self, seconds: float) -> None:
        """Note how long a finished trial of this run took (the deadline rule's estimate of the next one)."""
        with self._update() as state:
            state.setdefault("durations", []).append(float(seconds))

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock, written back (if changed) before the lock is released."""
        with open(self.path, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.load(handle)
            before = json.dumps(state)
            yield state
            if json.dumps(state) != before:
                handle.seek(0)
                handle.truncate()
                json.dump(state, handle)
                handle.flush()

    def out_of_time(self) -> bool:
        """Whether the deadline has passed, or is nearer than this run's median trial."""
        return _out_of_time(self._read())

    def _read(self) -> dict[str, Any]:
        with open(self.path) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            return dict(json.load(handle))

    def taken(self) -> int:
        return int(self._read()["taken"])

    def seconds_left(self) -> float | None:
        deadline = self._read()["deadline"]
        return None if deadline is None else deadline - time.time()

    def exhausted(self) -> bool:
        """No ticket left (limit reached or deadline passed), without taking one."""
        state = self._read()
        return _out_of_time(state) or _all_taken(state)


def _out_of_time(state: dict[str, Any]) -> bool:
    if state["deadline"] is None:
        return False
    durations = state.get("durations") or []
    expected = float(statistics.median(durations)) if durations else 0.0
    return time.time() + expected >= state["deadline"]


def _all_taken(state: dict[str, Any]) -> bool:
    return state["limit"] is not None and state["taken"] >= state["limit"]
