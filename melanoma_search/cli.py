"""What the command lines share: help text made from a module's docstring, the options of scoring with an ensemble.

The CLIs' descriptions are their modules' docstrings, written in reStructuredText for the API docs; a terminal shows
them without the markup (``x`` and :func:`x` as `x`, a literal block's ``::`` as ``:``).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["add_scoring_arguments", "help_text", "parser_for"]


def help_text(doc: str | None) -> str:
    text = re.sub(r":(?:func|class|mod|meth|data):`~?", "`", doc or "")
    return text.replace("``", "`").replace("::\n", ":\n")


def parser_for(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m MODULE``, described by its (plain-text) docstring."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=help_text(doc),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_scoring_arguments(parser: argparse.ArgumentParser, *, ensemble_help: str, images_help: str) -> None:
    """``--ensemble``, ``--images``, ``--device`` and ``--allow-missing-meta``: what every command that scores
    images with an exported ensemble (``predict``, ``pseudo``) reads the same way."""
    parser.add_argument("--ensemble", required=True, help=ensemble_help)
    parser.add_argument("--images", required=True, help=images_help)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--allow-missing-meta", action="store_true",
                        help="score metadata members without metadata (every field treated as missing)")
