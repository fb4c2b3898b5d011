"""The one base of every validated configuration model, and how its validation errors read.

Config sections live beside the code they configure (``data.config.DataConfig``, ``augment.AugmentConfig``,
``model.ModelConfig``, ``model.LossConfig``), so a family's allowed names come from its own registry; they all share
:class:`StrictModel` so that every section is frozen and refuses unknown keys the same way, with the same message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "format_validation_error", "format_yaml_error"]


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors (a misspelt key must never be silently ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def format_validation_error(exc: ValidationError, *, source: str, model: type[BaseModel]) -> str:
    """One line per problem: ``key.path: message (got value)``, with a did-you-mean for unknown keys."""
    lines = [f"invalid {source}:"]
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            allowed = _fields_at(model, error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key{hint} allowed here: {', '.join(allowed)}"
        elif "input" in error and error["type"] != "missing" and error["loc"]:
            message += f" (got {error['input']!r})"
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        current = field.annotation
    return list(current.model_fields)


def format_yaml_error(exc: Exception, *, source: str) -> str:
    """One line for a YAML syntax error: where (``source``, line, column) and what, not PyYAML's multi-line dump
    that names ``<unicode string>``."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    context = getattr(exc, "context", None)
    return f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")
