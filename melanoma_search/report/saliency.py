"""Where the members looked: Grad-CAM overlays (the ``grad-cam`` package) for a few telling out-of-fold images.

For the images the blend scored highest, the melanomas it scored lowest and the benign lesions it scored highest,
each member's fold model that scored the image out of fold is asked which regions raised its melanoma output, at its
last convolution. A map on the lesion is what one hopes for; one on a ruler, hair, ink, a vignette or the image
border says the model learned the collection's habits, which will not hold on images from elsewhere.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from melanoma_search.augment.device import DeviceConstants, prepare_batch
from melanoma_search.augment.policies import build_eval_transform
from melanoma_search.data.images import Resize, decode_image
from melanoma_search.data.meta import MetaEncoder, add_derived_columns
from melanoma_search.ensemble.folder import Ensemble, load_fold_weights
from melanoma_search.model.losses import output_layout
from melanoma_search.model.network import build_model
from melanoma_search.train.config import TrainConfig

__all__ = ["Saliency", "member_input", "saliency_maps"]


@dataclass
class Saliency:
    """One image: why it was chosen, its label and blend score, and each member's overlay (PNG bytes)."""

    image_name: str
    why: str
    target: float
    score: float
    overlays: dict[str, bytes] = field(default_factory=dict)

    def html(self) -> str:
        images = "".join(
            f"<figure style='display:inline-block;margin:4px'><img width='160' src='data:image/png;base64,"
            f"{base64.b64encode(png).decode()}'><figcaption style='font-size:11px'>{name}</figcaption></figure>"
            for name, png in self.overlays.items())
        label = "melanoma" if self.target > 0.5 else "benign"
        return (f"<div><p><b>{self.image_name}</b>: {self.why} ({label}, blend score {self.score:.3f})</p>"
                f"{images}</div>")


class _ImageOnly(nn.Module):
    """The member's network as a function of the (normalised) image alone, the image's own metadata held fixed:
    what Grad-CAM differentiates."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.meta: torch.Tensor | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images, self.meta)


def _last_conv(model: nn.Module) -> nn.Module:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolution to take a class activation map from")
    return convs[-1]


def member_input(config: TrainConfig, path: str, *, resize: Resize = "pillow") -> np.ndarray:
    """The image as the member's model sees it at prediction: decoded at its size (with the member's ``resize``),
    then its evaluation transform (colour constancy, for a member trained with it). Grad-CAM explains this input, and
    shows it under the map."""
    pixels = decode_image(path, config.image_size, resize=resize)
    transform = build_eval_transform(config.augment)
    return np.ascontiguousarray(transform(image=pixels)["image"]) if transform.transforms else pixels


def _choose(names: list[str], target: np.ndarray, score: np.ndarray, *, each: int) -> list[tuple[int, str]]:
    order = np.argsort(-score)
    top = [(int(i), "among the highest scored") for i in order[:each]]
    melanomas = [int(i) for i in np.argsort(score) if target[i] > 0.5][:each]
    benign = [int(i) for i in order if target[i] < 0.5][:each]
    chosen = top + [(i, "a melanoma scored low") for i in melanomas] + [(i, "a benign lesion scored high")
                                                                      for i in benign]
    unique: dict[int, str] = {}
    for index, why in chosen:
        unique.setdefault(index, why)  # an image chosen twice is shown once, for its first reason
    return list(unique.items())


def saliency_maps(ensemble: Ensemble, rows: pd.DataFrame, target: np.ndarray, score: np.ndarray, *,
                  folds: dict[str, int], each: int = 2) -> list[Saliency]:
    """Overlays for ``each`` images of each kind among ``rows`` (out-of-fold images with ``image_path``), in the
    order of ``target`` and ``score``; ``folds``: image name -> the fold it was out of."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    rows = add_derived_columns(rows.reset_index(drop=True))
    names = rows["image_name"].astype(str).tolist()
    picks = [Saliency(image_name=names[i], why=why, target=float(target[i]), score=float(score[i]))
             for i, why in _choose(names, np.asarray(target), np.asarray(score), each=each)]
    paths = dict(zip(names, rows["image_path"], strict=True))
    for member in ensemble.members:
        config = member.config
        layout = output_layout(config.loss, target=config.target, classes=member.classes)
        for fold, path in sorted(member.weight_files.items()):
            wanted = [p for p in picks if folds.get(p.image_name) == fold]
            if not wanted:
                continue
            encoder = MetaEncoder.from_dict(member.encoders[str(fold)]) if config.model.meta else None
            model = build_model(config.model, n_outputs=layout.n_outputs,
                                n_meta=encoder.n_features if encoder else 0, load_weights=False)
            model.load_state_dict(load_fold_weights(path, model), strict=True)
            model.eval()
            constants = DeviceConstants(torch.device("cpu"), mean=model.normalisation.mean,
                                        std=model.normalisation.std)
            network = _ImageOnly(model)
            with GradCAM(model=network, target_layers=[_last_conv(model.backbone)]) as cam:
                for pick in wanted:
                    row = rows[rows["image_name"].astype(str) == pick.image_name]
                    network.meta = (torch.from_numpy(encoder.transform(row)).float() if encoder is not None
                                    else None)
                    pixels = member_input(config, paths[pick.image_name], resize=member.resize)
                    batch = prepare_batch(torch.from_numpy(pixels).permute(2, 0, 1)[None], constants=constants)
                    mask = cam(input_tensor=batch, targets=[ClassifierOutputTarget(layout.melanoma_index)])[0]
                    overlay = show_cam_on_image(pixels.astype(np.float32) / 255.0, mask, use_rgb=True)
                    buffer = io.BytesIO()
                    Image.fromarray(overlay).save(buffer, format="PNG")
                    pick.overlays[member.name] = buffer.getvalue()
    return [p for p in picks if p.overlays]
