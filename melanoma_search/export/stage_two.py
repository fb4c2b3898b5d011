"""The export's stage-two step: run (or continue) the stage-two study over the blend's out-of-fold rows, choose its
trial honestly, compare it with the blend, and ship it in the ensemble folder only when it beats the blend on rows it
was not chosen on (:mod:`melanoma_search.stage_two`).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from melanoma_search.data.layouts import load_table
from melanoma_search.ensemble.blend import Blend
from melanoma_search.ensemble.calibration import choose_operating_points
from melanoma_search.errors import ConfigError, MelanomaSearchError
from melanoma_search.metrics import lesions_per_cancer, top_k_sensitivity
from melanoma_search.search import records
from melanoma_search.search.spec import StageTwoSpec
from melanoma_search.stage_two.features import get_group
from melanoma_search.stage_two.learners import get_learner
from melanoma_search.stage_two.model import StageTwo
from melanoma_search.stage_two.study import (
    StageTwoData,
    StageTwoOutcome,
    ablation,
    choose,
    fit_trial,
    run_study,
    trial_params,
)

__all__ = ["StageTwoOutcome", "check_stage_two_spec", "stage_two_step"]

Log = Callable[[str], None]


def check_stage_two_spec(spec: StageTwoSpec, *, where: str) -> None:
    """The section's learners and groups are registered (checked before any trial or refit)."""
    try:
        for name in spec.learners:
            get_learner(name)
    except MelanomaSearchError as exc:
        raise ConfigError(f"{where}: stage_two.learners: {exc}") from None
    try:
        for name in spec.groups:
            get_group(name)
    except MelanomaSearchError as exc:
        raise ConfigError(f"{where}: stage_two.groups: {exc}") from None


def _data(result: Blend, oof_rows: pd.DataFrame, spec: StageTwoSpec, *, origin: str | None,
          layout: str) -> StageTwoData:
    """The blend's out-of-fold rows as stage two reads them: metadata, the spec's per-lesion columns (read from the
    dataset's own files), each member's out-of-fold percentile, the image study's folds."""
    rows = oof_rows.set_index("image_name", drop=False)
    if spec.columns:
        if origin is None:
            raise ConfigError("stage_two.columns: the study recorded no dataset folder to read them from")
        extra = load_table(Path(origin), layout=layout, keep=spec.columns, require_images=False)
        extra = extra[extra["split"].eq("train")].set_index("image_name")[list(spec.columns)]
        rows = rows.join(extra, how="left")
    images = pd.DataFrame({m.name: result.oof_ranked[m.name] for m in result.members}, index=rows.index)
    folds = result.members[0].oof.set_index("image_name").loc[result.names, "fold"].to_numpy()
    return StageTwoData(rows=rows, images=images, target=result.target.astype(float), folds=folds,
                        columns=tuple(spec.columns))


def _cannot_cross_fit(folds: np.ndarray) -> str | None:
    """Why stage two cannot be cross-fitted over the blend's out-of-fold rows, or ``None``: its trees for a fold are
    fitted on the other folds' rows, so it needs the members' out-of-fold rows to span two folds at least (members
    exported with ``--no-refit`` from a study scored on one fold hold that fold only)."""
    present = sorted({int(f) for f in np.unique(folds)})
    if len(present) >= 2:
        return None
    return (f"the members' out-of-fold rows come from fold {present[0] if present else '?'} only, and stage two's "
            "trees for a fold are trained on the other folds' rows (export without --no-refit, so every member "
            "covers every fold, or search with an objective over every fold, such as cv_auc)")


def _open(study: optuna.Study, spec: StageTwoSpec) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(1, spec.n_trials // 2)),
                                             multivariate=True, group=True, constant_liar=False)
    return optuna.create_study(study_name=records.stage_two_name(study.study_name), storage=study._storage,
                               sampler=sampler, direction="maximize", load_if_exists=True)


def _uploader(store: Any, work: Path) -> Callable[[optuna.Trial, pd.DataFrame], None]:
    from optuna.artifacts import upload_artifact

    def upload(trial: optuna.Trial, oof: pd.DataFrame) -> None:
        path = work / f"stage-two-{trial.number}-oof.csv"
        oof.to_csv(path, index=False)
        upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="text/csv")

    return upload


def _oofs(study: optuna.Study, store: Any, data: StageTwoData, work: Path) -> dict[int, np.ndarray]:
    """Every finished trial's out-of-fold scores, from its artifact, aligned on ``data``'s rows."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    out = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        metas = [m for m in get_all_artifact_meta(trial, storage=study._storage) if m.filename.endswith("-oof.csv")]
        if not metas:
            continue
        path = work / f"read-{trial.number}.csv"
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=metas[-1].artifact_id)
        table = pd.read_csv(path, dtype={"image_name": str}).set_index("image_name")
        if set(table.index) == set(data.rows.index):  # a study over other members or rows is not comparable
            out[trial.number] = table.loc[data.rows.index, "stage_two"].to_numpy(float)
    return out


def _clinical(data: StageTwoData, scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """The ISIC 2024 organisers' figures for each honest score: lesions reviewed per melanoma found at 80 % and 90 %
    sensitivity, and sensitivity within each patient's 15 highest-scored lesions."""
    patient = data.rows["patient_id"].to_numpy()
    return {name: {"lesions_per_cancer_80": lesions_per_cancer(data.target, s, sensitivity=0.8),
                   "lesions_per_cancer_90": lesions_per_cancer(data.target, s, sensitivity=0.9),
                   "top15_sensitivity": top_k_sensitivity(data.target, s, patient, k=15)}
            for name, s in scores.items()}


def stage_two_step(study: optuna.Study, result: Blend, oof_rows: pd.DataFrame, *, store: Any, layout: str,
                   enabled: bool | None, log: Log) -> StageTwoOutcome | None:
    """Stage two for this export, or ``None`` when it is off (the spec's ``stage_two.enabled``, or ``enabled``)."""
    spec = StageTwoSpec.model_validate(records.stage_two_section(study))
    if not (spec.enabled if enabled is None else enabled):
        return None
    check_stage_two_spec(spec, where=f"study {study.study_name}")
    groups = tuple(g for g in spec.groups if g != "tabular" or spec.columns)
    data = _data(result, oof_rows, spec, origin=study.user_attrs.get(records.DATA), layout=layout)
    if (why := _cannot_cross_fit(data.folds)) is not None:
        log(f"stage two skipped: {why}; the rest of the export ships without it")
        return None
    metric = records.metric(study)
    stage = _open(study, spec)
    with tempfile.TemporaryDirectory() as tmp:
        run_study(data, study=stage, learners=spec.learners, groups=groups, n_trials=spec.n_trials,
                  seeds=spec.seeds, metric=metric.per_fold, upload=_uploader(store, Path(tmp)), log=log)
        choice = choose(stage, data, oofs=_oofs(stage, store, data, Path(tmp)), blend_honest=result.oof_blend,
                        metric=metric)
    for line in choice.lines():
        log(line)
    learner, params, chosen = trial_params(choice.trial)
    fitted = fit_trial(data, learner=learner, params=params, groups=chosen, seeds=spec.seeds)
    outcome = StageTwoOutcome(study_name=stage.study_name, choice=choice, oof=fitted.oof, learners=fitted.learners,
                              ablation=ablation(data, choice.trial, seeds=spec.seeds, metric=metric.per_fold),
                              importance=fitted.learners.importance(),
                              clinical=_clinical(data, {"blend": result.oof_blend, "stage two": choice.honest}))
    if choice.ships:
        calibration = pd.DataFrame({"oof": fitted.oof, "score": fitted.oof, "target": data.target})
        points = {p.name: p for p in choose_operating_points(data.target, fitted.oof)}
        outcome.model = StageTwo(learners=fitted.learners, groups=chosen, columns=tuple(spec.columns),
                                 members=tuple(m.name for m in result.members), calibration=calibration,
                                 points=points, about={})
        outcome.model.about = outcome.about()
        if len(fitted.learners.folds) > 1:
            log(f"stage two's operating points and probability describe ONE fold learner's score, while predict "
                f"combines {len(fitted.learners.folds)}: expect more flags than stated where it scores a row")
    return outcome


def stage_two_submission(outcome: StageTwoOutcome, result: Blend, test_rows: pd.DataFrame,
                         log: Log) -> pd.DataFrame | None:
    """The submission when stage two ships, as ``predict`` would score the test split: stage two's probability for
    rows with what it reads, the image blend's for the rest (``test_rows``: the dataset's test split, its per-lesion
    columns included)."""
    from melanoma_search.ensemble.calibration import fit_probability
    from melanoma_search.ensemble.scale import percentiles
    from melanoma_search.train.results import fold_predictions

    model = outcome.model
    if model is None or result.test is None or test_rows.empty:
        return None
    names = result.test["image_name"].astype(str)
    rows = test_rows.set_index("image_name", drop=False).loc[names]
    folds: dict[str, dict[int, np.ndarray]] = {}
    for member in result.members:
        aligned = fold_predictions(member.test.set_index("image_name").loc[names].reset_index())  # type: ignore[union-attr]
        reference = member.reference
        folds[member.name] = {k: percentiles(raw, reference.loc[reference["fold"] == k, "pred"].to_numpy(float))
                              for k, raw in aligned.items()}
    image_map = fit_probability(result.calibration_scores, result.target)
    image_score = result.test["target"].to_numpy(float)
    scored = model.with_fallback(rows, folds, patient_given=(rows["patient_id"] != rows["image_name"]).to_numpy(),
                                 has_meta=True, image_score=image_score,
                                 image_probability=np.asarray(image_map.predict(image_score)))
    log(f"submission: stage two scored {int((scored['scored_by'] == 'stage two').sum())} of {len(scored)} test "
        "rows (the rest lack what its features read: the image blend's probability)")
    return pd.DataFrame({"image_name": names.to_numpy(), "target": scored["score"].to_numpy()})
