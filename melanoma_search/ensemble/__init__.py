"""The last stage: blend the study's best trials, export a submission, report and ensemble folder, score new images.

``candidates`` reads the best trials from the study, ``scale`` puts every fold model's scores on one scale,
``methods`` is the table of blend methods (``rank``, ``greedy``), ``blend`` weights and scores the candidates,
``folder`` writes and loads the self-contained ensemble, ``report`` draws ``report.html``, ``export`` ties them
together (``export_study``). ``pseudo`` turns an ensemble's scores of unlabelled images into calibrated soft labels,
and ``student`` plans a noisy-student round that trains on them (``run --student-of``).
"""

from __future__ import annotations

from melanoma_search.ensemble.blend import Blend, blend_candidates
from melanoma_search.ensemble.candidates import Candidate, collect_candidates
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
from melanoma_search.ensemble.methods import (
    BlendMethod,
    get_blend_method,
    greedy_selection,
    list_blend_methods,
    register_blend,
)
from melanoma_search.ensemble.scale import fold_percentiles, oof_percentiles, percentiles, weighted_mean

__all__ = [
    "FORMAT_VERSION",
    "Blend",
    "BlendMethod",
    "Candidate",
    "Ensemble",
    "EnsembleError",
    "ExportResult",
    "Member",
    "blend_candidates",
    "collect_candidates",
    "export_study",
    "fold_percentiles",
    "get_blend_method",
    "greedy_selection",
    "list_blend_methods",
    "load_ensemble",
    "oof_percentiles",
    "percentiles",
    "register_blend",
    "score_member",
    "weighted_mean",
    "write_ensemble",
]
