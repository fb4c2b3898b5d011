"""What training returns: per-epoch stats, per-fold results, and the run's results with their files.

Plain data, so a search trial, the ``train`` CLI, a benchmark or a test reads the same object.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from melanoma_search.metrics import AUC, DEFAULT_MIN_TPR, RankMetric, rank_metric

if TYPE_CHECKING:
    from melanoma_search.train.config import TrainConfig

__all__ = ["EXTERNAL", "EpochStats", "FoldResult", "RunResult", "fold_column", "fold_of_weights", "fold_predictions",
           "primary_rows", "weight_files", "weights_file"]

#: The out-of-fold column that marks an external dataset's row, validated with ``data.validate_external`` (absent
#: when no such row was validated).
EXTERNAL = "external"


def primary_rows(oof: pd.DataFrame) -> pd.DataFrame:
    """The out-of-fold rows of the primary dataset: what every objective, blend and figure reads (external rows
    validated with ``data.validate_external`` only give the all-rows figure beside)."""
    if EXTERNAL not in oof:
        return oof
    return oof.loc[~oof[EXTERNAL].astype(bool)].drop(columns=EXTERNAL).reset_index(drop=True)


def weights_file(fold: int) -> str:
    """The file name of fold ``fold``'s kept weights: the one spelling the trainer, the search's kept weights, the
    refit and the ensemble folder all use."""
    return f"fold{fold}.safetensors"


def fold_of_weights(path: str | os.PathLike[str]) -> int:
    """The fold a :func:`weights_file` holds."""
    return int(Path(path).name.removeprefix("fold").removesuffix(".safetensors"))


def weight_files(folder: str | os.PathLike[str]) -> dict[int, Path]:
    """Fold -> weights file of every :func:`weights_file` in ``folder`` (empty when the folder does not exist)."""
    root = Path(folder)
    return {fold_of_weights(p): p for p in sorted(root.glob("fold*.safetensors"))} if root.is_dir() else {}


def fold_column(fold: int) -> str:
    """The column of fold ``fold``'s model in a ``test.csv`` (``pred`` is their mean)."""
    return f"pred_fold{fold}"


def fold_predictions(table: pd.DataFrame) -> dict[int, np.ndarray]:
    """Fold -> that fold model's predictions, from the :func:`fold_column` columns of a ``test.csv``.

    Each fold model is put on the ensemble's scale against its own out-of-fold predictions, so the export needs
    them one by one, not only their mean; a table written before they were kept gives its ``pred`` as fold -1.
    """
    folds = {int(c.removeprefix("pred_fold")): table[c].to_numpy(np.float64)
             for c in table.columns if c.startswith("pred_fold")}
    return folds or {-1: table["pred"].to_numpy(np.float64)}


@dataclass(frozen=True)
class EpochStats:
    """What one epoch did. ``step`` counts epochs over all folds of the run (Optuna's report step)."""

    fold: int
    epoch: int
    epochs: int
    step: int
    image_size: int
    train_loss: float
    val_loss: float
    val_auc: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class FoldResult:
    fold: int
    checkpoint: str
    """Which weights were kept (``swa``, ``last`` or ``best``): those behind ``auc``, the predictions and the file."""
    best_epoch: int
    best_epoch_auc: float
    """The best single epoch's validation AUC: chosen on this fold, so optimistic; recorded beside ``auc``."""
    auc: float
    """Validation AUC of the kept weights with TTA (what the OOF predictions score)."""
    oof: pd.DataFrame
    test: pd.DataFrame | None
    history: list[EpochStats]
    lr: float
    seconds: float
    """The fold's wall time: image cache, model, epochs, validation, TTA prediction, weights."""
    images_per_s: float
    weights_path: str | None = None
    train_seconds: float = 0.0
    """The epochs' training passes alone (steps and their data), what a bigger model or image size costs."""


@dataclass
class RunResult:
    folds: list[FoldResult]
    classes: tuple[str, ...]
    device: str
    seconds: float
    peak_memory_mb: float
    meta_encoders: dict[int, dict[str, object]] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds by phase (see :class:`~melanoma_search.train.phases.PhaseClock`)."""

    @property
    def oof(self) -> pd.DataFrame:
        return pd.concat([f.oof for f in self.folds], ignore_index=True)

    def score(self, metric: RankMetric) -> float:
        """``metric`` of the out-of-fold predictions (primary-source rows only), each fold model's rows scored on
        their own and the folds averaged (:func:`~melanoma_search.metrics.fold_mean`): fold models on different
        scales are not penalised for it."""
        oof = primary_rows(self.oof)
        return metric(oof["target"], oof["pred"], oof["fold"] if "fold" in oof else None)

    @property
    def all_rows_auc(self) -> float | None:
        """The out-of-fold AUC over the primary and the validated external rows (the folds' mean), or ``None`` when
        no external row was validated (``data.validate_external``)."""
        oof = self.oof
        if EXTERNAL not in oof or not oof[EXTERNAL].any():
            return None
        return AUC(oof["target"], oof["pred"], oof["fold"])

    @property
    def auc(self) -> float:
        """Out-of-fold ROC AUC: the mean of the trained folds' AUCs (:meth:`score`)."""
        return self.score(AUC)

    def pauc(self, *, min_tpr: float = DEFAULT_MIN_TPR) -> float:
        """Out-of-fold partial AUC above ``min_tpr`` sensitivity (ISIC 2024's metric at 0.8), averaged over folds."""
        return self.score(rank_metric(f"pauc@{min_tpr:g}"))

    @property
    def history(self) -> pd.DataFrame:
        """Every fold's epochs, one row each (:class:`EpochStats`' fields): each fold's own learning curve."""
        rows = [dataclasses.asdict(s) for f in self.folds for s in f.history]
        return pd.DataFrame(rows, columns=[f.name for f in dataclasses.fields(EpochStats)])

    @property
    def fold_aucs(self) -> list[float]:
        return [f.auc for f in self.folds]

    @property
    def test(self) -> pd.DataFrame | None:
        """Test predictions averaged over the folds' models (``pred``), and each fold model's own
        (:func:`fold_column`)."""
        tests = {f.fold: f.test for f in self.folds if f.test is not None}
        if not tests:
            return None
        first = next(iter(tests.values()))
        mean = np.mean([t["pred"].to_numpy() for t in tests.values()], axis=0)
        return first.assign(pred=mean, **{fold_column(k): t["pred"].to_numpy() for k, t in tests.items()})

    @property
    def train_seconds(self) -> float:
        """Seconds in training passes over all folds: the cost of the configuration, without the one-off image
        cache decode, validation and TTA prediction that :attr:`seconds` (the wall time) includes."""
        return float(sum(f.train_seconds for f in self.folds))

    @property
    def images_per_s(self) -> float:
        return float(np.mean([f.images_per_s for f in self.folds]))

    def save(self, folder: str | os.PathLike[str], *, config: TrainConfig) -> Path:
        """Write ``oof.csv``, ``test.csv`` (when there is a test split), ``history.csv`` (every fold's epochs),
        ``config.yaml`` and ``metrics.yaml``."""
        import yaml

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        self.oof.to_csv(out / "oof.csv", index=False)
        test = self.test
        if test is not None:
            test.to_csv(out / "test.csv", index=False)
        (out / "config.yaml").write_text(config.to_yaml())
        self.history.to_csv(out / "history.csv", index=False)
        metrics = {
            "val_auc": self.auc,
            "val_pauc": self.pauc(),
            "val_definition": "the mean over folds of each fold model's figure on its own validation rows",
            "val_auc_all_rows": self.all_rows_auc,
            "fold_aucs": self.fold_aucs,
            "checkpoint": self.folds[0].checkpoint if self.folds else None,
            "best_epochs": [f.best_epoch for f in self.folds],
            "best_epoch_aucs": [f.best_epoch_auc for f in self.folds],
            "lr": [f.lr for f in self.folds],
            "seconds": self.seconds,
            "train_seconds": self.train_seconds,
            "images_per_s": self.images_per_s,
            "peak_memory_mb": self.peak_memory_mb,
            "device": self.device,
            "classes": list(self.classes),
            "meta_encoders": {str(k): v for k, v in self.meta_encoders.items()},
        }
        (out / "metrics.yaml").write_text(yaml.safe_dump(metrics, sort_keys=False))
        return out
