"""How many trials a run may still start, shared by every worker of the run.

``--n-trials N --workers 4`` means N trials in all, not N per worker, and no more than N even when trials finish at
the same moment. Optuna's ``MaxTrialsCallback`` counts the study's trials after each one ends, so two workers that
finish together can both start one more. Here each worker takes a ticket before it starts a trial: the count lives in
a small JSON file updated under ``flock``, so taking one is atomic across processes on a host. The deadline
(``--timeout``) is checked at the same moment; like Optuna's own timeout it never interrupts a running trial.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
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
            tmp.write_text(json.dumps({"limit": limit, "taken": 0, "deadline": deadline}))
            os.replace(tmp, self.path)
        elif not self.path.is_file():
            raise FileNotFoundError(f"trial budget file {self.path} is missing (was the launcher's folder removed?)")

    def take(self, *, ticket: bool = True) -> bool:
        """Claim the start of one trial: ``False`` past the deadline or, for a new trial, once the limit is reached.

        A dead worker's re-queued trial starts with ``ticket=False``: its ticket was taken when it first started, so
        only the deadline applies to it.
        """
        with open(self.path, "r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.load(handle)
            if _past_deadline(state) or (ticket and _all_taken(state)):
                return False
            if ticket:
                state["taken"] += 1
                handle.seek(0)
                handle.truncate()
                json.dump(state, handle)
                handle.flush()
            return True

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
        return _past_deadline(state) or _all_taken(state)


def _past_deadline(state: dict[str, Any]) -> bool:
    return state["deadline"] is not None and time.time() >= state["deadline"]


def _all_taken(state: dict[str, Any]) -> bool:
    return state["limit"] is not None and state["taken"] >= state["limit"]
