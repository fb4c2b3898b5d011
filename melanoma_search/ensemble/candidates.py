"""The study's best finished trials as blend candidates: their predictions downloaded from the artifact store.

Trials are taken best first; a near-duplicate of a chosen configuration, or a trial lacking the artifacts (or kept
weights) the export needs, is skipped with a message saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from melanoma_search.ensemble.blend import Candidate, signature
from melanoma_search.errors import ConfigError

__all__ = ["collect_candidates"]


def collect_candidates(study: Any, store: Any, *, top_k: int, need_weights: bool, work: Path,
                       log: Callable[[str], None] = print) -> list[Candidate]:
    """Download the top trials' predictions; skip (with a message) duplicates and trials lacking what is needed."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    from melanoma_search.search.study import best_first

    done = best_first(study)
    kept_weights: dict[str, str] = study.user_attrs.get("weights", {})
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
        weights = kept_weights.get(str(trial.number))
        if need_weights and (weights is None or not Path(weights).is_dir()):
            log(f"skipping trial {trial.number}: its weights were not kept (only the study's top_k_weights are; "
                "export --refit retrains them)")
            continue
        folder = work / f"trial-{trial.number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("oof.csv", "test.csv", "config.yaml", "metrics.yaml"):
            if name in metas:
                download_artifact(artifact_store=store, file_path=str(folder / name),
                                  artifact_id=metas[name].artifact_id)
        test = pd.read_csv(folder / "test.csv") if (folder / "test.csv").is_file() else None
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        metrics = yaml.safe_load((folder / "metrics.yaml").read_text()) if (folder / "metrics.yaml").is_file() else {}
        files = {int(p.stem.removeprefix("fold")): p for p in sorted(Path(weights).glob("fold*.safetensors"))
                 } if weights and Path(weights).is_dir() else {}
        chosen.append(Candidate(number=trial.number, value=trial.values[0], params=dict(trial.params), folder=folder,
                                oof=pd.read_csv(folder / "oof.csv"), test=test, seconds=seconds, weight_files=files,
                                encoders=dict(metrics.get("meta_encoders") or {}),
                                classes=list(metrics.get("classes") or []), curve=dict(trial.intermediate_values),
                                cv_auc=study.user_attrs.get("cv_auc", {}).get(str(trial.number))))
        seen.add(key)
    if not chosen:
        raise ConfigError(f"study {study.study_name!r} has no usable finished trial "
                          f"({len(done)} finished; each needs oof.csv and config.yaml artifacts"
                          + (" and kept weights" if need_weights else "") + ")")
    return chosen
