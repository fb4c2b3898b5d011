"""Export a study: its best trials blended into a submission, a report and a self-contained ensemble folder.

:func:`export_study` is the library form of ``python -m melanoma_search.export``: it reads the study's finished
trials (their ``oof.csv``/``test.csv`` artifacts), picks the top ``top_k`` by the objective, retrains each on the
folds it lacks so every member is the average of its fold models (``refit``,
:mod:`melanoma_search.ensemble.refit`), blends them by rank (``rank``: equal weights; ``greedy``: ensemble selection,
scored on the half of the rows it was not chosen on) and writes the submission, ``report.html`` beside it and, when
asked, the ensemble folder. With ``validate`` the ensemble is scored on labelled outside images
(:mod:`melanoma_search.report.outside`), printed beside the in-search AUC, put in the report and recorded in the
manifest. The blend's ROC curve is attached to the study for the dashboard.

Each step is a function of its own: the plan (the options and their checks), the members, the out-of-fold checks,
the submission, the ensemble folder and the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
import yaml

from melanoma_search.data.patients import patient_groups
from melanoma_search.ensemble.blend import Blend, blend_candidates
from melanoma_search.ensemble.calibration import OperatingPoint, choose_operating_points
from melanoma_search.ensemble.candidates import Candidate, collect_candidates
from melanoma_search.ensemble.folder import (
    add_file,
    check_replaceable,
    list_files,
    load_ensemble,
    recalibrate,
    record_in_manifest,
    staged_ensemble,
    write_ensemble,
)
from melanoma_search.ensemble.methods import get_blend_method
from melanoma_search.ensemble.prevalence import check_prevalence, prevalence_lines
from melanoma_search.ensemble.refit import refit_candidates
from melanoma_search.ensemble.scale import DeployedScale, per_fold_blend
from melanoma_search.errors import ConfigError, DataError, StorageError
from melanoma_search.export.stage_two import check_stage_two_spec, stage_two_step, stage_two_submission
from melanoma_search.metrics import rank_metric, resampled_unit
from melanoma_search.report.calibration import Calibration, calibration_summary, cross_fitted_probability
from melanoma_search.report.card import model_card
from melanoma_search.report.outside import Validation, outside_scores, validate_ensemble
from melanoma_search.report.saliency import Saliency, saliency_maps
from melanoma_search.report.subgroups import Subgroups, subgroups
from melanoma_search.search import records
from melanoma_search.search.spec import ExportSpec, StageTwoSpec
from melanoma_search.stage_two.model import FOLDER
from melanoma_search.stage_two.study import StageTwoOutcome
from melanoma_search.train.config import TrainConfig, parse_config

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

__all__ = ["ExportResult", "export_study"]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the blend, and the paths of the submission (if any), report and ensemble folder."""

    blend: Blend
    submission: Path | None
    report: Path
    ensemble_dir: Path | None
    validation: Validation | None = None
    stage_two: StageTwoOutcome | None = None


def _blend_lines(result: Blend) -> list[str]:
    """What the export says of its blend: its honest AUC beside the best single member chosen the same way, what
    the in-search figure still carries, and each candidate's weight."""
    honest = "" if result.in_sample_auc is None else (
        f" (weights scored on the half of the rows they were not chosen on; {result.in_sample_auc:.4f} "
        "on the rows they were chosen on)")
    versus = ("" if result.best_member_cross_half_auc is None else
              f" vs the best single member chosen on one half of the rows and scored on the other "
              f"{result.best_member_cross_half_auc:.4f}")
    metric = rank_metric(result.metric)
    chosen_by = "" if metric.name == "auc" else f"; chosen by the study's {metric.label}: {result.value:.4f}"
    lines = [f"blend of {len(result.members)} of {len(result.candidates)} candidate(s) ({result.method}): OOF AUC "
             f"{result.auc:.4f}{honest}{versus} (the best member on every row, where it was chosen: "
             f"{result.best_member_auc:.4f}, {result.best_member}), on {len(result.target)} OOF row(s); OOF pAUC "
             f"above 80% sensitivity {result.pauc:.4f} (of 0.2){chosen_by}; each the mean of the folds' figures",
             f"  the in-search figures still carry the choice of these {len(result.candidates)} candidate(s) among "
             "the study's trials by their out-of-fold objective: the outside check (--validate) is the unbiased one"]
    for candidate in result.candidates:
        cv = "" if candidate.cv_auc is None else f", cv_auc {candidate.cv_auc:.4f} over {len(candidate.folds)} folds"
        weight = result.weights.get(candidate.name, 0.0)
        left_out = "" if weight > 0 else " (left out: adds nothing to the blend)"
        lines.append(f"  {candidate.name}: weight {weight:.3f}, objective {candidate.value:.4f}{cv}{left_out}")
    return lines


def member_configs(members: list[Candidate]) -> dict[str, TrainConfig]:
    """Each member's training config, read once from its ``config.yaml``: the training rows and the card use both."""
    return {m.name: parse_config(yaml.safe_load((m.folder / "config.yaml").read_text()), source=m.name)
            for m in members}


def training_images(configs: dict[str, TrainConfig]) -> pd.DataFrame:
    """Every image any member trained on, with what the dataset says of it (path, label, diagnosis, source, sex,
    age, site): its training rows, external and pseudo-labelled ones included."""
    from melanoma_search.train.loop import prepare_for

    tables, seen = [], set()
    for config in configs.values():
        key = config.data.model_dump_json(exclude={"folds", "num_workers"})
        if key not in seen:
            seen.add(key)
            table = prepare_for(config).table
            tables.append(table.loc[table["split"].eq("train")])
    return pd.concat(tables, ignore_index=True).drop_duplicates("image_name")


def _load_study(study_name: str, *, storage: str | None, storage_dir: Path) -> optuna.Study:
    """The study to export, read without creating anything (a typo in ``--storage`` must not make an empty one)."""
    import optuna

    from melanoma_search.search.study import default_storage_url, open_storage, redact, storage_home

    url = storage or default_storage_url(storage_home(study_name, storage_dir=storage_dir), storage_dir=storage_dir)
    try:
        rdb = open_storage(url, heartbeat_interval=None, create=False)
    except StorageError as exc:
        raise StorageError(f"{exc}; run `python -m melanoma_search.run --study {study_name}` first, or give "
                           "--storage the URL its run used") from None
    try:
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in {redact(url)}") from None


@dataclass
class _Checks:
    """What the export measured of its blend: operating points, calibration and subgroups out of fold, and (with
    ``--validate``) the same on the outside images."""

    points: list[OperatingPoint]
    calibration: Calibration
    oof_groups: Subgroups
    validation: Validation | None = None
    outside_groups: Subgroups | None = None

    def groups(self) -> list[Subgroups]:
        return [g for g in (self.oof_groups, self.outside_groups) if g]


def _out_of_fold_checks(result: Blend, oof_rows: pd.DataFrame, *, log: Callable[[str], None]) -> _Checks:
    """The operating points and the probability's calibration of the score that ships: the final weights' blend of
    the out-of-fold rows, as the combination of fold models is estimated to score them
    (``result.calibration_scores``: thresholds, rates and probabilities only), the calibration cross-fitted over its
    halves; the subgroups' AUCs of the out-of-fold scores as they are (``result.shipped``)."""
    scores = result.calibration_scores
    patients = patient_groups(oof_rows)
    points = choose_operating_points(result.target, scores, groups=patients)
    calibration = calibration_summary(result.target, cross_fitted_probability(scores, result.target))
    log(_scale_line(result))
    log(f"operating points, chosen on the shipped out-of-fold blend (95% bootstrap intervals, "
        f"{resampled_unit(patients)} resampled):")
    for point in points:
        log(f"  {point.line()}")
    log(calibration.line("of the calibrated probability, out of fold (map fitted on the other half)"))
    estimated = result.deployed_scale is not None
    groups = subgroups(oof_rows, result.target, result.shipped, points=points, where="Out of fold",
                       rates_on=scores if estimated else None)
    return _Checks(points=points, calibration=calibration, oof_groups=groups)


def _scale_line(result: Blend) -> str:
    """Which score the operating points and probabilities describe, in words a clinician reads where they describe
    one fold model but ``predict`` combines several (they then promise fewer flags than it gives)."""
    scale = result.deployed_scale
    if scale is not None:
        return ("scale: a new image's fold models are combined; for the operating points and the probability, out-of-"
                "fold rows scored by one fold model are read as that combination is estimated to score them (the "
                f"variance combining removes, {scale.variance:.3f} in probit units, measured on {scale.source}, "
                f"{scale.n_images} images): their rates are estimates; every AUC is of the scores as they are")
    folds = max((len(m.folds) for m in result.members), default=1)
    if folds < 2:
        return "scale: one fold model per member, as predict scores new images"
    return ("scale: no combination measured. The operating points and probabilities below describe ONE fold model, "
            f"but predict averages {folds} per member, which ranks better: expect more flags than stated (higher "
            "sensitivity, lower specificity at each operating point) and probabilities nearer the middle. To describe "
            "what predict returns, give --calibrate-on IMAGES (unlabelled images like those you will score; no label "
            "is read)")


def _manifest_checks(checks: _Checks) -> dict[str, object]:
    return {"operating_points": {p.name: p.to_dict() for p in checks.points},
            "calibration_oof": checks.calibration.to_dict(), "subgroups_oof": checks.oof_groups.to_dict()}


def _measure_outside(result: Blend, checks: _Checks, staging: Path, *, oof_rows: pd.DataFrame, validate: str | Path,
                     device: torch.device, log: Callable[[str], None]
                     ) -> tuple[Blend, _Checks, tuple[pd.DataFrame, Any], bool]:
    """Score the outside images once; where no test split measured the combination of fold models, measure it on
    them (no label read) and describe the blend again with it. Returns the blend, its checks, the scores and whether
    the measure came from these images."""
    scored = outside_scores(load_ensemble(staging), validate, device=device, log=log)
    per_fold = per_fold_blend(scored[1], result.weights)
    if result.deployed_scale is not None or per_fold is None:
        return result, checks, scored, False
    scale = DeployedScale.measure(per_fold, source=f"the outside images of --validate {validate} (no labels read)")
    if scale is None:
        return result, checks, scored, False
    return *_described_with(result, scale, staging, oof_rows=oof_rows, log=log), scored, True


def _measure_on_unlabelled(result: Blend, staging: Path, *, oof_rows: pd.DataFrame, images: str | Path,
                           device: torch.device, log: Callable[[str], None]) -> tuple[Blend, _Checks] | None:
    """Measure how much combining the fold models removes on ``images`` (``--calibrate-on``: a folder or CSV of
    unlabelled images, as ``predict`` reads them; any label column is ignored) and describe the blend with it;
    ``None`` when the members do not share their folds (nothing to measure)."""
    from melanoma_search.data.layouts import read_images_to_score

    ensemble = load_ensemble(staging)
    rows = read_images_to_score(images)
    if seen := ensemble.trained_on(rows):
        raise DataError(f"--calibrate-on {images}: {len(seen)} of its {len(rows)} image(s) are images this "
                        f"ensemble's study trained on, or near-duplicates of them ({', '.join(seen[:3])}): a fold "
                        "model that trained on an image scores it unlike a new one; give images the study never saw")
    log(f"calibrate-on: scoring {len(rows)} unlabelled image(s) of {images} with every fold model")
    per_fold = per_fold_blend(ensemble.fold_scores(rows, device=device, allow_missing_meta=True), result.weights)
    if per_fold is None:
        log("calibrate-on: the members do not share the same fold models; nothing to measure")
        return None
    scale = DeployedScale.measure(per_fold, source=f"--calibrate-on {images} (no labels read)")
    if scale is None:
        raise DataError(f"--calibrate-on {images}: {len(rows)} image(s); measuring how the fold models combine "
                        "needs at least 10")
    return _described_with(result, scale, staging, oof_rows=oof_rows, log=log)


def _described_with(result: Blend, scale: DeployedScale, staging: Path, *, oof_rows: pd.DataFrame,
                    log: Callable[[str], None]) -> tuple[Blend, _Checks]:
    """The blend and its out-of-fold checks described on the combination ``scale`` measured, and the staged folder's
    calibration and manifest replaced to match (sealed again)."""
    result = result.with_deployed_scale(scale)
    checks = _out_of_fold_checks(result, oof_rows, log=log)
    recalibrate(staging, result, _manifest_checks(checks))
    return result, checks


def _ship_stage_two(staging: Path, stage: StageTwoOutcome | None) -> None:
    """Stage two's verdict in the manifest, and its models and files in the folder when it ships (sealed)."""
    if stage is None:
        return
    record_in_manifest(staging, "stage_two", stage.about())
    if stage.model is not None:
        stage.model.write(staging)
        list_files(staging, sorted(str(p.relative_to(staging)) for p in (staging / FOLDER).iterdir()))


def _write_folder(result: Blend, checks: _Checks, *, target: Path, study: optuna.Study, method: str,
                  configs: dict[str, TrainConfig], training: pd.DataFrame, oof_rows: pd.DataFrame,
                  validate: str | Path | None, calibrate_on: str | Path | None, device: str,
                  stage: StageTwoOutcome | None, log: Callable[[str], None], prevalence: float | None = None
                  ) -> tuple[Blend, _Checks, str, list[Saliency]]:
    """Write the ensemble folder beside ``target`` and swap it in only once complete and checked: its manifest,
    the combination of fold models measured on ``calibrate_on``'s unlabelled images, the outside check
    (``validate``, its figures added to the checks), the Grad-CAM maps and the model card.
    Returns the blend and checks as finally described, the card and the maps."""
    from melanoma_search.train.device import resolve_device

    with staged_ensemble(target) as staging:
        write_ensemble(result, out=staging, study_name=study.study_name, method=method,
                       lineage=records.lineage(study), training=training, extra=_manifest_checks(checks),
                       cache_dir=next(iter(configs.values())).data.cache_dir)
        _ship_stage_two(staging, stage)
        if result.bias_corrected is not None:
            record_in_manifest(staging, "bias_corrected", result.bias_corrected.to_dict())
        if calibrate_on is not None and (measured := _measure_on_unlabelled(
                result, staging, oof_rows=oof_rows, images=calibrate_on, device=resolve_device(device),
                log=log)) is not None:
            result, checks = measured
        if validate is not None:
            on = resolve_device(device)
            result, checks, scored, here = _measure_outside(result, checks, staging, oof_rows=oof_rows,
                                                            validate=validate, device=on, log=log)
            validation = validate_ensemble(load_ensemble(staging), validate,
                                           in_search={**result.member_aucs, "blend": result.auc}, device=on,
                                           log=log, scored=scored, measured_here=here)
            for line in validation.lines():
                log(line)
            assert validation.rows is not None
            checks.validation = validation
            checks.outside_groups = subgroups(validation.rows, validation.target, validation.scores["blend"],
                                              points=checks.points, where=f"Outside ({validate})")
            record_in_manifest(staging, "validation",
                               {**validation.to_dict(), "subgroups": checks.outside_groups.to_dict()})
        if prevalence is not None:  # predict moves the probability to it unless told another rate
            record_in_manifest(staging, "prevalence", {"deployed": prevalence,
                                                       "trained": float(result.target.mean())})
        looked = saliency_maps(load_ensemble(staging), oof_rows, result.target, result.shipped,
                               folds=dict(zip(oof_rows["image_name"], oof_rows["fold"], strict=True)))
        card = model_card(study=study, blend=result, configs=configs, training=training,
                          points=checks.points, calibration=checks.calibration, validation=checks.validation,
                          subgroups="\n\n".join(g.markdown() for g in checks.groups()),
                          stage_two=None if stage is None else stage.about(), prevalence=prevalence,
                          patients=patient_groups(oof_rows))
        add_file(staging, "model_card.md", card)
    return result, checks, card, looked


def _folder_step(plan: _Plan, result: Blend, checks: _Checks, *, configs: dict[str, TrainConfig],
                 training: pd.DataFrame, oof_rows: pd.DataFrame, device: str, stage: StageTwoOutcome | None,
                 work: Path, log: Callable[[str], None]) -> tuple[Blend, _Checks, str | None, list[Saliency]]:
    """The ensemble folder when the plan needs weights (``--ensemble-dir``, ``--validate`` or ``--calibrate-on``;
    in ``work`` when no folder was asked for): the blend and checks as finally described, the card and the maps."""
    if not plan.need_weights:
        return result, checks, None, []
    target = plan.ensemble_dir if plan.ensemble_dir is not None else work / "ensemble"
    result, checks, card, looked = _write_folder(
        result, checks, target=target, study=plan.study, method=plan.method, configs=configs, training=training,
        oof_rows=oof_rows, validate=plan.validate, calibrate_on=plan.calibrate_on, device=device, stage=stage,
        log=log, prevalence=plan.prevalence)
    if plan.ensemble_dir is not None:
        log(f"ensemble: {target}, with its model card (score new images with python -m melanoma_search.predict "
            f"--ensemble {target})")
    return result, checks, card, looked


@dataclass(frozen=True)
class _Plan:
    """What this export does: the study, its members' number and method, where each output goes."""

    study: optuna.Study
    top_k: int
    method: str
    refit: bool
    out: Path
    ensemble_dir: Path | None
    validate: str | Path | None
    storage_dir: Path
    stage_two: bool | None = None
    """Run stage two (``None``: as the spec's ``stage_two.enabled`` says)."""
    calibrate_on: str | Path | None = None
    """Unlabelled images to measure the combination of fold models on (``--calibrate-on``)."""
    prevalence: float | None = None
    """The melanoma rate where the ensemble is used (``--prevalence``)."""

    @property
    def need_weights(self) -> bool:
        return self.ensemble_dir is not None or self.validate is not None or self.calibrate_on is not None


def _plan(study_name: str, *, storage: str | None, storage_dir: Path, top_k: int | None, method: str | None,
          refit: bool | None, out: str | Path | None, ensemble_dir: str | Path | None,
          validate: str | Path | None, stage_two: bool | None = None,
          calibrate_on: str | Path | None = None, prevalence: float | None = None) -> _Plan:
    """The options with the spec's ``export:`` defaults filled in, each checked before any work (a refit takes
    hours on a CPU: an unknown method or a folder that may not be replaced must stop the export first)."""
    if top_k is not None and top_k < 1:
        raise ConfigError(f"--top-k {top_k}: must be at least 1 (the number of trials to blend)")
    if prevalence is not None:
        check_prevalence(prevalence)
    study = _load_study(study_name, storage=storage, storage_dir=storage_dir)
    defaults = ExportSpec.model_validate(records.export_section(study))
    method = defaults.method if method is None else method
    get_blend_method(method)
    out = Path(out) if out is not None else storage_dir / study_name / "export" / "submission.csv"
    if calibrate_on is not None and not Path(calibrate_on).expanduser().exists():
        raise ConfigError(f"--calibrate-on {calibrate_on}: no such folder or CSV file")
    if ensemble_dir is not None:
        check_replaceable(Path(ensemble_dir))
        _refuse_inside(out, Path(ensemble_dir))
    if stage_two is not False:
        spec = StageTwoSpec.model_validate(records.stage_two_section(study))
        if stage_two or spec.enabled:
            check_stage_two_spec(spec, where=f"study {study_name}")
    return _Plan(study=study, top_k=defaults.top_k if top_k is None else top_k, method=method,
                 refit=defaults.refit if refit is None else refit, out=out,
                 ensemble_dir=None if ensemble_dir is None else Path(ensemble_dir), validate=validate,
                 storage_dir=storage_dir, stage_two=stage_two, calibrate_on=calibrate_on, prevalence=prevalence)


def _refuse_inside(out: Path, ensemble_dir: Path) -> None:
    """The submission and the report beside it must not land in the ensemble folder: it holds only what its manifest
    lists and is replaced whole, so a file written there would be refused at the end (after the refit) and block
    every later export."""
    folder = ensemble_dir.expanduser().resolve()
    if out.expanduser().resolve().parent.is_relative_to(folder):
        raise ConfigError(f"--out {out}: inside --ensemble-dir {ensemble_dir}, which holds only the ensemble's own "
                          "files (the export replaces it whole): give --out a path outside it (the report is "
                          "written beside --out)")


def _members(plan: _Plan, store: FileSystemArtifactStore, *, work: Path, log: Callable[[str], None]) -> Blend:
    """The top trials as candidates, refitted on the folds they lack when asked, blended by the plan's method."""
    from melanoma_search.search.study import study_folder

    study = plan.study
    candidates = collect_candidates(study, store, top_k=plan.top_k, need_weights=plan.need_weights and not plan.refit,
                                    work=work, log=log)
    if plan.refit:
        cv_aucs = refit_candidates(candidates, refit_dir=study_folder(study, storage_dir=plan.storage_dir) / "refit",
                                   need_weights=plan.need_weights, log=log)
        if cv_aucs:  # Optuna keeps a finished trial's attributes read-only: the study holds them per trial
            records.record_cv_aucs(study, cv_aucs)
    if len(candidates) < plan.top_k:
        log(f"{len(candidates)} of the {plan.top_k} member(s) asked for: the study has no more usable finished "
            "trials (the lines above say which were skipped and why)")
    result = blend_candidates(candidates, method=plan.method, metric=records.metric(study))
    for line in _blend_lines(result):
        log(line)
    return result


def _with_bias_corrected(result: Blend, plan: _Plan, store: FileSystemArtifactStore, *, training: pd.DataFrame,
                         work: Path, log: Callable[[str], None]) -> Blend:
    """The blend with its BBC-CV estimate (:mod:`melanoma_search.ensemble.bbc`): the export's choice of members made
    again on bootstrap samples of every finished trial's own out-of-fold rows (those all of them share)."""
    import dataclasses

    from melanoma_search.ensemble.bbc import estimate_choice

    trials = collect_candidates(plan.study, store, top_k=len(plan.study.trials), need_weights=False,
                                work=work / "bbc", log=lambda line: None)
    estimate = estimate_choice(trials, top_k=plan.top_k, method=get_blend_method(plan.method),
                               metric=records.metric(plan.study), training=training)
    if estimate is None:
        log("bias-corrected estimate: not measured (it needs two finished trials sharing 20 out-of-fold rows, and "
            "bootstrap samples that leave rows of both classes out)")
        return result
    log(f"{estimate.line()} (the choice made and scored on the same {estimate.rows} row(s); "
        f"{'every' if estimate.rows == len(result.names) else 'only these'} out-of-fold rows of the blend)")
    return dataclasses.replace(result, bias_corrected=estimate)


def _write_submission(result: Blend, out: Path, *, log: Callable[[str], None], stage: StageTwoOutcome | None,
                      configs: dict[str, TrainConfig]) -> Path | None:
    """The test split's scores as ``predict`` gives them: the image blend's, or with stage two shipped, the
    calibrated probability of whichever model scores each row."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if result.test is None:
        log("no submission: the study's dataset has no test split (its trials wrote no test.csv)")
        return None
    table = result.test
    if stage is not None and stage.model is not None:
        with_stage_two = stage_two_submission(stage, result, _test_rows(configs, stage.model.columns), log)
        table = table if with_stage_two is None else with_stage_two
    table.to_csv(out, index=False)
    log(f"submission: {out} ({len(table)} rows)")
    return out


def _test_rows(configs: dict[str, TrainConfig], columns: tuple[str, ...]) -> pd.DataFrame:
    """The study's test split with its metadata and the per-lesion columns stage two reads."""
    from melanoma_search.data.layouts import load_table
    from melanoma_search.train.loop import prepare_for

    prepared = prepare_for(next(iter(configs.values())))
    rows = prepared.table[prepared.table["split"].eq("test")]
    if columns:
        extra = load_table(Path(prepared.origin), keep=columns, require_images=False)
        rows = rows.merge(extra.loc[extra["split"].eq("test"), ["image_name", *columns]], on="image_name", how="left")
    return rows


def _attach_roc(result: Blend, study: optuna.Study, store: FileSystemArtifactStore, *, work: Path) -> None:
    """The blend's out-of-fold ROC curve as a study artifact, so optuna-dashboard shows it."""
    from optuna.artifacts import upload_artifact

    from melanoma_search.search.artifacts import roc_svg

    svg = work / "blend-roc.svg"
    svg.write_text(roc_svg(result.target, result.oof_blend, title=f"blend of {len(result.members)} (OOF)"))
    upload_artifact(artifact_store=store, file_path=str(svg), study_or_trial=study, mimetype="image/svg+xml")


def _write_report(plan: _Plan, result: Blend, checks: _Checks, *, card: str | None, saliency: list[Saliency],
                  stage: StageTwoOutcome | None, log: Callable[[str], None]) -> Path:
    """``report.html`` beside the submission, after what the operating points mean at ``--prevalence``'s rate."""
    from melanoma_search.report.page import write_report

    for line in [] if plan.prevalence is None else prevalence_lines(
            checks.points, prevalence=plan.prevalence, trained=float(result.target.mean())):
        log(line)
    report = write_report(plan.study, result, plan.out.with_name("report.html"), validation=checks.validation,
                          points=checks.points, calibration=checks.calibration, subgroups=checks.groups(),
                          card=card, saliency=saliency, stage_two=stage, prevalence=plan.prevalence)
    log(f"report: {report}")
    return report


def export_study(
    study_name: str,
    *,
    storage: str | None = None,
    storage_dir: str | Path = "storage",
    top_k: int | None = None,
    method: str | None = None,
    out: str | Path | None = None,
    ensemble_dir: str | Path | None = None,
    refit: bool | None = None,
    validate: str | Path | None = None,
    calibrate_on: str | Path | None = None,
    device: str = "auto",
    stage_two: bool | None = None,
    prevalence: float | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Blend the best ``top_k`` trials of ``study_name`` and write the submission, report and ensemble folder.

    ``out``: the submission CSV, ``report.html`` beside it (default ``<storage_dir>/<study>/export/submission.csv``,
    out of the working tree's way); ``refit``: train each member on the folds it lacks first (fold bagging);
    ``validate``: a labelled dataset folder of outside images to score the ensemble on; ``calibrate_on``: unlabelled
    images (a folder, or a CSV as ``predict`` reads it) on which to measure how much combining each member's fold
    models removes, so the operating points and probabilities describe what ``predict`` returns; ``stage_two``: run
    stage two (:mod:`melanoma_search.stage_two`; ``None``: as the spec's ``stage_two.enabled``); ``prevalence``: the
    melanoma rate where the ensemble is used (each operating point's PPV and NPV there in the output, the report and
    the card; ``predict`` moves the probability to it). ``top_k``, ``method`` and ``refit`` default to the study
    spec's ``export:`` section (recorded in the study by the run), else 5, rank and refit.
    """
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plan = _plan(study_name, storage=storage, storage_dir=Path(storage_dir), top_k=top_k, method=method,
                 refit=refit, out=out, ensemble_dir=ensemble_dir, validate=validate, stage_two=stage_two,
                 calibrate_on=calibrate_on, prevalence=prevalence)
    store = FileSystemArtifactStore(str(records.artifact_dir(plan.study, storage_dir=plan.storage_dir)))
    with tempfile.TemporaryDirectory() as tmp:
        result = _members(plan, store, work=Path(tmp), log=log)
        configs = member_configs(result.members)
        training = training_images(configs)
        result = _with_bias_corrected(result, plan, store, training=training, work=Path(tmp), log=log)
        oof_rows = training.set_index("image_name").loc[result.names].reset_index()  # in the blend's row order
        checks = _out_of_fold_checks(result, oof_rows, log=log)
        stage = stage_two_step(plan.study, result, oof_rows, store=store, enabled=plan.stage_two, log=log,
                               layout=next(iter(configs.values())).data.layout)
        submission = _write_submission(result, plan.out, log=log, stage=stage, configs=configs)
        _attach_roc(result, plan.study, store, work=Path(tmp))
        result, checks, card, looked = _folder_step(plan, result, checks, configs=configs, training=training,
                                                    oof_rows=oof_rows, device=device, stage=stage, work=Path(tmp),
                                                    log=log)
        report = _write_report(plan, result, checks, card=card, saliency=looked, stage=stage, log=log)
    return ExportResult(blend=result, submission=submission, report=report, ensemble_dir=plan.ensemble_dir,
                        validation=checks.validation, stage_two=stage)
