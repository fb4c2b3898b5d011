"""The last step after a search: its best trials blended (:mod:`melanoma_search.ensemble`), described
(:mod:`melanoma_search.report`) and written as a submission, ``report.html`` and a sealed ensemble folder.

:func:`export_study` (in ``study``) is the library form of ``python -m melanoma_search.export``. The facade resolves
its names on first use (PEP 562), so ``python -m melanoma_search.export --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from melanoma_search.export.study import ExportResult, export_study

__all__ = ["ExportResult", "export_study"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from melanoma_search.export import study

        return getattr(study, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
