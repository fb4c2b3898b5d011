"""Planning what fits: a kept time limit, the cost model that predicts a trial before it starts, and the race.

``search`` runs trials; this room decides which ones can run inside the time a user gave: :class:`TimeLimit`
(:mod:`.limit`), :class:`CostModel` (:mod:`.cost`, measured by :mod:`.probe` where nothing ran yet, asked through
:class:`Estimator`), and :class:`Race` (:mod:`.race`: candidates from :mod:`.candidates`, its record in
:mod:`.agreement`). See docs/search.md, "A kept time limit and the race".
"""

from __future__ import annotations

from pathlib import Path

from melanoma_search.budget.cost import CostModel, machine_name
from melanoma_search.budget.limit import TimeLimit, minutes

__all__ = ["CostModel", "TimeLimit", "machine_name", "minutes", "read_prior"]


def read_prior(path: str | Path) -> CostModel:
    """A cost model file as a prior for this machine (:meth:`CostModel.read`); errors name the file."""
    from melanoma_search.errors import ConfigError

    try:
        return CostModel.read(path, machine=machine_name())
    except ValueError as exc:
        raise ConfigError(f"--cost-model: {exc}") from None
