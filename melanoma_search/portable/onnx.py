"""A portable copy of an exported ensemble: each fold model as ONNX, and a scorer needing only onnxruntime, numpy and
Pillow (:mod:`.scorer`, copied as ``score.py``), for scoring where this toolkit and PyTorch are not installed.

Each ONNX graph holds everything between decoded pixels and a probability: the member's evaluation transform
(shades-of-grey colour constancy, for a member trained with it), the normalisation, its test-time-augmentation
views, the network and the melanoma read-out (sigmoid, or the melanoma column of a softmax).
``ensemble.json`` holds the rest of the blend: each fold model's sorted out-of-fold predictions (its scale), the
members' weights and image sizes, and the isotonic map from score to probability. ``manifest.json`` lists every
file's SHA-256 and ``manifest.sha256`` seals it; ``score.py`` checks both before it scores. Members that read patient
metadata are refused: their metadata encoders live in Python.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from melanoma_search.augment.device import DeviceConstants, prepare_batch, shades_of_grey
from melanoma_search.ensemble.calibration import fit_probability
from melanoma_search.ensemble.folder import Ensemble, EnsembleError, Member, load_fold_weights
from melanoma_search.ensemble.scale import EDGE
from melanoma_search.model.losses import output_layout
from melanoma_search.model.network import build_model
from melanoma_search.train.steps import melanoma_probability
from melanoma_search.train.tta import dihedral_views

__all__ = ["write_portable"]


class _FoldGraph(nn.Module):
    """uint8 pixels (N, 3, S, S) -> P(melanoma) (N,): the member's evaluation transform (colour constancy, when it
    trained with it), normalisation, TTA views, network, read-out."""

    def __init__(self, model: nn.Module, *, constants: DeviceConstants, tta: int, melanoma_index: int,
                 scale: float, color_constancy: bool) -> None:
        super().__init__()
        self.model, self.constants, self.tta = model, constants, tta
        self.melanoma_index, self.scale, self.color_constancy = melanoma_index, scale, color_constancy

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.color_constancy:
            pixels = shades_of_grey(pixels)
        images = prepare_batch(pixels, constants=self.constants)
        views = torch.cat(list(dihedral_views(images, self.tta)))
        probs = melanoma_probability(self.model(views, None), melanoma_index=self.melanoma_index, scale=self.scale)
        return probs.view(self.tta, -1).mean(0)


def _fold_graphs(member: Member, staging: Path, *, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each of the member's fold models as ONNX in ``staging``, with the out-of-fold scale it is ranked on."""
    config = member.config
    layout = output_layout(config.loss, target=config.target, classes=member.classes)
    folds = []
    for fold, path in sorted(member.weight_files.items()):
        model = build_model(config.model, n_outputs=layout.n_outputs, n_meta=0, load_weights=False)
        model.load_state_dict(load_fold_weights(path, model), strict=True)
        graph = _FoldGraph(model.eval(), constants=DeviceConstants(torch.device("cpu"), mean=model.normalisation.mean,
                                                                    std=model.normalisation.std),
                           tta=config.tta, melanoma_index=layout.melanoma_index, scale=layout.scale,
                           color_constancy=config.augment.color_constancy).eval()
        name = f"{member.name}-fold{fold}.onnx"
        dummy = torch.zeros(2, 3, config.image_size, config.image_size, dtype=torch.uint8)
        torch.onnx.export(graph, (dummy,), str(staging / name), input_names=["pixels"], output_names=["probability"],
                          dynamic_axes={"pixels": {0: "n"}, "probability": {0: "n"}}, opset_version=17, dynamo=False)
        reference = member.reference
        own = reference.loc[reference["fold"] == fold, "pred"] if "fold" in reference else reference["pred"]
        folds.append({"fold": fold, "file": name, "reference": np.sort(own.to_numpy(np.float64)).tolist()})
        log(f"portable: {name} ({config.model.name} at {config.image_size} px, {config.tta} TTA view(s))")
    return folds


def _seal(folder: Path) -> None:
    """``manifest.json`` (the SHA-256 of every file) and ``manifest.sha256`` (the manifest's own): ``score.py``
    refuses a folder whose files no longer match (see docs/export.md for what a seal does and does not protect)."""
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    body = json.dumps({"format": 1, "files": files}, indent=1).encode()
    (folder / "manifest.json").write_bytes(body)
    (folder / "manifest.sha256").write_text(hashlib.sha256(body).hexdigest() + "\n")


def write_portable(ensemble: Ensemble, out: Path, *, log: Callable[[str], None] = print) -> Path:
    """Write ``out/`` (one ``.onnx`` per fold model, ``ensemble.json``, ``score.py``, sealed); ``out`` must not
    exist."""
    if meta := ensemble.meta_members():
        raise EnsembleError(f"members {', '.join(meta)} read patient metadata, which the portable scorer does not "
                            "encode: export a study without metadata (model.meta: false) to make it portable")
    if ensemble.calibration is None:
        raise EnsembleError(f"{ensemble.root} has no calibration.csv (an earlier export): export the study again")
    if out.exists():
        raise EnsembleError(f"--out {out}: exists; give a new folder (nothing is overwritten)")
    if any(m.resize == "opencv" for m in ensemble.members):
        log(f"note: {ensemble.root} was exported before the toolkit resized with Pillow: its fold models trained on "
            "OpenCV-resized pixels, which score.py (Pillow only) cannot reproduce; images stored at the members' "
            "size score alike, others within about a grey level (export the study again to remove the difference)")
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    members = [{"name": m.name, "weight": m.weight, "image_size": m.config.image_size,
                "folds": _fold_graphs(m, staging, log=log)} for m in ensemble.members]
    isotonic = fit_probability(ensemble.calibration["score"].to_numpy(float),
                               ensemble.calibration["target"].to_numpy(float))
    shared = len({tuple(sorted(m.weight_files)) for m in ensemble.members}) == 1
    spec = {"study": ensemble.study, "members": members, "edge": EDGE,
            "combine": "probit" if shared and ensemble.manifest.get("format", 2) >= 3 else "mean",
            "calibration": {"score": isotonic.X_thresholds_.tolist(), "probability": isotonic.y_thresholds_.tolist()},
            "operating_points": ensemble.manifest.get("operating_points", {})}
    (staging / "ensemble.json").write_text(json.dumps(spec))
    shutil.copy2(Path(__file__).with_name("scorer.py"), staging / "score.py")
    _seal(staging)
    staging.rename(out)
    return out
