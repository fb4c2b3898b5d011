"""Dataset layouts: a registry of readers for the folders users point the toolkit at, all normalised to one table.

Every reader returns a :class:`pandas.DataFrame` with the columns in :data:`COLUMNS`, so folds, metadata features,
the image cache and training never need to know where a row came from. :func:`load_table` detects the layout from
the files in a folder (each layout's ``detect`` is asked in ``priority`` order); a layout can also be forced by name
(``data.layout``). A new layout is one function decorated with :func:`register_layout` (see docs/architecture.md,
"Extending").

Built-in layouts:

``kaggle2020``
    SIIM-ISIC 2020 Kaggle: ``train.csv``, ``test.csv``, ``jpeg/train/*.jpg``, ``jpeg/test/*.jpg``.
``tfrecord``
    JPEG sets resized from the competition TFRecords: ``train.csv`` with a ``tfrecord`` fold key (``-1`` marks a
    duplicate), images in ``train/`` and ``test/``.
``marking``
    The merged external set: ``marking.csv`` (``image_id``, ``source``, ...), images in one folder. Rows whose
    ``source`` is not the 2020 collection are external (training folds only) when the file holds 2020 rows.
``isic2019``
    ISIC 2019 ``ISIC_2019_Training_GroundTruth.csv`` (one-hot) + ``ISIC_2019_Training_Metadata.csv``.
``ham10000``
    The official HAM10000 download: ``HAM10000_metadata.csv`` (``lesion_id``, ``image_id``, ``dx``, ``dx_type``,
    ``age``, ``sex``, ``localization``) with the images in ``HAM10000_images_part_1/`` and ``_part_2/`` (or any
    folder beside the file). Melanoma is ``dx == mel``; the seven ``dx`` codes are the diagnosis target; folds group
    images of one lesion (``lesion_id``: HAM has no patient id, and a lesion's several images must not be split).
``labels``
    Any folder with ``labels.csv`` (``image_name``, ``target``, optional ``patient_id``/``sex``/``age_approx``/
    site/``diagnosis``) and ``images/``; an optional ``test.csv`` lists test images (also looked up in ``images/``
    or ``test_images/``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from melanoma_search.errors import DataError
from melanoma_search.registry import Registry

__all__ = [
    "COLUMNS",
    "HDF5_KEY",
    "IMAGE_SUFFIXES",
    "SITES",
    "LayoutEntry",
    "Part",
    "detect_layout",
    "list_layouts",
    "load_table",
    "normalise_site",
    "read_images_to_score",
    "register_layout",
]

_log = logging.getLogger(__name__)

_UNKNOWN_SITE = "_unknown_site"  # a reader's unknown site values, checked and dropped by _finalise
RAW = "raw:"  # a reader's own columns, carried until _finalise keeps those asked for (keep=) and drops the rest
HDF5_KEY = "::"  # an image inside an HDF5 file: "<file>::<key>" (ISIC 2024's train-image.hdf5)

#: The normalised table's columns, in order.
COLUMNS: tuple[str, ...] = (
    "image_name",  # file stem, unique within a split
    "image_path",  # absolute path, "" when images are not required
    "split",  # "train" or "test"
    "target",  # 1.0 melanoma, 0.0 not, NaN for unlabelled test rows
    "patient_id",  # grouping key for folds (lesion or image name where no patient is known)
    "sex",  # "male", "female" or NaN
    "age_approx",  # float years or NaN
    "site",  # one of SITES or NaN
    "source",  # dataset name, e.g. "ISIC20", "ISIC19", "HAM10000", "synthetic"
    "is_external",  # external rows only ever go into training folds
    "diagnosis",  # lower-case diagnosis where known, else NaN
    "fold_key",  # a dataset's own fold key (tfrecord), NaN where none; -1 marks a known duplicate
)

#: Anatomical sites in the SIIM-ISIC 2020 vocabulary.
SITES: tuple[str, ...] = (
    "head/neck",
    "upper extremity",
    "lower extremity",
    "torso",
    "palms/soles",
    "oral/genital",
)

_SITE_ALIASES: dict[str, str] = {
    "anterior torso": "torso",
    "posterior torso": "torso",
    "lateral torso": "torso",
    "head neck": "head/neck",
    "head_neck": "head/neck",
    "upper_extremity": "upper extremity",
    "lower_extremity": "lower extremity",
    "palms_soles": "palms/soles",
    "oral_genital": "oral/genital",
}

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")

Part = tuple[str, pd.DataFrame, list[Path]]
"""One split a reader found: ``(split, rows with the shared columns, folders to look for its images in)``."""


@dataclass(frozen=True)
class LayoutEntry:
    """A registered layout: how to recognise its folder and how to read it."""

    name: str
    read: Callable[[Path], list[Part]]
    detect: Callable[[Path], bool]
    priority: int


_LAYOUTS: Registry[LayoutEntry] = Registry("dataset layout", error=DataError)


def register_layout(name: str, *, detect: Callable[[Path], bool], priority: int = 100
                    ) -> Callable[[Callable[[Path], list[Part]]], Callable[[Path], list[Part]]]:
    """Register the decorated reader as layout ``name``; ``detect(root)`` says whether a folder has this layout.

    Detection asks layouts in ascending ``priority``, so a layout whose files are a superset of another's (TFRecord
    exports are Kaggle 2020 plus a ``tfrecord`` column) must come first.
    """

    def decorate(reader: Callable[[Path], list[Part]]) -> Callable[[Path], list[Part]]:
        _LAYOUTS.add(name, LayoutEntry(name=name, read=reader, detect=detect, priority=priority))
        return reader

    return decorate


def list_layouts() -> tuple[str, ...]:
    """The registered layout names, in detection order."""
    return tuple(e.name for e in sorted(_LAYOUTS, key=lambda e: e.priority))


_ISIC2019_CLASSES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "unknown",
}


def detect_layout(root: Path) -> str:
    """Name the layout of ``root`` from the files it holds."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    for name in list_layouts():
        if _LAYOUTS.get(name).detect(root):
            return name
    raise DataError(
        f"cannot tell the dataset layout of {root}: expected one of labels.csv (+ images/), train.csv "
        "(Kaggle 2020 or TFRecord-derived), marking.csv or ISIC_2019_Training_GroundTruth.csv"
    )


def load_table(
    root: str | os.PathLike[str],
    *,
    layout: str = "auto",
    external: bool = False,
    require_images: bool = True,
    missing_images: Literal["error", "skip"] = "error",
    unknown_sites: Literal["missing", "error"] = "missing",
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Read the dataset in ``root`` into the normalised table (:data:`COLUMNS`).

    Args:
        root: The dataset folder.
        layout: A registered layout (:func:`list_layouts`), or ``"auto"`` to detect it.
        external: Mark every row as external data (training folds only) and drop its test split.
        require_images: Resolve every row to an image file. ``False`` reads metadata alone (fold and metadata code
            on the real 2020 CSV without its 100 GB of JPEGs).
        missing_images: ``"error"`` raises naming the missing files; ``"skip"`` drops those rows with a warning
            that counts them.
        unknown_sites: ``"missing"`` reads an anatomical site outside :data:`SITES` as missing, with a warning
            that counts the rows; ``"error"`` refuses the file.
        keep: Columns of the dataset's own files to keep beside the normalised ones (the per-lesion measurements a
            stage-two study reads, e.g. ISIC 2024's ``tbp_lv_*``); one that no file has is an error naming it.
    """
    root = Path(root).expanduser().resolve()
    name = detect_layout(root) if layout == "auto" else layout
    if name not in _LAYOUTS:
        raise DataError(f"unknown dataset layout {layout!r}; available: auto, {', '.join(list_layouts())}")
    parts = _LAYOUTS.get(name).read(root)
    frames: list[pd.DataFrame] = []
    for split, frame, folders in parts:
        if external and split == "test":
            continue
        frame = frame.copy()
        frame["split"] = split
        if require_images:
            frame["image_path"] = _resolve_images(frame["image_name"], folders, missing=missing_images)
            frame = frame[frame["image_path"] != ""]
        else:
            frame["image_path"] = ""
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    if external:
        table["is_external"] = True
    return _finalise(table, origin=root, unknown_sites=unknown_sites, keep=keep)


# --------------------------------------------------------------------------------------------------------- readers


def _csv_has_column(path: Path, column: str) -> bool:
    return path.is_file() and column in pd.read_csv(path, nrows=0).columns


def _read_csv(path: Path, *, required: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"missing file: {path}")
    try:
        frame = pd.read_csv(path, dtype={"image_name": str, "image_id": str, "image": str, "patient_id": str,
                                         "isic_id": str}, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks required column(s) {', '.join(missing)}; it has: {', '.join(map(str, frame.columns))}"
        )
    return frame


def _base(
    frame: pd.DataFrame,
    *,
    path: Path,
    name_col: str,
    source: str,
    site_col: str | None,
    labelled: bool,
) -> pd.DataFrame:
    """Map the columns every layout shares onto the normalised names."""
    out = pd.DataFrame({"image_name": frame[name_col].astype(str).str.strip()})
    if labelled:
        out["target"] = _numeric(frame["target"], path=path, column="target")
        bad = out["target"].dropna()
        bad = bad[~bad.isin([0.0, 1.0])]
        if len(bad):
            raise DataError(f"{path}: column 'target' must be 0 or 1; found {sorted(set(bad.tolist()))[:5]}")
        if out["target"].isna().any():
            rows = out.loc[out["target"].isna(), "image_name"].head(3).tolist()
            raise DataError(f"{path}: column 'target' is empty for {out['target'].isna().sum()} row(s), e.g. {rows}")
    else:
        out["target"] = np.nan
    out["patient_id"] = frame["patient_id"].astype("string") if "patient_id" in frame else pd.NA
    out["sex"] = _sex(frame["sex"], path=path) if "sex" in frame else np.nan
    age = frame["age_approx"] if "age_approx" in frame else None
    out["age_approx"] = _numeric(age, path=path, column="age_approx") if age is not None else np.nan
    if site_col is not None and site_col in frame:
        out["site"], out[_UNKNOWN_SITE] = _sites(frame[site_col])
    else:
        out["site"] = np.nan
        out[_UNKNOWN_SITE] = np.nan
    out["source"] = frame["source"].astype(str) if "source" in frame else source
    out["is_external"] = False
    # an unlabelled read (a test split, images to score or pseudo-label) reads no label: no target, no diagnosis
    diagnosis = labelled and "diagnosis" in frame
    out["diagnosis"] = frame["diagnosis"].astype("string").str.strip().str.lower() if diagnosis else pd.NA
    out["fold_key"] = np.nan
    raw = {f"{RAW}{column}": frame[column].to_numpy() for column in frame.columns}  # for keep=: the file's own
    return pd.concat([out, pd.DataFrame(raw, index=out.index)], axis=1)


@register_layout("kaggle2020", detect=lambda root: (root / "train.csv").is_file(), priority=50)
def _read_kaggle2020(root: Path) -> list[Part]:
    required = ("image_name", "target")
    train_csv = root / "train.csv"
    train = _read_csv(train_csv, required=required)
    site = "anatom_site_general_challenge"
    parts: list[Part] = [
        ("train", _base(train, path=train_csv, name_col="image_name", source="ISIC20", site_col=site, labelled=True),
         [root / "jpeg" / "train", root / "train"]),
    ]
    test_csv = root / "test.csv"
    if test_csv.is_file():
        test = _read_csv(test_csv, required=("image_name",))
        parts.append(
            ("test", _base(test, path=test_csv, name_col="image_name", source="ISIC20", site_col=site, labelled=False),
             [root / "jpeg" / "test", root / "test"])
        )
    return parts


@register_layout("tfrecord", detect=lambda root: _csv_has_column(root / "train.csv", "tfrecord"), priority=40)
def _read_tfrecord(root: Path) -> list[Part]:
    parts = _read_kaggle2020(root)
    train_csv = root / "train.csv"
    raw = _read_csv(train_csv, required=("image_name", "target", "tfrecord"))
    split, train, _ = parts[0]
    train["fold_key"] = _numeric(raw["tfrecord"], path=train_csv, column="tfrecord")
    parts[0] = (split, train, [root / "train", root / "jpeg" / "train"])
    if len(parts) > 1:
        parts[1] = (parts[1][0], parts[1][1], [root / "test", root / "jpeg" / "test"])
    return parts


@register_layout("marking", detect=lambda root: (root / "marking.csv").is_file(), priority=10)
def _read_marking(root: Path) -> list[Part]:
    path = root / "marking.csv"
    frame = _read_csv(path, required=("image_id", "target"))
    base = _base(frame, path=path, name_col="image_id", source="marking",
                 site_col="anatom_site_general_challenge", labelled=True)
    primary = base["source"].map(_is_isic2020_source)
    if primary.any():
        # The merged set pools 2020 images with earlier collections; only the 2020 rows may be validated on,
        # or the fold AUC would be scored on images unlike the ones the competition (and the user) scores.
        base["is_external"] = ~primary
    elif "source" in frame:
        _log.info("%s: no ISIC 2020 rows (sources %s): every row can be validated on", path,
                  ", ".join(sorted(set(base["source"]))[:5]))
    folders = [root / "train", root / "train_512", root / "512x512-dataset-melanoma", root / "images", root]
    folders += sorted(p for p in root.iterdir() if p.is_dir() and "test" not in p.name.lower())
    parts: list[Part] = [("train", base, folders)]
    test_csv = root / "test.csv"
    if test_csv.is_file():
        test = _read_csv(test_csv, required=("image_name",))
        parts.append(("test", _base(test, path=test_csv, name_col="image_name", source="ISIC20",
                                    site_col="anatom_site_general_challenge", labelled=False),
                      [root / "test", root / "test_512", root / "512x512-test"]))
    return parts


@register_layout("isic2019", detect=lambda root: (root / "ISIC_2019_Training_GroundTruth.csv").is_file(),
                 priority=20)
def _read_isic2019(root: Path) -> list[Part]:
    truth_csv = root / "ISIC_2019_Training_GroundTruth.csv"
    truth = _read_csv(truth_csv, required=("image", "MEL"))
    classes = [c for c in _ISIC2019_CLASSES if c in truth.columns]
    onehot = truth[classes].to_numpy(dtype=float)
    frame = pd.DataFrame({"image": truth["image"].astype(str)})
    frame["target"] = onehot[:, classes.index("MEL")]
    frame["diagnosis"] = [_ISIC2019_CLASSES[classes[i]] for i in onehot.argmax(axis=1)]
    meta_csv = root / "ISIC_2019_Training_Metadata.csv"
    if meta_csv.is_file():
        meta = _read_csv(meta_csv, required=("image",)).drop(columns=["target", "diagnosis"], errors="ignore")
        frame = frame.merge(meta, on="image", how="left")
    if "lesion_id" in frame:
        frame["patient_id"] = frame["lesion_id"].where(frame["lesion_id"].notna(), frame["image"])
    base = _base(frame, path=truth_csv, name_col="image", source="ISIC19",
                 site_col="anatom_site_general", labelled=True)
    return [("train", base, [root / "ISIC_2019_Training_Input", root / "images", root / "train", root])]


#: HAM10000's ``dx`` codes, as the diagnosis names the other layouts use.
_HAM_DIAGNOSES: dict[str, str] = {"mel": "melanoma", "nv": "nevus", "bkl": "benign keratosis-like lesion",
                                  "bcc": "basal cell carcinoma", "akiec": "actinic keratosis",
                                  "df": "dermatofibroma", "vasc": "vascular lesion"}
#: HAM10000's ``localization`` in the SIIM-ISIC 2020 site vocabulary (``unknown`` reads as missing).
_HAM_SITES: dict[str, str] = {"scalp": "head/neck", "ear": "head/neck", "face": "head/neck", "neck": "head/neck",
                              "back": "torso", "trunk": "torso", "chest": "torso", "abdomen": "torso",
                              "upper extremity": "upper extremity", "hand": "upper extremity",
                              "lower extremity": "lower extremity", "foot": "lower extremity",
                              "acral": "palms/soles", "genital": "oral/genital"}


@register_layout("ham10000", detect=lambda root: (root / "HAM10000_metadata.csv").is_file(), priority=25)
def _read_ham10000(root: Path) -> list[Part]:
    path = root / "HAM10000_metadata.csv"
    raw = _read_csv(path, required=("lesion_id", "image_id", "dx"))
    dx = raw["dx"].astype(str).str.strip().str.lower()
    unknown = sorted(set(dx) - set(_HAM_DIAGNOSES))
    if unknown:
        raise DataError(f"{path}: unknown dx code(s) {unknown[:5]}; HAM10000 uses {', '.join(_HAM_DIAGNOSES)}")
    frame = pd.DataFrame({
        "image_id": raw["image_id"].astype(str), "target": (dx == "mel").astype(float),
        "patient_id": raw["lesion_id"].astype(str), "diagnosis": dx.map(_HAM_DIAGNOSES),
        "sex": raw["sex"] if "sex" in raw else np.nan,
        "age_approx": raw["age"] if "age" in raw else np.nan,
        "site": raw["localization"].map(_HAM_SITES) if "localization" in raw else np.nan})
    base = _base(frame, path=path, name_col="image_id", source="HAM10000", site_col="site", labelled=True)
    folders = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2", root / "images", root]
    folders += sorted(p for p in root.iterdir() if p.is_dir() and p not in folders)
    return [("train", base, folders)]


@register_layout("labels", detect=lambda root: (root / "labels.csv").is_file(), priority=30)
def _read_labels(root: Path) -> list[Part]:
    path = root / "labels.csv"
    frame = _read_csv(path, required=("image_name", "target"))
    site = _first_present(frame.columns, ("anatom_site_general_challenge", "site", "anatom_site_general"))
    parts: list[Part] = [
        ("train", _base(frame, path=path, name_col="image_name", source=root.name, site_col=site, labelled=True),
         [root / "images"]),
    ]
    test_csv = root / "test.csv"
    if test_csv.is_file():
        test = _read_csv(test_csv, required=("image_name",))
        test_site = _first_present(test.columns, ("anatom_site_general_challenge", "site", "anatom_site_general"))
        parts.append(("test", _base(test, path=test_csv, name_col="image_name", source=root.name,
                                    site_col=test_site, labelled=False),
                      [root / "test_images", root / "images"]))
    return parts




@register_layout("isic2024", detect=lambda root: (root / "train-metadata.csv").is_file(), priority=20)
def _read_isic2024(root: Path) -> list[Part]:
    """ISIC 2024 (SLICE-3D): ``train-metadata.csv`` (``isic_id``, ``patient_id``, ``target``, ``age_approx``,
    ``sex``, ``anatom_site_general``, ``clin_size_long_diam_mm``, the ``tbp_lv_*`` colour, shape and position
    columns, ...) with the JPEG bytes of each lesion in ``train-image.hdf5`` keyed by ``isic_id``; the test split
    likewise (``test-metadata.csv``, ``test-image.hdf5``). The per-lesion columns are kept with ``keep=``."""
    parts: list[Part] = []
    for split, stem in (("train", "train"), ("test", "test")):
        meta = root / f"{stem}-metadata.csv"
        if split == "test" and not meta.is_file():
            continue
        frame = _read_csv(meta, required=("isic_id", "target") if split == "train" else ("isic_id",))
        parts.append((split, _base(frame, path=meta, name_col="isic_id", source="ISIC24", labelled=split == "train",
                                   site_col="anatom_site_general" if "anatom_site_general" in frame else None),
                      [root / f"{stem}-image.hdf5"]))
    return parts


def read_images_to_score(source: str | os.PathLike[str], *, keep: Sequence[str] = ()) -> pd.DataFrame:
    """Rows to score, normalised like a test split: a folder of images, or a CSV of ``image_name`` (+ metadata).

    A CSV's images are found through an ``image_path`` column, else by name in ``images/`` beside it or its folder.
    ``keep``: the CSV's own columns to keep (a stage-two model's per-lesion measurements); a folder of images has
    none, so they read as missing there.
    """
    path = Path(source).expanduser().resolve()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES[:3])}) in {path}")
        frame = pd.DataFrame({"image_name": [p.stem for p in files]})
        table = _base(frame, path=path, name_col="image_name", source=path.name, site_col=None, labelled=False)
        table["image_path"] = [str(p) for p in files]
    elif path.is_file():
        frame = _read_csv(path, required=("image_name",))
        site = _first_present(frame.columns, ("anatom_site_general_challenge", "site", "anatom_site_general"))
        table = _base(frame, path=path, name_col="image_name", source=path.stem, site_col=site, labelled=False)
        if "image_path" in frame:
            table["image_path"] = [str((path.parent / p).resolve()) for p in frame["image_path"].astype(str)]
        else:
            table["image_path"] = _resolve_images(
                table["image_name"], [path.parent / "images", path.parent], missing="error",
                remedy="give the CSV an image_path column, or leave out the rows whose images are missing")
    else:
        raise DataError(f"--images: no such folder or CSV file: {path}")
    table["split"] = "test"
    has_meta = path.is_file() and bool({"sex", "age_approx"} & set(frame.columns))
    if not path.is_file():
        table = table.assign(**{f"{RAW}{name}": np.nan for name in keep})
    given = (frame["patient_id"].notna() & frame["patient_id"].astype(str).str.strip().ne("")).to_numpy() \
        if path.is_file() and "patient_id" in frame else np.zeros(len(table), dtype=bool)
    scored = _finalise(table, origin=path, unknown_sites="missing", keep=keep)
    scored.attrs["has_meta"] = has_meta
    scored.attrs["patient_given"] = given.tolist()  # a row's own patient, not the image standing in for one
    if path.is_file() and "n_images" in frame:
        counts = _numeric(frame["n_images"], path=path, column="n_images")
        if (counts.dropna() < 1).any():
            raise DataError(f"{path}: column 'n_images' (the patient's images) must be at least 1 where given")
        scored["n_images"] = counts.to_numpy()
    scored.attrs["n_images"] = _n_images_rule(scored, columns=set(frame.columns) if path.is_file() else set())
    return scored


def _n_images_rule(table: pd.DataFrame, *, columns: set[str]) -> str:
    """Say how the images-per-patient feature of scored rows is found (printed by ``predict``)."""
    given = int(table["n_images"].notna().sum()) if "n_images" in columns else 0
    if given == len(table):
        return "from the n_images column"
    if "patient_id" not in columns:
        rule = "1 per image (no patient_id column)"
    else:
        rule = ("counted in this file by patient_id, so an image's score depends on which images of its patient "
                "the file holds (an n_images column fixes it)")
    return f"from the n_images column for {given} row(s), else {rule}" if given else rule


# --------------------------------------------------------------------------------------------------------- columns
def _first_present(columns: Iterable[str], names: Sequence[str]) -> str | None:
    have = set(columns)
    return next((n for n in names if n in have), None)


def _numeric(values: pd.Series, *, path: Path, column: str) -> pd.Series:
    blank = values.isna() | (values.astype(str).str.strip() == "")
    converted = pd.to_numeric(values.where(~blank), errors="coerce")
    bad = converted.isna() & ~blank
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise DataError(f"{path}: column {column!r} must be numeric; found {examples} in {int(bad.sum())} row(s)")
    infinite = np.isinf(converted.to_numpy(dtype=float))
    if infinite.any():
        raise DataError(f"{path}: column {column!r} holds infinite value(s) in {int(infinite.sum())} row(s) (first: "
                        f"row {int(np.flatnonzero(infinite)[0]) + 1} of the file): give a number, or leave it blank "
                        "where unknown")
    return converted.astype(float)


def _sex(values: pd.Series, *, path: Path) -> pd.Series:
    text = values.astype("string").str.strip().str.lower()
    text = text.replace({"m": "male", "f": "female", "": pd.NA, "unknown": pd.NA})
    bad = text.notna() & ~text.isin(["male", "female"])
    if bad.any():
        raise DataError(f"{path}: column 'sex' must be male/female or blank; found {sorted(set(text[bad]))[:5]}")
    return text.astype(object).where(text.notna(), np.nan)


def _is_isic2020_source(source: str) -> bool:
    """Whether a merged set's ``source`` names the SIIM-ISIC 2020 collection (``ISIC20``, ``ISIC_2020``, ``SIIM``)."""
    text = str(source).strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    return text in ("isic20", "isic2020", "siim", "siimisic", "siimisic2020")


def normalise_site(value: object) -> str | float:
    """Map one site value to the 2020 vocabulary (``NaN`` for blank); unknown values raise ``KeyError``."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return np.nan
    text = str(value).strip().lower()
    if text in ("", "unknown", "nan"):
        return np.nan
    if text in SITES:
        return text
    return _SITE_ALIASES[text]


def _sites(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """The sites in the 2020 vocabulary (NaN where blank or unknown), and the unknown values as written (else NaN)."""
    out: list[str | float] = []
    unknown: list[str | float] = []
    for value in values.tolist():
        try:
            out.append(normalise_site(value))
            unknown.append(np.nan)
        except KeyError:
            out.append(np.nan)
            unknown.append(str(value))
    return pd.Series(out, index=values.index, dtype=object), pd.Series(unknown, index=values.index, dtype=object)


def _check_unknown_sites(table: pd.DataFrame, *, origin: Path, unknown_sites: str) -> None:
    """Refuse, or warn once with a count, about sites outside the vocabulary (already read as missing).

    A site the model never saw carries no information it could use, so treating it as missing (the indicator column
    the model did learn) is the honest reading; ``error`` is for curating a training set, where a misspelt column
    would otherwise silently drop a feature.
    """
    unknown = table[_UNKNOWN_SITE].dropna() if _UNKNOWN_SITE in table else pd.Series(dtype=object)
    if unknown.empty:  # (a reader of one's own that does not use _base has no unknown-site column)
        return
    counts = unknown.value_counts()
    examples = ", ".join(f"{value!r} ({n})" for value, n in counts.head(5).items())
    message = (f"{origin}: {len(unknown)} row(s) have an anatomical site outside the vocabulary: {examples}; "
               f"allowed: {', '.join(SITES)} (ISIC 2019 anterior/posterior/lateral torso read as torso) or blank")
    if unknown_sites == "error":
        raise DataError(message + " (set data.unknown_sites=missing to read them as missing)")
    _log.warning("%s; read as missing", message)


def _resolve_images(names: pd.Series, folders: Sequence[Path], *, missing: str,
                    remedy: str = "set data.missing_images=skip to drop those rows") -> list[str]:
    """Find each image by stem in the first folder holding it (one directory listing per folder, not a stat each)."""
    index: dict[str, str] = {}
    for folder in reversed([f for f in folders if f.is_dir() or f.suffix in (".hdf5", ".h5")]):
        if folder.is_file():  # an HDF5 file of encoded images keyed by name (ISIC 2024)
            index.update({key: f"{folder}{HDF5_KEY}{key}" for key in _hdf5_keys(folder)})
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix in IMAGE_SUFFIXES:
                    index[stem] = entry.path
    paths = [index.get(name, "") for name in names]
    absent = [name for name, found in zip(names, paths, strict=True) if not found]
    if absent:
        where = ", ".join(str(f) for f in folders)
        message = f"{len(absent)} image file(s) not found in {where}, e.g. {absent[:5]}"
        if missing == "error":
            raise DataError(f"{message} ({remedy})")
        _log.warning("skipping %s", message)
    return paths


def _hdf5_keys(path: Path) -> list[str]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return list(handle.keys())
    except OSError as exc:
        raise DataError(f"cannot read the image file {path}: {exc}") from None


def _finalise(table: pd.DataFrame, *, origin: Path, unknown_sites: str, keep: Sequence[str] = ()) -> pd.DataFrame:
    if table.empty:
        raise DataError(f"no rows read from {origin}")
    absent = [name for name in keep if f"{RAW}{name}" not in table]
    if absent:
        present = sorted(c.removeprefix(RAW) for c in table.columns if c.startswith(RAW))
        raise DataError(f"{origin}: column(s) {', '.join(absent)} not in the dataset's table (it has: "
                        f"{', '.join(present[:30])}{', ...' if len(present) > 30 else ''})")
    _check_unknown_sites(table, origin=origin, unknown_sites=unknown_sites)
    dupes = table.duplicated(subset=["split", "image_name"])
    if dupes.any():
        raise DataError(f"{origin}: image name(s) listed twice: {table.loc[dupes, 'image_name'].head(5).tolist()}")
    missing_patient = table["patient_id"].isna()
    table["patient_id"] = table["patient_id"].astype(object).where(~missing_patient, table["image_name"])
    table["patient_id"] = table["patient_id"].astype(str)
    table["is_external"] = table["is_external"].astype(bool)
    table["diagnosis"] = table["diagnosis"].astype(object).where(table["diagnosis"].notna(), np.nan)
    table.attrs["origin"] = str(origin)
    kept = table[[f"{RAW}{name}" for name in keep]].rename(columns=lambda c: c.removeprefix(RAW))
    return pd.concat([table[list(COLUMNS)], kept], axis=1).reset_index(drop=True)
