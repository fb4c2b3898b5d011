"""Tiny study specs and a way to run ``python -m melanoma_search.run`` on them, shared by the end-to-end tests."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

TINY: dict[str, Any] = {
    "objective": "holdout_auc",
    "data": {"n_folds": 3, "num_workers": 0, "synthetic": {"n_train": 90, "n_test": 12, "size": 40, "seed": 1}},
    "fixed": {"epochs": 2, "batch_size": 16, "image_size": 32, "model": {"name": "resnet18"}},
    "space": {
        "lr": {"low": 1.0e-3, "high": 3.0e-3, "log": True},
        "loss.name": {"choices": ["bce", "focal", "arcface"]},
    },
    "sampler": {"name": "random", "seed": 0},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 2},
    "top_k_weights": 1,
}


def write_spec(tmp_path: Path, name: str = "tiny", **changes: Any) -> Path:
    """``TINY`` with top-level keys replaced, written to ``tmp_path/<name>.yaml``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def run_cli(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_module(cwd, "melanoma_search.run", *args, timeout=timeout)


def run_study(root: Path, spec: dict[str, Any], *, name: str, n_trials: int) -> None:
    """Write ``spec`` to ``root/<name>.yaml`` and run ``n_trials`` of it with a real ``python -m melanoma_search.run``
    (the module fixtures that export, blend or distil a small study start from this)."""
    (root / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    run = run_module(root, "melanoma_search.run", "--study", f"{name}.yaml", "--n-trials", str(n_trials))
    assert run.returncode == 0, run.stderr


def run_and_export(root: Path, spec: dict[str, Any], *, name: str, n_trials: int, ensemble_dir: str) -> str:
    """:func:`run_study`, then ``export --study NAME --ensemble-dir ENSEMBLE_DIR`` on it; the export's output."""
    run_study(root, spec, name=name, n_trials=n_trials)
    export = call_module(root, "melanoma_search.export", "--study", name, "--ensemble-dir", ensemble_dir)
    assert export.returncode == 0, export.stderr
    return export.stdout


def run_module(cwd: Path, module: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in ``cwd``, its output captured."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def call_module(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` in ``cwd``, called in this process: the module's own ``main`` with its output captured.

    The same code as the command after the interpreter has started, without a fresh interpreter's seconds of torch
    import per call (most of what the end-to-end tests spent). What needs a process of its own (signals, Ctrl-C, an
    isolated interpreter, ``run``'s workers) and one call per command (the ``__main__`` path) stay on
    :func:`run_module`."""
    loaded = importlib.import_module(module)
    main = getattr(loaded, "main", None) or importlib.import_module(f"{module}.__main__").main  # a room's CLI
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def start_cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    """The run in the background, stdout and stderr merged, line by line."""
    return subprocess.Popen([sys.executable, "-m", "melanoma_search.run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@contextlib.contextmanager
def rdb(url: str) -> Iterator[optuna.storages.RDBStorage]:
    """One storage for a test's polling loop, its connections closed at the end: a study loaded by URL opens a new
    connection pool every time, which only the garbage collector closes (a poll five times a second used up
    PostgreSQL's 100 connections that way)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def overlapping(trials: list[FrozenTrial]) -> bool:
    """Whether two of ``trials`` ran at the same time (from their recorded start and end)."""
    spans = [(t.datetime_start, t.datetime_complete) for t in trials if t.datetime_start and t.datetime_complete]
    return any(a[0] < b[1] and b[0] < a[1] for i, a in enumerate(spans) for b in spans[i + 1:])


def wait_for_training(url: str, name: str, timeout: float = 180, *, epochs: int = 1, count: int = 1) -> FrozenTrial:
    """The first RUNNING trial once ``count`` of them have reported ``epochs`` epochs, polled on one connection pool
    (see :func:`rdb`); a journal URL is polled through one journal storage."""
    deadline = time.monotonic() + timeout
    with _polled(url) as storage:
        while time.monotonic() < deadline:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
                running = [t for t in study.get_trials(states=(TrialState.RUNNING,))
                           if len(t.intermediate_values) >= epochs and "worker" in t.user_attrs]
                if len(running) >= count:
                    return running[0]
            except KeyError:  # the study is not created yet
                pass
            time.sleep(0.5)
    raise AssertionError(f"no {count} trial(s) trained {epochs} epoch(s) within {timeout}s")


@contextlib.contextmanager
def _polled(url: str) -> Iterator[optuna.storages.BaseStorage]:
    if not url.startswith("journal:"):
        with rdb(url) as storage:
            yield storage
        return
    path = Path(url.removeprefix("journal:"))
    deadline = time.monotonic() + 120
    while not path.is_file() and time.monotonic() < deadline:  # the launcher creates it once the data is read
        time.sleep(0.2)
    from melanoma_search.search.study import open_storage

    yield open_storage(url)
