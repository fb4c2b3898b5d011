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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.errors import ConfigError

__all__ = [
    "Blend",
    "Candidate",
    "GreedyResult",
    "blend",
    "blend_candidates",
    "cross_half_greedy",
    "greedy_selection",
    "percentiles",
    "signature",
]


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


@dataclass
class Candidate:
    """A finished trial with its downloaded predictions and, per fold, its weights and metadata encoder.

    After a refit (:mod:`melanoma_search.ensemble.refit`) ``oof`` covers every fold, ``weight_files`` holds one model
    per fold (the member is their average) and ``cv_auc`` is the pooled out-of-fold AUC.
    """

    number: int
    value: float
    params: dict[str, Any]
    folder: Path
    """Holds the trial's ``config.yaml`` (and its other downloaded artifacts)."""
    oof: pd.DataFrame
    test: pd.DataFrame | None
    seconds: float
    weight_files: dict[int, Path] = field(default_factory=dict)
    """Fold -> weights file."""
    encoders: dict[str, Any] = field(default_factory=dict)
    """Fold (as text) -> the metadata encoder fitted on that fold's training rows."""
    classes: list[str] = field(default_factory=list)
    curve: dict[int, float] = field(default_factory=dict)
    cv_auc: float | None = None

    @property
    def name(self) -> str:
        return f"trial-{self.number:05d}"

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in self.oof["fold"].unique()) if "fold" in self.oof else []


def signature(params: dict[str, Any]) -> str:
    """Parameters rounded to 2 significant digits: trials that agree on it are near-duplicates."""
    return json.dumps({k: float(f"{v:.2g}") if isinstance(v, float) else v for k, v in sorted(params.items())})



@dataclass
class Blend:
    members: list[Candidate]
    weights: dict[str, float]
    target: np.ndarray
    oof_raw: dict[str, np.ndarray]
    oof_ranked: dict[str, np.ndarray]
    oof_blend: np.ndarray
    """Each row's blended score; with greedy weights, those chosen on the other half of the rows."""
    auc: float
    """The blend's OOF AUC, never scored on the rows its weights were chosen on."""
    best_member_auc: float
    best_member: str
    test: pd.DataFrame | None
    in_sample_auc: float | None = None
    """Greedy only: the AUC of the final weights on the rows they were chosen on (optimistic; for comparison)."""
    member_aucs: dict[str, float] = field(default_factory=dict)
    """Each member's AUC on the blend's OOF rows."""


def _halves(target: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the rows, each with about half of the melanomas."""
    rng = np.random.default_rng(seed)
    first = np.zeros(len(target), dtype=bool)
    for label in np.unique(target):
        rows = np.flatnonzero(target == label)
        first[rng.permutation(rows)[: len(rows) // 2]] = True
    return first, ~first


def cross_half_greedy(ranked: Mapping[str, np.ndarray], target: np.ndarray) -> np.ndarray:
    """Greedy weights chosen on one half of the rows blend the other half, and the other way round.

    Weights chosen and scored on the same rows flatter the blend by construction (selection fits the noise of those
    rows); scored on the half they never saw, the AUC is what the weights do on new rows.
    """
    out = np.zeros(len(target))
    first, second = _halves(target)
    for fit_rows, score_rows in ((first, second), (second, first)):
        if len(np.unique(target[fit_rows])) < 2:
            raise ConfigError("too few melanomas in the out-of-fold rows to choose greedy weights on half of them")
        weights = greedy_selection({n: r[fit_rows] for n, r in ranked.items()}, target[fit_rows]).weights
        out[score_rows] = blend({n: r[score_rows] for n, r in ranked.items()}, weights)
    return out


def blend_candidates(candidates: list[Candidate], *, method: str) -> Blend:
    """Align members on their common OOF rows and blend by OOF-referenced percentiles."""
    common = set(candidates[0].oof["image_name"])
    for member in candidates[1:]:
        common &= set(member.oof["image_name"])
    if not common:
        raise ConfigError("the chosen trials share no out-of-fold rows (were they trained on different folds?)")
    reference = candidates[0].oof.set_index("image_name").loc[sorted(common)]
    target = reference["target"].to_numpy()
    raw = {m.name: m.oof.set_index("image_name").loc[sorted(common), "pred"].to_numpy() for m in candidates}
    ranked = {name: percentiles(scores, scores) for name, scores in raw.items()}
    singles = {name: roc_auc_score(target, ranked[name]) for name in ranked}
    in_sample = None
    if method == "greedy":
        weights = greedy_selection(ranked, target).weights
        in_sample = float(roc_auc_score(target, blend(ranked, weights)))
        oof_blend = cross_half_greedy(ranked, target)
    else:
        weights = {name: 1.0 / len(ranked) for name in ranked}  # nothing chosen on the rows: no optimism
        oof_blend = blend(ranked, weights)
    best = max(singles, key=lambda n: singles[n])
    test = None
    members = {m.name: m for m in candidates}
    tests = {n: members[n].test for n in weights if weights[n] > 0}
    if all(t is not None for t in tests.values()):
        names = tests[next(iter(tests))]["image_name"]  # type: ignore[index]
        ranked_test = {n: percentiles(t.set_index("image_name").loc[names, "pred"].to_numpy(), raw[n])  # type: ignore[union-attr]
                       for n, t in tests.items()}
        test = pd.DataFrame({"image_name": names.to_numpy(), "target": blend(ranked_test, weights)})
    return Blend(members=[members[n] for n in weights if weights[n] > 0], weights=weights, target=target,
                 oof_raw=raw, oof_ranked=ranked, oof_blend=oof_blend, auc=float(roc_auc_score(target, oof_blend)),
                 best_member_auc=float(singles[best]), best_member=best, test=test, in_sample_auc=in_sample,
                 member_aucs={name: float(auc) for name, auc in singles.items()})
