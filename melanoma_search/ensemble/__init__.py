"""The last stage: blend the study's best trials, export a submission, report and ensemble folder, score new images.

``candidates`` reads the best trials from the study, ``blend`` ranks and weights them, ``folder`` writes and loads the
self-contained ensemble, ``report`` draws ``report.html``, ``export`` ties them together (``export_study``).
``pseudo`` turns an ensemble's scores of unlabelled images into calibrated soft labels, and ``student`` plans a
noisy-student round that trains on them (``run --student-of``).
"""

from __future__ import annotations

from melanoma_search.ensemble.blend import Blend, Candidate, blend, blend_candidates, greedy_selection, percentiles
from melanoma_search.ensemble.candidates import collect_candidates
from melanoma_search.ensemble.export import ExportResult, export_study
from melanoma_search.ensemble.folder import (
    FORMAT_VERSION,
    Ensemble,
    EnsembleError,
    Member,
    load_ensemble,
    score_member,
    write_ensemble,
)

__all__ = [
    "FORMAT_VERSION",
    "Blend",
    "Candidate",
    "Ensemble",
    "EnsembleError",
    "ExportResult",
    "Member",
    "blend",
    "blend_candidates",
    "collect_candidates",
    "export_study",
    "greedy_selection",
    "load_ensemble",
    "percentiles",
    "score_member",
    "write_ensemble",
]
