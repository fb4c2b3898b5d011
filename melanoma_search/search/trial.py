"""One trial: sample a config, train it, report and prune per epoch or per fold, record everything in the study.

A trial's inputs are plain data — the spec's base config and the sampled parameters — and its outputs go to the
study's storage and artifact store, so a trial runs the same in this process, another process or another machine.
Failures end the trial, never the study: an impossible config, a NaN loss or a second out-of-memory ends it as FAIL
with the reason in its ``fail_reason`` user attribute; out-of-memory is first retried once at half the batch with
double gradient accumulation (the same effective batch). A trial stopped by SIGTERM (preemption) or Ctrl-C is FAIL
too, but its worker re-queues it and its resume files stay for the retry; they are removed once the trial ends
without a retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

from melanoma_search.budget.cost import COST_ATTR, CostModel, observe
from melanoma_search.budget.estimate import Estimate, Estimator
from melanoma_search.budget.limit import minutes
from melanoma_search.data.prepare import PreparedData
from melanoma_search.errors import ConfigError, DiskFullError, ImageError, MelanomaSearchError, Preempted
from melanoma_search.search import records
from melanoma_search.search.artifacts import ArtifactWriter, roc_svg
from melanoma_search.search.disk import disk_full
from melanoma_search.search.gpu_share import GpuShare
from melanoma_search.search.objective import Objective
from melanoma_search.search.progress import format_params
from melanoma_search.search.spec import StudySpec, native_size
from melanoma_search.train.config import TrainConfig, apply_overrides, flatten_config, parse_config
from melanoma_search.train.device import resolve_device
from melanoma_search.train.loop import fit, prepare_for, smaller_batch
from melanoma_search.train.phases import TRAINING_PHASE, PhaseClock
from melanoma_search.train.results import EpochStats, FoldResult, RunResult, weight_files
from melanoma_search.train.steps import Precision

__all__ = ["NotStarted", "TrialRunner", "sample_params", "trial_config"]

Log = Callable[[str], None]


def _label(value: Any) -> Any:
    """Optuna categoricals hold scalars: a list choice (e.g. progressive sizes) is named by its YAML flow text.

    The label is only Optuna's name for the choice; the value itself is looked up from the spec, never parsed back.
    """
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, (list, dict)) else value


def sample_params(trial: optuna.Trial, spec: StudySpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """Draw every applicable dimension of ``spec.space``; a ``when`` condition is read after what it depends on."""
    values: dict[str, Any] = flatten_config(base)
    params: dict[str, Any] = {}
    for path in spec.sampling_order():
        dim = spec.space[path]
        if not dim.applies(values):
            continue
        if dim.kind == "categorical":
            by_label = {_label(c): c for c in dim.choices or ()}
            value = by_label[trial.suggest_categorical(path, list(by_label))]
        elif dim.kind == "int":
            assert dim.low is not None and dim.high is not None
            value = trial.suggest_int(path, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        elif dim.kind == "float":
            assert dim.low is not None and dim.high is not None
            value = trial.suggest_float(path, dim.low, dim.high, step=dim.step, log=dim.log)
        else:  # native: derived from the architecture, recorded but not sampled
            value = native_size(str(values.get("model.name", "")), scale=dim.scale)
            trial.set_user_attr(path, value)
        values[path] = value
        params[path] = value
    return params


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any], objective: Objective, *,
                 fidelity: Mapping[str, Any] | None = None) -> TrainConfig:
    """The trial's full config: base, then sampled parameters, then the objective's folds; a race trial's
    ``fidelity`` (its ``folds``, ``epochs`` and a screening trial's ``tta`` and ``train_fraction``,
    :mod:`melanoma_search.budget.race`) last."""
    data = apply_overrides(base, params)
    n_folds = int(data.get("data", {}).get("n_folds", 5))
    data = apply_overrides(data, {"data.folds": list(objective.folds(n_folds))})
    if fidelity:
        data = apply_overrides(data, {"data.folds": list(fidelity["folds"]), "epochs": int(fidelity["epochs"])})
        if fidelity.get("tta") is not None:
            data = apply_overrides(data, {"tta": int(fidelity["tta"])})
        if fidelity.get("train_fraction") is not None:
            data = apply_overrides(data, {"train_fraction": float(fidelity["train_fraction"])})
    return parse_config(data, source="trial config")


class TrialRunner:
    """The objective function handed to ``study.optimize``."""

    def __init__(
        self,
        *,
        spec: StudySpec,
        objective: Objective,
        base: Mapping[str, Any],
        artifacts: ArtifactWriter,
        work_dir: Path,
        log: Log = print,
        data: PreparedData | None = None,
        process_started: float | None = None,
        gpu_share: GpuShare | None = None,
        deadline: float | None = None,
        cost_prior: CostModel | None = None,
    ) -> None:
        """``process_started``: Unix time this process started; the first trial's breakdown counts the time from
        then to its start as ``startup`` (imports, storage, study), the fixed cost a process pays once.
        ``gpu_share``: this worker's lease on a GPU it shares with other workers; a trial out of memory even at half
        its batch is retried once more alone on the card.
        ``deadline``: Unix time of a kept time limit (``run --time-limit``): a trial whose predicted cost cannot
        finish before it does not start (it ends FAIL with the one-line reason, and the worker stops);
        ``cost_prior``: a cost model file's measurements, beneath the study's own (:mod:`melanoma_search.budget`)."""
        self.spec, self.objective, self.base = spec, objective, dict(base)
        self.deadline, self.cost_prior = deadline, cost_prior
        self._estimators: dict[int, Estimator] = {}
        self.not_started: str | None = None
        """Set when a trial did not start for want of time: the worker stops the run with this line."""
        self.artifacts, self.work_dir, self.log = artifacts, work_dir, log
        self._startup = None if process_started is None else max(0.0, time.time() - process_started)
        self.gpu_share = gpu_share
        self.run_fault: DiskFullError | ImageError | None = None
        """Set when a trial failed on what no configuration escapes (a full disk, an image that cannot be decoded):
        the worker stops the run instead of failing every next trial on it too."""
        self._data: dict[str, PreparedData] = {}
        if data is not None:
            self._data[self._data_key(parse_config(self.base))] = data

    @staticmethod
    def _data_key(config: TrainConfig) -> str:
        return json.dumps(config.data.model_dump(mode="json", exclude={"folds", "num_workers"}), sort_keys=True)

    def data_for(self, config: TrainConfig, *, clock: PhaseClock | None = None) -> PreparedData:
        """Read each distinct dataset once per process, however many trials use it."""
        key = self._data_key(config)
        if key not in self._data:
            with (clock or PhaseClock()).phase("data"):
                self._data[key] = prepare_for(config)
        return self._data[key]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        start = time.perf_counter()
        clock = PhaseClock()
        if self._startup is not None:  # the process's start-up, paid by its first trial
            clock.add("startup", self._startup)
            self._startup = None
        config, estimate = self._begin(trial, clock)
        folder = Path(tempfile.mkdtemp(prefix=f"trial-{trial.number:05d}-", dir=self._ensure(self.work_dir)))
        ran = [config]  # the config of the last attempt: an out-of-memory retry trains another batch size
        resume = self.resume_folder(trial)
        retried = False  # stopped by a signal: the worker re-queues the trial, whose retry reads the resume folder
        try:
            result, config = self._fit_with_oom_retry(trial, config, folder, clock, ran=ran, resume=resume)
            values = self.objective.score(result)
            self._record_cost(trial, clock, estimate, start=start, epochs=sum(len(f.history) for f in result.folds))
            if (race := _race(trial)) is not None and race.get("rung") != "final":
                trial.set_user_attr("race", {**race, "score": round(values[0], 5)})
                trial.set_user_attr("fold_aucs", [round(a, 5) for a in result.fold_aucs])
                self.log(f"trial {trial.number} screened (race rung {race['rung']}): {values[0]:.4f}")
                raise optuna.TrialPruned(f"race: screened at rung {race['rung']}")
            with clock.phase("artifacts"):
                self._record(trial, result, config, start)
                self._save_outputs(trial, result, config, folder, values[0])
            self._record_time(trial, clock, start=start)
            return values if len(values) > 1 else values[0]
        except optuna.TrialPruned:
            self._record_time(trial, clock, start=start)
            raise
        except Preempted:  # Optuna marks the trial FAIL; its worker re-queues it
            retried = True
            _fail(trial, "preempted: SIGTERM (a scheduler took the machine back) during this trial; re-queued with "
                  "its saved epochs")
            raise
        except KeyboardInterrupt:
            retried = True
            _fail(trial, "interrupted: the run was stopped (Ctrl-C) during this trial; re-queued with its saved "
                  "epochs, which the same command continues from")
            raise
        except Exception as exc:
            fault = disk_full(exc, folders=(self.artifacts.root.parent, Path(config.data.cache_dir), self.work_dir,
                                            resume, self.artifacts.weights_root)) or _data_fault(exc)
            if fault is None:
                raise
            retried = True  # its worker stops the run and re-queues it: the same command continues it
            self.run_fault = fault
            _fail(trial, f"{type(fault).__name__}: {fault}")
            raise fault from None
        finally:
            # the config that trained the kept weights (or ran last), whatever the end: the dashboard, the refit and
            # the ensemble read this file, so it must never be an attempt that ran out of memory
            with clock.phase("config"):
                (folder / "config.yaml").write_text(ran[-1].to_yaml())
                self.artifacts.upload(trial, folder / "config.yaml", mimetype="text/yaml")
            shutil.rmtree(folder, ignore_errors=True)
            if not retried and not _taken_over(trial):
                shutil.rmtree(resume, ignore_errors=True)  # the trial ended and no retry will continue it

    def _begin(self, trial: optuna.Trial, clock: PhaseClock) -> tuple[TrainConfig, Estimate]:
        """The trial's config, sampled, its predicted cost, and its start line: folds, epochs, parameters, the
        precision it runs in (``amp: auto`` decides per machine, backbone and size, so the line says what was
        decided) and the prediction. Under a kept time limit a trial that cannot finish does not start."""
        try:
            with clock.phase("config"):
                params = sample_params(trial, self.spec, self.base)
                config = trial_config(self.base, params, self.objective, fidelity=_race(trial))
        except ConfigError as exc:
            _fail(trial, f"impossible config: {exc}")
            raise
        precision = _precision(config)
        trial.set_user_attr("precision", precision)
        ends = [t for t in (self.deadline, (_race(trial) or {}).get("until")) if t is not None]
        with clock.phase("config"):  # probed only where a limit needs the figure
            estimate = self._estimator(trial, config, clock).predict(config, probe=bool(ends))
        trial.set_user_attr("cost_predicted", estimate.record())
        left = min(ends) - time.time() if ends else None  # a screening trial: inside the screening share too
        if left is not None and estimate.seconds is not None and estimate.seconds > left:
            line = f"not started: trial {trial.number} predicted {minutes(estimate.seconds)}, {minutes(left)} left"
            _fail(trial, line)
            if _race(trial) is None:  # the sampler's next trial would not fit either; a race's next one may
                self.not_started = line
            else:
                self.log(line)
            raise NotStarted(line)
        predicted = "" if estimate.seconds is None else f" | predicted {minutes(estimate.seconds)} ({estimate.source})"
        self.log(f"trial {trial.number} started: {len(config.data.fold_list())} fold(s) x {config.epochs} epoch(s) | "
                 f"{format_params(params)} | {precision}{predicted}")
        return config, estimate

    def _estimator(self, trial: optuna.Trial, config: TrainConfig, clock: PhaseClock) -> Estimator:
        key = id(trial.study)
        if key not in self._estimators:
            self._estimators[key] = Estimator(trial.study, data=self.data_for(config, clock=clock),
                                              prior=self.cost_prior, log=self.log)
        estimator = self._estimators[key]
        estimator.refresh()  # the trials finished since (here or on other nodes) measured this machine
        return estimator

    def _record_cost(self, trial: optuna.Trial, clock: PhaseClock, estimate: Estimate, *, start: float,
                     epochs: int) -> None:
        """The trial's measured rates (``cost``) beside its prediction: the study's cost model learns from it."""
        wall = time.perf_counter() - start  # the process's start-up, paid before the trial, is nobody's to predict
        shape = dataclasses.replace(estimate.shape, epochs=max(1, round(epochs / max(1, estimate.shape.folds))))
        phases = {k: v for k, v in clock.seconds.items() if k != "startup"}
        trial.set_user_attr(COST_ATTR, observe(key=shape.key, machine=estimate.machine, phases=phases, wall=wall,
                                               shape=shape, predicted=estimate.seconds))

    def resume_folder(self, trial: optuna.Trial) -> Path:
        """Where this trial's retry chain saves its training state: keyed by the first trial of the chain (a
        re-queued trial carries the chain in its ``retry_history``); each attempt writes in a folder of its own
        there (:class:`~melanoma_search.train.resume.ResumeFolder`)."""
        history = trial.study._storage.get_trial_system_attrs(trial._trial_id).get("retry_history") or []
        first = int(history[0]) if history else trial.number
        if history:
            trial.set_user_attr("resumes_trial", first)
        return self.work_dir.parent / "resume" / f"trial-{first:05d}"

    @staticmethod
    def _ensure(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _fit_with_oom_retry(self, trial: optuna.Trial, config: TrainConfig, folder: Path, clock: PhaseClock, *,
                            ran: list[TrainConfig], resume: Path) -> tuple[RunResult, TrainConfig]:
        """Train, retrying out-of-memory at half the batch (then alone on a shared card); ``ran`` gets each
        attempt's config."""
        alone = False
        reported: set[int] = set()  # steps an earlier attempt reported: Optuna keeps a step's first value
        for attempt in range(3):
            reporter = _Reporter(trial, objective=self.objective, earlier=set(reported), log=self.log,
                                 prune=_race(trial) is None)  # a race's trials are stopped by the race
            try:
                with self.gpu_share.alone() if alone and self.gpu_share else contextlib.nullcontext():
                    result = fit(config, data=self.data_for(config, clock=clock), callback=reporter.epoch,
                                 on_fold=reporter.fold, log=lambda line: self.log(f"trial {trial.number} {line}"),
                                 weights_dir=folder, clock=clock, resume_dir=resume,
                                 resume_attempt=str(trial.number))
                return result, config
            except torch.cuda.OutOfMemoryError as exc:
                reported |= reporter.reported
                torch.cuda.empty_cache()
                if attempt == 0 and (smaller := smaller_batch(config)) is not None:
                    self.log(f"trial {trial.number}: out of memory at batch {config.batch_size}; retrying at batch "
                             f"{smaller.batch_size} with accum_steps {smaller.accum_steps}")
                    trial.set_user_attr("oom_retry", f"batch {config.batch_size} -> {smaller.batch_size}")
                    config = smaller
                    ran.append(config)
                    continue
                if not alone and self.gpu_share is not None and self.gpu_share.held == "shared":
                    self.log(f"trial {trial.number}: out of memory at batch {config.batch_size} beside other trials "
                             "on its GPU; waiting to retry it alone on the card")
                    trial.set_user_attr("oom_retry_alone", True)
                    alone = True
                    continue
                _fail(trial, f"out of memory at batch {config.batch_size}: {str(exc).splitlines()[0]}")
                raise
            except optuna.TrialPruned:
                trial.set_user_attr("epochs_run", reporter.epochs_run)
                raise
            except MelanomaSearchError as exc:
                _fail(trial, f"{type(exc).__name__}: {exc}")
                raise
            except Exception as exc:  # a library's error on this config (e.g. an image too small for the net)
                _fail(trial, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                raise
        raise AssertionError("unreachable")

    def _record(self, trial: optuna.Trial, result: RunResult, config: TrainConfig, start: float) -> None:
        trial.set_user_attr("fold_aucs", [round(a, 5) for a in result.fold_aucs])
        trial.set_user_attr("oof_auc", round(result.auc, 5))
        trial.set_user_attr("oof_pauc", round(result.pauc(), 5))  # above 80 % sensitivity (ISIC 2024)
        if (all_rows := result.all_rows_auc) is not None:  # data.validate_external: external rows scored too
            trial.set_user_attr("oof_auc_all_rows", round(all_rows, 5))
        trial.set_user_attr("checkpoint", config.checkpoint)  # which weights the value scores (see TrainConfig)
        trial.set_user_attr("best_epoch_aucs", [round(f.best_epoch_auc, 5) for f in result.folds])
        trial.set_user_attr("epochs_run", sum(len(f.history) for f in result.folds))
        trial.set_user_attr("wall_seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("train_seconds", round(result.train_seconds, 2))
        trial.set_user_attr("images_per_s", round(result.images_per_s, 1))
        trial.set_user_attr("peak_memory_mb", round(result.peak_memory_mb, 1))
        trial.set_user_attr("device", result.device)
        trial.set_user_attr("lr_used", [f.lr for f in result.folds])

    @staticmethod
    def _record_time(trial: optuna.Trial, clock: PhaseClock, *, start: float) -> None:
        """Where the trial's seconds went (``time_breakdown``) and all of it but the training steps; the process's
        start-up, when this trial paid it, counts in."""
        wall = time.perf_counter() - start + clock.seconds.get("startup", 0.0)
        trial.set_user_attr("time_breakdown", clock.breakdown(wall=wall))
        trial.set_user_attr("fixed_seconds", round(clock.fixed_seconds(wall=wall), 2))
        trial.set_user_attr("train_step_seconds", round(clock.seconds.get(TRAINING_PHASE, 0.0), 2))

    def _save_outputs(self, trial: optuna.Trial, result: RunResult, config: TrainConfig, folder: Path,
                      value: float) -> None:
        result.save(folder, config=config)
        oof = result.oof
        (folder / "roc.svg").write_text(roc_svg(oof["target"], oof["pred"], title=f"trial {trial.number} OOF"))
        for name, mimetype in (("oof.csv", "text/csv"), ("test.csv", "text/csv"), ("history.csv", "text/csv"),
                               ("metrics.yaml", "text/yaml"), ("roc.svg", "image/svg+xml")):
            if (folder / name).is_file():
                self.artifacts.upload(trial, folder / name, mimetype=mimetype)
        weights = list(weight_files(folder).values())
        self.artifacts.keep_weights(trial, value, weights)  # where: the study's ``weights`` attr, kept current


class _Reporter:
    """Reports a trial's steps to Optuna and asks the pruner: each epoch's validation AUC, or after each fold the
    objective's value of the folds so far (the objective's ``report_each``).

    On an out-of-memory retry only the steps the failed attempt did not reach are reported (``earlier``): Optuna
    ignores a second report of a step, so re-reporting would leave the pruner reading the failed attempt's curve as
    if it were the retry's. The retry's own values of those steps go to the ``oom_retry_curve`` attribute instead;
    the pruner was already asked at those steps (and let the trial go on).

    Step k is reported after k fold models (or k epochs over the folds) are done, so a pruner's rungs count
    resources: Hyperband's and successive halving's first rung, ``min_resource * reduction_factor ** rate``, is the
    first fold for ``min_resource: 1``; counted from 0, as before, nothing could be pruned until the second fold. A
    study that reported from 0 before keeps doing so (``records.first_step``): its trials stay comparable.
    """

    def __init__(self, trial: optuna.Trial, *, objective: Objective, earlier: set[int], log: Log,
                 prune: bool = True) -> None:
        self.trial, self.objective, self.earlier, self.log, self.prune = trial, objective, earlier, log, prune
        self.first = records.first_step(trial.study)
        self.reported: set[int] = set()
        self.epochs_run = 0
        self._folds: list[FoldResult] = []
        self._retry_curve: dict[str, float] = {}

    def epoch(self, stats: EpochStats) -> None:
        self.epochs_run += 1
        if self.objective.report_each == "epoch":
            self._report(self.first + stats.step, stats.val_auc, where=f"fold {stats.fold} epoch {stats.epoch}")

    def fold(self, result: FoldResult) -> None:
        self._folds.append(result)
        if self.objective.report_each == "fold" and self.objective.reports:
            # the objective itself, on the folds so far (the mean of their AUCs, pAUCs, ...): what the pruner compares
            so_far = RunResult(folds=list(self._folds), classes=(), device="", seconds=0.0, peak_memory_mb=0.0)
            value = self.objective.score(so_far)[0]
            self._report(self.first + len(self._folds) - 1, value,
                         where=f"fold {result.fold} ({len(self._folds)} fold(s) done)")

    def _report(self, step: int, value: float, *, where: str) -> None:
        name = self.objective.metric_names[0]
        if not self.objective.reports:
            return
        if step in self.earlier:
            self._retry_curve[str(step)] = round(value, 5)
            self.trial.set_user_attr("oom_retry_curve", self._retry_curve)
            return
        self.trial.report(value, step=step)
        self.reported.add(step)
        if self.prune and self.trial.should_prune():
            self.log(f"trial {self.trial.number} pruned at {where} ({name} {value:.4f})")
            raise optuna.TrialPruned(f"pruned at step {step} with {name} {value:.4f}")


class NotStarted(MelanomaSearchError):
    """A trial whose predicted cost cannot finish inside the kept time limit: it trains nothing."""


def _race(trial: optuna.Trial) -> dict[str, Any] | None:
    """The trial's place in a race (its rung, folds and epochs), or ``None`` for an ordinary trial."""
    race = trial.user_attrs.get("race")
    return race if isinstance(race, dict) and "folds" in race and "epochs" in race else None


def _precision(config: TrainConfig) -> str:
    """The precision the trial runs in and why (a device the machine lacks fails the trial in ``fit``, with its
    reason recorded, not here)."""
    try:
        return Precision.describe(config.amp, resolve_device(config.device), model=config.model.name,
                                  image_size=config.image_size)
    except MelanomaSearchError:
        return f"amp: {config.amp}"


def _data_fault(exc: BaseException) -> ImageError | None:
    """An image the dataset cannot decode: every trial reads the same images, so each would fail on it (the cache is
    built once per image size and refuses the first undecodable file); the run stops once, naming it, and the trial
    is re-queued for the same command once the file is mended or ``data.bad_images: skip`` drops it."""
    if not isinstance(exc, ImageError):
        return None
    return ImageError(f"{exc}; the run stops here (every trial reads the same images) and the trial is re-queued: "
                      "the same command continues once the file is mended or skipped")


def _fail(trial: optuna.Trial, reason: str) -> None:
    try:
        trial.set_user_attr("fail_reason", reason[:2000])
    except Exception as exc:  # the storage itself cannot take it (e.g. SQLite on the same full disk)
        logging.getLogger(__name__).warning("could not record trial %d's reason (%s): %s", trial.number, exc, reason)


def _taken_over(trial: optuna.Trial) -> bool:
    """Whether another process already ended this running trial (failed it as stale, or as a dead launch's, and
    re-queued it): its retry may be reading the chain's resume files, so they stay."""
    try:
        return trial.study._storage.get_trial(trial._trial_id).state != optuna.trial.TrialState.RUNNING
    except Exception:  # the storage is unreachable: keep the files rather than guess
        return True
