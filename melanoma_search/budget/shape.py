"""A trial's configuration in the units the cost model multiplies: its key, folds, epochs and rows per fold."""

from __future__ import annotations

from typing import TYPE_CHECKING

from melanoma_search.budget.cost import CostModel, TrialShape, machine_name

if TYPE_CHECKING:
    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.train.config import TrainConfig

__all__ = ["machine_of", "trial_shape"]


def trial_shape(config: TrainConfig, data: PreparedData, *, elsewhere: bool = False) -> TrialShape:
    """``config``'s key (backbone, image size, the precision it resolves to here), folds and epochs, and the mean
    training and validation rows of its folds in ``data`` (external rows train in every fold).

    ``elsewhere``: the trial is planned for another machine (a dry run with another machine's cost model), whose
    device this one may lack: ``amp: auto`` is taken as bf16 there (what it resolves to on a current GPU)."""
    from melanoma_search.train.device import resolve_device
    from melanoma_search.train.steps import Precision

    size = int(config.image_size)
    if elsewhere:
        precision = {"off": "fp32", "auto": "bf16"}.get(config.amp, config.amp)
    else:
        device = resolve_device(config.device)
        precision = Precision.resolve(config.amp, device, model=config.model.name, image_size=size).name
    folds = config.data.fold_list()
    column = data.table["fold"]
    labelled = column.notna()
    val = [float((column == f).sum()) for f in folds]
    train = [float((labelled & (column != f)).sum()) * config.train_fraction for f in folds]
    return TrialShape(key=CostModel.key(config.model.name, size, precision), folds=len(folds),
                      epochs=int(config.epochs), train_rows=sum(train) / len(folds), val_rows=sum(val) / len(folds),
                      tta=int(config.tta), test_rows=float((~labelled).sum()))


def machine_of(config: TrainConfig) -> str:
    from melanoma_search.train.device import resolve_device

    device = resolve_device(config.device)
    return machine_name(str(device))
