"""The package as users install it: a wheel built from the repository runs the built-in demo spec from any folder."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "melanoma_search").rglob("__init__.py")}
    assert listed == found | {"melanoma_search.search_spaces", "melanoma_search.objectives"}


def test_a_wheel_in_a_fresh_venv_runs_the_demo_from_an_empty_folder(tmp_path: Path) -> None:
    """The wheel carries the specs and objectives. The venv borrows the heavy dependencies (torch, timm, ...)
    from this interpreter's site-packages through a plain path entry, which adds their folder without running its
    ``.pth`` files, so the repository's own editable install cannot leak in."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("melanoma_search-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", purelib, str(wheel)],
                   check=True, capture_output=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import melanoma_search; print(melanoma_search.__file__)"], cwd=empty,
                           capture_output=True, text=True, env=env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(purelib), where.stdout  # the wheel's copy, not the source tree
    run = subprocess.run([str(python), "-m", "melanoma_search.run", "--study", "demo", "--dry-run"], cwd=empty,
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "dry run of study 'demo'" in run.stdout and "[ok]" in run.stdout
    assert not (empty / "search_spaces").exists() and not (empty / "storage").exists()
