"""Trial artifacts: the ROC picture, and kept weights that belong to one study, not to a study name."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import optuna

from melanoma_search.search.artifacts import ArtifactWriter, roc_svg
from melanoma_search.search.study import study_folder

SVG = "{http://www.w3.org/2000/svg}"


def test_roc_svg_keeps_the_axis_title_below_the_tick_labels() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 2, 200)
    svg = ET.fromstring(roc_svg(target, target * 0.5 + rng.random(200), title="trial 3 OOF"))
    texts = {t.text: t for t in svg.iter(f"{SVG}text")}
    title = texts["false positive rate"]
    x_ticks = [t for t in svg.iter(f"{SVG}text")
               if t.text in ("0.0", "0.5", "1.0") and t.get("text-anchor") == "middle"]
    assert len(x_ticks) == 3
    gap = float(title.get("y")) - max(float(t.get("y")) for t in x_ticks)
    assert gap >= float(title.get("font-size")), gap  # a full line apart: the title does not touch the 0.5 label
    assert float(title.get("y")) <= float(svg.get("height"))
    assert "AUC" in texts[next(k for k in texts if k and k.startswith("trial 3 OOF"))].text


def _kept_after_one_trial(url: str, storage_dir: Path, tmp_path: Path, value: float) -> tuple[Path, Path]:
    study = optuna.create_study(study_name="same", storage=url, direction="maximize")
    own = study_folder(study, storage_dir=storage_dir)
    writer = ArtifactWriter(storage_dir / "same" / "artifacts", weights_root=own / "weights", top_k=1)
    trial = study.ask()
    weights = tmp_path / f"fold0-{value}.safetensors"
    weights.write_bytes(b"weights")
    kept = writer.keep_weights(trial, value, [weights])
    study.tell(trial, value)
    assert kept is not None
    return own, kept


def test_two_storages_with_a_study_of_one_name_keep_their_weights_apart(tmp_path: Path) -> None:
    """SQLite then PostgreSQL (here: two SQLite files) both hold study 'same' under one --storage-dir."""
    storage_dir = tmp_path / "storage"
    first, first_kept = _kept_after_one_trial(f"sqlite:///{tmp_path}/a.db", storage_dir, tmp_path, 0.9)
    second, second_kept = _kept_after_one_trial(f"sqlite:///{tmp_path}/b.db", storage_dir, tmp_path, 0.5)
    assert first != second and first.parent == second.parent == storage_dir / "same"
    # each study's trial 0 is in its own top 1: the 0.5 of the second study did not lose to the first's 0.9
    assert first_kept.is_dir() and second_kept.is_dir() and first_kept != second_kept
    again = optuna.load_study(study_name="same", storage=f"sqlite:///{tmp_path}/a.db")
    assert study_folder(again, storage_dir=storage_dir) == first  # the key travels with the study
    assert list(again.user_attrs["weights"].values()) == [str(first_kept)]


def test_eviction_deletes_nothing_outside_the_studys_weights_folder(tmp_path: Path) -> None:
    """The study's ``weights`` record is data anyone with write access to the storage can change: a record pointing
    at a user's folder must not make the next trial's eviction delete it."""
    storage_dir = tmp_path / "storage"
    own, kept = _kept_after_one_trial(f"sqlite:///{tmp_path}/a.db", storage_dir, tmp_path, 0.5)
    precious = tmp_path / "my-data"
    precious.mkdir()
    (precious / "labels.csv").write_text("image_name,target\n")
    study = optuna.load_study(study_name="same", storage=f"sqlite:///{tmp_path}/a.db")
    study.set_user_attr("weights", {"0": str(precious)})  # trial 0's kept weights now "live" in the user's folder
    writer = ArtifactWriter(storage_dir / "same" / "artifacts", weights_root=own / "weights", top_k=1)
    trial = study.ask()
    weights = tmp_path / "fold0-better.safetensors"
    weights.write_bytes(b"weights")
    assert writer.keep_weights(trial, 0.9, [weights]) is not None  # trial 0 leaves the top 1 ...
    assert (precious / "labels.csv").is_file()  # ... and nothing outside the weights folder is deleted
    assert list(optuna.load_study(study_name="same", storage=f"sqlite:///{tmp_path}/a.db").user_attrs[
        "weights"]) == [str(trial.number)]
