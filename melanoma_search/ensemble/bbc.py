"""How much choosing the best trials flatters the in-search figure: the bootstrap bias-corrected estimate (BBC-CV).

The blend's out-of-fold figure is honest about its weights (chosen on one half of the rows, scored on the other) but
not about its members: they are the top k of every trial the study ran, chosen by their out-of-fold objective on the
very rows the figure is read on. With many trials that choice alone lifts the figure (the winner's curse). BBC-CV
(Tsamardinos, Greasidou and Borboudakis, Machine Learning 107, 2018) measures it without training anything more: the
out-of-fold predictions every trial already stores are resampled; on each bootstrap sample the whole choice is made
again (the top k trials by the study's metric, then the blend method's weights), and the chosen blend is scored on the
rows the sample left out. The mean of those scores is the estimate; their 2.5 and 97.5 percentiles its interval.
Whole patients are resampled where the rows have them.

It still assumes the rows are like the images the ensemble will meet: it says what the choice costs, not what another
collection does (``--validate`` measures that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from melanoma_search.ensemble.methods import BlendMethod
from melanoma_search.ensemble.scale import weighted_mean
from melanoma_search.metrics import RankMetric, bootstrap_draws, resampled_unit

if TYPE_CHECKING:
    from melanoma_search.ensemble.candidates import Candidate

__all__ = ["BiasCorrected", "bias_corrected", "estimate_choice"]


@dataclass(frozen=True)
class BiasCorrected:
    """The BBC-CV estimate of the exported choice, beside the in-search figure it corrects."""

    metric: str
    estimate: float
    low: float
    high: float
    in_search: float
    trials: int
    """How many trials the choice was made among."""
    top_k: int
    resamples: int
    resampled: str
    rows: int = 0
    """The out-of-fold rows the trials share (the estimate's rows)."""

    def line(self) -> str:
        return (f"bias-corrected (BBC-CV: the choice of the top {self.top_k} of {self.trials} trial(s) and the blend "
                f"weights made again on {self.resamples} bootstrap samples of the out-of-fold rows, {self.resampled} "
                f"resampled, each scored on the rows it left out): {self.metric} {self.estimate:.4f} (95% "
                f"{self.low:.4f} to {self.high:.4f}) against the in-search {self.in_search:.4f}")

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "estimate": self.estimate, "low": self.low, "high": self.high,
                "in_search": self.in_search, "trials": self.trials, "top_k": self.top_k,
                "resamples": self.resamples, "resampled": self.resampled, "rows": self.rows}


def _choose(scores: Mapping[str, np.ndarray], target: np.ndarray, folds: np.ndarray | None, *, rows: np.ndarray,
            top_k: int, method: BlendMethod, metric: RankMetric) -> dict[str, float]:
    """The export's choice made on ``rows`` alone: the top ``top_k`` trials by ``metric``, then ``method``'s
    weights."""
    sub_target, sub_folds = target[rows], None if folds is None else folds[rows]
    ranked = sorted(scores, key=lambda n: -metric(sub_target, scores[n][rows], sub_folds))[:top_k]
    return method.choose({n: scores[n][rows] for n in ranked}, sub_target, metric=metric, folds=sub_folds)


def bias_corrected(scores: Mapping[str, np.ndarray], target: np.ndarray, *, folds: np.ndarray | None,
                   groups: np.ndarray | None, top_k: int, method: BlendMethod, metric: RankMetric,
                   in_search: float, resamples: int = 100, seed: int = 0) -> BiasCorrected | None:
    """The BBC-CV estimate of choosing ``top_k`` of the trials whose out-of-fold scores (on one scale, the same rows
    in the order of ``target``) are ``scores``; ``None`` when no resample leaves rows of both classes out."""
    target = np.asarray(target, dtype=np.float64)
    values = []
    for draw in bootstrap_draws(len(target), groups=groups, resamples=resamples, seed=seed):
        left_out = np.setdiff1d(np.arange(len(target)), draw)
        if not (0 < target[draw].sum() < len(draw)) or not (0 < target[left_out].sum() < len(left_out)):
            continue
        try:
            weights = _choose(scores, target, folds, rows=draw, top_k=top_k, method=method, metric=metric)
        except ValueError:  # a method that cannot choose on this sample (e.g. a half without a melanoma)
            continue
        blended = weighted_mean({n: scores[n][left_out] for n in weights}, weights)
        value = metric(target[left_out], blended, None if folds is None else folds[left_out])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return BiasCorrected(metric=metric.label, estimate=float(np.mean(values)), low=float(low), high=float(high),
                         in_search=in_search, trials=len(scores), top_k=top_k, resamples=len(values),
                         resampled=resampled_unit(groups), rows=len(target))


def estimate_choice(trials: Sequence[Candidate], *, top_k: int, method: BlendMethod, metric: RankMetric,
                    training: pd.DataFrame) -> BiasCorrected | None:
    """:func:`bias_corrected` of the export's choice among ``trials`` (each with its own out-of-fold rows, put on
    one scale fold model by fold model), on the rows all of them share; ``training``: the study's training rows
    (their patients are resampled whole). The in-search figure beside it is the same choice made and scored on all
    those rows. ``None`` with fewer than two trials or 20 shared rows."""
    from melanoma_search.data.patients import patient_groups
    from melanoma_search.ensemble.scale import oof_percentiles

    rows = sorted(set.intersection(*(set(t.oof["image_name"]) for t in trials))) if trials else []
    if len(trials) < 2 or len(rows) < 20:
        return None
    first = trials[0].oof.set_index("image_name").loc[rows]
    target = first["target"].to_numpy(float)
    folds = first["fold"].to_numpy() if "fold" in first else None
    scores = {t.name: pd.Series(oof_percentiles(t.oof), index=t.oof["image_name"]).loc[rows].to_numpy()
              for t in trials}
    everywhere = np.ones(len(rows), dtype=bool)
    chosen = _choose(scores, target, folds, rows=everywhere, top_k=top_k, method=method, metric=metric)
    in_search = metric(target, weighted_mean({n: scores[n] for n in chosen}, chosen), folds)
    patients = patient_groups(training.drop_duplicates("image_name").set_index("image_name").loc[rows].reset_index())
    return bias_corrected(scores, target, folds=folds, groups=patients, top_k=top_k, method=method, metric=metric,
                          in_search=in_search)
