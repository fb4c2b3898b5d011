"""A deterministic synthetic dermoscopy set: the embedded default, so the main job runs with no download.

Each image is a skin-toned background with one pigmented lesion. The label is carried the way the ABCD rule of
dermoscopy describes melanoma: **A**symmetry (a lopsided outline), **B**order irregularity (a ragged edge),
**C**olour variety (black, blue-grey and red-brown blotches beside the brown) and a larger **D**iameter. Each benign
lesion gets a little of each and each melanoma a lot, drawn from overlapping distributions so the task is learnable
but not trivial. Hair strands, uneven lighting and noise are added to both classes, and the metadata carries a weak
signal (melanoma patients are older on average), as in the real data.

Patients have several lesions (about three each), and each lesion two measurements for a stage-two study, in the
spirit of ISIC 2024's per-lesion columns: ``diameter_mm`` and ``colour_variance``. Each patient has a baseline of
their own, and a melanoma stands out against its patient's other lesions (the "ugly duckling" sign) more than
against all lesions: the patient-context features have something to find. These are made-up numbers, documented as
such; they are drawn from a generator of their own, so the images and the other columns are as before.

Written in the ``labels`` layout (``labels.csv`` + ``images/``, and ``test.csv`` for a held-out test split), so it
goes through exactly the same readers, folds and cache as a real dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from melanoma_search.data.layouts import SITES

__all__ = ["ensure_synthetic_dataset", "render_lesion", "write_synthetic_dataset"]

_SKIN_TONES = np.array([[224, 182, 160], [206, 160, 130], [180, 130, 100], [235, 200, 180], [150, 105, 80]], float)


def render_lesion(rng: np.random.Generator, *, malignant: bool, size: int = 128) -> np.ndarray:
    """Draw one ``(size, size, 3)`` RGB lesion image; ``rng`` fixes every random choice."""
    severity = float(np.clip(rng.normal(0.75 if malignant else 0.25, 0.18), 0.0, 1.0))
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 8, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 1.0 + 0.12 * np.sin(2 * np.pi * (xx * rng.uniform(0.3, 1) + yy * rng.uniform(0.3, 1)) + rng.uniform(0, 6))
    image = np.clip(skin[None, None, :] * light[..., None] + rng.normal(0, 4, (size, size, 3)), 0, 255)

    # Outline: a radius modulated by low harmonics (asymmetry) and high harmonics (border irregularity).
    angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    radius = size * rng.uniform(0.16, 0.24) * (1 + 0.35 * severity * rng.uniform(0.5, 1.0))
    profile = np.ones_like(angles)
    for harmonic in (1, 2, 3):
        profile += severity * rng.uniform(0.05, 0.22) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    for harmonic in rng.integers(7, 19, size=3):
        profile += severity * rng.uniform(0.0, 0.1) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
    centre = size / 2 + rng.normal(0, size * 0.04, 2)
    points = np.stack([centre[0] + radius * profile * np.cos(angles), centre[1] + radius * profile * np.sin(angles)], 1)
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    blur = max(1, int(size * (0.03 * (1 - severity) + 0.005))) * 2 + 1
    soft = cv2.GaussianBlur(mask, (blur, blur), 0).astype(np.float32)[..., None] / 255.0

    brown = np.array([120, 75, 45], float) * rng.uniform(0.7, 1.1)
    lesion = np.broadcast_to(brown, (size, size, 3)).copy()
    n_blotches = int(rng.poisson(0.3 + 6.0 * severity**2))
    palette = np.array([[30, 22, 20], [80, 90, 120], [150, 60, 50], [70, 40, 30], [200, 190, 180]], float)
    for _ in range(n_blotches):
        blotch = np.zeros((size, size), np.uint8)
        point = points[rng.integers(len(points))] * rng.uniform(0.3, 0.9) + centre * (1 - rng.uniform(0.3, 0.9))
        axes = (int(radius * rng.uniform(0.15, 0.45)), int(radius * rng.uniform(0.1, 0.35)))
        cv2.ellipse(blotch, (int(point[0]), int(point[1])), axes, rng.uniform(0, 180), 0, 360, 255, -1)
        weight = cv2.GaussianBlur(blotch, (9, 9), 0).astype(np.float32)[..., None] / 255.0
        lesion = lesion * (1 - weight) + palette[rng.integers(len(palette))] * weight
    lesion += rng.normal(0, 10 + 10 * severity, (size, size, 3))
    image = image * (1 - soft) + lesion * soft

    for _ in range(int(rng.poisson(2.0))):  # hair: dark quadratic curves crossing the field
        p0, p1, p2 = rng.uniform(-0.1, 1.1, (3, 2)) * size
        t = np.linspace(0, 1, 40)[:, None]
        curve = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.int32)
        shade = float(rng.uniform(15, 55))
        colour = (shade * 1.25, shade, shade * 0.8)
        cv2.polylines(image, [curve], False, colour, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    *,
    n_train: int = 600,
    n_test: int = 100,
    size: int = 128,
    positive_rate: float = 0.25,
    seed: int = 0,
) -> Path:
    """Write the synthetic set to ``root`` in the ``labels`` layout and return ``root``."""
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    n_patients = max(2, (n_train + n_test) // 3)
    for index in range(n_train + n_test):
        split = "train" if index < n_train else "test"
        malignant = bool(rng.random() < positive_rate)
        name = f"SYN_{index:06d}"
        image_rng = np.random.default_rng([seed, index])
        image = render_lesion(image_rng, malignant=malignant, size=size)
        cv2.imwrite(str(images / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        patient = int(rng.integers(n_patients)) if split == "train" else n_patients + int(rng.integers(n_patients))
        age = float(np.clip(np.round(rng.normal(62 if malignant else 48, 15) / 5) * 5, 15, 90))
        rows.append({
            "image_name": name,
            "split": split,
            "patient_id": f"SYNP_{patient:05d}",
            "sex": [None, "male", "female"][int(rng.choice(3, p=[0.02, 0.5, 0.48]))],
            "age_approx": age if rng.random() > 0.02 else None,
            "anatom_site_general_challenge": None if rng.random() < 0.03 else SITES[int(rng.integers(len(SITES)))],
            "diagnosis": "melanoma" if malignant else "nevus",
            "target": int(malignant),
        })
    frame = _lesion_measurements(pd.DataFrame(rows), seed=seed)
    train = frame[frame["split"] == "train"].drop(columns=["split"])
    test = frame[frame["split"] == "test"].drop(columns=["split", "target", "diagnosis"])
    train.to_csv(root / "labels.csv", index=False)
    if len(test):
        test.to_csv(root / "test.csv", index=False)
    return root


def _lesion_measurements(frame: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """``diameter_mm`` and ``colour_variance`` per lesion: a patient's baseline, plus a step for a melanoma."""
    rng = np.random.default_rng([seed, 2024])
    patients = frame["patient_id"].unique()
    base_size = dict(zip(patients, rng.normal(5.0, 1.6, len(patients)), strict=True))
    base_colour = dict(zip(patients, rng.normal(0.3, 0.1, len(patients)), strict=True))
    melanoma = frame["diagnosis"].eq("melanoma").to_numpy()
    size = frame["patient_id"].map(base_size).to_numpy() + np.where(melanoma, 2.0, 0.0) + rng.normal(0, 0.8,
                                                                                                   len(frame))
    colour = frame["patient_id"].map(base_colour).to_numpy() + np.where(melanoma, 0.12, 0.0) + rng.normal(
        0, 0.05, len(frame))
    return frame.assign(diameter_mm=np.round(np.clip(size, 1.0, None), 2),
                        colour_variance=np.round(np.clip(colour, 0.0, None), 3))


def ensure_synthetic_dataset(
    base_dir: str | os.PathLike[str], *, n_train: int = 600, n_test: int = 100, size: int = 128, seed: int = 0
) -> Path:
    """Return a folder holding the synthetic set for these parameters, writing it first if it is not there."""
    params = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed, "version": 2}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(base_dir).expanduser() / f"synthetic-{digest}"
    done = root / "DONE.json"
    if not done.is_file():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        write_synthetic_dataset(tmp, n_train=n_train, n_test=n_test, size=size, seed=seed)
        (tmp / "DONE.json").write_text(json.dumps(params))
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return root
