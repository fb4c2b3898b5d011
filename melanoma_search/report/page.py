"""``report.html``: what a study found, in one self-contained page (plotly, inlined once, opens offline).

Sections: the members table (parameters, AUC, cost, blend weight), ROC curves of the members and the blend on OOF
data, learning curves of the members, optimisation history, parameter importances and parallel coordinates.
"""

from __future__ import annotations

import html
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio
from sklearn.metrics import roc_curve

if TYPE_CHECKING:
    from melanoma_search.ensemble.blend import Blend
    from melanoma_search.ensemble.calibration import OperatingPoint
    from melanoma_search.report.calibration import Calibration
    from melanoma_search.report.outside import Validation
    from melanoma_search.report.saliency import Saliency
    from melanoma_search.report.subgroups import Subgroups
    from melanoma_search.stage_two.study import StageTwoOutcome

__all__ = ["write_report"]


def _roc_figure(result: Blend) -> go.Figure:
    figure = go.Figure()
    for name, ranked in result.oof_ranked.items():
        fpr, tpr, _ = roc_curve(result.target, ranked)
        figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=name, opacity=0.6))
    fpr, tpr, _ = roc_curve(result.target, result.oof_blend)
    figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"blend (AUC {result.auc:.4f})",
                                line={"width": 4, "color": "black"}))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash"}))
    figure.update_layout(title="ROC on out-of-fold predictions", xaxis_title="false positive rate",
                         yaxis_title="true positive rate", width=700, height=560)
    return figure


def _curves_figure(result: Blend, *, report_each: str) -> go.Figure:
    """Each member's learning curves: every fold's validation AUC per epoch, from the trial's ``history.csv``; a
    member without one (an earlier version's trial) shows what it reported to the pruner, named for what it is."""
    figure = go.Figure()
    fallback = False
    for member in result.members:
        if member.history is not None and len(member.history):
            for fold, epochs in member.history.groupby("fold"):
                figure.add_trace(go.Scatter(x=epochs["epoch"], y=epochs["val_auc"], mode="lines+markers",
                                            name=f"{member.name} fold {fold}"))
            continue
        fallback = True
        steps = sorted(member.curve)
        figure.add_trace(go.Scatter(x=steps, y=[member.curve[s] for s in steps], mode="lines+markers",
                                    name=f"{member.name} (reported to the pruner)"))
    x_title = "epoch of the fold"
    if fallback:
        x_title += (" (members without history: folds finished, value the mean AUC of the folds so far)"
                    if report_each == "fold" else " (members without history: epochs counted over folds)")
    figure.update_layout(title="Learning curves of the members: each fold's validation AUC after every epoch",
                         xaxis_title=x_title, yaxis_title="validation AUC on the fold's own held-out rows",
                         width=700, height=460)
    return figure


def _report_each(study: Any) -> str:
    """When the study's objective reported to the pruner: after each ``epoch`` or each ``fold``."""
    from melanoma_search.errors import ConfigError
    from melanoma_search.search import records
    from melanoma_search.search.objective import load_objective

    try:
        return load_objective(str(study.user_attrs.get(records.OBJECTIVE, "holdout_auc"))).report_each
    except ConfigError:  # an objective file that is gone: the axis says epochs, the common case
        return "epoch"


def _study_figures(study: Any) -> list[tuple[str, go.Figure | str]]:
    import optuna.visualization as vis

    figures: list[tuple[str, go.Figure | str]] = []
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    for title, make in (("Optimisation history", vis.plot_optimization_history),
                        ("Parameter importances", vis.plot_param_importances),
                        ("Parallel coordinates", vis.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():  # "some regimes of a parameter have less than 2 trials": true of
                warnings.simplefilter("ignore", UserWarning)  # every small study; the figure stays readable
                figures.append((title, make(study, target=target) if target else make(study)))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. too few trials for importances
            figures.append((title, f"not available for this study: {exc}"))
    return figures


def _members_table(result: Blend) -> str:
    """Every candidate the blend method chose from, its weight (0: left out) and both of its AUCs."""
    candidates = result.candidates or result.members
    keys = sorted({k for m in candidates for k in m.params})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["candidate", "weight", "objective", "cv_auc", "seconds",
                                                           *keys])
    rows = []
    for member in candidates:
        cv = "" if member.cv_auc is None else f"{member.cv_auc:.4f}"
        cells = [member.name, f"{result.weights.get(member.name, 0.0):.3f}", f"{member.value:.4f}", cv,
                 f"{member.seconds:.0f}", *(_cell(member.params.get(k, "")) for k in keys)]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _validation_section(validation: Validation) -> tuple[str, go.Figure]:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{validation.in_search.get(name, float('nan')):.4f}</td>"
        f"<td>{auc:.4f}</td><td>{validation.in_search.get(name, float('nan')) - auc:.3f}</td>"
        f"<td>{validation.outside_pauc[name]:.4f}</td></tr>"
        for name, auc in sorted(validation.outside.items(), key=lambda item: item[0] == "blend"))
    text = (f"<p>{validation.n_images} images ({validation.n_melanoma} melanomas) of {html.escape(validation.source)};"
            f" AUC standard error about {validation.standard_error:.3f}. "
            + (f"Members using metadata: {html.escape(', '.join(validation.meta_members))}; "
               f"{validation.rows_without_meta} rows have none.</p>" if validation.meta_members
               else "No member uses metadata.</p>")
            + "<table><tr><th>member</th><th>in-search AUC</th><th>outside AUC</th><th>gap</th>"
            "<th>outside pAUC (TPR &ge; 0.8)</th></tr>"
            + rows + "</table>")
    figure = go.Figure()
    for name, scores in validation.scores.items():
        fpr, tpr, _ = roc_curve(validation.target, scores)
        style = {"width": 4, "color": "black"} if name == "blend" else {}
        figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{name} ({validation.outside[name]:.3f})",
                                    line=style, opacity=1.0 if name == "blend" else 0.6))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dash"}))
    figure.update_layout(title="ROC on the outside images", xaxis_title="false positive rate",
                         yaxis_title="true positive rate", width=700, height=560)
    return text, figure


def _points_table(points: list[OperatingPoint], validation: Validation | None) -> str:
    head = ("<tr><th>operating point</th><th>threshold (score)</th><th>sensitivity, out of fold</th>"
            "<th>specificity, out of fold</th>" + ("<th>sensitivity, outside</th><th>specificity, outside</th>"
                                                   if validation is not None else "") + "</tr>")
    rows = []
    for point in points:
        cells = [point.name, f"{point.threshold:.4f}",
                 f"{point.sensitivity:.3f} [{point.sensitivity_ci[0]:.3f}, {point.sensitivity_ci[1]:.3f}]",
                 f"{point.specificity:.3f} [{point.specificity_ci[0]:.3f}, {point.specificity_ci[1]:.3f}]"]
        if validation is not None and point.name in validation.points:
            cells += [f"{v:.3f}" for v in validation.points[point.name]]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _reliability_figure(curves: dict[str, Calibration]) -> go.Figure:
    figure = go.Figure()
    for name, calibration in curves.items():
        figure.add_trace(go.Scatter(x=calibration.predicted, y=calibration.observed, mode="lines+markers",
                                    name=f"{name} (Brier {calibration.brier:.3f}, ECE {calibration.ece:.3f})"))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dash"}))
    figure.update_layout(title="Reliability of the calibrated probability (10 equal-width bins)",
                         xaxis_title="predicted P(melanoma)", yaxis_title="observed melanoma rate", width=700,
                         height=520)
    return figure


def _stage_two_section(stage: StageTwoOutcome) -> tuple[str, go.Figure]:
    """Stage two against the blend on the same rows, each scored where it was not chosen: verdict, clinical
    figures, what each feature group adds, the trees' feature importances, and both ROC curves."""
    choice, about = stage.choice, stage.about()
    clinical = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{v['lesions_per_cancer_80']:.2f}</td>"
        f"<td>{v['lesions_per_cancer_90']:.2f}</td><td>{v['top15_sensitivity']:.3f}</td></tr>"
        for name, v in stage.clinical.items())
    ablation = "".join(f"<tr><td>{html.escape(g)}</td><td>{v:+.4f}</td></tr>" for g, v in stage.ablation.items())
    importance = "".join(f"<tr><td>{html.escape(str(n))}</td><td>{v:.3f}</td></tr>"
                         for n, v in stage.importance.head(15).items())
    text = ("<p>" + html.escape(" ".join(choice.lines())) + "</p>"
            "<table><tr><th>scored by</th><th>lesions per melanoma found, 80 % sensitivity</th><th>at 90 %</th>"
            f"<th>sensitivity in each patient's top 15</th></tr>{clinical}</table>"
            f"<h3>What each feature group adds ({html.escape(choice.metric)} without it, subtracted)</h3>"
            f"<table>{ablation or '<tr><td>one group only</td></tr>'}</table>"
            f"<h3>Feature importances ({html.escape(str(about['learner']))}, share of gain)</h3>"
            f"<table>{importance}</table>")
    figure = go.Figure()
    for name, scores in (("stage two", choice.honest), ("blend", choice.blend)):
        fpr, tpr, _ = roc_curve(choice.target, scores)
        figure.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=name))
    figure.update_layout(title="Stage two against the blend (out of fold, each chosen on other rows)",
                         xaxis_title="false positive rate", yaxis_title="true positive rate", width=700, height=560)
    return text, figure


def _head(study: Any, result: Blend) -> list[str]:
    return [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>melanoma_search report: {html.escape(study.study_name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style></head><body>",
        f"<h1>Study {html.escape(study.study_name)}</h1>",
        f"<p>{len(study.trials)} trials. Blend of {len(result.members)} member(s) ({html.escape(result.method)}): OOF "
        f"AUC <b>{result.auc:.4f}</b>, partial AUC above 80 % sensitivity <b>{result.pauc:.4f}</b> (of 0.2), against "
        f"the best single member's AUC {result.best_member_auc:.4f} ({html.escape(result.best_member)}). Each "
        "candidate's AUC below is its search objective and, where it covers every fold, its cv_auc (the mean of "
        "its folds' AUCs).</p>",
        *([] if result.bias_corrected is None else [f"<p>{html.escape(result.bias_corrected.line())}.</p>"]),
        "<h2>Candidates and blend weights</h2>", _members_table(result),
    ]


def _tables(points: list[OperatingPoint] | None, validation: Validation | None,
            subgroups: list[Subgroups] | None, at_rate: list[str]) -> list[str]:
    parts = []
    if points:
        parts += ["<h2>Operating points</h2><p>Thresholds on the blend's score chosen on the out-of-fold rows "
                  f"(95 % bootstrap intervals, {points[0].resampled} resampled); <code>predict --operating-point "
                  "NAME</code> flags images at one.</p>",
                  _points_table(points, validation)]
        if at_rate:
            parts.append("<h3>At the melanoma rate where it is used</h3><ul>" + "".join(
                f"<li>{html.escape(line.strip())}</li>" for line in at_rate) + "</ul>")
    if validation is not None:
        parts += ["<h2>Outside check: in-search vs outside AUC</h2>", _validation_section(validation)[0]]
    for groups in subgroups or []:
        header, cells = groups.cells()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
        rows = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells]
        parts += [f"<h2>Subgroups: {html.escape(groups.where.lower())}</h2>",
                  f"<table><tr>{head}</tr>{''.join(rows)}</table>"]
    return parts


def _figures(study: Any, result: Blend, validation: Validation | None,
             calibration: Calibration | None) -> list[tuple[str, go.Figure | str]]:
    figures: list[tuple[str, go.Figure | str]] = [("ROC", _roc_figure(result)), ("Learning curves", _curves_figure(
        result, report_each=_report_each(study)))]
    if validation is not None:
        figures.insert(1, ("ROC on the outside images", _validation_section(validation)[1]))
    curves = {"out of fold (isotonic fitted on the other half)": calibration} if calibration is not None else {}
    if validation is not None and validation.calibration is not None:
        curves["outside"] = validation.calibration
    if curves:
        figures.insert(1, ("Calibration", _reliability_figure(curves)))
    return figures + _study_figures(study)


def _rendered(sections: list[tuple[str, str, go.Figure | str]]) -> list[str]:
    """Each section's title, text and figure; plotly.js is inlined once, with the first figure (opens offline)."""
    parts, first = [], True
    for title, text, figure in sections:
        parts += [f"<h2>{html.escape(title)}</h2>", text]
        if isinstance(figure, str):
            parts.append(f"<p>{html.escape(figure)}</p>" if figure else "")
            continue
        parts.append(pio.to_html(figure, full_html=False, include_plotlyjs=first))
        first = False
    return parts


def write_report(study: Any, result: Blend, path: Path, *, validation: Validation | None = None,
                 points: list[OperatingPoint] | None = None, calibration: Calibration | None = None,
                 subgroups: list[Subgroups] | None = None, card: str | None = None,
                 saliency: list[Saliency] | None = None, stage_two: StageTwoOutcome | None = None,
                 prevalence: float | None = None) -> Path:
    """Write the report to ``path`` and return it (``prevalence``: the melanoma rate where it is used, for each
    operating point's PPV and NPV there)."""
    sections: list[tuple[str, str, go.Figure | str]] = [
        (title, "", figure) for title, figure in _figures(study, result, validation, calibration)]
    if stage_two is not None:
        sections.append(("Stage two: trees over the image scores, the metadata and the patient's other lesions",
                         *_stage_two_section(stage_two)))
    at_rate: list[str] = []
    if points and prevalence is not None:
        from melanoma_search.ensemble.prevalence import prevalence_lines

        at_rate = prevalence_lines(points, prevalence=prevalence, trained=float(result.target.mean()))
    parts = [*_head(study, result), *_tables(points, validation, subgroups, at_rate), *_rendered(sections)]
    if saliency:
        parts += ["<h2>Where the members looked (Grad-CAM, out of fold)</h2><p>Each member's fold model that scored "
                  "the image out of fold; red is what raised its melanoma output. A map on a ruler, hair, ink or the "
                  "border is a habit of the collection, not of melanoma.</p>", *(s.html() for s in saliency)]
    if card is not None:
        parts += ["<h2>Model card (model_card.md in the ensemble folder)</h2>",
                  f"<pre style='white-space:pre-wrap;font-size:13px'>{html.escape(card)}</pre>"]
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
