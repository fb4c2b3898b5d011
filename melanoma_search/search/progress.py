"""Progress a person can follow: a line per finished trial with the best so far and an ETA, and a leaderboard."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import optuna
from optuna.trial import FrozenTrial, TrialState

from melanoma_search.search.recovery import retried_numbers
from melanoma_search.search.study import best_first

__all__ = [
    "TrialProgress",
    "format_params",
    "leaderboard",
    "one_line_trial_failures",
]


def _fmt_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def format_params(params: Mapping[str, object], width: int = 110) -> str:
    """Parameters as ``key=value`` pairs on one line (floats to 3 significant digits), cut at ``width``."""
    text = " ".join(f"{k}={_short(v)}" for k, v in params.items())
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class _NoTracebacks(logging.Filter):
    """Drops Optuna's "Trial N failed ... because of the following error" record, which carries the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None


def one_line_trial_failures() -> None:
    """A failed trial is told in one line (``trial N fail: FAIL (reason)``), not as Optuna's warning with the
    exception's whole traceback: every failure a trial can have is caught and its reason recorded, so the traceback
    only repeats it (``run --verbose`` keeps Optuna's record). Optuna logs it from ``optuna.study._optimize``."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoTracebacks) for f in logger.filters):
        logger.addFilter(_NoTracebacks())


class TrialProgress:
    """An ``optimize`` callback printing one line per finished trial, with the running best and an ETA.

    With ``launch`` (several workers sharing one run) "k/N this run" and the ETA count every worker's finished trials
    of that run, read from the study, not just this process's.
    """

    def __init__(self, *, metric_names: tuple[str, ...], n_trials: int | None, timeout: float | None,
                 log: Callable[[str], None] = print, launch: str | None = None,
                 started: float | None = None) -> None:
        self.metric_names, self.n_trials, self.timeout, self.log = metric_names, n_trials, timeout, log
        self.launch = launch
        self.start = time.time() if started is None else started
        self.done = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.done += 1
        if self.launch is not None:  # every worker's trials of this run; a failed trial that was re-queued is not one
            trials = study.get_trials(deepcopy=False)
            retried = retried_numbers(trials)
            self.done = max(self.done, sum(t.state.is_finished() and t.user_attrs.get("launch") == self.launch
                                           and t.number not in retried for t in trials))
        elapsed = time.time() - self.start
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        if trial.state == TrialState.COMPLETE and trial.values:
            outcome = " ".join(f"{n}={v:.4f}" for n, v in zip(self.metric_names, trial.values, strict=True))
        elif trial.state == TrialState.FAIL:
            outcome = f"FAIL ({trial.user_attrs.get('fail_reason', 'see the log above')})"[:160]
        else:
            outcome = trial.state.name
        best = ""
        if len(study.directions) == 1:
            try:
                best = f" | best {study.best_value:.4f} (trial {study.best_trial.number})"
            except ValueError:
                best = ""
        remaining = []
        if self.n_trials:
            remaining.append(elapsed / self.done * (self.n_trials - self.done))
        if self.timeout:
            remaining.append(self.timeout - elapsed)
        eta = f" | ETA {_fmt_seconds(min(remaining))}" if remaining else ""
        planned = f"/{self.n_trials}" if self.n_trials else ""
        self.log(f"trial {trial.number} {trial.state.name.lower()}: {outcome}{best} | {seconds:.0f}s | "
                 f"{self.done}{planned} this run{eta} | {format_params(trial.params)}")


def leaderboard(study: optuna.Study, *, metric_names: tuple[str, ...], top: int = 10) -> str:
    """The best ``top`` finished trials (the Pareto front first for a multi-objective study) and state counts."""
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}
    summary = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    done = best_first(study)
    if len(study.directions) == 1:
        title = f"leaderboard of study {study.study_name!r} ({summary})"
    else:
        front = {t.number for t in study.best_trials}
        done.sort(key=lambda t: (t.number not in front, t.number))
        title = f"Pareto front first, study {study.study_name!r} ({summary})"
    header = f"{'rank':>4} {'trial':>5} " + " ".join(f"{n:>13}" for n in metric_names) + f" {'seconds':>8}  params"
    lines = [title, header]
    for rank, trial in enumerate(done[:top], 1):
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        values = " ".join(f"{v:>13.4f}" for v in trial.values)
        lines.append(f"{rank:>4} {trial.number:>5} {values} {seconds:>8.0f}  {format_params(trial.params, 90)}")
    if not done:
        lines.append("  (no finished trial yet)")
    return "\n".join(lines)
