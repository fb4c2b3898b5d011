"""melanoma_search: an Optuna-driven AutoML search toolkit for melanoma classification.

Importing the package does no work: every heavy dependency (torch, timm, optuna) is imported by the module that
needs it, so ``python -m melanoma_search.<tool> --help`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
