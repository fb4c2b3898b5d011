"""Blend methods, and the table that ``export --method NAME`` (and a spec's ``export.method``) is looked up in.

A method turns the candidates' out-of-fold scores (on one scale, :mod:`.scale`) and the labels into blend weights; a
member with weight 0 is left out of the ensemble. Each is registered once with :func:`register_blend`, which also
says whether the weights are *fitted* to the rows: the export then scores such a blend on rows its weights were not
chosen on (weights chosen on one half of the rows blend the other half, and the other way round), because weights
chosen and scored on the same rows flatter the blend by construction. A method chooses by the study's metric
(``metric(target, score, folds)``, :class:`~melanoma_search.metrics.RankMetric`: AUC, or the partial AUC of a
``pauc`` study), each fold's rows scored on their own and the folds averaged. A new method is one decorated
function:

    @register_blend("top-two", fitted=True, summary="the two best candidates, equally weighted")
    def _top_two(scores, target, *, metric=AUC, folds=None):
        return {n: 0.5 for n in sorted(scores, key=lambda n: -metric(target, scores[n], folds))[:2]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from melanoma_search.ensemble.scale import weighted_mean
from melanoma_search.errors import ConfigError
from melanoma_search.metrics import AUC, RankMetric
from melanoma_search.registry import Registry

__all__ = [
    "BlendMethod",
    "GreedyResult",
    "cross_half",
    "get_blend_method",
    "greedy_selection",
    "list_blend_methods",
    "register_blend",
]

Scores = Mapping[str, np.ndarray]


class ChooseWeights(Protocol):
    def __call__(self, scores: Scores, target: np.ndarray, *, metric: RankMetric = AUC,
                 folds: np.ndarray | None = None) -> dict[str, float]: ...


@dataclass(frozen=True)
class BlendMethod:
    name: str
    choose: ChooseWeights
    """``(scores, target, *, metric, folds) -> weights``: candidate name -> weight (0 or missing: left out)."""
    fitted: bool
    """Whether the weights are chosen by looking at the labels of the rows (then scored across halves)."""
    summary: str


_METHODS: Registry[BlendMethod] = Registry("blend method", error=ConfigError)


def register_blend(name: str, *, fitted: bool, summary: str) -> Callable[[ChooseWeights], ChooseWeights]:
    def decorate(choose: ChooseWeights) -> ChooseWeights:
        _METHODS.add(name, BlendMethod(name=name, choose=choose, fitted=fitted, summary=summary))
        return choose

    return decorate


def get_blend_method(name: str) -> BlendMethod:
    return _METHODS.get(name)


def list_blend_methods() -> tuple[str, ...]:
    return _METHODS.names()


@dataclass(frozen=True)
class GreedyResult:
    weights: dict[str, float]
    auc: float
    history: list[float]


def _sub(folds: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if folds is None else folds[rows]


def greedy_selection(scores: Scores, target: np.ndarray, *, rounds: int = 25, metric: RankMetric = AUC,
                     folds: np.ndarray | None = None) -> GreedyResult:
    """Caruana et al.'s ensemble selection (2004), as AutoGluon uses it: start from the best candidate, then
    repeatedly add (with replacement) the one whose addition most improves the blend's ``metric``; the weights are
    the counts. The best blend seen is kept, so it never scores below its best candidate on these rows, and a
    candidate that adds nothing is never picked."""
    names = list(scores)
    if not names:
        raise ValueError("greedy selection needs at least one candidate")
    target = np.asarray(target)
    singles = {n: metric(target, scores[n], folds) for n in names}
    first = max(names, key=lambda n: singles[n])
    counts = {first: 1}
    current = np.asarray(scores[first], dtype=np.float64).copy()
    size = 1
    best_counts, best_value = dict(counts), singles[first]
    history = [best_value]
    for _ in range(rounds):
        tried = {n: metric(target, (current * size + scores[n]) / (size + 1), folds) for n in names}
        pick = max(names, key=lambda n: tried[n])
        current = (current * size + scores[pick]) / (size + 1)
        size += 1
        counts[pick] = counts.get(pick, 0) + 1
        history.append(tried[pick])
        if tried[pick] > best_value + 1e-12:
            best_value, best_counts = tried[pick], dict(counts)
    total = sum(best_counts.values())
    return GreedyResult(weights={n: c / total for n, c in best_counts.items()}, auc=best_value, history=history)


def _best(scores: Scores, target: np.ndarray, metric: RankMetric, folds: np.ndarray | None) -> str:
    return max(scores, key=lambda n: metric(target, scores[n], folds))


@register_blend("rank", fitted=False, summary="equal weights for the top k (the weights are not fitted; the top k "
                "themselves were chosen by their out-of-fold objective)")
def _equal(scores: Scores, target: np.ndarray, *, metric: RankMetric = AUC,
           folds: np.ndarray | None = None) -> dict[str, float]:
    return {name: 1.0 / len(scores) for name in scores}


@register_blend("greedy", fitted=True, summary="ensemble selection with replacement among the top k, of the "
                "candidates that help on both halves of the rows: members that add nothing are left out")
def _greedy(scores: Scores, target: np.ndarray, *, metric: RankMetric = AUC,
           folds: np.ndarray | None = None) -> dict[str, float]:
    """Greedy selection among the candidates it picks on each half of the rows alone.

    Selection on a few thousand rows also picks up candidates that help by chance: on 400 rows a pure-noise member
    joins the blend with a small weight because it lifts that sample's AUC by a few ten-thousandths. A candidate that
    really adds something is picked on both halves; one picked on one half is most likely fitting its noise. The best
    candidate on all rows is kept whatever the halves picked: the blend starts from it.
    """
    first, second = _halves(target, seed=1)
    helps = [set(greedy_selection({n: s[rows] for n, s in scores.items()}, target[rows], metric=metric,
                                  folds=_sub(folds, rows)).weights)
             for rows in (first, second)] if min(first.sum(), second.sum()) and _both_classes(target, first, second) \
        else [set(scores)]
    # the best candidate on all rows always stays: each half starts its selection from its own best, and where two
    # candidates are nearly equal a half may start from the other one and never need the best (measured on a
    # ham-quick export: the best of six was left out, and the blend scored below it on the rows it was chosen on)
    kept = set.intersection(*helps) | {_best(scores, target, metric, folds)}
    return greedy_selection({n: s for n, s in scores.items() if n in kept}, target, metric=metric,
                            folds=folds).weights


@register_blend("best-single", fitted=True, summary="the single best candidate on the rows (what a blend is "
                "compared with, chosen on one half and scored on the other)")
def _best_single(scores: Scores, target: np.ndarray, *, metric: RankMetric = AUC,
                 folds: np.ndarray | None = None) -> dict[str, float]:
    return {_best(scores, target, metric, folds): 1.0}


def _both_classes(target: np.ndarray, *halves: np.ndarray) -> bool:
    return all(len(np.unique(target[rows])) == 2 for rows in halves)


def _halves(target: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the rows, each with about half of the melanomas."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(target), dtype=bool)
    for label in np.unique(target):
        rows = np.flatnonzero(target == label)
        first[rng.permutation(rows)[: len(rows) // 2]] = True
    return first, ~first


def cross_half(method: BlendMethod, scores: Scores, target: np.ndarray, *, metric: RankMetric = AUC,
               folds: np.ndarray | None = None) -> np.ndarray:
    """Each row's blended score under weights chosen on the other half of the rows (see the module docstring)."""
    out = np.zeros(len(target))
    first, second = _halves(target)
    for fit_rows, score_rows in ((first, second), (second, first)):
        if len(np.unique(target[fit_rows])) < 2:
            raise ConfigError("too few melanomas in the out-of-fold rows to choose blend weights on half of them")
        weights = method.choose({n: s[fit_rows] for n, s in scores.items()}, target[fit_rows], metric=metric,
                                folds=_sub(folds, fit_rows))
        out[score_rows] = weighted_mean({n: s[score_rows] for n, s in scores.items()}, weights)
    return out
