"""Blending the candidates: their out-of-fold scores on one scale, weighted by a registered blend method.

:func:`blend_candidates` aligns the candidates on the out-of-fold rows they share, puts every fold model on one
scale (:mod:`.scale`), lets the method (:mod:`.methods`) choose the weights and scores the blend honestly: a method
whose weights are chosen on the rows is scored on the rows they were not chosen on. Candidates with weight 0 are
left out of the result; the submission's test scores are blended with the very function an exported ensemble uses
on new images (:func:`~melanoma_search.ensemble.scale.weighted_mean` of
:func:`~melanoma_search.ensemble.scale.fold_percentiles`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.candidates import Candidate
from melanoma_search.ensemble.methods import cross_half, get_blend_method
from melanoma_search.ensemble.scale import fold_percentiles, oof_percentiles, weighted_mean
from melanoma_search.errors import ConfigError
from melanoma_search.metrics import partial_auc
from melanoma_search.train.results import fold_predictions

__all__ = ["Blend", "blend_candidates"]


@dataclass
class Blend:
    members: list[Candidate]
    """The candidates with a positive weight."""
    weights: dict[str, float]
    names: list[str]
    """The out-of-fold images the blend is scored on (every candidate has them), in the order of ``target``."""
    target: np.ndarray
    oof_ranked: dict[str, np.ndarray]
    """Every candidate's out-of-fold score on the blend's scale, on the shared rows."""
    oof_blend: np.ndarray
    """Each row's blended score; for a fitted method, under the weights chosen on the other half of the rows."""
    auc: float
    """The blend's OOF AUC, never scored on the rows its weights were chosen on."""
    pauc: float
    """Its OOF partial AUC above 80 % sensitivity (ISIC 2024), on the same rows and scores."""
    best_member_auc: float
    best_member: str
    test: pd.DataFrame | None
    method: str = "rank"
    in_sample_auc: float | None = None
    """Fitted methods only: the final weights' AUC on the rows they were chosen on (optimistic; for comparison)."""
    member_aucs: dict[str, float] = field(default_factory=dict)
    """Each candidate's AUC on the blend's OOF rows."""
    candidates: list[Candidate] = field(default_factory=list)
    """Every candidate the method chose from (members and those it left out)."""


def blend_candidates(candidates: list[Candidate], *, method: str) -> Blend:
    """Align the candidates on their common OOF rows, rank each fold model on its own scale and blend them."""
    chosen_method = get_blend_method(method)
    common = set(candidates[0].oof["image_name"])
    for member in candidates[1:]:
        common &= set(member.oof["image_name"])
    if not common:
        raise ConfigError("the chosen trials share no out-of-fold rows (were they trained on different folds?)")
    rows = sorted(common)
    target = candidates[0].oof.set_index("image_name").loc[rows, "target"].to_numpy()
    ranked = {m.name: pd.Series(oof_percentiles(m.oof), index=m.oof["image_name"]).loc[rows].to_numpy()
              for m in candidates}
    singles = {name: float(roc_auc_score(target, scores)) for name, scores in ranked.items()}
    weights = {n: w for n, w in chosen_method.choose(ranked, target).items() if w > 0}
    in_sample = None
    if chosen_method.fitted:
        in_sample = float(roc_auc_score(target, weighted_mean(ranked, weights)))
        oof_blend = cross_half(chosen_method, ranked, target)
    else:
        oof_blend = weighted_mean(ranked, weights)
    by_name = {m.name: m for m in candidates}
    members = [by_name[n] for n in weights]
    best = max(singles, key=lambda n: singles[n])
    return Blend(members=members, weights=weights, names=rows, target=target, oof_ranked=ranked, oof_blend=oof_blend,
                 auc=float(roc_auc_score(target, oof_blend)), pauc=partial_auc(target, oof_blend),
                 best_member_auc=singles[best], best_member=best,
                 test=_blend_test(members, weights), method=method, in_sample_auc=in_sample, member_aucs=singles,
                 candidates=list(candidates))


def _blend_test(members: list[Candidate], weights: dict[str, float]) -> pd.DataFrame | None:
    """The submission: each member's test images scored as an exported ensemble scores new images."""
    predictions = {m.name: m.test_predictions() for m in members}
    if any(p is None for p in predictions.values()):
        return None
    names = members[0].test["image_name"]  # type: ignore[index]
    scores = {}
    for member in members:
        aligned = member.test.set_index("image_name").loc[names].reset_index()  # type: ignore[union-attr]
        scores[member.name] = fold_percentiles(fold_predictions(aligned), member.reference)
    return pd.DataFrame({"image_name": names.to_numpy(), "target": weighted_mean(scores, weights)})
