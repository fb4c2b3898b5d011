"""Blending members' predictions: rank averaging and greedy ensemble selection.

AUC only looks at the order of predictions, so members are blended by rank (the "rank then blend" of the 2020
winners): each member's scores become percentiles, which are averaged. The percentile of a score is taken against
that member's *out-of-fold* predictions, not against the batch being scored, so one image gets the same blended score
whether it is scored alone, in a batch, or in the export's test set (and any monotone transform of a member leaves
the blend unchanged).

Greedy selection is Caruana et al.'s ensemble selection (2004), as AutoGluon uses it: starting from the best member,
repeatedly add (with replacement) the member whose addition most improves the blended OOF AUC; the weights are the
counts. The best ensemble seen is kept, so it never scores below its best member on OOF.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["GreedyResult", "blend", "greedy_selection", "percentiles"]


def percentiles(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each score's percentile in [0, 1] among ``reference`` (ties count half), a stable monotone map."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    scores = np.asarray(scores, dtype=np.float64)
    below = np.searchsorted(ref, scores, side="left")
    at_or_below = np.searchsorted(ref, scores, side="right")
    return (below + at_or_below) / (2.0 * max(len(ref), 1))


def blend(ranked: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Weighted mean of members' percentile scores (members with weight 0 are ignored)."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        raise ValueError("blend weights must include a positive weight")
    return sum(ranked[name] * (w / total) for name, w in weights.items() if w > 0)  # type: ignore[return-value]


@dataclass(frozen=True)
class GreedyResult:
    weights: dict[str, float]
    auc: float
    history: list[float]


def greedy_selection(ranked_oof: Mapping[str, np.ndarray], target: np.ndarray, *, rounds: int = 25) -> GreedyResult:
    """Forward selection with replacement maximising blended OOF AUC; returns normalised weights."""
    names: Sequence[str] = list(ranked_oof)
    if not names:
        raise ValueError("greedy selection needs at least one member")
    target = np.asarray(target)
    scores = {n: roc_auc_score(target, ranked_oof[n]) for n in names}
    first = max(names, key=lambda n: scores[n])
    counts = {first: 1}
    current = ranked_oof[first].astype(np.float64).copy()
    size = 1
    best_counts, best_auc = dict(counts), scores[first]
    history = [best_auc]
    for _ in range(rounds):
        trials = {n: roc_auc_score(target, (current * size + ranked_oof[n]) / (size + 1)) for n in names}
        pick = max(names, key=lambda n: trials[n])
        current = (current * size + ranked_oof[pick]) / (size + 1)
        size += 1
        counts[pick] = counts.get(pick, 0) + 1
        history.append(trials[pick])
        if trials[pick] > best_auc + 1e-12:
            best_auc, best_counts = trials[pick], dict(counts)
    total = sum(best_counts.values())
    return GreedyResult(weights={n: c / total for n, c in best_counts.items()}, auc=best_auc, history=history)
