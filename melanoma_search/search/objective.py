"""Objectives: what a trial returns to Optuna, chosen by name in the spec.

An objective is a Python file in ``objectives/`` (in the working directory, or the built-in ones shipped as
``melanoma_search.objectives``), so a user adds one by dropping a file there. It defines:

``DIRECTIONS``
    ``("maximize",)``, or several for a multi-objective study (a Pareto front in the dashboard).
``METRIC_NAMES``
    One name per direction (Optuna's metric names, shown in the dashboard).
``folds(n_folds) -> list[int]``
    Which folds a trial trains and validates.
``score(result) -> tuple[float, ...]``
    The values of a finished :class:`~melanoma_search.train.RunResult`.
``METRIC`` (optional, ``"auc"`` by default)
    The rank metric of out-of-fold scores the study is judged by (``"auc"`` or ``"pauc@0.8"``,
    :func:`melanoma_search.metrics.rank_metric`): recorded in the study, so the export chooses the blend's members and
    reports its headline by the same metric the trials were searched on.
``REPORT`` (optional, ``"epoch"`` by default)
    What one pruning step is. ``"epoch"``: each epoch's validation AUC (a one-fold objective, pruned within its
    fold). ``"fold"``: after each fold, the objective's value of the folds trained so far, at step k after k fold models
    (the honest score of the kept weights), so a cross-validated trial is compared with the others on the same folds and
    pruned between folds: a poor configuration costs one fold model, a good one comes out bagged over every fold.

Single-objective studies report so the pruner can stop a trial early; Optuna cannot prune multi-objective trials, so
those run to the end.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from melanoma_search.errors import ConfigError
from melanoma_search.metrics import AUC, RankMetric, rank_metric
from melanoma_search.train.loop import RunResult

__all__ = ["Objective", "load_objective", "objective_dirs"]


@dataclass(frozen=True)
class Objective:
    name: str
    directions: tuple[str, ...]
    metric_names: tuple[str, ...]
    folds: Callable[[int], Sequence[int]]
    score: Callable[[RunResult], tuple[float, ...]]
    path: Path
    report_each: Literal["epoch", "fold"] = "epoch"
    """What a pruning step is (the objective file's ``REPORT``)."""
    metric: RankMetric = AUC
    """The rank metric of out-of-fold scores the study is judged by (the file's ``METRIC``)."""

    @property
    def reports(self) -> bool:
        """Whether trials report intermediate values (and so can be pruned): single-objective studies."""
        return len(self.directions) == 1


def objective_dirs() -> tuple[Path, ...]:
    """Where objectives are looked up: ``./objectives`` of the working folder, then the built-in ones."""
    from melanoma_search.search.spec import _lookup_dirs

    return _lookup_dirs("objectives")


def load_objective(name: str, *, search_dirs: Sequence[Path] | None = None) -> Objective:
    """Import ``objectives/<name>.py`` and check it defines what an objective must."""
    dirs = tuple(search_dirs) if search_dirs is not None else objective_dirs()
    path = next((d / f"{name}.py" for d in dirs if (d / f"{name}.py").is_file()), None)
    if path is None:
        available = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.py") if not p.stem.startswith("_")})
        raise ConfigError(f"objective: no objective {name!r} in {', '.join(str(d) for d in dirs)}; "
                          f"available: {', '.join(available) or 'none'}")
    module = _import(path)
    missing = [attr for attr in ("DIRECTIONS", "METRIC_NAMES", "folds", "score") if not hasattr(module, attr)]
    if missing:
        raise ConfigError(f"objective {path} must define {', '.join(missing)} (see melanoma_search.search.objective)")
    directions = tuple(module.DIRECTIONS)
    if not directions or any(d not in ("maximize", "minimize") for d in directions):
        raise ConfigError(f"objective {path}: DIRECTIONS must be 'maximize'/'minimize' values, got {directions}")
    if len(module.METRIC_NAMES) != len(directions):
        raise ConfigError(f"objective {path}: one METRIC_NAMES entry per direction")
    report_each: Literal["epoch", "fold"] = getattr(module, "REPORT", "epoch")
    if report_each not in ("epoch", "fold"):
        raise ConfigError(f"objective {path}: REPORT must be 'epoch' or 'fold', got {report_each!r}")

    try:
        metric = rank_metric(str(getattr(module, "METRIC", "auc")))
    except ValueError as exc:
        raise ConfigError(f"objective {path}: {exc}") from None

    def score(result: RunResult) -> tuple[float, ...]:
        value = module.score(result)
        values = tuple(float(v) for v in (value if isinstance(value, Sequence) else (value,)))
        if len(values) != len(directions):
            raise ValueError(f"objective {name} returned {len(values)} value(s) for {len(directions)} direction(s)")
        return values

    return Objective(name=name, directions=directions, metric_names=tuple(module.METRIC_NAMES),
                     folds=module.folds, score=score, path=path, report_each=report_each, metric=metric)


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"melanoma_search_objective_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import objective {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a user's file: report which one broke
        raise ConfigError(f"objective {path} failed to import: {exc!r}") from exc
    return module
