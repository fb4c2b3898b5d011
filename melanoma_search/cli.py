"""What the command lines share: help text made from a module's docstring, the options of scoring with an ensemble.

The CLIs' descriptions are their modules' docstrings, written in reStructuredText for the API docs; a terminal shows
them without the markup (``x`` and :func:`x` as x, a literal block's ``::`` as ``:``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from melanoma_search.errors import MelanomaSearchError, Preempted

__all__ = ["add_scoring_arguments", "handled", "help_text", "parser_for"]


def help_text(doc: str | None) -> str:
    """A docstring as a terminal shows it: no reStructuredText roles or backticks (``x``, :func:`x` and `x` read as
    x), a literal block's ``::`` as ``:``."""
    text = re.sub(r":(?:func|class|mod|meth|data|attr):`~?", "`", doc or "")
    return text.replace("::\n", ":\n").replace("`", "")


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
    parser.add_argument("--storage-dir", default="storage",
                        help="where the default --out goes: <storage-dir>/<the ensemble's study>/...")


def handled(body: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    """Run a command's body so that every fault a user can meet ends in one line, never a traceback.

    A problem this package names (:class:`~melanoma_search.errors.MelanomaSearchError`) or a file the system refuses
    (an unwritable ``--out``, a full disk) is ``error: ...`` and exit status 2; Ctrl-C is ``interrupted`` (the
    command's own line says what was kept) and 130; a SIGTERM the command turned into
    :class:`~melanoma_search.errors.Preempted` is the same line as ``preempted (SIGTERM)`` and 143. Anything else is
    a bug and keeps its traceback.
    """
    try:
        return body()
    except Preempted:
        print(interrupted.replace("interrupted", "preempted (SIGTERM)", 1), file=sys.stderr)
        return 143
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
