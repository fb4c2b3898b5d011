"""A noisy-student round: an exported ensemble teaches a new study through pseudo-labels of unlabelled images.

``run --study NAME --student-of ENSEMBLE_DIR --unlabelled IMAGES`` (or the spec's ``student:`` section) plans the
round here, then runs an ordinary study: the teacher pseudo-labels the images once (kept in the round's folder, so
a resumed round trains on the same labels), and every trial trains on labelled + pseudo-labelled images with the
noise turned up (``student.noise``: stronger augmentation, dropout, stochastic depth, cutmix). The round is its own
study, ``NAME-student-rK``, in NAME's storage and artifact store, so the dashboard shows the rounds side by side;
its export records the round, and labelling with it starts round K + 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melanoma_search.ensemble.folder import Ensemble, load_ensemble
from melanoma_search.errors import ConfigError
from melanoma_search.search.spec import StudySpec
from melanoma_search.search.study import student_study_name
from melanoma_search.semi_supervised.pseudo import read_source

__all__ = ["StudentRound", "plan_student_round"]


@dataclass(frozen=True)
class StudentRound:
    """What the round's study runs with: its name, the pseudo-label file and the overrides that add noise."""

    study_name: str
    round: int
    home: str
    """The first study's name: the round uses its storage and artifact store."""
    pseudo_file: Path
    overrides: tuple[tuple[str, Any], ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    """Recorded on the study as ``student`` (the export copies it into the ensemble's lineage)."""


def _check_same_teacher(made: dict[str, Any], ensemble: Ensemble, *, study: str, where: str) -> None:
    """A study keeps one teacher: the very export (its seal) that made its pseudo-labels, not merely its folder."""
    if made.get("ensemble") != where:
        raise ConfigError(f"study {study!r} trains on pseudo-labels by {made.get('ensemble')}, not {where}: a study "
                          "keeps one teacher (give another --study-name)")
    if made.get("seal") != ensemble.seal:
        raise ConfigError(f"study {study!r} trains on pseudo-labels made by the ensemble at {where} as it was "
                          f"exported before (seal {str(made.get('seal'))[:12]}); it has been exported again since "
                          f"(seal {ensemble.seal[:12]}): a study keeps one teacher (give another --study-name)")


def plan_student_round(spec: StudySpec, *, teacher: str | None, unlabelled: str | None, storage_dir: Path,
                       study_name: str | None = None, device: str = "auto", label: bool = True,
                       log: Callable[[str], None] = print) -> StudentRound:
    """Load the teacher, pseudo-label the images (unless ``label`` is false: a dry run) and name the round."""
    teacher = teacher or spec.student.teacher
    unlabelled = unlabelled or spec.student.unlabelled
    if teacher is None or unlabelled is None:
        raise ConfigError("a student round needs a teacher (--student-of ENSEMBLE_DIR or student.teacher) and "
                          "images to pseudo-label (--unlabelled DIR_OR_CSV or student.unlabelled)")
    ensemble = load_ensemble(teacher)
    number = ensemble.round + 1
    name = study_name or student_study_name(spec.name, round=number)
    pseudo_file = (storage_dir / name / "pseudo.csv").resolve()
    teacher_path = str(ensemble.root.resolve())
    if (made := read_source(pseudo_file)) is not None:
        _check_same_teacher(made, ensemble, study=name, where=teacher_path)
        log(f"student round {number} of {spec.name!r}: reusing the pseudo-labels in {pseudo_file}")
    elif label:
        from melanoma_search.data.layouts import read_images_to_score
        from melanoma_search.data.meta import rows_without_metadata
        from melanoma_search.semi_supervised.pseudo import pseudo_label
        from melanoma_search.train.device import resolve_device

        rows = read_images_to_score(unlabelled)
        log(f"student round {number} of {spec.name!r}: {len(ensemble.members)} teacher member(s) pseudo-label "
            f"{len(rows)} image(s) of {unlabelled} ({rows_without_metadata(rows)} without metadata)")
        labels = pseudo_label(ensemble, rows, device=resolve_device(device), allow_missing_meta=True)
        labels.write(pseudo_file)
        log(f"  {labels.summary()} -> {pseudo_file}")
    noise = dict(spec.student.noise)
    pseudo = {"data.pseudo.file": str(pseudo_file), **{f"data.pseudo.{k}": v for k, v in spec.student.pseudo.items()}}
    attrs = {"round": number, "teacher": teacher_path, "teacher_study": ensemble.manifest.get("study"),
             "unlabelled": str(Path(unlabelled).resolve()), "pseudo_file": str(pseudo_file), "noise": noise}
    return StudentRound(study_name=name, round=number, home=spec.name, pseudo_file=pseudo_file,
                        overrides=(*noise.items(), *pseudo.items()), attrs=attrs)
