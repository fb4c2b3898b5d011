"""The study's best finished trials as blend candidates: their predictions downloaded from the artifact store.

Trials are taken best first; a near-duplicate of a chosen configuration, or a trial lacking the artifacts (or kept
weights) the export needs, is skipped with a message saying why.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from melanoma_search.errors import ConfigError
from melanoma_search.search import records
from melanoma_search.train.results import fold_predictions, primary_rows, weight_files

__all__ = ["Candidate", "collect_candidates", "signature"]


@dataclass
class Candidate:
    """A finished trial with its downloaded predictions and, per fold, its weights and metadata encoder.

    After a refit (:mod:`melanoma_search.ensemble.refit`) ``oof`` covers every fold, ``weight_files`` holds one model
    per fold (the member is their average) and ``cv_auc`` is the out-of-fold AUC (the mean of the folds').
    """

    number: int
    value: float
    params: dict[str, Any]
    folder: Path
    """Holds the trial's ``config.yaml`` (and its other downloaded artifacts)."""
    oof: pd.DataFrame
    test: pd.DataFrame | None
    seconds: float
    weight_files: dict[int, Path] = field(default_factory=dict)
    """Fold -> weights file."""
    encoders: dict[str, Any] = field(default_factory=dict)
    """Fold (as text) -> the metadata encoder fitted on that fold's training rows."""
    classes: list[str] = field(default_factory=list)
    curve: dict[int, float] = field(default_factory=dict)
    """What the trial reported to the pruner, by step (epochs over folds, or folds for a ``REPORT = "fold"``
    objective such as ``cv_auc``)."""
    history: pd.DataFrame | None = None
    """Each fold's epochs (``fold``, ``epoch``, ``val_auc``, ...), from the trial's ``history.csv``; ``None`` for a
    trial that predates it."""
    cv_auc: float | None = None

    @property
    def name(self) -> str:
        return f"trial-{self.number:05d}"

    @property
    def folds(self) -> list[int]:
        return sorted(int(f) for f in self.oof["fold"].unique()) if "fold" in self.oof else []

    @property
    def reference(self) -> pd.DataFrame:
        """The out-of-fold predictions each fold model is ranked against (``fold``, ``pred``)."""
        return self.oof[["fold", "pred"]].reset_index(drop=True)

    def test_predictions(self) -> dict[int, np.ndarray] | None:
        """Fold -> that fold model's test predictions (``None`` without a test split)."""
        return None if self.test is None else fold_predictions(self.test)


def signature(params: dict[str, Any]) -> str:
    """Parameters rounded to 2 significant digits: trials that agree on it are near-duplicates."""
    return json.dumps({k: float(f"{v:.2g}") if isinstance(v, float) else v for k, v in sorted(params.items())})


def _read_if(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def collect_candidates(study: Any, store: Any, *, top_k: int, need_weights: bool, work: Path,
                       log: Callable[[str], None] = print) -> list[Candidate]:
    """Download the top trials' predictions; skip (with a message) duplicates and trials lacking what is needed."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    from melanoma_search.search.study import best_first

    done = best_first(study)
    kept = records.kept_weights(study)
    refitted = records.cv_aucs(study)
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for trial in done:
        if len(chosen) >= top_k:
            break
        key = signature(trial.params)
        if key in seen:
            log(f"skipping trial {trial.number}: a near-duplicate of a chosen member's configuration")
            continue
        metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=study._storage)}
        if "oof.csv" not in metas or "config.yaml" not in metas:
            log(f"skipping trial {trial.number}: it has no oof.csv/config.yaml artifact")
            continue
        files = weight_files(kept[trial.number]) if trial.number in kept else {}
        if need_weights and not files:
            log(f"skipping trial {trial.number}: its weights were not kept (only the study's top_k_weights are; "
                "export --refit retrains them)")
            continue
        folder = work / f"trial-{trial.number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("oof.csv", "test.csv", "history.csv", "config.yaml", "metrics.yaml"):
            if name in metas:
                download_artifact(artifact_store=store, file_path=str(folder / name),
                                  artifact_id=metas[name].artifact_id)
        test = _read_if(folder / "test.csv")
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        metrics = yaml.safe_load((folder / "metrics.yaml").read_text()) if (folder / "metrics.yaml").is_file() else {}
        oof = primary_rows(pd.read_csv(folder / "oof.csv"))  # external rows validated too: the all-rows figure only
        chosen.append(Candidate(number=trial.number, value=trial.values[0], params=dict(trial.params), folder=folder,
                                oof=oof, test=test, seconds=seconds, weight_files=files,
                                encoders=dict(metrics.get("meta_encoders") or {}),
                                classes=list(metrics.get("classes") or []), curve=dict(trial.intermediate_values),
                                history=_read_if(folder / "history.csv"),
                                cv_auc=refitted.get(trial.number)))
        seen.add(key)
    if not chosen:
        raise ConfigError(f"study {study.study_name!r} has no usable finished trial "
                          f"({len(done)} finished; each needs oof.csv and config.yaml artifacts"
                          + (" and kept weights" if need_weights else "") + ")")
    return chosen
