"""Stage two as it ships in an ensemble folder, and scoring rows with it.

Written by ``export`` under ``stage_two/`` in the ensemble folder and listed, with every file's SHA-256, in the sealed
manifest (its ``stage_two`` entry says what it is):

    stage_two/fold<j>-seed<s>.<format>   each fold learner in its library's own format (LightGBM text, XGBoost JSON,
                                         CatBoost .cbm): never a pickle
    stage_two/references.csv             each fold learner's predictions of its held-out fold (``fold``, ``seed``,
                                         ``pred``): the scale it is ranked on
    stage_two/features.json              the learner and its parameters, the feature groups and each one's summary,
                                         the per-lesion columns, the image members in order, the feature columns
    stage_two/calibration.csv            out-of-fold ``oof`` / ``score`` / ``target``: score -> probability

``predict`` scores a row with stage two when it has what its feature groups read: a ``patient_id`` for the
patient's other lesions (the patient context is computed over that patient's rows *in the file*, so a score
depends on the patient's other lesions: that is the point), the metadata, the per-lesion columns. Any other row
falls back to the image blend, and the output counts them. For rows of both kinds to rank together, ``score`` is
then the calibrated probability of whichever model scored the row (its ties broken by that model's own score), and
``scored_by`` says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma_search.ensemble.calibration import OperatingPoint, fit_probability
from melanoma_search.ensemble.folder import Ensemble
from melanoma_search.ensemble.scale import DeployedScale, combine_folds
from melanoma_search.stage_two.crossfit import FoldLearners
from melanoma_search.stage_two.features import Inputs, build_features, get_group
from melanoma_search.stage_two.learners import get_learner

__all__ = ["FOLDER", "StageTwo"]

FOLDER = "stage_two"
#: How much of a model's own score (0 to 1) is added to its probability in ``score``, to break the probability's ties.
TIE_BREAK = 1e-6


@dataclass
class StageTwo:
    learners: FoldLearners
    groups: tuple[str, ...]
    columns: tuple[str, ...]
    """The dataset's per-lesion columns its ``tabular`` and ``patient`` groups read."""
    members: tuple[str, ...]
    """The image members whose scores are features, in order."""
    calibration: pd.DataFrame
    points: dict[str, OperatingPoint]
    about: dict[str, Any]
    """What the manifest says of it: its study and trial, metric, the comparison with the blend."""
    deployed_scale: DeployedScale | None = None

    def write(self, root: Path) -> None:
        """Its files under ``root/stage_two`` (the caller lists and seals them)."""
        folder = root / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        refs = []
        for (fold, seed), model in sorted(self.learners.models.items()):
            self.learners.learner.save(model, folder / f"fold{fold}-seed{seed}{self.learners.learner.suffix}")
            refs.append(pd.DataFrame({"fold": fold, "seed": seed, "pred": self.learners.references[(fold, seed)]}))
        pd.concat(refs, ignore_index=True).to_csv(folder / "references.csv", index=False)
        self.calibration.to_csv(folder / "calibration.csv", index=False)
        (folder / "features.json").write_text(json.dumps({
            "learner": self.learners.learner.name, "params": self.learners.params, "groups": list(self.groups),
            "summaries": {g: get_group(g).summary for g in self.groups}, "columns": list(self.columns),
            "members": list(self.members), "features": self.learners.columns}, indent=1))

    @classmethod
    def read(cls, ensemble: Ensemble) -> StageTwo | None:
        """The ensemble's stage two (its files already checked against the sealed manifest), or ``None``."""
        about = ensemble.manifest.get("stage_two")
        if not isinstance(about, dict) or not about.get("shipped"):
            return None
        folder = ensemble.root / FOLDER
        spec = json.loads((folder / "features.json").read_text())
        learner = get_learner(spec["learner"])
        learner.check_installed()
        references = pd.read_csv(folder / "references.csv")
        fitted = FoldLearners(learner=learner, params=spec["params"], columns=list(spec["features"]))
        for (fold, seed), rows in references.groupby(["fold", "seed"]):
            fitted.models[(int(fold), int(seed))] = learner.load(folder / f"fold{fold}-seed{seed}{learner.suffix}")
            fitted.references[(int(fold), int(seed))] = rows["pred"].to_numpy(float)
        scale = about.get("deployed_scale")
        return cls(learners=fitted, groups=tuple(spec["groups"]), columns=tuple(spec["columns"]),
                   members=tuple(spec["members"]), calibration=pd.read_csv(folder / "calibration.csv"),
                   points={n: OperatingPoint.from_dict(n, v) for n, v in about.get("operating_points", {}).items()},
                   about=about, deployed_scale=DeployedScale.from_dict(scale) if isinstance(scale, dict) else None)

    def applies(self, rows: pd.DataFrame, *, patient_given: np.ndarray, has_meta: bool) -> np.ndarray:
        """The rows that have what its feature groups read; the others fall back to the image blend."""
        ok = np.ones(len(rows), dtype=bool)
        if "patient" in self.groups or "metadata" in self.groups:
            ok &= patient_given
        if "metadata" in self.groups:
            ok &= has_meta & rows[["sex", "age_approx", "site"]].notna().any(axis=1).to_numpy()
        if self.columns and ("tabular" in self.groups or "patient" in self.groups):
            ok &= rows[list(self.columns)].notna().any(axis=1).to_numpy()
        return ok

    def score(self, rows: pd.DataFrame, folds: dict[str, dict[int, np.ndarray]]) -> np.ndarray:
        """Stage two's score of ``rows`` (with ``folds``: every image fold model's percentile of them): for each
        image fold model, the features and every fold learner's score; all of them combined."""
        image_folds = sorted(next(iter(folds.values())))
        columns = []
        for k in image_folds:
            images = pd.DataFrame({m: folds[m][k] for m in self.members}, index=rows.index)
            features = build_features(Inputs(rows=rows, images=images, columns=self.columns), self.groups)
            columns.append(self.learners.per_fold(features.table))
        return combine_folds(np.concatenate(columns, axis=1))

    def probability(self, scores: np.ndarray) -> np.ndarray:
        fit = fit_probability(self.calibration["score"].to_numpy(float), self.calibration["target"].to_numpy(float))
        return np.asarray(fit.predict(np.asarray(scores, dtype=float)))

    def with_fallback(self, rows: pd.DataFrame, folds: dict[str, dict[int, np.ndarray]], *,
                      patient_given: np.ndarray, has_meta: bool, image_score: np.ndarray,
                      image_probability: np.ndarray) -> pd.DataFrame:
        """Each row's ``probability`` (the calibrated probability of whichever model scored it: comparable across
        rows), ``score`` (that probability, its ties broken by the model's own score within 1e-6: the isotonic map
        is flat in places, and rows of one model must rank exactly as that model ranks them), ``scored_by`` and
        ``stage_two_score`` (its own scale, NaN where it did not apply), beside the image blend's ``image_score``."""
        applies = self.applies(rows, patient_given=patient_given, has_meta=has_meta)
        stage = np.full(len(rows), np.nan)
        if applies.any():
            index = np.flatnonzero(applies)
            stage[index] = self.score(rows.iloc[index], {m: {k: v[index] for k, v in by_fold.items()}
                                                         for m, by_fold in folds.items()})
        probability = np.where(applies, self.probability(np.nan_to_num(stage)), image_probability)
        own = np.where(applies, np.nan_to_num(stage), image_score)
        return pd.DataFrame({"score": probability + TIE_BREAK * own, "probability": probability,
                             "scored_by": np.where(applies, "stage two", "images only"),
                             "stage_two_score": stage, "image_score": image_score}, index=rows.index)

