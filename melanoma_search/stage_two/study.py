"""The stage-two study: Optuna searches the learner, its hyperparameters and the feature groups over an image
study's out-of-fold rows, in a study of its own (``NAME-stage-two``) in the image study's storage, so it resumes,
shows in optuna-dashboard beside the image study, and keeps its trials' out-of-fold scores as artifacts.

Each trial's value is the image study's objective (AUC, or partial AUC above 80 % sensitivity for ``pauc``) of its
honest out-of-fold scores (:mod:`.crossfit`). Choosing the best of N trials on those rows flatters it, so the choice
is scored the way the blend's weights are: the best trial on one half of the patients scores the other half, both
ways, and that is what stands beside the blend's own honest score, with the paired bootstrap difference on the same
rows. Stage two ships only when it beats the blend there by more than one standard error of that difference (the
one-standard-error rule, Hastie et al., The Elements of Statistical Learning 7.10: the simpler model stands unless
the more complex one is better by more than the noise of the comparison); the bootstrap resamples whole patients
where the rows have them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from sklearn.metrics import roc_auc_score

from melanoma_search.data.patients import patient_groups
from melanoma_search.errors import ConfigError
from melanoma_search.metrics import PairedDifference, RankMetric, paired_auc_difference, partial_auc, resampled_unit
from melanoma_search.stage_two.crossfit import CrossFit, FoldLearners, cross_fit
from melanoma_search.stage_two.features import Inputs, build_features
from melanoma_search.stage_two.learners import get_learner

if TYPE_CHECKING:
    from melanoma_search.stage_two.model import StageTwo

__all__ = [
    "Choice",
    "StageTwoData",
    "StageTwoOutcome",
    "ablation",
    "choose",
    "fit_trial",
    "run_study",
    "subsets",
    "trial_params",
]

Metric = Callable[[np.ndarray, np.ndarray], float]
Log = Callable[[str], None]


@dataclass(frozen=True)
class StageTwoData:
    """The rows stage two learns from: ``rows`` (patient, metadata, per-lesion columns), the image scores (one
    column per member, each row scored out of fold), the labels and the image study's folds."""

    rows: pd.DataFrame
    images: pd.DataFrame
    target: np.ndarray
    folds: np.ndarray
    columns: tuple[str, ...] = ()

    def inputs(self) -> Inputs:
        return Inputs(rows=self.rows, images=self.images, columns=self.columns)


def subsets(groups: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Every non-empty subset of ``groups``, named ``a+b``: one categorical a trial draws from."""
    return {"+".join(c): c for r in range(1, len(groups) + 1) for c in itertools.combinations(groups, r)}


def fit_trial(data: StageTwoData, *, learner: str, params: dict[str, Any], groups: tuple[str, ...],
              seeds: int) -> CrossFit:
    features = build_features(data.inputs(), groups)
    return cross_fit(features.table, data.target, data.folds, learner=get_learner(learner), params=params,
                     seeds=range(seeds))


def _objective(data: StageTwoData, *, learners: tuple[str, ...], groups: tuple[str, ...], seeds: int,
               metric: Metric, upload: Callable[[optuna.Trial, pd.DataFrame], None]
               ) -> Callable[[optuna.Trial], float]:
    choices = subsets(groups)

    def objective(trial: optuna.Trial) -> float:
        start = time.perf_counter()
        name = trial.suggest_categorical("learner", list(learners))
        params = get_learner(name).suggest(trial)
        chosen = choices[trial.suggest_categorical("groups", list(choices))]
        fitted = fit_trial(data, learner=name, params=params, groups=chosen, seeds=seeds)
        trial.set_user_attr("auc", round(float(roc_auc_score(data.target, fitted.oof)), 5))
        trial.set_user_attr("pauc", round(partial_auc(data.target, fitted.oof), 5))
        trial.set_user_attr("features", len(fitted.learners.columns))
        trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        upload(trial, pd.DataFrame({"image_name": data.rows.index, "fold": data.folds, "target": data.target,
                                    "stage_two": fitted.oof}))
        return metric(data.target, fitted.oof)

    return objective


def run_study(data: StageTwoData, *, study: optuna.Study, learners: tuple[str, ...], groups: tuple[str, ...],
              n_trials: int, seeds: int, metric: Metric, upload: Callable[[optuna.Trial, pd.DataFrame], None],
              log: Log) -> optuna.Study:
    """Run trials until ``study`` holds ``n_trials`` finished ones (a resumed study continues to that total)."""
    for name in learners:
        get_learner(name).check_installed()
    build_features(data.inputs(), groups)  # a bad column or group stops here, in one line, before any trial
    finished = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    todo = max(0, n_trials - finished)
    log(f"stage two: study {study.study_name!r}, {finished} trial(s) finished, {todo} to run "
        f"({', '.join(learners)}; groups {', '.join(groups)}; {len(data.target)} rows, {int(data.target.sum())} "
        f"melanomas, {data.rows['patient_id'].nunique()} patients)")

    def said(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            log(f"  stage-two trial {trial.number}: {trial.params['learner']} on {trial.params['groups']}: AUC "
                f"{trial.user_attrs['auc']:.4f}, pAUC {trial.user_attrs['pauc']:.4f} ({trial.user_attrs['seconds']}s)")
        else:
            log(f"  stage-two trial {trial.number}: {trial.state.name} ({trial.user_attrs.get('fail_reason', '')})")

    if todo:
        study.optimize(_objective(data, learners=learners, groups=groups, seeds=seeds, metric=metric, upload=upload),
                       n_trials=todo, callbacks=[said], catch=(ValueError, RuntimeError))
    return study


@dataclass(frozen=True)
class Choice:
    """The stage-two trial to ship and how it compares with the blend on rows it was not chosen on."""

    trial: optuna.trial.FrozenTrial
    honest: np.ndarray
    """Each row's stage-two score from the trial chosen on the other half of the patients."""
    blend: np.ndarray
    """The blend's own honest out-of-fold score of the same rows."""
    target: np.ndarray
    auc: tuple[float, float]
    """(stage two, blend) AUC of those scores; ``pauc`` likewise."""
    pauc: tuple[float, float]
    auc_difference: PairedDifference
    pauc_difference: PairedDifference
    metric: str
    """The image study's metric (:func:`~melanoma_search.metrics.rank_metric` name): what decides."""
    difference: PairedDifference
    """Stage two minus the blend on ``metric``, with its bootstrap standard error: what decides."""
    resampled: str = "images"
    """What the bootstraps resampled: ``patients`` where the rows have them, else ``images``."""

    @property
    def ships(self) -> bool:
        """The one-standard-error rule: stage two beats the blend on the objective's metric, on rows it was not
        chosen on, by more than one standard error of the paired difference."""
        return self.difference.difference > self.difference.standard_error

    def rule(self) -> str:
        d = self.difference
        verdict = "ships" if self.ships else "not shipped"
        return (f"{verdict}: on {self.metric}, stage two minus the blend is {d.difference:+.4f} against one standard "
                f"error of {d.standard_error:.4f} (it ships only above one standard error; bootstrap over "
                f"{self.resampled}), on rows it was not chosen on")

    def lines(self) -> list[str]:
        return [f"stage two (trial {self.trial.number}: {self.trial.params['learner']} on "
                f"{self.trial.params['groups']}) chosen on one half of the patients, scored on the other:",
                f"  AUC {self.auc[0]:.4f} vs the blend's {self.auc[1]:.4f}: difference {self.auc_difference}",
                f"  pAUC {self.pauc[0]:.4f} vs the blend's {self.pauc[1]:.4f}: difference {self.pauc_difference}",
                f"  {self.rule()}"]


@dataclass
class StageTwoOutcome:
    """What the export learned of stage two; ``model`` is set when it ships."""

    study_name: str
    choice: Choice
    oof: np.ndarray
    """The chosen trial's out-of-fold scores (one fold learner's scale)."""
    learners: FoldLearners
    ablation: dict[str, float]
    importance: pd.Series
    clinical: dict[str, dict[str, float]] = field(default_factory=dict)
    model: StageTwo | None = None
    """Set when it ships (it beats the blend on rows it was not chosen on)."""

    def about(self) -> dict[str, Any]:
        """The manifest's ``stage_two`` entry."""
        choice = self.choice

        def paired(d: Any) -> dict[str, float]:
            return {"difference": d.difference, "low": d.low, "high": d.high}

        return {"shipped": self.model is not None, "study": self.study_name, "trial": choice.trial.number,
                "learner": choice.trial.params["learner"], "groups": choice.trial.params["groups"],
                "metric": choice.metric, "rule": choice.rule(), "resampled": choice.resampled,
                "auc": list(choice.auc), "pauc": list(choice.pauc),
                "auc_difference": paired(choice.auc_difference), "pauc_difference": paired(choice.pauc_difference),
                "ablation": self.ablation, "importance": self.importance.head(25).round(5).to_dict(),
                "clinical": self.clinical,
                "operating_points": {} if self.model is None else {n: p.to_dict()
                                                                   for n, p in self.model.points.items()},
                "deployed_scale": None}


def _patient_halves(patients: pd.Series, *, seed: int = 0) -> np.ndarray:
    unique = patients.unique()
    first = set(np.random.default_rng(seed).permutation(unique)[: len(unique) // 2])
    return patients.isin(first).to_numpy()


def choose(study: optuna.Study, data: StageTwoData, *, oofs: dict[int, np.ndarray], blend_honest: np.ndarray,
           metric: RankMetric) -> Choice:
    """The best trial on all rows, and the like-for-like comparison with the blend (see the module docstring).
    ``oofs``: trial number -> its out-of-fold scores, for the study's finished trials. Trials are ranked by the
    metric over all their rows (stage two's fold learners are scored together, like the blend they replace)."""
    if not oofs:
        raise ConfigError(f"stage-two study {study.study_name!r} has no finished trial to choose from")
    score = metric.per_fold
    first = _patient_halves(data.rows["patient_id"])
    honest = np.zeros(len(data.target))
    for pick_rows, score_rows in ((first, ~first), (~first, first)):
        best = max(oofs, key=lambda n: score(data.target[pick_rows], oofs[n][pick_rows]))
        honest[score_rows] = oofs[best][score_rows]
    number = max(oofs, key=lambda n: score(data.target, oofs[n]))
    trial = next(t for t in study.trials if t.number == number)
    target = data.target
    groups = patient_groups(data.rows.reset_index(drop=True))

    def paired(how: Metric) -> PairedDifference:
        return paired_auc_difference(target, honest, blend_honest, metric=how, groups=groups)

    return Choice(trial=trial, honest=honest, blend=blend_honest, target=target, metric=metric.name,
                  auc=(float(roc_auc_score(target, honest)), float(roc_auc_score(target, blend_honest))),
                  pauc=(partial_auc(target, honest), partial_auc(target, blend_honest)),
                  auc_difference=paired(roc_auc_score), pauc_difference=paired(partial_auc),
                  difference=paired(score), resampled=resampled_unit(groups))


def ablation(data: StageTwoData, trial: optuna.trial.FrozenTrial, *, seeds: int, metric: Metric
             ) -> dict[str, float]:
    """What each of the chosen trial's feature groups adds: its metric minus the metric without that group (the
    same learner and parameters, refitted)."""
    learner, params, groups = trial_params(trial)
    full = metric(data.target, fit_trial(data, learner=learner, params=params, groups=groups, seeds=seeds).oof)
    return {name: full - metric(data.target, fit_trial(data, learner=learner, params=params,
                                                       groups=tuple(g for g in groups if g != name),
                                                       seeds=seeds).oof)
            for name in groups if len(groups) > 1}


def trial_params(trial: optuna.trial.FrozenTrial) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """A finished trial's learner, its hyperparameters (without the learner's prefix) and its feature groups."""
    learner = str(trial.params["learner"])
    params = {k.split(".", 1)[1]: v for k, v in trial.params.items() if k.startswith(f"{learner}.")}
    return learner, params, tuple(str(trial.params["groups"]).split("+"))
