"""A self-contained ensemble folder, and scoring new images with it.

Layout written by ``python -m melanoma_search.export --ensemble-dir DIR``::

    DIR/manifest.json                 format, versions, blend method and weights, OOF AUCs, SHA-256 of every file
    DIR/trial-00009/config.yaml       the member's resolved training config (preprocessing, size, TTA, head)
    DIR/trial-00009/fold0.safetensors the member's kept weights per fold
    DIR/trial-00009/oof_scores.csv    each fold model's out-of-fold predictions (``fold``, ``pred``): the scale it
                                      is ranked on (:mod:`~melanoma_search.ensemble.scale`)
    DIR/trial-00009/meta.json         its metadata encoders per fold and its class list
    DIR/calibration.csv               the blend's out-of-fold scores and their labels (score -> probability)

Loading checks every file against the manifest's hashes, so a tampered or mismatched file is refused with a message
naming it; weights are read with safetensors (no pickle) and loaded strictly into the member's architecture.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
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
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.ensemble.blend import Blend
from melanoma_search.ensemble.scale import fold_percentiles, weighted_mean
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
    "file_digest",
    "load_ensemble",
    "record_in_manifest",
    "write_ensemble",
]

FORMAT_VERSION = 2
"""2: ``oof_scores.csv`` holds each fold model's own out-of-fold predictions. Format 1 folders (one pooled
reference for every fold model) still load and score against their pooled reference."""
_READABLE_FORMATS = (1, 2)
_CALIBRATION = "calibration.csv"


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


@dataclass
class Ensemble:
    root: Path
    manifest: dict[str, Any]
    members: list[Member]
    calibration: pd.DataFrame | None = None
    """The blend's out-of-fold ``score`` and ``target`` (ensembles exported before it existed have none)."""

    def score(self, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
              batch_size: int = 32) -> pd.DataFrame:
        """Blended P(melanoma)-like scores in [0, 1] (``image_name,target``) for ``rows`` (image paths + metadata)."""
        ranked = self.member_scores(rows, device=device, allow_missing_meta=allow_missing_meta, batch_size=batch_size)
        return pd.DataFrame({"image_name": rows["image_name"].to_numpy(), "target": self.blend(ranked)})

    def member_scores(self, rows: pd.DataFrame, *, device: torch.device, allow_missing_meta: bool = False,
                      batch_size: int = 32) -> dict[str, np.ndarray]:
        """Each member's score per row: the mean over its fold models of each one's percentile among its own
        out-of-fold predictions (:func:`~melanoma_search.ensemble.scale.fold_percentiles`)."""
        rows = add_derived_columns(rows)
        ranked = {}
        for member in self.members:
            if member.config.model.meta and not rows.attrs.get("has_meta", False) and not allow_missing_meta:
                raise EnsembleError(
                    f"member {member.name} uses patient metadata: give --images a CSV with image_name, sex, "
                    "age_approx, anatom_site_general_challenge (and patient_id), or pass --allow-missing-meta to "
                    "score with every metadata field treated as missing")
            raw = score_member(member, rows, device=device, batch_size=batch_size)
            ranked[member.name] = fold_percentiles(raw, member.reference)
        return ranked

    def blend(self, ranked: dict[str, np.ndarray]) -> np.ndarray:
        """The members' weighted mean of :meth:`member_scores`."""
        return weighted_mean(ranked, {m.name: m.weight for m in self.members})

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
        from sklearn.isotonic import IsotonicRegression

        if self.calibration is None:
            raise EnsembleError(f"{self.root} has no calibration.csv (exported by an earlier version): export the "
                                "study again to get calibrated probabilities")
        fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        fit.fit(self.calibration["score"].to_numpy(float), self.calibration["target"].to_numpy(float))
        return np.asarray(fit.predict(np.asarray(blended, dtype=float)))

    def meta_members(self) -> list[str]:
        """Names of the members whose models read patient metadata."""
        return [m.name for m in self.members if m.config.model.meta]


def score_member(member: Member, rows: pd.DataFrame, *, device: torch.device, batch_size: int = 32
                 ) -> dict[int, np.ndarray]:
    """Fold -> that fold model's raw P(melanoma) per row, with the member's TTA (as the trial predicted)."""
    config = member.config
    layout = output_layout(config.loss, target=config.target, classes=member.classes)
    transform = build_eval_transform(config.augment)
    precision = Precision.resolve(config.amp, device)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    outputs = {}
    for fold, path in sorted(member.weight_files.items()):
        encoder = MetaEncoder.from_dict(member.encoders[str(fold)]) if config.model.meta else None
        model = build_model(config.model, n_outputs=layout.n_outputs, n_meta=encoder.n_features if encoder else 0,
                            load_weights=False)
        model.load_state_dict(_load_weights(path, model), strict=True)
        model.to(device).to(memory_format=memory_format)
        dataset = LesionDataset(None, rows=np.arange(len(rows)), targets=np.zeros(len(rows), np.float32),
                                meta=encoder.transform(rows) if encoder else None, transform=transform,
                                paths=rows["image_path"].tolist(), size=config.image_size)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        inputs = BatchInputs(device, model.normalisation, channels_last=config.channels_last)
        outputs[fold], _ = predict(model, loader, inputs=inputs, precision=precision,
                                   melanoma_index=layout.melanoma_index, scale=layout.scale, tta=config.tta)
    return outputs


def _load_weights(path: Path, model: torch.nn.Module) -> dict[str, torch.Tensor]:
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


def load_ensemble(root: str | os.PathLike[str]) -> Ensemble:
    """Read and verify an ensemble folder; any missing, changed or unreadable file is an :class:`EnsembleError`."""
    root = Path(root).expanduser()
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise EnsembleError(f"not an ensemble folder (no manifest.json): {root}")
    try:
        manifest = json.loads(manifest_path.read_text())
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
                              classes=tuple(meta["classes"]), encoders=meta["meta_encoders"]))
    if not members:
        raise EnsembleError(f"{manifest_path} lists no members")
    calibration = pd.read_csv(root / _CALIBRATION) if _CALIBRATION in manifest.get("files", {}) else None
    return Ensemble(root=root, manifest=manifest, members=members, calibration=calibration)


def record_in_manifest(root: Path, key: str, value: Any) -> None:
    """Add ``key`` to the ensemble's manifest (e.g. its outside check); the file hashes are left as they are."""
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest[key] = value
    path.write_text(json.dumps(manifest, indent=1))


def write_ensemble(result: Blend, *, out: Path, study_name: str, method: str,
                   lineage: dict[str, Any] | None = None) -> Path:
    """The self-contained ensemble folder (see :mod:`melanoma_search.ensemble.folder`).

    ``lineage``: for a noisy-student study, its round and teacher (``pseudo`` labels the next round from it).
    """
    import optuna
    import timm

    from melanoma_search import __version__

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
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
    pd.DataFrame({"score": result.oof_blend, "target": result.target}).to_csv(out / _CALIBRATION, index=False)
    files = {str(p.relative_to(out)): file_digest(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT_VERSION, "study": study_name, "method": method, "blend_oof_auc": result.auc,
        "blend_oof_auc_in_sample": result.in_sample_auc,
        "best_member_oof_auc": result.best_member_auc, "members": entries, "files": files,
        "lineage": lineage or {"round": 0},
        "versions": {"melanoma_search": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "optuna": optuna.__version__, "python": sys.version.split()[0]},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out
