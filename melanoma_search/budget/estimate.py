"""Predicted seconds for a trial's config, here and now: the study's cost model, probing a key it has never seen.

One owner for what both the race planner (before it enqueues a rung) and a trial (before it starts) ask. A probe's
figures go into the study (one user attribute per key and machine), so no other worker or node probes the same key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from melanoma_search.budget.cost import PROBE_PREFIX, CostModel, TrialShape
from melanoma_search.budget.probe import probe
from melanoma_search.budget.shape import machine_of, trial_shape
from melanoma_search.errors import ConfigError

if TYPE_CHECKING:
    import optuna

    from melanoma_search.data.prepare import PreparedData
    from melanoma_search.train.config import TrainConfig

__all__ = ["Estimate", "Estimator"]


class Estimate:
    """A prediction: ``seconds`` (``None``: nothing measured yet and no probe asked for), the ``shape`` it was made
    for and where its rates came from (``source``)."""

    def __init__(self, seconds: float | None, source: str, shape: TrialShape, machine: str) -> None:
        self.seconds, self.source, self.shape, self.machine = seconds, source, shape, machine

    def record(self) -> dict[str, Any]:
        return {"seconds": None if self.seconds is None else round(self.seconds, 1), "source": self.source,
                "key": self.shape.key, "folds": self.shape.folds, "epochs": self.shape.epochs}


class Estimator:
    """Predicts from ``study``'s cost model (re-read by :meth:`refresh`), with ``prior`` (a file's) beneath it."""

    def __init__(self, study: optuna.Study, *, data: PreparedData, prior: CostModel | None = None,
                 log: Any = print, machine: str | None = None) -> None:
        """``machine``: plan for that machine (a dry run from its cost model file) instead of this one: nothing is
        probed, and a key the model lacks is an error."""
        self.study, self.data, self.prior, self.log, self.machine = study, data, prior, log, machine
        self._models: dict[str, CostModel] = {}

    def refresh(self) -> None:
        """Forget the cached models: the next prediction reads the study's trials again."""
        self._models.clear()

    def model(self, machine: str) -> CostModel:
        if machine not in self._models:
            self._models[machine] = CostModel.from_study(self.study, machine=machine, prior=self.prior)
        return self._models[machine]

    def predict(self, config: TrainConfig, *, probe: bool = True) -> Estimate:
        """``config``'s predicted seconds; a key never measured is probed, unless ``probe`` is off (a run without a
        time limit only records what its trials cost: a probe would spend seconds, and memory beside a running
        trial, on a figure nothing needs)."""
        shape = trial_shape(config, self.data, elsewhere=self.machine is not None)
        machine = self.machine or machine_of(config)
        model = self.model(machine)
        got = model.predict(shape)
        if got is None and self.machine is not None:
            raise ConfigError(f"the cost model has no figure for {shape.key} on {machine} (a dry run measures "
                              "nothing): run that configuration there once, or add it to the cost model file")
        if got is None and not probe:
            return Estimate(None, "nothing measured yet", shape, machine)
        if got is None:
            try:
                got = self._probed(config, shape=shape, machine=machine, model=model)
            except Exception as exc:  # the network cannot even take a step here: the trial itself will say why
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                return Estimate(None, f"probe failed: {reason}", shape, machine)
        return Estimate(got[0], got[1], shape, machine)

    def _probed(self, config: TrainConfig, *, shape: TrialShape, machine: str, model: CostModel
                ) -> tuple[float, str]:
        start = time.perf_counter()
        measured = probe(config)
        entry = {"key": shape.key, "machine": machine, **measured, "at": round(time.time())}
        self.study.set_user_attr(f"{PROBE_PREFIX}{shape.key}|{machine}", entry)
        model.probes.append(entry)
        self.log(f"cost probe {shape.key}: {1 / measured['train']:.0f} img/s training, {1 / measured['val']:.0f} "
                 f"img/s scoring ({time.perf_counter() - start:.1f} s)")
        got = model.predict(shape)
        assert got is not None
        return got
