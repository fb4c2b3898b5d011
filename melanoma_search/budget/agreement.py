"""Whether the race's cheap rungs can choose: the rank agreement of each rung's score with the final cv score.

Nobody has published how well a one-fold, one-epoch run orders dermoscopy configurations the way their
cross-validated score does, and the race rests on it. So every finished race records, over every configuration in
the study that was both screened at a rung and trained to the end (in this race or an earlier one), Spearman's rho
and Kendall's tau between the two; with fewer than three such configurations it records the count and no figure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["candidate_key", "rank_agreement"]


def candidate_key(params: Mapping[str, Any]) -> str:
    """A configuration's identity across rungs and races: its parameters, in a fixed order."""
    return json.dumps(dict(params), sort_keys=True, default=str)


def rank_agreement(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """``{"rung R (F fold(s) x E epoch(s))": {"n", "spearman", "kendall"}}`` over configurations with both figures."""
    from scipy.stats import kendalltau, spearmanr

    finals: dict[str, float] = {}
    rungs: dict[str, dict[str, float]] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        race = trial.user_attrs.get("race")
        if not isinstance(race, dict):
            continue
        key = candidate_key(trial.params)
        if race.get("rung") == "final" and trial.state == TrialState.COMPLETE and trial.value is not None:
            finals[key] = float(trial.value)
        elif isinstance(race.get("rung"), int) and "score" in race:
            share = race.get("train_fraction")
            label = (f"rung {race['rung']} ({len(race.get('folds', []))} fold(s) x {race.get('epochs')} epoch(s)"
                     + (f" on {share:.0%} of the rows)" if share else ")"))
            rungs.setdefault(label, {})[key] = float(race["score"])
    out: dict[str, dict[str, Any]] = {}
    for label, scores in sorted(rungs.items()):
        both = sorted(set(scores) & set(finals))
        figures: dict[str, Any] = {"n": len(both), "spearman": None, "kendall": None}
        if len(both) >= 3:
            low, final = [scores[k] for k in both], [finals[k] for k in both]
            figures["spearman"] = _finite(spearmanr(low, final).statistic)
            figures["kendall"] = _finite(kendalltau(low, final).statistic)
        out[label] = figures
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return round(number, 4) if number == number else None  # a constant column gives NaN: no figure
