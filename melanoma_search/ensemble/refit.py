"""Fold-bagged members: retrain a chosen configuration on every fold, so the member is the mean of K fold models.

A ``holdout_auc`` study trains each trial on fold 0 only: fast to search, but its one model saw 80 % of the data and
its one score came from one fold. Before export, each chosen configuration is trained on the folds it lacks (with the
same config, so the same seeds per fold); the member's out-of-fold predictions then cover every training row, its
``cv_auc`` (the mean of its folds' AUCs) is an honest estimate over all of them, and its prediction is the average of
its K fold models, the bagging the 2020 winners shipped. ``cv_auc`` studies already hold every fold and are not
retrained.

Each refitted fold is written to ``storage/<study>/study-<key>/refit/trial-NNNNN/fold<k>/`` (the study's own folder,
:func:`~melanoma_search.search.study.study_folder`) and marked done last, so a killed refit resumes with the folds it
has. Progress lines give the fold, its AUC and an ETA.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from melanoma_search.ensemble.candidates import Candidate
from melanoma_search.metrics import AUC
from melanoma_search.train.config import TrainConfig, apply_overrides, parse_config
from melanoma_search.train.results import fold_column, fold_predictions, primary_rows, weights_file

__all__ = ["refit_candidates"]

_DONE = "done.json"


def refit_candidates(candidates: list[Candidate], *, refit_dir: Path, need_weights: bool,
                     log: Callable[[str], None] = print) -> dict[int, float]:
    """Train every candidate on each fold it lacks (weights, when ``need_weights``, or predictions), in place.

    Returns ``{trial number: out-of-fold AUC (the mean of its folds')}``, the ``cv_auc`` of each candidate.
    """
    from melanoma_search.train.loop import fit_with_oom_retry, prepare_for

    plans: list[tuple[Candidate, TrainConfig, list[int], list[int]]] = []
    for member in candidates:
        config = parse_config(yaml.safe_load((member.folder / "config.yaml").read_text()), source=member.name)
        have = [f for f in member.folds if f in member.weight_files or not need_weights]
        missing = [f for f in range(config.data.n_folds) if f not in have]
        plans.append((member, config, have, missing))
    todo = sum(not (refit_dir / m.name / f"fold{f}" / _DONE).is_file() for m, _, _, missing in plans for f in missing)
    kept = sum(len(missing) for *_, missing in plans) - todo
    if todo or kept:
        log(f"refit: {todo} fold model(s) to train ({kept} already done) for {sum(1 for *_, m in plans if m)} "
            f"member(s), so each member is the average of its fold models (finished folds are kept in {refit_dir}, "
            "so a stopped refit resumes)")
    started, trained = time.perf_counter(), 0
    cv_aucs: dict[int, float] = {}
    for member, config, have, missing in plans:
        folder = refit_dir / member.name
        data = None
        # test predictions: the trial's own fold models' and one per refitted fold
        tests = [member.test] if have and member.test is not None else []
        for fold in missing:
            out = folder / f"fold{fold}"
            if not (out / _DONE).is_file():
                if data is None:
                    data = prepare_for(config)
                fold_config = parse_config(apply_overrides(config.to_dict(), {"data.folds": [fold]}))
                result, fold_config = fit_with_oom_retry(fold_config, data=data, weights_dir=out,
                                                         log=lambda line: None,
                                                         on_retry=functools.partial(_tagged, log, member.name, fold))
                result.save(out, config=fold_config)  # the config that trained these weights
                (out / _DONE).write_text(json.dumps({"auc": result.auc, "seconds": result.seconds}))
                trained += 1
                elapsed = time.perf_counter() - started
                eta = elapsed / trained * (todo - trained)
                log(f"refit {member.name} fold {fold}: val_auc {result.auc:.4f} ({result.seconds:.0f}s); "
                    f"{trained}/{todo} fold model(s), ETA {eta / 60:.1f} min")
            else:
                log(f"refit {member.name} fold {fold}: already done, kept")
            _merge_fold(member, out, fold)
            if (out / "test.csv").is_file():
                tests.append(pd.read_csv(out / "test.csv"))
        if missing:
            member.test = _merge_tests(tests)
        if len(member.folds) > 1:
            cv_aucs[member.number] = AUC(member.oof["target"], member.oof["pred"], member.oof["fold"])
            member.cv_auc = cv_aucs[member.number]
            log(f"{member.name}: cv_auc {member.cv_auc:.4f} over {len(member.folds)} folds "
                f"(search value, fold 0: {member.value:.4f})")
    return cv_aucs


def _tagged(log: Callable[[str], None], name: str, fold: int, line: str) -> None:
    log(f"refit {name} fold {fold}: {line}")


def _merge_fold(member: Candidate, out: Path, fold: int) -> None:
    """Add one refitted fold's predictions, weights and encoder to the member (replacing that fold's old ones)."""
    oof = primary_rows(pd.read_csv(out / "oof.csv"))
    member.oof = pd.concat([member.oof[member.oof["fold"] != fold], oof], ignore_index=True)
    member.weight_files[fold] = out / weights_file(fold)
    metrics = yaml.safe_load((out / "metrics.yaml").read_text())
    member.encoders.update(metrics.get("meta_encoders") or {})
    member.classes = member.classes or list(metrics.get("classes") or [])
    member.oof = member.oof.sort_values(["fold", "image_name"], kind="stable").reset_index(drop=True)
    if (out / "history.csv").is_file():  # the refitted fold's epochs join the member's learning curves
        history = pd.read_csv(out / "history.csv")
        kept = member.history[member.history["fold"] != fold] if member.history is not None else None
        member.history = pd.concat([kept, history], ignore_index=True) if kept is not None else history


def _merge_tests(tests: list[pd.DataFrame]) -> pd.DataFrame | None:
    """One test table with every fold model's column (a later part's fold replaces an earlier one's) and their
    mean as ``pred``."""
    if not tests:
        return None
    names = tests[0]["image_name"]
    columns: dict[str, np.ndarray] = {}
    for table in tests:
        aligned = table.set_index("image_name").loc[names].reset_index()
        columns.update({fold_column(fold): values for fold, values in fold_predictions(aligned).items()})
    return pd.DataFrame({"image_name": names.to_numpy(), "target": np.nan,
                         "pred": np.mean(list(columns.values()), axis=0), **columns})
