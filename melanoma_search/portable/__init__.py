"""Shipping an ensemble where this toolkit is not installed: each fold model as ONNX (``onnx``), and ``score.py``
(``scorer``), which needs only onnxruntime, numpy and Pillow. ``python -m melanoma_search.portable`` writes it.

The facade resolves its names on first use (PEP 562), so ``python -m melanoma_search.portable --help`` does not
import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from melanoma_search.portable.onnx import write_portable

__all__ = ["write_portable"]


def __getattr__(name: str) -> Any:
    if name == "write_portable":
        from melanoma_search.portable.onnx import write_portable

        return write_portable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
