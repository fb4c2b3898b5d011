"""``model_card.md``: what an exported ensemble is for, what it was trained on, how it was made and how well it does,
for whom, and where it is known not to hold; written into the ensemble folder and shown in the report.

Every figure comes from the export that wrote it (the blend, the operating points, the calibration, the subgroups
and, with ``--validate``, the outside check); nothing is typed in by hand, and what was not measured says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from melanoma_search.ensemble.blend import Blend
from melanoma_search.ensemble.calibration import OperatingPoint
from melanoma_search.metrics import AUC, auc_standard_error, bootstrap_draws
from melanoma_search.report.calibration import Calibration
from melanoma_search.report.outside import Validation
from melanoma_search.search import records

__all__ = ["model_card"]


def _training_section(training: pd.DataFrame) -> list[str]:
    labelled = training[training["target"].notna()]
    lines = [f"- {len(training)} images ({int(labelled['target'].sum())} melanomas, "
             f"{labelled['target'].mean():.1%}) from {training['source'].nunique()} collection(s):"]
    for source, rows in training.groupby("source"):
        external = " (external: training folds only)" if rows["is_external"].all() else ""
        lines.append(f"  - {source}: {len(rows)} images, {int(rows['target'].sum())} melanomas{external}")
    if training["diagnosis"].notna().any():
        mix = training["diagnosis"].value_counts()
        lines.append("- diagnoses: " + ", ".join(f"{name} {count}" for name, count in mix.items()))
    sex = training["sex"].value_counts(dropna=False)
    lines.append("- sex: " + ", ".join(f"{'unknown' if pd.isna(k) else k} {v}" for k, v in sex.items()))
    ages = training["age_approx"].dropna()
    if len(ages):
        lines.append(f"- age: median {ages.median():.0f} years (range {ages.min():.0f}-{ages.max():.0f}); "
                     f"{training['age_approx'].isna().sum()} unknown")
    return lines


def _members_section(blend: Blend, configs: Mapping[str, Any]) -> list[str]:
    lines = ["| member | weight | architecture | image size | target | epochs | in-search AUC |",
             "|---|---|---|---|---|---|---|"]
    for member in blend.members:
        config = configs[member.name]
        lines.append(f"| {member.name} | {blend.weights[member.name]:.2f} | {config.model.name} | "
                     f"{config.image_size} | {config.target} | {config.epochs} | "
                     f"{blend.member_aucs.get(member.name, float('nan')):.4f} |")
    return lines


def _use_sections(sources: list[str]) -> list[str]:
    return [
        "## Intended use",
        "- Ranks dermoscopy images of skin lesions by how likely each is a melanoma, to help decide which lesions a "
        "clinician looks at first, in research, and in benchmark or competition settings (SIIM-ISIC 2020 AUC, ISIC "
        "2024 partial AUC).",
        "- `score` ranks; `probability` is calibrated on the training collection(s) and carries their melanoma rate; "
        "the operating points below give the sensitivity and specificity to expect on images like the training "
        "ones.", "",
        "## Not intended use",
        "- A diagnosis without a clinician, or a decision not to examine or biopsy a lesion.",
        "- Clinical (non-dermoscopic) photographs, mucosal or nail lesions, or any image unlike the training images.",
        f"- Collections, cameras and populations it was not trained on ({', '.join(sources)} only) without checking "
        "it there first: the outside check below is one such check, on one collection.", ""]


def _how_made(study: Any, blend: Blend, configs: Mapping[str, Any]) -> list[str]:
    states = pd.Series([t.state.name for t in study.trials]).value_counts()
    return ["## How it was made",
            f"- Search: study `{study.study_name}`, {len(study.trials)} trials ("
            + ", ".join(f"{v} {k.lower()}" for k, v in states.items()) + f"), objective "
            f"`{study.user_attrs.get(records.OBJECTIVE, '?')}`; blend: `{blend.method}` of {len(blend.members)} of "
            f"{len(blend.candidates)} candidates.",
            *_members_section(blend, configs), ""]


def _scale_line(blend: Blend) -> str:
    """Which score every figure describes."""
    scale = blend.deployed_scale
    if scale is not None:
        return (f"- Scale: `score` combines every member's fold models (per fold the members' blend, then the folds' "
                f"probits averaged). The probability map and the operating points (thresholds, sensitivity, "
                f"specificity) are **estimates** for that combination: the out-of-fold rows, each scored by one fold "
                f"model, are read as the combination would score them, removing the variance the fold models' "
                f"disagreement adds ({scale.variance:.3f} in probit units, measured on {scale.source}, "
                f"{scale.n_images} images, no labels read; the shrinkage reads each row's class, so it moves "
                "only thresholds, rates and probabilities). Every AUC and partial AUC below, subgroups included, is "
                "of the out-of-fold scores as they are.")
    return ("- Scale: the probability map, the operating points and the out-of-fold figures describe **one fold "
            "model** per member (no test split, no `--calibrate-on` and no `--validate` images measured how much "
            "combining the fold models changes the score, or each member has one fold model). Where `predict` "
            "combines several fold models, expect more flags than stated: more sensitivity and less specificity at "
            "each operating point, and probabilities nearer the middle than the observed rates. Exporting again "
            "with `--calibrate-on` and unlabelled images like those to be scored fits them to what `predict` "
            "returns.")


def _in_search_error(blend: Blend, patients: np.ndarray | None) -> tuple[float, str]:
    """The in-search AUC's standard error: a bootstrap over patients where the rows group by patient (a patient's
    lesions are not independent), else Hanley and McNeil's from the class sizes; and which it is."""
    if patients is None:
        positives = int(blend.target.sum())
        se = auc_standard_error(blend.auc, positives=positives, negatives=len(blend.target) - positives)
        return se, "Hanley-McNeil, images independent"
    values = [AUC(blend.target[d], blend.oof_blend[d], None if blend.folds is None else blend.folds[d])
              for d in bootstrap_draws(len(blend.target), groups=patients, resamples=500)]
    return float(np.nanstd(values, ddof=1)), "bootstrap, patients resampled"


def _performance(blend: Blend, calibration: Calibration, validation: Validation | None,
                 patients: np.ndarray | None = None) -> list[str]:
    positives = int(blend.target.sum())
    se, unit = _in_search_error(blend, patients)
    versus = ("" if blend.best_member_cross_half_auc is None else
              f" Against the best single member chosen the same way (on one half, scored on the other): "
              f"{blend.best_member_cross_half_auc:.4f}.")
    lines = ["## Performance", _scale_line(blend),
             f"- In search (out of fold, {len(blend.target)} images, {positives} melanomas): AUC {blend.auc:.4f} "
             f"(standard error about {se:.3f}, {unit}; the mean of the folds' AUCs), partial AUC above 80 % "
             f"sensitivity {blend.pauc:.4f} of 0.2.{versus} "
             "It still carries the choice of the members among the study's trials by their out-of-fold score: the "
             "outside check is the unbiased figure.",
             *([] if blend.bias_corrected is None else [
                 f"- Corrected for choosing the members: {blend.bias_corrected.line()}."]),
             f"- {calibration.line('of the probability, out of fold (isotonic fitted on the other half)')}."]
    if validation is None:
        return [*lines, "- Outside: not measured (export with `--validate PATH` to score images from elsewhere)."]
    lines.append(f"- Outside ({validation.source}: {validation.n_images} images, {validation.n_melanoma} "
                 f"melanomas): AUC {validation.outside['blend']:.4f} (standard error about "
                 f"{validation.standard_error:.3f}), partial AUC {validation.outside_pauc['blend']:.4f}; "
                 f"in-search minus outside AUC {validation.gap:+.3f}.")
    if validation.calibration is not None:
        lines.append(f"- {validation.calibration.line('of the probability, outside')}.")
    if validation.scale_check is not None:
        check = validation.scale_check
        lines.append(f"- Outside, described as one fold model -> as the combination ({check.how}): expected "
                     "calibration error "
                     f"{check.ece[0]:.3f} -> {check.ece[1]:.3f}; " + "; ".join(
                         f"{name} sensitivity {p['sensitivity'][0]:.3f} -> {p['sensitivity'][1]:.3f}"
                         for name, p in check.points.items()) + ".")
    return lines


def _at_rate(points: list[OperatingPoint], blend: Blend, prevalence: float | None) -> list[str]:
    """Each operating point's meaning at the melanoma rate where the ensemble is used, and the probability's move."""
    if prevalence is None:
        return []
    from melanoma_search.ensemble.prevalence import prevalence_lines

    first, *rest = prevalence_lines(points, prevalence=prevalence, trained=float(blend.target.mean()))
    return ["", f"At the melanoma rate where it is used: {first}", "", *(f"- {line.strip()}" for line in rest)]


def _points_section(points: list[OperatingPoint], validation: Validation | None) -> list[str]:
    outside = validation is not None
    unit = points[0].resampled if points else "images"
    lines = [f"## Operating points (chosen out of fold; 95 % bootstrap intervals, {unit} resampled)",
             "| point | threshold on score | sensitivity | specificity |" + (
                 " sensitivity outside | specificity outside |" if outside else ""),
             "|---|---|---|---|" + ("---|---|" if outside else "")]
    for point in points:
        row = (f"| {point.name} | {point.threshold:.4f} | {point.sensitivity:.3f} [{point.sensitivity_ci[0]:.3f}, "
               f"{point.sensitivity_ci[1]:.3f}] | {point.specificity:.3f} [{point.specificity_ci[0]:.3f}, "
               f"{point.specificity_ci[1]:.3f}] |")
        if validation is not None and point.name in validation.points:
            row += " {:.3f} | {:.3f} |".format(*validation.points[point.name])
        lines.append(row)
    return lines


def _calibration_rows(blend: Blend, training: pd.DataFrame) -> str:
    """The melanoma rate the probability carries: that of the rows its map was fitted on (the blend's out-of-fold
    rows of the primary collection; external and pseudo-labelled rows never are), and their collection."""
    rows = training.drop_duplicates("image_name").set_index("image_name").reindex(blend.names)
    sources = ", ".join(sorted(rows["source"].dropna().astype(str).unique())) or "the training collection"
    return (f"- The probability carries the melanoma rate of the {len(blend.target)} rows its map was fitted on "
            f"({blend.target.mean():.1%}, {sources}); where melanoma is rarer (screening), the same score means a "
            "lower probability: `predict --prevalence P` (or an export with it) moves it to the rate P.")


def _limits(sources: list[str], validation: Validation | None, uses_meta: list[str], blend: Blend,
            training: pd.DataFrame) -> list[str]:
    return ["## Known limits",
            f"- Trained on {', '.join(sources)}: other collections were never seen in training."
            + ("" if validation is None else f" On {validation.source} the AUC moved by {-validation.gap:+.3f}."),
            ("- Members " + ", ".join(uses_meta) + " read patient metadata (sex, age, site); scored without it, "
             "they read every field as missing." if uses_meta else
             "- No member reads patient metadata: sex, age and site are not used."),
            _calibration_rows(blend, training),
            "- Small groups below are shown as too small rather than as numbers; a group absent from training "
            "(e.g. darker skin types, rare in dermoscopy archives) cannot be judged here at all."]


def _stage_two_section(about: Mapping[str, Any] | None) -> list[str]:
    """What stage two is and whether it ships (``about``: the manifest's ``stage_two`` entry)."""
    if about is None:
        return ["## Stage two", "Not run: the image blend alone ranks each image (export with `--stage-two`, or "
                "set `stage_two.enabled` in the spec, to stack trees over it)."]
    verdict = ("Shipped: `predict` uses it for rows with what its features read and falls back to the image blend "
               "for the others (the output says which scored each row)." if about["shipped"] else
               "Not shipped: it did not beat the image blend on rows it was not chosen on.")
    auc, pauc = about["auc"], about["pauc"]
    lines = ["## Stage two",
             f"- {about['learner']} trees (stage-two study `{about['study']}`, trial {about['trial']}) over the "
             f"feature groups {about['groups'].replace('+', ', ')}; chosen on one half of the patients and scored "
             f"on the other: AUC {auc[0]:.4f} against the blend's {auc[1]:.4f} (difference "
             f"{about['auc_difference']['difference']:+.4f}, 95 % {about['auc_difference']['low']:+.3f} to "
             f"{about['auc_difference']['high']:+.3f}), partial AUC {pauc[0]:.4f} against {pauc[1]:.4f}. {verdict}",
             "- What each group adds (its metric minus the metric without it): " + (", ".join(
                 f"{g} {v:+.4f}" for g, v in about["ablation"].items()) or "one group only"),
             "- Features (the most important first): " + ", ".join(list(about["importance"])[:12]) + "."]
    if about["shipped"]:
        lines.append("- Its probability is calibrated on its out-of-fold scores, one fold learner per row; a new "
                     "row's score combines every fold learner and every image fold model, so expect it a little "
                     "more extreme than stated (not measured: no rows with metadata that no model trained on).")
    return lines


def model_card(*, study: Any, blend: Blend, configs: Mapping[str, Any], training: pd.DataFrame,
               points: list[OperatingPoint], calibration: Calibration, validation: Validation | None,
               subgroups: str | None, stage_two: Mapping[str, Any] | None = None,
               prevalence: float | None = None, patients: np.ndarray | None = None) -> str:
    """The card, in Markdown. ``configs``: each member's training config; ``subgroups``: the subgroup table;
    ``stage_two``: the manifest's stage-two entry; ``prevalence``: the melanoma rate where it is used;
    ``patients``: the out-of-fold rows' patients where they group images
    (:func:`~melanoma_search.data.patients.patient_groups`), resampled whole for the in-search AUC's error."""
    uses_meta = [m.name for m in blend.members if configs[m.name].model.meta]
    sources = sorted(training["source"].astype(str).unique())
    lines = [f"# Model card: melanoma_search ensemble of study `{study.study_name}`", "",
             *_use_sections(sources),
             "## Training data", *_training_section(training), "",
             *_how_made(study, blend, configs),
             *_performance(blend, calibration, validation, patients), "",
             *_points_section(points, validation), *_at_rate(points, blend, prevalence), "",
             *_stage_two_section(stage_two), "",
             "## Subgroups", subgroups or "Not computed.", "",
             *_limits(sources, validation, uses_meta, blend, training)]
    return "\n".join(lines) + "\n"
