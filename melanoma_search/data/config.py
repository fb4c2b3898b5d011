"""The ``data:`` section of a training config: which dataset, which folds, where the image cache lives."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from melanoma_search.schema import StrictModel

__all__ = ["DataConfig", "SyntheticConfig"]


class SyntheticConfig(StrictModel):
    """The embedded synthetic set, used when ``data.dir`` is empty."""

    n_train: int = Field(600, ge=20)
    n_test: int = Field(100, ge=0)
    size: int = Field(128, ge=32)
    seed: int = 0


class DataConfig(StrictModel):
    dir: str | None = None
    """Dataset folder (any layout of :mod:`melanoma_search.data.layouts`); empty means the synthetic set."""
    layout: str = "auto"
    external: tuple[str, ...] = ()
    """Extra dataset folders used in training folds only (e.g. ISIC 2019)."""
    duplicates: str | None = None
    """A duplicate-pair list; ``ISIC_2020_Training_Duplicates.csv`` in ``dir`` is used when present."""
    n_folds: int = Field(5, ge=2, le=20)
    folds: tuple[int, ...] | Literal["all"] = (0,)
    """Which folds to train and validate (``all`` for full cross-validation)."""
    fold_seed: int = 42
    cache_dir: str = "storage/cache"
    missing_images: Literal["error", "skip"] = "error"
    bad_images: Literal["error", "skip"] = "error"
    num_workers: int = Field(-1, ge=-1)
    """Loader worker processes; -1 picks min(8, CPU cores)."""
    synthetic: SyntheticConfig = SyntheticConfig()

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
