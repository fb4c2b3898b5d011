"""Export a study: its best trials blended into a submission, a report and a self-contained ensemble folder.

:func:`export_study` is the library form of ``python -m melanoma_search.export``: it reads the study's finished
trials (their ``oof.csv``/``test.csv`` artifacts), picks the top ``top_k`` by the objective, blends them by rank
(``rank``: equal weights; ``greedy``: ensemble selection on OOF AUC) and writes the submission, ``report.html``
beside it and, when asked, the ensemble folder; the blend's ROC curve is attached to the study for the dashboard.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from melanoma_search.ensemble.blend import Blend, blend_candidates
from melanoma_search.ensemble.candidates import collect_candidates
from melanoma_search.ensemble.folder import write_ensemble
from melanoma_search.errors import ConfigError

__all__ = ["BlendMethod", "ExportResult", "export_study"]

BlendMethod = Literal["rank", "greedy"]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the blend, and the paths of the submission (if any), report and ensemble folder."""

    blend: Blend
    submission: Path | None
    report: Path
    ensemble_dir: Path | None


def export_study(
    study_name: str,
    *,
    storage: str | None = None,
    storage_dir: str | Path = "storage",
    top_k: int = 5,
    method: BlendMethod = "rank",
    out: str | Path = "submission.csv",
    ensemble_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> ExportResult:
    """Blend the best ``top_k`` trials of ``study_name`` and write the submission, report and ensemble folder."""
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from melanoma_search.ensemble.report import write_report
    from melanoma_search.search.artifacts import roc_svg
    from melanoma_search.search.study import default_storage_url, open_storage, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_dir = Path(storage_dir)
    url = storage or default_storage_url(study_name, storage_dir=storage_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no study storage at {url}; run `python -m melanoma_search.run --study {study_name}` first")
    rdb = open_storage(url, heartbeat_interval=None)
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        raise ConfigError(f"no study {study_name!r} in {redact(url)}") from None
    store = FileSystemArtifactStore(str(storage_dir / study_name / "artifacts"))
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = collect_candidates(study, store, top_k=top_k, need_weights=ensemble_dir is not None,
                                        work=Path(tmp), log=log)
        result = blend_candidates(candidates, method=method)
        log(f"blend of {len(result.members)} member(s) ({method}): OOF AUC {result.auc:.4f} vs best single "
            f"member {result.best_member_auc:.4f} ({result.best_member})")
        for member in result.members:
            log(f"  {member.name}: weight {result.weights[member.name]:.3f}, objective {member.value:.4f}")
        out.parent.mkdir(parents=True, exist_ok=True)
        submission = None
        if result.test is None:
            log("no submission: the study's dataset has no test split (its trials wrote no test.csv)")
        else:
            result.test.to_csv(out, index=False)
            submission = out
            log(f"submission: {out} ({len(result.test)} rows)")
        report = write_report(study, result, out.with_name("report.html"))
        log(f"report: {report}")
        svg = Path(tmp) / "blend-roc.svg"
        svg.write_text(roc_svg(result.target, result.oof_blend, title=f"blend of {len(result.members)} (OOF)"))
        upload_artifact(artifact_store=store, file_path=str(svg), study_or_trial=study, mimetype="image/svg+xml")
        folder = None
        if ensemble_dir is not None:
            folder = write_ensemble(result, out=Path(ensemble_dir), study_name=study_name, method=method)
            log(f"ensemble: {folder} (score new images with python -m melanoma_search.predict --ensemble {folder})")
    return ExportResult(blend=result, submission=submission, report=report, ensemble_dir=folder)
