"""What the command lines share: help text made from a module's docstring.

The CLIs' descriptions are their modules' docstrings, written in reStructuredText for the API docs; a terminal shows
them without the markup (``x`` and :func:`x` as `x`, a literal block's ``::`` as ``:``).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["help_text", "parser_for"]


def help_text(doc: str | None) -> str:
    text = re.sub(r":(?:func|class|mod|meth|data):`~?", "`", doc or "")
    return text.replace("``", "`").replace("::\n", ":\n")


def parser_for(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m MODULE``, described by its (plain-text) docstring."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=help_text(doc),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
