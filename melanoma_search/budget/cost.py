"""What a trial will cost before it starts: seconds per training image-epoch and per validated image, learned from the
study's own finished trials, a few-second probe for a configuration never run, or a prior from another machine.

A time limit can only be kept if the run knows, before it starts a trial, whether the trial can finish. The phase
clock already splits every trial's seconds into training steps, validation and the rest; each trial records that as
its ``cost`` attribute (:func:`observe`) beside the cost predicted at its start, so the model lives in the study's
storage, every node and every restart reads the same one, and the dashboard shows predicted against real.

A configuration's rates are keyed by what sets them: backbone, image size, machine (the CPU model and thread count,
or the GPU) and precision. Where a key has no measurement here the model falls back, in order, to (1) the same
key measured on another machine (a prior file, or another node of the study) scaled by how much slower this machine
was on the keys both measured, (2) a probe: a few training steps on random tensors, scaled by how much slower real
training was than its probe on keys that have both (data loading, augmentation and the optimiser's schedule are not
in a probe). Each prediction says which of these it used.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COST_ATTR", "PROBE_PREFIX", "CostModel", "Rates", "TrialShape", "machine_name", "observe"]

COST_ATTR = "cost"
"""A finished trial's measured rates (a user attribute, :func:`observe`)."""
PROBE_PREFIX = "cost_probe:"
"""Study user attributes holding probes, one per key and machine (so concurrent writers never collide)."""


def machine_name(device: str = "cpu") -> str:
    """What sets the speed of a step besides the configuration: the GPU's name, or the CPU model and thread count."""
    import torch

    if device.startswith("cuda"):
        return f"cuda {torch.cuda.get_device_name(torch.device(device))}"
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} x{torch.get_num_threads()}"


@dataclass(frozen=True)
class TrialShape:
    """What a trial does, in units the rates multiply: the per-fold sizes of its training and validation rows."""

    key: str
    """``backbone@size|precision`` (:meth:`CostModel.key`)."""
    folds: int
    epochs: int
    train_rows: float
    """Mean training rows of one of its folds."""
    val_rows: float
    tta: int = 1
    """Views per image of each fold model's last scoring of its held-out and test rows."""
    test_rows: float = 0.0

    @property
    def scored(self) -> float:
        """Images one fold scores: its held-out rows each epoch, then held-out and test rows with TTA."""
        return self.epochs * self.val_rows + self.tta * (self.val_rows + self.test_rows)


@dataclass(frozen=True)
class Rates:
    """Seconds per unit of work for one key on one machine."""

    train: float
    """Per training image-epoch (optimiser steps, including the loader's start)."""
    val: float
    """Per scored image (each epoch scores the fold's held-out rows; the last prediction, with TTA, the held-out
    and test rows)."""
    fold_fixed: float = 0.0
    """Per fold: model build, checkpoints, saving weights."""
    trial_fixed: float = 0.0
    """Per trial: the config, artifacts, reading data the first time."""
    source: str = "measured"

    def seconds(self, shape: TrialShape) -> float:
        per_fold = shape.epochs * shape.train_rows * self.train + shape.scored * self.val + self.fold_fixed
        return shape.folds * per_fold + self.trial_fixed

    def scaled(self, factor: float, *, source: str) -> Rates:
        return Rates(train=self.train * factor, val=self.val * factor, fold_fixed=self.fold_fixed * factor,
                     trial_fixed=self.trial_fixed, source=source)


@dataclass
class CostModel:
    """Measurements (``observations``: from finished trials, here and elsewhere) and probes, by machine and key."""

    machine: str
    observations: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    default_fold_fixed: float = 5.0
    """Seconds per fold assumed before any trial has run here (a probe sees no model build or prediction)."""

    @staticmethod
    def key(model: str, image_size: int, precision: str) -> str:
        return f"{model}@{image_size}|{precision}"

    def rates(self, key: str) -> Rates | None:
        """This machine's rates for ``key``, from the best evidence there is (``None``: none at all; probe it)."""
        here = _mean_rates(o for o in self.observations if o["machine"] == self.machine and o["key"] == key)
        if here is not None:
            return here
        elsewhere = [o for o in self.observations if o["machine"] != self.machine and o["key"] == key]
        if elsewhere and (ratio := self._machine_ratio()) is not None:
            base = _mean_rates(elsewhere)
            assert base is not None
            return base.scaled(ratio, source=f"measured on another machine x{ratio:.2f}")
        probe = next((p for p in reversed(self.probes) if p["machine"] == self.machine and p["key"] == key), None)
        if probe is not None:
            ratio = self._probe_ratio()
            fixed = self._fixed_here()
            return Rates(train=probe["train"] * ratio, val=probe["val"] * ratio,
                         fold_fixed=fixed[0], trial_fixed=fixed[1], source=f"probe x{ratio:.2f}")
        if elsewhere:  # nothing here to scale by: the other machine's figures as they are
            base = _mean_rates(elsewhere)
            assert base is not None
            return Rates(**{**asdict(base), "source": "measured on another machine (unscaled)"})
        return None

    def predict(self, shape: TrialShape) -> tuple[float, str] | None:
        """Predicted seconds for ``shape`` and where the rates came from; ``None`` when the key was never seen."""
        rates = self.rates(shape.key)
        return None if rates is None else (rates.seconds(shape), rates.source)

    def _machine_ratio(self) -> float | None:
        """How much slower this machine trained than the others, median over the keys measured on both."""
        ratios = []
        for key in {o["key"] for o in self.observations if o["machine"] == self.machine}:
            here = _mean_rates(o for o in self.observations if o["machine"] == self.machine and o["key"] == key)
            there = _mean_rates(o for o in self.observations if o["machine"] != self.machine and o["key"] == key)
            if here is not None and there is not None and there.train > 0:
                ratios.append(here.train / there.train)
        return float(statistics.median(ratios)) if ratios else None

    def _probe_ratio(self) -> float:
        """Real training step time over its probe's, median over the keys that have both here (1.25 before any:
        the data loader and host augmentation a probe skips, as measured on the 2-core CPUs of docs/search.md)."""
        ratios = []
        for probe in self.probes:
            if probe["machine"] != self.machine or probe["train"] <= 0:
                continue
            real = _mean_rates(o for o in self.observations if o["machine"] == self.machine
                               and o["key"] == probe["key"])
            if real is not None:
                ratios.append(real.train / probe["train"])
        return float(statistics.median(ratios)) if ratios else 1.25

    def _fixed_here(self) -> tuple[float, float]:
        """Per-fold and per-trial fixed seconds on this machine (medians over its trials), or the defaults."""
        here = [o for o in self.observations if o["machine"] == self.machine]
        if not here:
            return self.default_fold_fixed, 0.0
        return (float(statistics.median(o["fold_fixed"] for o in here)),
                float(statistics.median(o["trial_fixed"] for o in here)))

    # -- reading and writing -------------------------------------------------------------------------------------

    @classmethod
    def from_study(cls, study: Any, *, machine: str, prior: CostModel | None = None) -> CostModel:
        """The model of ``study``: every finished trial's ``cost``, the study's probes, and ``prior`` (a file's)."""
        model = cls(machine=machine)
        for trial in study.get_trials(deepcopy=False):
            if isinstance(cost := trial.user_attrs.get(COST_ATTR), dict) and _valid(cost):
                model.observations.append(cost)
        model.probes = [p for k, p in study.user_attrs.items() if k.startswith(PROBE_PREFIX) and _valid_probe(p)]
        if prior is not None:
            model.observations.extend(prior.observations)
            model.probes.extend(p for p in prior.probes if p["machine"] == machine)  # a probe is only good where run
        return model

    def to_json(self) -> str:
        return json.dumps({"format": "melanoma_search.cost_model/1", "machine": self.machine,
                           "observations": self.observations, "probes": self.probes}, indent=1)

    @classmethod
    def read(cls, path: str | os.PathLike[str], *, machine: str) -> CostModel:
        """A cost model file (JSON only, from ``run``'s ``storage/NAME/cost_model.json``) as a prior for ``machine``;
        a malformed file is a :class:`ValueError` naming what is wrong."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"cost model {path}: not a readable JSON file ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != "melanoma_search.cost_model/1":
            raise ValueError(f"cost model {path}: not a cost model file (no format 'melanoma_search.cost_model/1')")
        observations = data.get("observations", [])
        probes = data.get("probes", [])
        if not isinstance(observations, list) or not isinstance(probes, list):
            raise ValueError(f"cost model {path}: observations and probes must be lists")
        return cls(machine=machine, observations=[o for o in observations if isinstance(o, dict) and _valid(o)],
                   probes=[p for p in probes if isinstance(p, dict) and _valid_probe(p)])


def observe(*, key: str, machine: str, phases: Mapping[str, float], wall: float, shape: TrialShape,
            predicted: float | None) -> dict[str, Any]:
    """A finished trial's rates from its phase clock (``phases``: seconds by phase, :class:`PhaseClock`) and what it
    did (``shape``, with the epochs it ran).

    Training is the optimiser steps plus each epoch's loader start; scoring the per-epoch validation and the last
    prediction with TTA; what is left is split into the per-trial part (reading data, config, artifacts) and the
    per-fold part (model build, checkpoints, weights). A worker process's start-up is not in ``wall``: it is paid
    before any trial, so no prediction of a trial should carry it."""
    train_s = phases.get("train_steps", 0.0) + phases.get("loader_start", 0.0)
    val_s = phases.get("validate", 0.0) + phases.get("predict", 0.0)
    trial_fixed = sum(phases.get(name, 0.0) for name in ("data", "config", "artifacts"))
    rest = max(0.0, wall - train_s - val_s - trial_fixed)
    folds = max(1, shape.folds)
    return {"key": key, "machine": machine, "train": train_s / max(1.0, folds * shape.epochs * shape.train_rows),
            "val": val_s / max(1.0, folds * shape.scored), "fold_fixed": rest / folds,
            "trial_fixed": trial_fixed, "folds": folds, "epochs_run": shape.epochs, "wall": round(wall, 2),
            "predicted": None if predicted is None else round(predicted, 2), "at": round(time.time())}


def _valid(entry: Mapping[str, Any]) -> bool:
    try:
        return (isinstance(entry["key"], str) and isinstance(entry["machine"], str)
                and all(math.isfinite(float(entry[k])) and float(entry[k]) >= 0
                        for k in ("train", "val", "fold_fixed", "trial_fixed")))
    except (KeyError, TypeError, ValueError):
        return False


def _valid_probe(entry: Any) -> bool:
    try:
        return (isinstance(entry, dict) and isinstance(entry["key"], str) and isinstance(entry["machine"], str)
                and all(math.isfinite(float(entry[k])) and float(entry[k]) > 0 for k in ("train", "val")))
    except (KeyError, TypeError, ValueError):
        return False


def _mean_rates(entries: Iterable[Mapping[str, Any]]) -> Rates | None:
    """The mean of measured rates (latest eight: a machine's speed drifts with what else runs on it)."""
    chosen = sorted(entries, key=lambda o: o.get("at", 0))[-8:]
    if not chosen:
        return None
    return Rates(train=statistics.fmean(o["train"] for o in chosen), val=statistics.fmean(o["val"] for o in chosen),
                 fold_fixed=statistics.fmean(o["fold_fixed"] for o in chosen),
                 trial_fixed=statistics.fmean(o["trial_fixed"] for o in chosen))
