"""Describing an ensemble to people: calibration figures, the outside check, subgroups, Grad-CAM maps, the model card
and ``report.html``.

``calibration`` says how well the shipped probability holds (Brier score, expected calibration error, reliability
curve), ``outside`` scores an ensemble on labelled images from elsewhere (``export --validate``), ``subgroups`` its
figures per sex, age band, site and source, ``saliency`` where its members looked, ``card`` writes
``model_card.md`` and ``page`` the self-contained ``report.html``. Nothing here chooses or changes what an ensemble
does: that is :mod:`melanoma_search.ensemble`.
"""

from __future__ import annotations

from melanoma_search.report.calibration import Calibration, calibration_summary, cross_fitted_probability
from melanoma_search.report.card import model_card
from melanoma_search.report.outside import Validation, validate_ensemble
from melanoma_search.report.page import write_report
from melanoma_search.report.saliency import Saliency, saliency_maps
from melanoma_search.report.subgroups import Subgroups, subgroups

__all__ = [
    "Calibration",
    "Saliency",
    "Subgroups",
    "Validation",
    "calibration_summary",
    "cross_fitted_probability",
    "model_card",
    "saliency_maps",
    "subgroups",
    "validate_ensemble",
    "write_report",
]
