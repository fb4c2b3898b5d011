"""Choosing and blending a study's members, and the sealed ensemble folder that scores new images.

``candidates`` reads the best trials from the study, ``refit`` trains each on the folds it lacks, ``scale`` puts
every fold model's scores on one scale, ``methods`` is the table of blend methods (``rank``, ``greedy``), ``blend``
weights and scores the candidates, ``calibration`` chooses what ships beside the score (the probability map and the
operating points), and ``folder`` writes, seals, loads and scores the self-contained ensemble. Describing it to
people is :mod:`melanoma_search.report`; writing it all out is :mod:`melanoma_search.export`.
"""

from __future__ import annotations

from melanoma_search.ensemble.blend import Blend, blend_candidates
from melanoma_search.ensemble.candidates import Candidate, collect_candidates
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
    "Member",
    "blend_candidates",
    "collect_candidates",
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
