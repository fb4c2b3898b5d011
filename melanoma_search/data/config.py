"""The ``data:`` section of a training config: which dataset, which folds, where the image cache lives."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from melanoma_search.schema import StrictModel

__all__ = ["DataConfig", "PseudoConfig", "SyntheticConfig"]


class SyntheticConfig(StrictModel):
    """The embedded synthetic set, used when ``data.dir`` is empty."""

    n_train: int = Field(600, ge=20)
    n_test: int = Field(100, ge=0)
    size: int = Field(128, ge=32)
    seed: int = 0


class PseudoConfig(StrictModel):
    """Pseudo-labelled images (``python -m melanoma_search.pseudo``'s CSV) added to every training fold.

    They only ever train: never validated, never in the out-of-fold predictions, so no fold score is computed on a
    label the model's own teacher made up.
    """

    file: str
    """The CSV ``pseudo`` wrote: ``image_name``, ``image_path``, ``target`` (the teacher's calibrated probability),
    ``confidence``, ``agreement`` and the metadata the images came with."""
    weight: float = Field(0.5, gt=0.0, le=1.0)
    """Each pseudo row's loss weight (a labelled row weighs 1)."""
    min_confidence: float = Field(0.0, ge=0.0, lt=1.0)
    """Keep rows whose ``confidence`` (``|2p - 1|``: 0 at p = 0.5, 1 at 0 or 1) is at least this."""
    soft: bool = True
    """Train on the probability itself (BCE / focal losses); ``false`` rounds it to 0 or 1."""


class DataConfig(StrictModel):
    dir: str | None = None
    """Dataset folder (any layout of :mod:`melanoma_search.data.layouts`); empty means the synthetic set."""
    layout: str = "auto"
    external: tuple[str, ...] = ()
    """Extra dataset folders used in training folds only (e.g. ISIC 2019)."""
    duplicates: str | None = None
    """A duplicate-pair list; ``ISIC_2020_Training_Duplicates.csv`` in ``dir`` is used when present."""
    near_duplicates: int | None = Field(40, ge=0, le=255)
    """Near-duplicate images (a resized or re-encoded copy: perceptual hashes at most this many of 256 bits apart,
    :mod:`melanoma_search.data.near_duplicates`) share a fold, as a patient's images do; ``null`` turns the pass off
    (e.g. to resume a study whose folds were made without it)."""
    n_folds: int = Field(5, ge=2, le=20)
    validate_external: bool = False
    """Put the ``external`` datasets' rows into the folds too (as the 2020 winners did), instead of training only:
    the objective still scores the primary rows, and each trial records the all-rows AUC beside it
    (``oof_auc_all_rows``)."""
    group_folds_by: Literal["patient", "source"] = "patient"
    """What a fold keeps whole: each patient's images, or each source collection (leave-collection-out: ISIC 2024
    teams found that holding out whole hospitals tracked the leaderboard better; needs at least ``n_folds``
    collections among the rows the folds split)."""
    folds: tuple[int, ...] | Literal["all"] = (0,)
    """Which folds to train and validate (``all`` for full cross-validation)."""
    fold_seed: int = 42
    cache_dir: str = "storage/cache"
    missing_images: Literal["error", "skip"] = "error"
    bad_images: Literal["error", "skip"] = "error"
    unknown_sites: Literal["missing", "error"] = "missing"
    """An anatomical site outside the 2020 vocabulary: read as missing with a counted warning, or refuse the file."""
    num_workers: int = Field(-1, ge=-1)
    """Loader worker processes; -1 picks min(8, CPU cores)."""
    synthetic: SyntheticConfig = SyntheticConfig()
    pseudo: PseudoConfig | None = None
    """Pseudo-labelled images to train on too (a noisy-student round sets it; see ``run --student-of``)."""

    @model_validator(mode="after")
    def _check_folds(self) -> DataConfig:
        from melanoma_search.data.layouts import list_layouts

        if self.layout != "auto" and self.layout not in list_layouts():
            raise ValueError(f"unknown layout {self.layout!r}; allowed: auto, {', '.join(list_layouts())}")
        if self.folds != "all":
            bad = [f for f in self.folds if not 0 <= f < self.n_folds]
            if bad:
                raise ValueError(f"folds {bad} out of range for n_folds={self.n_folds} (allowed 0..{self.n_folds - 1})")
        return self

    def fold_list(self) -> list[int]:
        return list(range(self.n_folds)) if self.folds == "all" else sorted(set(self.folds))
