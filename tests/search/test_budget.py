from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from melanoma_search.search.budget import TrialBudget


def test_limit_and_deadline(tmp_path: Path) -> None:
    budget = TrialBudget(tmp_path / "b.json", limit=2, create=True)
    assert [budget.take() for _ in range(3)] == [True, True, False]
    assert budget.taken() == 2 and budget.exhausted()
    assert budget.take(ticket=False) and budget.taken() == 2  # a re-queued trial needs no ticket, only time
    late = TrialBudget(tmp_path / "late.json", deadline=time.time() - 1, create=True)
    assert not late.take() and late.exhausted() and late.seconds_left() < 0
    assert not late.take(ticket=False)  # past the deadline not even a retry starts
    open_ended = TrialBudget(tmp_path / "open.json", create=True)
    assert all(open_ended.take() for _ in range(50)) and open_ended.seconds_left() is None
    with pytest.raises(FileNotFoundError, match="trial budget file"):
        TrialBudget(tmp_path / "absent.json")


def test_no_trial_starts_that_would_not_end_before_the_deadline(tmp_path: Path) -> None:
    """After trials of ~200 s, a 30-minute budget with 100 s left starts no more: it ends near its deadline."""
    budget = TrialBudget(tmp_path / "b.json", deadline=time.time() + 100, create=True)
    assert budget.take() and not budget.out_of_time()  # nothing finished yet: no estimate, the deadline alone
    for seconds in (180.0, 220.0, 30.0):  # the median (180 s), not a short pruned trial, is the estimate
        budget.record(seconds)
    assert budget.out_of_time() and not budget.take() and budget.exhausted()
    roomy = TrialBudget(tmp_path / "roomy.json", deadline=time.time() + 1000, create=True)
    roomy.record(200.0)
    assert roomy.take() and not roomy.out_of_time()


def test_processes_never_take_more_than_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    TrialBudget(path, limit=40, create=True)
    grab = ("import sys\nfrom melanoma_search.search.budget import TrialBudget\n"
            "b = TrialBudget(sys.argv[1])\nn = 0\nwhile b.take():\n    n += 1\nprint(n)")
    workers = [subprocess.Popen([sys.executable, "-c", grab, str(path)], stdout=subprocess.PIPE, text=True)
               for _ in range(4)]
    counts = [int(w.communicate(timeout=60)[0]) for w in workers]
    assert sum(counts) == 40
    assert TrialBudget(path).taken() == 40
