"""Blending the candidates: their out-of-fold scores on one scale, weighted by a registered blend method.

:func:`blend_candidates` aligns the candidates on the out-of-fold rows they share, puts every fold model on one
scale (:mod:`.scale`), lets the method (:mod:`.methods`) choose the weights and scores the blend honestly: a method
whose weights are chosen on the rows is scored on the rows they were not chosen on (``oof_blend``: for the AUC
only). What ships is the final weights' blend (``shipped``): the probability map and the operating points are fitted
on it, the score new images get. The best single member is compared like with like: chosen on one half of the rows
and scored on the other, as the blend's weights are. Candidates with weight 0 are left out of the result; the
submission's test scores are combined with the very functions an exported ensemble uses on new images (per fold,
:func:`~melanoma_search.ensemble.scale.weighted_mean` of the members' percentiles; over the folds,
:func:`~melanoma_search.ensemble.scale.combine_folds`), and the test split is where the fold models' disagreement
is measured (:class:`~melanoma_search.ensemble.scale.DeployedScale`: it reads no label) for the probability map and
the operating points to describe that combination.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from melanoma_search.ensemble.bbc import BiasCorrected
from melanoma_search.ensemble.candidates import Candidate
from melanoma_search.ensemble.methods import cross_half, get_blend_method
from melanoma_search.ensemble.scale import (
    DeployedScale,
    combine_folds,
    fold_percentiles,
    on_deployed_scale,
    oof_percentiles,
    per_fold_blend,
    percentiles,
    weighted_mean,
)
from melanoma_search.errors import ConfigError
from melanoma_search.metrics import AUC, RankMetric, rank_metric
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
    """Each row's blended score; for a fitted method, under the weights chosen on the other half of the rows: what
    the honest AUC reads, and nothing else."""
    shipped: np.ndarray
    """Each row's score under the final weights, by the one fold model that scored it out of fold."""
    auc: float
    """The blend's OOF AUC (the mean of the folds'), never scored on the rows its weights were chosen on."""
    pauc: float
    """Its OOF partial AUC above 80 % sensitivity (ISIC 2024), on the same rows and scores (the folds' mean)."""
    best_member_auc: float
    """The best candidate's AUC on these rows (it was chosen on them: optimistic by about a blend's gain)."""
    best_member: str
    test: pd.DataFrame | None
    method: str = "rank"
    in_sample_auc: float | None = None
    """Fitted methods only: the final weights' AUC on the rows they were chosen on (optimistic; for comparison)."""
    member_aucs: dict[str, float] = field(default_factory=dict)
    """Each candidate's AUC on the blend's OOF rows."""
    candidates: list[Candidate] = field(default_factory=list)
    """Every candidate the method chose from (members and those it left out)."""
    best_member_cross_half_auc: float | None = None
    """The best single candidate chosen on one half of the rows and scored on the other (both ways): the like for
    like comparison with :attr:`auc` (``None`` when a half lacks a class)."""
    deployed_scale: DeployedScale | None = None
    """What combining a new image's fold models removes, measured on the test split (``None``: no test split, or
    one fold model per member); ``export --validate`` measures it on the outside images instead."""
    folds: np.ndarray | None = None
    """Each row's fold (whose model scored it out of fold): every out-of-fold figure is the mean of the folds'."""
    metric: str = "auc"
    """The study's metric (:func:`~melanoma_search.metrics.rank_metric` name) the method chose the weights by."""
    bias_corrected: BiasCorrected | None = None
    """What choosing the members among the study's trials costs (BBC-CV), where the export measured it."""

    @property
    def value(self) -> float:
        """The blend on the study's metric (``metric``), on the rows its weights were not chosen on."""
        return rank_metric(self.metric)(self.target, self.oof_blend, self.folds)

    @property
    def calibration_scores(self) -> np.ndarray:
        """The out-of-fold rows as the shipped combination of fold models would score them (:attr:`shipped` with
        :attr:`deployed_scale`'s variance removed): what the probability map and the operating points are fitted
        on, so they describe what ``predict`` returns."""
        if self.deployed_scale is None:
            return self.shipped
        return on_deployed_scale(self.shipped, self.target, removed=self.deployed_scale.variance)

    def with_deployed_scale(self, scale: DeployedScale) -> Blend:
        return dataclasses.replace(self, deployed_scale=scale)


def blend_candidates(candidates: list[Candidate], *, method: str, metric: RankMetric = AUC) -> Blend:
    """Align the candidates on their common OOF rows, rank each fold model on its own scale and blend them, the
    weights chosen by ``metric`` (the study's)."""
    chosen_method = get_blend_method(method)
    common = set(candidates[0].oof["image_name"])
    for member in candidates[1:]:
        common &= set(member.oof["image_name"])
    if not common:
        raise ConfigError("the chosen trials share no out-of-fold rows (were they trained on different folds?)")
    rows = sorted(common)
    first = candidates[0].oof.set_index("image_name").loc[rows]
    target = first["target"].to_numpy()
    folds = first["fold"].to_numpy() if "fold" in first else None
    ranked = {m.name: pd.Series(oof_percentiles(m.oof), index=m.oof["image_name"]).loc[rows].to_numpy()
              for m in candidates}
    singles = {name: AUC(target, scores, folds) for name, scores in ranked.items()}
    weights = {n: w for n, w in chosen_method.choose(ranked, target, metric=metric, folds=folds).items() if w > 0}
    shipped = weighted_mean(ranked, weights)
    fitted = chosen_method.fitted
    oof_blend = cross_half(chosen_method, ranked, target, metric=metric, folds=folds) if fitted else shipped
    by_name = {m.name: m for m in candidates}
    members = [by_name[n] for n in weights]
    best = max(ranked, key=lambda n: metric(target, ranked[n], folds))
    test, scale = _blend_test(members, weights)
    return Blend(members=members, weights=weights, names=rows, target=target, oof_ranked=ranked, oof_blend=oof_blend,
                 shipped=shipped, auc=AUC(target, oof_blend, folds),
                 pauc=rank_metric("pauc@0.8")(target, oof_blend, folds),
                 best_member_auc=singles[best], best_member=best, test=test, method=method,
                 in_sample_auc=AUC(target, shipped, folds) if fitted else None,
                 member_aucs=singles, candidates=list(candidates),
                 best_member_cross_half_auc=_best_single_cross_half(ranked, target, metric=metric, folds=folds),
                 deployed_scale=scale, folds=folds, metric=metric.name)


def _best_single_cross_half(ranked: dict[str, np.ndarray], target: np.ndarray, *, metric: RankMetric,
                            folds: np.ndarray | None) -> float | None:
    """The AUC of the best single candidate chosen (by ``metric``) on each half of the rows and scored on the
    other."""
    try:
        scores = cross_half(get_blend_method("best-single"), ranked, target, metric=metric, folds=folds)
    except ConfigError:  # a half without a melanoma
        return None
    return AUC(target, scores, folds)


def _fold_reference(member: Candidate, fold: int) -> np.ndarray:
    reference = member.reference
    return reference.loc[reference["fold"] == fold, "pred"].to_numpy(np.float64)


def _blend_test(members: list[Candidate], weights: dict[str, float]
                ) -> tuple[pd.DataFrame | None, DeployedScale | None]:
    """The submission, each test image scored as an exported ensemble scores new images, and what combining the
    fold models removes, measured on these images (their labels are never read: a test split has none)."""
    predictions = {m.name: m.test_predictions() for m in members}
    if any(p is None for p in predictions.values()):
        return None, None
    names = members[0].test["image_name"]  # type: ignore[index]
    aligned = {m.name: fold_predictions(m.test.set_index("image_name").loc[names].reset_index())  # type: ignore[union-attr]
               for m in members}
    by_fold = {m.name: {k: percentiles(raw, _fold_reference(m, k)) for k, raw in aligned[m.name].items()}
               for m in members}
    per_fold = per_fold_blend(by_fold, weights)
    if per_fold is None:  # fold models that do not correspond: each member's mean, blended (nothing measured)
        scores = weighted_mean({m.name: fold_percentiles(aligned[m.name], m.reference) for m in members}, weights)
        return pd.DataFrame({"image_name": names.to_numpy(), "target": scores}), None
    scale = DeployedScale.measure(per_fold, source="the study's test split (no labels read)")
    return pd.DataFrame({"image_name": names.to_numpy(), "target": combine_folds(per_fold)}), scale
