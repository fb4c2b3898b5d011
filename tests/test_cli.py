"""Every pointer a command's ``--help`` (or a docstring, which the API docs and some helps show) gives to the docs
names a file and section that exist: help that sends users to a moved section is worse than none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.studies import call_module

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("melanoma_search.run", "melanoma_search.export", "melanoma_search.predict", "melanoma_search.pseudo",
            "melanoma_search.portable", "melanoma_search.train")
#: ``docs/FILE.md`` or ``README.md`` / ``the README's``, optionally followed by a quoted section: ``, 'Section'``.
POINTER = re.compile(r"""(?P<file>docs/[\w.-]+\.md|README\.md|the README's)"""
                     r"""(?:,?\s+(?P<q>['"])(?P<section>[^'"\n]+)(?P=q))?""")


def _headings(file: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in file.read_text().splitlines() if line.startswith("#")}


def _broken(text: str) -> list[str]:
    broken = []
    for match in POINTER.finditer(re.sub(r"\s*\n\s*", " ", text)):
        name = "README.md" if "README" in match["file"] else match["file"]
        file = ROOT / name
        if not file.is_file():
            broken.append(f"{match[0]}: no file {name}")
        elif match["section"] and match["section"] not in _headings(file):
            broken.append(f"{match[0]}: no section {match['section']!r} in {name}")
        elif match["file"] == "the README's" and not match["section"]:
            broken.append(f"{match[0]}: names no section")
    return broken


@pytest.mark.parametrize("module", COMMANDS)
def test_every_pointer_in_a_commands_help_exists(module: str) -> None:
    shown = call_module(ROOT, module, "--help")
    assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr
    assert not _broken(shown.stdout)


def test_every_pointer_in_the_package_exists() -> None:
    broken = [f"{path.relative_to(ROOT)}: {line}" for path in sorted((ROOT / "melanoma_search").rglob("*.py"))
              for line in _broken(path.read_text())]
    assert not broken, "\n".join(broken)


def test_a_moved_section_is_caught() -> None:
    """The check itself: the pointers that went stale before (sections moved from the README to docs/)."""
    assert _broken("see the README's 'Unlabelled images'") and _broken("see docs/scaling.md, 'Scaling up'")
    assert _broken("see docs/gone.md") and not _broken("see docs/scaling.md, 'Scaling out'")
