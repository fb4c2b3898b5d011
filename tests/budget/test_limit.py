"""The kept time limit: what is left, what fits, a resumed race's earlier seconds, and its bad values."""

from __future__ import annotations

import pytest

from melanoma_search.budget.limit import TimeLimit
from melanoma_search.errors import ConfigError


def test_the_deadline_counts_what_earlier_runs_spent_and_what_the_export_keeps() -> None:
    limit = TimeLimit(1800, reserve=300, spent_before=600, started=1000.0)
    assert limit.deadline == 1000.0 + 1800 - 300 - 600
    assert limit.left(now=1100.0) == pytest.approx(800.0)
    assert limit.spent(now=1100.0) == pytest.approx(700.0)


def test_what_cannot_finish_is_said_in_one_line() -> None:
    limit = TimeLimit(600)
    assert limit.fits(60) and not limit.fits(24 * 60)
    line = limit.refusal("trial 3", 24 * 60)
    assert line.startswith("not started: trial 3 predicted 24.0 min, ") and line.endswith(" left")
    assert "\n" not in line


@pytest.mark.parametrize(("seconds", "reserve", "needle"), [
    (0, 0, "--time-limit 0: must be a positive"), (-5, 0, "--time-limit -5: must be a positive"),
    (600, 600, "--reserve-export 600: must be at least 0 and less than the time limit"),
    (600, -1, "--reserve-export -1")])
def test_a_limit_that_holds_nothing_is_refused(seconds: float, reserve: float, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        TimeLimit(seconds, reserve=reserve)
