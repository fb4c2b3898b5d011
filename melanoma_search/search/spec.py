"""Study specs: ``search_spaces/<name>.yaml`` parsed into a validated :class:`StudySpec`.

A spec says what a study searches and how: the dataset, settings fixed for every trial, the search space (config key
paths mapped to distributions, optionally conditional on other parameters), the sampler, the pruner, the budget, the
objective, and configurations to evaluate first. Parameter names are the training config's key paths
(``model.name``, ``loss.gamma``), so a trial's parameters read the same in the dashboard, in the YAML dump of its
config and on the command line (``--set loss.gamma=2``).

Every problem is reported with its key path and what is allowed, before any trial runs.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from melanoma_search.errors import ConfigError
from melanoma_search.schema import StrictModel, format_validation_error, format_yaml_error
from melanoma_search.train.config import (
    DEPRECATED_KEYS,
    apply_overrides,
    canonical_path,
    check_value,
    config_field,
    config_paths,
    flatten_config,
)

__all__ = [
    "EFFICIENTNET_NATIVE_SIZES",
    "BudgetSpec",
    "Dimension",
    "ExportSpec",
    "PrunerSpec",
    "RaceSpec",
    "RungSpec",
    "STUDENT_NOISE",
    "SamplerSpec",
    "StageTwoSpec",
    "StudentSpec",
    "StudySpec",
    "find_spec",
    "list_specs",
    "load_spec",
    "native_size",
    "spec_dirs",
]

#: Input resolution of EfficientNet B0-B7 (Tan & Le 2019), the "native size" a spec can pair with the architecture.
EFFICIENTNET_NATIVE_SIZES: dict[int, int] = {0: 224, 1: 240, 2: 260, 3: 300, 4: 380, 5: 456, 6: 528, 7: 600}
_EFFNET = re.compile(r"efficientnet_b(\d)")


def native_size(model_name: str, *, scale: float = 1.0, multiple: int = 8) -> int:
    """The EfficientNet B-variant's native input size for ``model_name`` times ``scale``, rounded to ``multiple``."""
    match = _EFFNET.search(model_name)
    if match is None or int(match.group(1)) not in EFFICIENTNET_NATIVE_SIZES:
        raise ConfigError(f"image_size: native size is defined for EfficientNet B0-B7 only, not {model_name!r}")
    size = EFFICIENTNET_NATIVE_SIZES[int(match.group(1))] * scale
    return max(multiple, int(round(size / multiple)) * multiple)


class Dimension(StrictModel):
    """One searched parameter.

    (YAML key ``int: true`` sets :attr:`integer`.)

    ``choices`` makes it categorical; ``low``/``high`` (with ``int``, ``log``, ``step``) a number range;
    ``native: true`` (``image_size`` only) derives the size from the sampled EfficientNet variant, times ``scale``.
    ``when`` samples it only if other parameters (or fixed settings) have the given value(s).
    """

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    integer: bool = Field(False, alias="int")
    log: bool = False
    step: float | None = None
    native: bool = False
    scale: float = Field(1.0, gt=0)
    when: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        kinds = sum([self.choices is not None, self.low is not None or self.high is not None, self.native])
        if kinds != 1:
            raise ValueError("give exactly one of: choices: [...], low: and high:, or native: true")
        if self.choices is not None and not self.choices:
            raise ValueError("choices must not be empty")
        if self.low is not None or self.high is not None:
            if self.low is None or self.high is None:
                raise ValueError("a range needs both low and high")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError("a log range needs low > 0")
        return self

    @property
    def kind(self) -> Literal["categorical", "int", "float", "native"]:
        if self.choices is not None:
            return "categorical"
        if self.native:
            return "native"
        return "int" if self.integer else "float"

    def applies(self, values: Mapping[str, Any]) -> bool:
        """Whether the ``when`` condition holds for the values sampled (or fixed) so far."""
        for key, wanted in self.when.items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if values.get(key) not in allowed:
                return False
        return True


def _refuse_unread(section: StrictModel, *, reads: Mapping[str, tuple[str, ...]], kind: str) -> None:
    """A key set in a ``sampler:``/``pruner:`` section that the chosen one never reads is an error, as an unread
    ``loss:`` key is: silently ignoring it would let a user believe it does something."""
    name = section.name  # type: ignore[attr-defined]
    unread = sorted(set(section.model_fields_set) - {"name"} - set(reads[name]))
    if unread:
        raise ValueError(f"{', '.join(unread)}: not read by the {name!r} {kind} (it reads "
                         f"{', '.join(reads[name]) or 'nothing else'})")


class SamplerSpec(StrictModel):
    name: Literal["tpe", "random", "qmc", "gp"] = "tpe"
    n_startup_trials: int = Field(10, ge=0)
    multivariate: bool = True
    group: bool = True
    constant_liar: bool = True
    seed: int | None = None

    @model_validator(mode="after")
    def _read_keys(self) -> SamplerSpec:
        _refuse_unread(self, kind="sampler", reads={
            "tpe": ("n_startup_trials", "multivariate", "group", "constant_liar", "seed"),
            "random": ("seed",), "qmc": ("seed",), "gp": ("n_startup_trials", "seed")})
        return self


class PrunerSpec(StrictModel):
    name: Literal["hyperband", "successive_halving", "median", "threshold", "none"] = "hyperband"
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(1, ge=0)
    lower: float = 0.5
    """``threshold``: prune a trial whose validation AUC is below this after the warm-up epochs."""
    patience: int | None = Field(None, ge=1)
    """Wrap in Optuna's PatientPruner: only prune after this many epochs without improvement (AUC is noisy)."""

    @model_validator(mode="after")
    def _read_keys(self) -> PrunerSpec:
        halving = ("min_resource", "reduction_factor", "patience")
        _refuse_unread(self, kind="pruner", reads={
            "hyperband": halving, "successive_halving": halving,
            "median": ("n_startup_trials", "n_warmup_steps", "patience"),
            "threshold": ("lower", "n_warmup_steps", "patience"), "none": ()})
        return self


class ExportSpec(StrictModel):
    """How ``python -m melanoma_search.export`` treats this study unless its flags say otherwise."""

    top_k: int = Field(5, ge=1)
    """The best this-many trials are the candidates (each retrained on the folds it lacks when ``refit``: mind the
    time on a CPU); ``rank`` blends them all, ``greedy`` leaves out those that add nothing."""
    method: str = "rank"
    """A registered blend method (:mod:`melanoma_search.ensemble.methods`)."""
    refit: bool = True


class StageTwoSpec(StrictModel):
    """Stage two over this study: trees on the image models' out-of-fold scores, the metadata and the patient's
    other lesions, searched in a study of their own (``NAME-stage-two``, in this study's storage) by ``export``."""

    enabled: bool = False
    """Run by ``export`` unless ``--no-stage-two`` (``--stage-two`` runs it for a spec that leaves it off)."""
    n_trials: int = Field(20, ge=1)
    """Trials the stage-two study holds; a later export continues it up to this many (it does not add more)."""
    learners: tuple[str, ...] = ("lightgbm",)
    """Registered tree learners searched (:mod:`melanoma_search.stage_two.learners`: lightgbm, xgboost, catboost)."""
    groups: tuple[str, ...] = ("image", "metadata", "tabular", "patient")
    """Feature groups; each trial uses a non-empty subset of them (:mod:`melanoma_search.stage_two.features`)."""
    columns: tuple[str, ...] = ()
    """The dataset's own per-lesion numeric columns (e.g. ISIC 2024's ``tbp_lv_*``, ``clin_size_long_diam_mm``)."""
    seeds: int = Field(3, ge=1)
    """Trees per held-out fold, each with its own seed, rank-averaged."""
    seed: int = 0
    """The stage-two sampler's seed."""


#: The noise a student trains with unless the spec's ``student.noise`` says otherwise (Noisy Student: strong
#: augmentation, dropout 0.5, stochastic depth; cutmix as the 2020 solutions used it).
STUDENT_NOISE: dict[str, Any] = {"augment.policy": "heavy", "model.drop_rate": 0.5, "model.drop_path_rate": 0.2,
                                 "augment.cutmix": 0.3}


class StudentSpec(StrictModel):
    """A noisy-student round of this study (``run --student-of``): the teacher, its images, pseudo rows, noise."""

    teacher: str | None = None
    """An exported ensemble folder (``--student-of`` overrides it)."""
    unlabelled: str | None = None
    """The images to pseudo-label: a folder, or a CSV of ``image_name`` + metadata (``--unlabelled`` overrides it)."""
    pseudo: dict[str, Any] = Field(default_factory=dict)
    """``data.pseudo`` keys other than ``file`` (``weight``, ``min_confidence``, ``soft``)."""
    noise: dict[str, Any] = Field(default_factory=lambda: dict(STUDENT_NOISE))
    """Config key paths set on every student trial (a searched key still wins: its sampled value is applied last)."""


class BudgetSpec(StrictModel):
    n_trials: int | None = Field(20, ge=1)
    """Trials one run adds (all its workers together); ``--n-trials`` overrides it."""
    timeout: float | None = Field(None, gt=0)
    """Seconds for this run of the study."""
    max_trials: int | None = Field(None, ge=1)
    """Trials for the whole study, counted in its storage across every node, worker and restart (finished plus
    running); ``--max-trials`` overrides it. See :mod:`~melanoma_search.search.study_budget`."""
    time_limit: float | None = Field(None, gt=0)
    """Seconds the run may take, kept: nothing starts that its predicted cost cannot finish (``--time-limit``
    overrides it; :mod:`melanoma_search.budget`). ``timeout`` only stops new trials from starting (Optuna's meaning)."""


class RungSpec(StrictModel):
    """One screening rung of a race: every candidate that reaches it trains ``folds`` fold(s) for ``epochs``."""

    folds: int = Field(1, ge=1)
    epochs: int = Field(1, ge=1)
    tta: Literal[1, 2, 4, 8] | None = 1
    """Views per image of the screening trial's last scoring: one ranks as well and costs a fraction (a finalist
    uses the spec's); ``null`` keeps the spec's here too."""
    train_fraction: float = Field(1.0, gt=0.0, le=1.0)
    """The share of the fold's training rows the screening trial trains on (per class): cheaper screening, so more
    candidates and more of the limit left for the finalists, which always train on all of them."""


class RaceSpec(StrictModel):
    """A race inside the time limit (:mod:`melanoma_search.budget.race`): many candidates screened cheaply, the best
    promoted rung by rung, the finalists trained on every fold for as many epochs as the time left allows."""

    rungs: tuple[RungSpec, ...] = (RungSpec(),)
    """Screening rungs, cheapest first: the first screens every candidate, each later one the best 1/``eta``."""
    eta: int = Field(3, ge=2)
    finalists: int = Field(1, ge=1)
    """Candidates trained on every fold at the end: the export's members."""
    final_epochs: tuple[int, int] = (2, 12)
    """The finalists' epochs are the most in ``[low, high]`` that fit in the time left."""
    screen_share: float = Field(0.45, gt=0, lt=1)
    """The share of the limit the screening rungs may use; the finalists get the rest."""
    max_candidates: int = Field(24, ge=2)

    @model_validator(mode="after")
    def _ordered(self) -> RaceSpec:
        low, high = self.final_epochs
        if not 1 <= low <= high:
            raise ValueError(f"final_epochs: [{low}, {high}] must be 1 <= low <= high")
        return self


class StudySpec(StrictModel):
    """A validated study spec (``search_spaces/<name>.yaml``)."""

    name: str = ""
    description: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Dimension] = Field(default_factory=dict)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    budget: BudgetSpec = BudgetSpec()
    objective: str = "cv_auc"
    export: ExportSpec = ExportSpec()
    student: StudentSpec = StudentSpec()
    stage_two: StageTwoSpec = StageTwoSpec()
    top_k_weights: int = Field(3, ge=0)
    """Keep model weights as artifacts for the best this-many trials only."""
    enqueue: tuple[dict[str, Any], ...] = ()
    race: RaceSpec | None = None
    """Search by a race inside the time limit instead of one trial after another (needs a time limit)."""

    def sampling_order(self) -> list[str]:
        """Parameter names with every ``when`` condition after the parameters it reads (file order otherwise)."""
        order: list[str] = []
        pending = list(self.space)
        while pending:
            ready = [p for p in pending
                     if all(k not in self.space or k in order for k in self.space[p].when)]
            if not ready:
                raise ConfigError(f"space: the 'when' conditions of {pending} depend on each other in a cycle")
            order.extend(ready)
            pending = [p for p in pending if p not in ready]
        return order

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        """Old config keys (``sampler`` for the row sampler) still read, with a deprecation warning."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("space"), dict):
            data["space"] = {canonical_path(str(k)): _renamed_when(v) for k, v in data["space"].items()}
        if isinstance(data.get("fixed"), dict) and any(k in data["fixed"] for k in DEPRECATED_KEYS):
            data["fixed"] = {canonical_path(str(k)): v for k, v in data["fixed"].items()}
        if isinstance(data.get("enqueue"), list):
            data["enqueue"] = [{canonical_path(str(k)): v for k, v in e.items()} if isinstance(e, dict) else e
                               for e in data["enqueue"]]
        return data

    def base_config(self, *, overrides: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> dict[str, Any]:
        """The config every trial starts from: ``fixed``, then ``data``, then command-line ``--set`` overrides."""
        base = apply_overrides({}, flatten_config(self.fixed))
        base = apply_overrides(base, flatten_config(self.data, prefix="data."))
        return apply_overrides(base, overrides)


def _renamed_when(dimension: Any) -> Any:
    if isinstance(dimension, dict) and isinstance(dimension.get("when"), dict):
        return {**dimension, "when": {canonical_path(str(k)): v for k, v in dimension["when"].items()}}
    return dimension


def _validate(spec: StudySpec, *, source: str) -> None:
    problems: list[str] = []
    known = config_paths()
    for path, dim in spec.space.items():
        try:
            _, is_section = config_field(path)
        except KeyError:
            close = difflib.get_close_matches(path, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"space.{path}: not a config key{hint}")
            continue
        if is_section:
            problems.append(f"space.{path}: is a section; search its keys (e.g. {path}.<key>)")
            continue
        if dim.native and path != "image_size":
            problems.append(f"space.{path}: native: true applies to image_size only")
        for value in dim.choices or ():
            error = check_value(path, value)
            if error:
                problems.append(f"space.{path}: choice {value!r}: {error}")
        for key in dim.when:
            if key not in spec.space and key not in flatten_config(spec.fixed):
                problems.append(f"space.{path}.when: {key!r} is neither a searched parameter nor a fixed setting")
    for index, entry in enumerate(spec.enqueue):
        for key, value in entry.items():
            searched = spec.space.get(key)
            if searched is None:
                problems.append(f"enqueue[{index}].{key}: not a searched parameter")
            elif searched.choices is not None and value not in searched.choices:
                problems.append(f"enqueue[{index}].{key}: {value!r} is not one of {list(searched.choices)}")
            elif searched.low is not None and searched.high is not None and not (
                    searched.low <= float(value) <= searched.high):
                problems.append(f"enqueue[{index}].{key}: {value!r} is outside [{searched.low}, {searched.high}]")
    if "folds" in spec.data or "data.folds" in flatten_config(spec.fixed):
        problems.append("data.folds: chosen by the objective (cv_auc trains every fold, holdout_auc fold 0): "
                        "remove it, or write an objective whose folds() returns the ones you want")
    problems.extend(_student_problems(spec.student))
    if spec.race is not None and "epochs" in spec.space:
        problems.append("space.epochs: a race sets each trial's epochs (race.rungs, race.final_epochs): remove it")
    try:
        from melanoma_search.train.config import parse_config

        parse_config(spec.base_config(), source=f"{source}: fixed + data")
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        spec.sampling_order()
    except ConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(f"invalid study spec {source}:\n  " + "\n  ".join(problems))


def _student_problems(student: StudentSpec) -> list[str]:
    """Unknown keys or bad values in the ``student:`` section (its cross-checks run when a round starts)."""
    from melanoma_search.data.config import PseudoConfig

    problems = []
    for path, value in student.noise.items():
        try:
            _, is_section = config_field(path)
        except KeyError:
            problems.append(f"student.noise.{path}: not a config key")
            continue
        error = "is a section; set its keys" if is_section else check_value(path, value)
        if error:
            problems.append(f"student.noise.{path}: {error}")
    allowed = set(PseudoConfig.model_fields) - {"file"}
    for key in student.pseudo:
        if key not in allowed:
            problems.append(f"student.pseudo.{key}: not a data.pseudo key (allowed: {', '.join(sorted(allowed))})")
        elif error := check_value(f"data.pseudo.{key}", student.pseudo[key]):
            problems.append(f"student.pseudo.{key}: {error}")
    return problems


def find_spec(name_or_path: str, *, search_dirs: tuple[Path, ...] | None = None) -> Path:
    """Resolve ``--study NAME`` to ``search_spaces/NAME.yaml`` (here, then beside the package), or a file path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    dirs = search_dirs or spec_dirs()
    for folder in dirs:
        for suffix in (".yaml", ".yml"):
            path = folder / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    available = list_specs(dirs)
    close = difflib.get_close_matches(name_or_path, available, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"no study spec {name_or_path!r} in {', '.join(str(d) for d in dirs)}; {hint}"
                      f"available: {', '.join(available) or 'none'}")


def list_specs(dirs: tuple[Path, ...] | None = None) -> list[str]:
    """The names ``--study`` accepts: every spec in ``./search_spaces`` and the built-in ones."""
    return sorted({p.stem for d in (dirs or spec_dirs()) if d.is_dir() for p in d.glob("*.y*ml")})


def spec_dirs() -> tuple[Path, ...]:
    """Where specs are looked up: ``./search_spaces`` of the working folder, then the built-in ones."""
    return _lookup_dirs("search_spaces")


def _lookup_dirs(name: str) -> tuple[Path, ...]:
    """``./NAME`` of the working folder, then the package's built-in ``melanoma_search.NAME`` (once if the same).

    Run from a source checkout on ``PYTHONPATH`` without installing (as on a lent GPU machine), the built-in folder
    is the checkout's top-level ``NAME/``, which an install maps into the package.
    """
    from importlib.resources import files

    here = Path.cwd() / name
    try:
        builtin = Path(str(files(f"melanoma_search.{name}")))
    except ModuleNotFoundError:
        builtin = Path(__file__).resolve().parents[2] / name
    return (here,) if here.resolve() == builtin.resolve() else (here, builtin)


def load_spec(name_or_path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study spec; every problem is reported at once, each with its key path."""
    path = find_spec(str(name_or_path))
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(format_yaml_error(exc, source=str(path))) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a study spec must be a mapping")
    raw.setdefault("name", path.stem)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=f"study spec {path}", model=StudySpec)) from None
    _validate(spec, source=str(path))
    return spec
