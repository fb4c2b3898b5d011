"""A time limit that holds: the run's wall clock, with what earlier runs of the same race already spent.

Optuna's ``timeout`` (``run --timeout``) only stops new trials from starting, so a 30-minute timeout whose second
trial takes 33 minutes ends after 40. A :class:`TimeLimit` is the other meaning, the one AutoGluon's ``time_limit``
has: nothing starts that its predicted cost cannot finish before the limit, and the run says so in one line
(``not started: predicted 24.0 min, 6.0 left``). A race killed and started again by the same command continues in
what is left of its limit (``spent_before``), not in a fresh one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from melanoma_search.errors import ConfigError

__all__ = ["TimeLimit", "minutes"]


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


@dataclass
class TimeLimit:
    """``seconds`` for the whole run (``reserve`` of them kept for what follows it, e.g. the export)."""

    seconds: float
    reserve: float = 0.0
    spent_before: float = 0.0
    """Seconds earlier runs of the same race used (a resumed race continues in what they left)."""
    started: float = field(default_factory=time.time)
    """When this run started (Unix time)."""

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ConfigError(f"--time-limit {self.seconds:g}: must be a positive number of seconds")
        if self.reserve < 0 or self.reserve >= self.seconds:
            raise ConfigError(f"--reserve-export {self.reserve:g}: must be at least 0 and less than the time limit "
                              f"({self.seconds:g} s)")

    @property
    def deadline(self) -> float:
        """The Unix time by which this run's trials must have finished."""
        return self.started + self.seconds - self.reserve - self.spent_before

    def spent(self, *, now: float | None = None) -> float:
        """Seconds of the limit used so far, earlier runs of the race included."""
        return self.spent_before + max(0.0, (now or time.time()) - self.started)

    def left(self, *, now: float | None = None) -> float:
        return self.deadline - (now or time.time())

    def fits(self, predicted: float) -> bool:
        return predicted <= self.left()

    def refusal(self, what: str, predicted: float) -> str:
        return f"not started: {what} predicted {minutes(predicted)}, {minutes(max(0.0, self.left()))} left"
