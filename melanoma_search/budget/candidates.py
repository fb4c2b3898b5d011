"""The race's candidates, in order: the spec's portfolio (``enqueue``) first, then what the study's sampler proposes.

The sampler is asked ahead of time, in a scratch in-memory study holding the study's finished trials, because the
race must know a candidate's configuration (and so its cost) before it plans a rung. The candidates asked so far stay
RUNNING there, which TPE's ``constant_liar`` reads as bad results, so it spreads them out; a configuration already
raced or already proposed is asked again (a space of 18 choices would otherwise repeat one in nearly every race of
ten). Before the study has ``n_startup_trials`` finished trials TPE samples at random, as it does in the study itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from melanoma_search.budget.agreement import candidate_key
from melanoma_search.search.spec import StudySpec
from melanoma_search.search.study import build_sampler
from melanoma_search.search.trial import sample_params

__all__ = ["candidates"]


def candidates(study: optuna.Study, spec: StudySpec, base: Mapping[str, Any], *, seen: Sequence[Mapping[str, Any]],
               seed: int | None) -> Iterator[dict[str, Any]]:
    """Configurations not in ``seen``: the portfolio's, then the sampler's (at most 20 tries for a new one each)."""
    known = {candidate_key(p) for p in seen}
    for entry in spec.enqueue:
        params = dict(entry)
        if candidate_key(params) not in known:
            known.add(candidate_key(params))
            yield params
    scratch = _scratch(study, spec, seed=seed)
    while True:
        for _ in range(20):
            trial = scratch.ask()
            params = sample_params(trial, spec, base)
            if candidate_key(params) not in known:
                break
        else:
            return  # the space is spent (or the sampler keeps proposing what was raced)
        known.add(candidate_key(params))
        yield params


def _scratch(study: optuna.Study, spec: StudySpec, *, seed: int | None) -> optuna.Study:
    sampler = build_sampler(spec.sampler, seed=seed)
    scratch = optuna.create_study(direction=study.direction, sampler=sampler)
    finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scratch.add_trials(finished)
    return scratch
