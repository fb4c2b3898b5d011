"""A self-contained ensemble folder, and scoring new images with it.

Layout written by ``python -m melanoma_search.export --ensemble-dir DIR``::

    DIR/manifest.json                 format, versions, blend method and weights, OOF AUCs, SHA-256 of every file
    DIR/trial-00009/config.yaml       the member's resolved training config (preprocessing, size, TTA, head)
    DIR/trial-00009/fold0.safetensors the member's kept weights per fold
    DIR/trial-00009/oof_scores.csv    each fold model's out-of-fold predictions (``fold``, ``pred``): the scale it
                                      is ranked on (:mod:`~melanoma_search.ensemble.scale`)
    DIR/trial-00009/meta.json         its metadata encoders per fold and its class list
    DIR/calibration.csv               the out-of-fold rows: ``oof`` (the final weights' blend, by the fold model that
                                      scored each row), ``score`` (the same rows as the combination of K fold models
                                      scores them: ensemble.scale.DeployedScale) and ``target``: score -> probability
    DIR/training_images.csv           every image the study trained on (name, SHA-256 of the file): an outside
                                      check refuses these

    DIR/manifest.sha256               the manifest's own SHA-256 (the seal: member list, weights, lineage)

Loading checks the manifest against its seal and every file against the manifest's hashes, so a tampered or
mismatched file, the manifest included, is refused with a message naming it; weights are read with safetensors (no
pickle) and loaded strictly into the member's architecture.

An export never deletes what it did not write: the folder is written beside its destination and swapped in only
once complete (validated, when asked), and an existing destination is replaced only if it is an ensemble folder
holding nothing but what its manifest lists (:func:`check_replaceable`); anything else is refused by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

from melanoma_search.augment.policies import build_eval_transform
from melanoma_search.data.dataset import LesionDataset
from melanoma_search.data.images import RESIZES, Resize
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.ensemble.blend import Blend
from melanoma_search.ensemble.calibration import OperatingPoint, fit_probability
from melanoma_search.ensemble.scale import (
    DeployedScale,
    combine_folds,
    fold_percentiles,
    per_fold_blend,
    weighted_mean,
)
from melanoma_search.errors import ConfigError, MelanomaSearchError
from melanoma_search.model.losses import output_layout
from melanoma_search.model.network import build_model
from melanoma_search.train.config import TrainConfig, parse_config
from melanoma_search.train.results import fold_of_weights, weights_file
from melanoma_search.train.steps import BatchInputs, Precision, predict

__all__ = [
    "FORMAT_VERSION",
    "Ensemble",
    "EnsembleError",
    "Member",
    "add_file",
    "check_replaceable",
    "file_digest",
    "load_ensemble",
    "list_files",
    "load_fold_weights",
    "recalibrate",
    "record_in_manifest",
    "staged_ensemble",
    "write_ensemble",
]

FORMAT_VERSION = 3
"""3: a new image's fold models are combined by their probits (:func:`~melanoma_search.ensemble.scale.combine_folds`)
and ``calibration.csv`` describes that combination (the manifest's ``deployed_scale``). 2: ``oof_scores.csv`` holds
each fold model's own out-of-fold predictions, and the manifest is sealed (still read and scored as exported: the
mean of fold models' percentiles, calibrated on one fold model's scale). Nothing shipped predates the seal, so no
older format is read: an edited manifest claiming an unsealed format is refused like any other edit."""
_READABLE_FORMATS = (2, FORMAT_VERSION)
_CALIBRATION = "calibration.csv"
_TRAINING = "training_images.csv"
_MANIFEST = "manifest.json"
_SEAL = "manifest.sha256"


class EnsembleError(MelanomaSearchError):
    """An ensemble folder that is incomplete, tampered with, or does not match its manifest."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Member:
    name: str
    weight: float
    config: TrainConfig
    weight_files: dict[int, Path]
    """Fold -> that fold model's weights."""
    reference: pd.DataFrame
    """Each fold model's out-of-fold predictions (``fold``, ``pred``): what its scores are ranked against."""
    classes: tuple[str, ...]
    encoders: dict[str, dict[str, Any]]
    resize: Resize = "pillow"
    """How its images are resized (``opencv`` for an ensemble exported before the toolkit had one resize: what its
    fold models trained on, so its scores stay as they were)."""


@dataclass
class Ensemble:
    root: Path
    manifest: dict[str, Any]
    members: list[Member]
    calibration: pd.DataFrame | None = None
    """The blend's out-of-fold ``score`` and ``target`` (ensembles exported before it existed have none)."""
    training: pd.DataFrame | None = None
    """``image_name``, ``sha256`` and ``phash`` (a 256-bit perceptual hash in hex; absent in earlier exports) of
    every image the study trained on (none in earlier exports)."""
    deployed_scale: DeployedScale | None = None
    """What combining a new image's fold models removes, which the calibration describes (``None``: not measured)."""

    def trained_on(self, rows: pd.DataFrame) -> list[str]:
        """The names of ``rows`` (``image_name``, ``image_path``) that are training images of this ensemble: by name,
        by file content (a copy under another name) or, where the training list has perceptual hashes, as a
        near-duplicate (a resized or re-encoded copy, :mod:`melanoma_search.data.near_duplicates`); empty when the
        ensemble has no training list."""
        if self.training is None:
            return []
        names = set(self.training["image_name"].astype(str))
        digests = set(self.training["sha256"])
        seen = np.array([str(name) in names or (Path(path).is_file() and file_digest(Path(path)) in digests)
                         for name, path in zip(rows["image_name"], rows["image_path"], strict=True)], dtype=bool)
        if "phash" in self.training and len(rows):
            from melanoma_search.data.near_duplicates import hashes_from_hex, near_duplicates_of, perceptual_hashes

            seen |= near_duplicates_of(perceptual_hashes(rows["image_path"].astype(str).tolist()),
                                       hashes_from_hex(self.training["phash"]))
        return rows["image_name"].astype(str)[seen].tolist()

    def score(self, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
              batch_size: int = 32) -> pd.DataFrame:
        """``image_name``, ``score`` (the blend on one fold model's scale, for ranking: the submission's ``target``)
        and ``probability`` (calibrated P(melanoma); empty for an ensemble exported before calibration)."""
        folds = self.fold_scores(rows, device=device, allow_missing_meta=allow_missing_meta, batch_size=batch_size)
        score = self.deployed(folds)
        probability = self.probability(score) if self.calibration is not None else np.full(len(score), np.nan)
        return pd.DataFrame({"image_name": rows["image_name"].to_numpy(), "score": score,
                             "probability": probability})

    def fold_scores(self, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
                    batch_size: int = 32) -> dict[str, dict[int, np.ndarray]]:
        """Member -> fold -> that fold model's percentile of each row among its own out-of-fold predictions."""
        rows = add_derived_columns(rows)
        ranked = {}
        for member in self.members:
            if member.config.model.meta and not rows.attrs.get("has_meta", False) and not allow_missing_meta:
                raise EnsembleError(
                    f"member {member.name} uses patient metadata: give --images a CSV with image_name, sex, "
                    "age_approx, anatom_site_general_challenge (and patient_id), or pass --allow-missing-meta to "
                    "score with every metadata field treated as missing")
            raw = score_member(member, rows, device=device, batch_size=batch_size)
            ranked[member.name] = {fold: fold_percentiles({fold: scores}, member.reference)
                                   for fold, scores in raw.items()}
        return ranked

    def member_scores(self, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
                      batch_size: int = 32) -> dict[str, np.ndarray]:
        """Each member's score per row: the mean over its fold models of each one's percentile among its own
        out-of-fold predictions (:func:`~melanoma_search.ensemble.scale.fold_percentiles`)."""
        by_fold = self.fold_scores(rows, device=device, allow_missing_meta=allow_missing_meta, batch_size=batch_size)
        return {name: np.mean(list(folds.values()), axis=0) for name, folds in by_fold.items()}

    def blend(self, ranked: dict[str, np.ndarray]) -> np.ndarray:
        """The members' weighted mean of :meth:`member_scores`: the deployed score (a mean of K fold models)."""
        return weighted_mean(ranked, self.weights)

    @property
    def weights(self) -> dict[str, float]:
        return {m.name: m.weight for m in self.members}

    def deployed(self, folds: dict[str, dict[int, np.ndarray]]) -> np.ndarray:
        """The score ``predict`` returns from :meth:`fold_scores`: per fold the members' blend, then the folds
        combined (:func:`~melanoma_search.ensemble.scale.combine_folds`); a format-2 folder, or members whose fold
        models do not correspond, blend each member's mean percentile as before."""
        per_fold = per_fold_blend(folds, self.weights) if self.manifest.get("format", 2) >= 3 else None
        if per_fold is None:
            return self.blend({name: np.mean(list(by_fold.values()), axis=0) for name, by_fold in folds.items()})
        return combine_folds(per_fold)

    @property
    def seal(self) -> str:
        """The SHA-256 of its manifest (``manifest.sha256``): names this very export, so a folder exported again
        in the same place is told apart from the one it replaced."""
        return (self.root / _SEAL).read_text().strip()

    @property
    def study(self) -> str:
        """The study the ensemble was exported from (names its default output folders)."""
        return str(self.manifest.get("study") or self.root.name)

    @property
    def round(self) -> int:
        """The noisy-student round that trained it (0: no pseudo-labels; its students are round + 1)."""
        return int(self.manifest.get("lineage", {}).get("round", 0))

    def probability(self, blended: np.ndarray) -> np.ndarray:
        """P(melanoma) for blended scores: isotonic regression of the labels on the blend's out-of-fold scores.

        The blend is a mean of percentiles, which ranks well but is no probability (a score of 0.9 is "above 90 %
        of the training images", not "90 % melanoma"). A pseudo-label needs the probability; the fit is monotone,
        so it never reorders images, and it reads the training set's melanoma rate, which the caller should know
        when the images to label come from a collection with another rate.
        """
        if self.calibration is None:
            raise EnsembleError(f"{self.root} has no calibration.csv (exported by an earlier version): export the "
                                "study again to get calibrated probabilities")
        fit = fit_probability(self.calibration["score"].to_numpy(float), self.calibration["target"].to_numpy(float))
        return np.asarray(fit.predict(np.asarray(blended, dtype=float)))

    @property
    def trained_prevalence(self) -> float | None:
        """The melanoma rate of the out-of-fold rows the probability was calibrated on (``None``: no calibration)."""
        return None if self.calibration is None else float(self.calibration["target"].mean())

    @property
    def prevalence(self) -> float | None:
        """The melanoma rate where the ensemble is used, as exported with ``--prevalence`` (``None``: not given;
        the probability then carries :attr:`trained_prevalence`)."""
        recorded = self.manifest.get("prevalence") or {}
        return None if recorded.get("deployed") is None else float(recorded["deployed"])

    def operating_points(self) -> dict[str, OperatingPoint]:
        """The thresholds the export chose on the out-of-fold blend (``sens90``, ``sens95``, ``youden``)."""
        recorded = self.manifest.get("operating_points") or {}
        return {name: OperatingPoint.from_dict(name, values) for name, values in recorded.items()}

    def meta_members(self) -> list[str]:
        """Names of the members whose models read patient metadata."""
        return [m.name for m in self.members if m.config.model.meta]


def score_member(member: Member, rows: pd.DataFrame, *, device: torch.device, batch_size: int = 32
                 ) -> dict[int, np.ndarray]:
    """Fold -> that fold model's raw P(melanoma) per row, with the member's TTA (as the trial predicted)."""
    config = member.config
    layout = output_layout(config.loss, target=config.target, classes=member.classes)
    transform = build_eval_transform(config.augment)
    precision = Precision.resolve(config.amp, device, model=config.model.name, image_size=config.image_size)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    outputs = {}
    for fold, path in sorted(member.weight_files.items()):
        encoder = MetaEncoder.from_dict(member.encoders[str(fold)]) if config.model.meta else None
        model = build_model(config.model, n_outputs=layout.n_outputs, n_meta=encoder.n_features if encoder else 0,
                            load_weights=False)
        model.load_state_dict(load_fold_weights(path, model), strict=True)
        model.to(device).to(memory_format=memory_format)
        dataset = LesionDataset(None, rows=np.arange(len(rows)), targets=np.zeros(len(rows), np.float32),
                                meta=encoder.transform(rows) if encoder else None, transform=transform,
                                paths=rows["image_path"].tolist(), size=config.image_size, resize=member.resize)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        inputs = BatchInputs(device, model.normalisation, channels_last=config.channels_last)
        outputs[fold], _ = predict(model, loader, inputs=inputs, precision=precision,
                                   melanoma_index=layout.melanoma_index, scale=layout.scale, tta=config.tta)
    return outputs


def load_fold_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A fold model's weights (safetensors: no pickle), checked against the member's architecture."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise EnsembleError(f"cannot read weights {path}: {exc}") from None
    expected = set(model.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise EnsembleError(f"weights {path} do not match the member's architecture "
                            f"(missing {missing}, unexpected {extra})")
    return state


def _verified_manifest(root: Path) -> dict[str, Any]:
    """The manifest, checked against its seal, with every file it lists checked against its digest."""
    manifest_path = root / _MANIFEST
    if not manifest_path.is_file():
        raise EnsembleError(f"not an ensemble folder (no {_MANIFEST}): {root}")
    seal = root / _SEAL
    if not seal.is_file():
        raise EnsembleError(f"ensemble file missing: {seal}")
    if seal.read_text().strip() != file_digest(manifest_path):  # before anything in it is believed
        raise EnsembleError(f"ensemble file changed since export (SHA-256 mismatch with {_SEAL}): {manifest_path}")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise EnsembleError(f"{manifest_path} is not valid JSON: {exc}") from None
    if manifest.get("format") not in _READABLE_FORMATS:
        raise EnsembleError(f"{manifest_path}: unsupported ensemble format {manifest.get('format')!r}")
    for relative, digest in manifest.get("files", {}).items():
        path = root / relative
        if not path.is_file():
            raise EnsembleError(f"ensemble file missing: {path}")
        if file_digest(path) != digest:
            raise EnsembleError(f"ensemble file changed since export (SHA-256 mismatch): {path}")
    return manifest


def _resize_of(manifest: dict[str, Any]) -> Resize:
    """The resize its images are read with: as recorded, else OpenCV's (every export before it was recorded)."""
    resize = manifest.get("resize", "opencv")
    if resize not in RESIZES:
        raise EnsembleError(f"unknown image resize {resize!r} in the manifest; this version knows {', '.join(RESIZES)}")
    return resize


def load_ensemble(root: str | os.PathLike[str]) -> Ensemble:
    """Read and verify an ensemble folder; any missing, changed or unreadable file is an :class:`EnsembleError`."""
    root = Path(root).expanduser()
    manifest = _verified_manifest(root)
    manifest_path = root / _MANIFEST
    members = []
    for entry in manifest["members"]:
        folder = root / entry["name"]
        try:
            config = parse_config(yaml.safe_load((folder / "config.yaml").read_text()), source=f"{folder}/config.yaml")
        except ConfigError as exc:
            raise EnsembleError(str(exc)) from None
        meta = json.loads((folder / "meta.json").read_text())
        reference = pd.read_csv(folder / "oof_scores.csv")
        members.append(Member(name=entry["name"], weight=float(entry["weight"]), config=config,
                              weight_files={fold_of_weights(f): root / f for f in entry["weights"]},
                              reference=reference,
                              classes=tuple(meta["classes"]), encoders=meta["meta_encoders"],
                              resize=_resize_of(manifest)))
    if not members:
        raise EnsembleError(f"{manifest_path} lists no members")
    listed = manifest.get("files", {})
    calibration = pd.read_csv(root / _CALIBRATION) if _CALIBRATION in listed else None
    training = (pd.read_csv(root / _TRAINING, dtype={"image_name": str, "phash": str}, keep_default_na=False)
                if _TRAINING in listed else None)
    recorded = manifest.get("deployed_scale")
    return Ensemble(root=root, manifest=manifest, members=members, calibration=calibration, training=training,
                    deployed_scale=DeployedScale.from_dict(recorded) if isinstance(recorded, dict) else None)


def _calibration_table(result: Blend) -> str:
    return pd.DataFrame({"oof": result.shipped, "score": result.calibration_scores,
                         "target": result.target}).to_csv(index=False)


def recalibrate(root: Path, result: Blend, manifest_entries: dict[str, Any]) -> None:
    """Replace the folder's calibration with ``result``'s (its deployed scale measured after the folder was written,
    on the outside images of ``--validate``) and the manifest entries that depend on it; sealed again."""
    add_file(root, _CALIBRATION, _calibration_table(result))
    for key, value in {"deployed_scale": None if result.deployed_scale is None else result.deployed_scale.to_dict(),
                       **manifest_entries}.items():
        record_in_manifest(root, key, value)


def record_in_manifest(root: Path, key: str, value: Any) -> None:
    """Add ``key`` to the ensemble's manifest (e.g. its outside check) and seal it again; the file hashes are left
    as they are."""
    manifest = json.loads((root / _MANIFEST).read_text())
    manifest[key] = value
    _write_sealed(root, manifest)


def list_files(root: Path, names: list[str]) -> None:
    """List files already written into the ensemble folder (e.g. a stage-two model's) with their digests in the
    manifest, and seal it again."""
    manifest = json.loads((root / _MANIFEST).read_text())
    manifest["files"].update({name: file_digest(root / name) for name in names})
    _write_sealed(root, manifest)


def add_file(root: Path, name: str, text: str) -> Path:
    """Write ``name`` into the ensemble folder, list it with its digest in the manifest and seal it again."""
    path = root / name
    path.write_text(text, encoding="utf-8")
    manifest = json.loads((root / _MANIFEST).read_text())
    manifest["files"][name] = file_digest(path)
    _write_sealed(root, manifest)
    return path


def _write_sealed(root: Path, manifest: dict[str, Any]) -> None:
    """The manifest and its seal, each written whole (a crash leaves the old pair or the new one, never half)."""
    body = json.dumps(manifest, indent=1).encode()
    for name, data in ((_MANIFEST, body), (_SEAL, (hashlib.sha256(body).hexdigest() + "\n").encode())):
        partial = root / f".{name}.partial"
        partial.write_bytes(data)
        os.replace(partial, root / name)


def check_replaceable(out: Path) -> None:
    """Refuse ``out`` as an ensemble destination unless it is absent, an empty folder, or an ensemble folder that
    holds nothing but what its manifest lists (what this tool wrote there and may replace)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise EnsembleError(f"--ensemble-dir {out}: is a file, not an ensemble folder; refusing to replace it")
    if not any(out.iterdir()):
        return
    try:
        listed = set(json.loads((out / _MANIFEST).read_text()).get("files", {}))
    except (OSError, ValueError, AttributeError):
        raise EnsembleError(f"--ensemble-dir {out}: exists and is not an ensemble folder (no readable {_MANIFEST}); "
                            "refusing to replace it: give a new folder, or remove it yourself") from None
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {_MANIFEST, _SEAL}
    if extra := sorted(present - listed):
        raise EnsembleError(f"--ensemble-dir {out}: holds files its ensemble does not list ({', '.join(extra[:3])}"
                            f"{', ...' if len(extra) > 3 else ''}); refusing to replace it")


@contextlib.contextmanager
def staged_ensemble(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out`` to write the ensemble into; on success it takes ``out``'s place (the old
    ensemble, if any, removed only then), on any failure it is removed and ``out`` is left as it was."""
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


def _write_training_list(out: Path, training: pd.DataFrame, *, cache_dir: str | None) -> None:
    """Every training image's name, SHA-256 and perceptual hash: what ``--validate`` and ``--calibrate-on`` refuse
    (a copy, renamed or resized and re-encoded, of an image the study trained on)."""
    from melanoma_search.data.near_duplicates import hashes_to_hex, perceptual_hashes

    paths = [str(p) if p else "" for p in training["image_path"]]
    pd.DataFrame({"image_name": training["image_name"].astype(str).to_numpy(),
                  "sha256": [file_digest(Path(p)) if p else "" for p in paths],
                  "phash": hashes_to_hex(perceptual_hashes(paths, cache_dir=cache_dir))}).drop_duplicates(
        "image_name").to_csv(out / _TRAINING, index=False)


def write_ensemble(result: Blend, *, out: Path, study_name: str, method: str,
                   lineage: dict[str, Any] | None = None, training: pd.DataFrame | None = None,
                   extra: dict[str, Any] | None = None, cache_dir: str | None = None) -> Path:
    """The self-contained ensemble folder (see :mod:`melanoma_search.ensemble.folder`) in ``out``, which must be
    absent or empty (:func:`staged_ensemble` gives such a folder and swaps it into place).

    ``lineage``: for a noisy-student study, its round and teacher (``pseudo`` labels the next round from it).
    ``training``: the study's training images (``image_name``, ``image_path``), listed with their digests so an
    outside check can refuse them (perceptual hashes cached in ``cache_dir``, the study's image cache, so an export
    again reads no image for them). ``extra``: more manifest entries (operating points, calibration, model card
    facts).
    """
    import optuna
    import timm

    from melanoma_search import __version__

    if out.exists() and any(out.iterdir()):
        raise EnsembleError(f"{out}: write an ensemble into an empty folder (see staged_ensemble)")
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for member in result.members:
        folder = out / member.name
        folder.mkdir()
        shutil.copy2(member.folder / "config.yaml", folder / "config.yaml")
        (folder / "meta.json").write_text(json.dumps({"classes": member.classes,
                                                      "meta_encoders": member.encoders}, indent=1))
        # what each fold model's scores are ranked against: its own out-of-fold predictions
        member.reference.sort_values(["fold", "pred"]).to_csv(folder / "oof_scores.csv", index=False)
        if not member.weight_files:
            raise EnsembleError(f"{member.name} has no kept weights to put in the ensemble")
        names = []
        for fold, path in sorted(member.weight_files.items()):
            shutil.copy2(path, folder / weights_file(fold))
            names.append(f"{member.name}/{weights_file(fold)}")
        entries.append({"name": member.name, "trial": member.number, "weight": result.weights[member.name],
                        "value": member.value, "cv_auc": member.cv_auc, "weights": names})
    (out / _CALIBRATION).write_text(_calibration_table(result))
    if training is not None:
        _write_training_list(out, training, cache_dir=cache_dir)
    files = {str(p.relative_to(out)): file_digest(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT_VERSION, "study": study_name, "method": method, "blend_oof_auc": result.auc,
        "blend_oof_auc_in_sample": result.in_sample_auc,
        "best_member_oof_auc": result.best_member_auc, "members": entries, "files": files,
        "blend_oof_pauc": result.pauc, "lineage": lineage or {"round": 0},
        "best_member_oof_auc_cross_half": result.best_member_cross_half_auc,
        "deployed_scale": None if result.deployed_scale is None else result.deployed_scale.to_dict(),
        "resize": "pillow",
        **(extra or {}),
        "versions": {"melanoma_search": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "optuna": optuna.__version__, "python": sys.version.split()[0]},
    }
    _write_sealed(out, manifest)
    return out
