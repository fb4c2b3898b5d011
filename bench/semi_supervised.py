"""Does learning from unlabelled images help where it matters: on images from another collection?

Two experiments on real images, each through the commands a user runs (``run``, ``export``, ``run --student-of``):

A. **Outside adaptation.** A teacher trained on the HAM10000 sample (every label) pseudo-labels the ISIC 2018 test
   images (the outside set) from their image folder alone, so their labels cannot be read; a noisy student trains
   on HAM + those pseudo-labels; a second round repeats it with the student as teacher. Each ensemble is then scored
   on the outside images with their labels: outside AUC before vs after one and two rounds. A control trains the
   HAM sample alone with the student's noise and optimiser steps, to tell the noise's share from the labels'.
B. **Hidden labels.** A quarter of the HAM sample (whole patients) keeps its labels, the other three quarters are
   handed over as images only; the teacher trains on the quarter, the student on the quarter + pseudo-labels of the
   rest. Both are scored on the hidden three quarters with their labels, and on the outside set. A student sees
   four times the images per epoch here, so a control trains the labelled quarter alone with the student's noise
   and as many optimiser steps (epochs times that ratio): what is left of the gain beyond it is the pseudo-labels'.

The configuration is the ``ham-cpu`` spec's first enqueued one (pretrained EfficientNet-Lite0 at 128 px, 4 epochs,
3 folds bagged: ``cv_auc``, so each ensemble is the mean of 3 fold models); the student adds dropout 0.5, stochastic
depth 0.2 and cutmix 0.3 and trains pseudo rows at loss weight 0.5. The outside set has 242 images (57 melanomas):
its AUC moves by about +-0.03 from the sample alone (the Hanley-McNeil standard error is printed with every figure),
so a figure alone moves by that much; two ensembles scored on the same images move together, and the bench prints
each difference from the teacher with its paired bootstrap standard error.

    python bench/semi_supervised.py [--workdir storage/bench-semi] [--rounds 2] [--skip-hidden]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from melanoma_search.data.layouts import load_table
from melanoma_search.ensemble import load_ensemble
from melanoma_search.export import export_study
from melanoma_search.metrics import paired_auc_difference
from melanoma_search.report.outside import validate_ensemble
from melanoma_search.search import load_spec
from melanoma_search.search.study import student_study_name
from melanoma_search.train.device import resolve_device

NOISE = {"augment.policy": "medium", "model.drop_rate": 0.5, "model.drop_path_rate": 0.2, "augment.cutmix": 0.3}


def _spec(name: str, *, data_dir: Path, base: str, epochs: int | None) -> dict[str, Any]:
    """The ``base`` spec's data and fixed settings with its first enqueued parameters fixed: one configuration."""
    spec = load_spec(base)
    fixed = dict(spec.fixed)
    for key, value in (spec.enqueue[0] if spec.enqueue else {}).items():
        fixed[key] = value
    if epochs is not None:
        fixed["epochs"] = epochs
    fixed = _absolute(fixed)
    return {"description": f"bench/semi_supervised.py: {name}", "objective": "cv_auc",
            "data": {**spec.data, "dir": str(data_dir), "n_folds": 3}, "fixed": fixed,
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"}, "budget": {"n_trials": 1},
            "export": {"top_k": 1, "method": "rank", "refit": False}, "top_k_weights": 1,
            "student": {"noise": NOISE, "pseudo": {"weight": 0.5}}}


def _absolute(fixed: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``../shared`` paths (weights, hair overlays) made absolute: the bench's specs live elsewhere."""
    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, str) and value.startswith("../") and Path(value).exists():
            return str(Path(value).resolve())
        return value

    return fix(fixed)


def _run(work: Path, *args: str) -> float:
    """``python -m melanoma_search.run`` in ``work``; its seconds. A failure stops the bench with its output."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "melanoma_search.run", *args, "--storage-dir", "storage"],
                          cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for line in done.stdout.splitlines():
        if "complete:" in line or "pseudo-label" in line or "reusing" in line:
            print(f"    {line.strip()}", flush=True)
    return time.perf_counter() - start


def _export(work: Path, study: str, *, outside: Path, also: Path | None = None) -> dict[str, Any]:
    """Export ``study``'s ensemble, score it on ``outside`` (and ``also``); the figures."""
    folder = work / "ensembles" / study
    result = export_study(study, storage_dir=work / "storage", out=work / "exports" / study / "submission.csv",
                          ensemble_dir=folder, validate=outside, device="auto", log=lambda line: None)
    assert result.validation is not None
    row = {"study": study, "ensemble": str(folder), "in_search": result.blend.auc,
           "outside": result.validation.outside["blend"], "outside_se": result.validation.standard_error,
           "outside_scores": result.validation.scores["blend"].tolist(),
           "outside_target": result.validation.target.tolist()}
    if also is not None:
        check = validate_ensemble(load_ensemble(folder), also, in_search={"blend": result.blend.auc},
                                  device=resolve_device("auto"), log=lambda line: None)
        row.update(hidden=check.outside["blend"], hidden_se=check.standard_error,
                   hidden_scores=check.scores["blend"].tolist(), hidden_target=check.target.tolist())
    return row


def _paired_difference(row: dict[str, Any], base: dict[str, Any], *, on: str) -> str:
    """AUC(row) - AUC(base) on the same images, with its paired bootstrap standard error and 95% interval."""
    target = np.asarray(row[f"{on}_target"])
    if not np.array_equal(target, np.asarray(base[f"{on}_target"])):
        raise SystemExit(f"{on}: the two ensembles were scored on different images")
    return str(paired_auc_difference(target, np.asarray(row[f"{on}_scores"]), np.asarray(base[f"{on}_scores"])))


def _rounds(work: Path, *, spec_file: Path, name: str, unlabelled: str, rounds: int, outside: Path,
            also: Path | None = None) -> list[dict[str, Any]]:
    """The teacher study, then ``rounds`` student rounds, each exported and scored."""
    print(f"  {name}: teacher", flush=True)
    seconds = _run(work, "--study", str(spec_file))
    rows = [{**_export(work, name, outside=outside, also=also), "round": 0, "seconds": seconds}]
    for number in range(1, rounds + 1):
        print(f"  {name}: student round {number}", flush=True)
        seconds = _run(work, "--study", str(spec_file), "--student-of", rows[-1]["ensemble"],
                       "--unlabelled", unlabelled)
        study = student_study_name(name, round=number)
        rows.append({**_export(work, study, outside=outside, also=also), "round": number, "seconds": seconds})
    return rows


def _control(work: Path, *, spec_file: Path, name: str, teacher_epochs: int, ratio: float, outside: Path,
             also: Path | None = None) -> dict[str, Any]:
    """The labelled rows alone with the student's noise and its number of optimiser steps (no pseudo rows)."""
    epochs = max(teacher_epochs, round(teacher_epochs * ratio))
    print(f"  {name}: control, labelled only, student noise, {epochs} epochs", flush=True)
    noise = [f"--set={key}={value}" for key, value in NOISE.items()]
    seconds = _run(work, "--study", str(spec_file), "--study-name", name, f"--set=epochs={epochs}", *noise)
    return {**_export(work, name, outside=outside, also=also), "round": "control", "seconds": seconds}


def _hidden_split(data_dir: Path, work: Path, *, seed: int) -> tuple[Path, Path, Path]:
    """A labelled quarter (whole patients, a quarter of the melanomas), its hidden rest as an image list without
    labels, and the rest again with labels (read only to score). Images are linked, not copied."""
    labels = pd.read_csv(data_dir / "labels.csv", dtype={"image_name": str})
    patients = labels.groupby("patient_id")["target"].max()
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for label in (1, 0):  # a quarter of the melanoma patients and a quarter of the others
        ids = patients[patients == label].index.to_numpy()
        chosen |= set(rng.permutation(ids)[: len(ids) // 4])
    quarter, rest = labels[labels["patient_id"].isin(chosen)], labels[~labels["patient_id"].isin(chosen)]
    folders = []
    for name, rows in (("quarter", quarter), ("rest-labelled", rest)):
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        rows.to_csv(folder / "labels.csv", index=False)
        if not (folder / "images").exists():
            os.symlink((data_dir / "images").resolve(), folder / "images")
        folders.append(folder)
    unlabelled = work / "rest-unlabelled.csv"  # what the teacher sees of the rest: images and metadata, no label
    keep = [c for c in ("image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge")
            if c in rest.columns]
    rest[keep].assign(image_path=[str((data_dir / "images" / f"{n}.jpg").resolve()) for n in rest["image_name"]]
                      ).to_csv(unlabelled, index=False)
    print(f"  hidden split: {len(quarter)} labelled image(s) ({int(quarter.target.sum())} melanoma), "
          f"{len(rest)} hidden ({int(rest.target.sum())} melanoma)", flush=True)
    return folders[0], unlabelled, folders[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--outside", default="../shared/data/isic2018-test-ext")
    parser.add_argument("--base", default="ham-cpu", help="the spec whose first enqueued configuration is trained")
    parser.add_argument("--workdir", default="storage/bench-semi")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="override the configuration's epochs (a quicker, weaker run)")
    parser.add_argument("--skip-outside", action="store_true", help="skip experiment A")
    parser.add_argument("--skip-hidden", action="store_true", help="skip experiment B")
    parser.add_argument("--seed", type=int, default=0, help="the hidden split's seed")
    args = parser.parse_args()

    data_dir, outside = Path(args.data_dir).resolve(), Path(args.outside).resolve()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    n_outside = len(load_table(outside))
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    if not args.skip_outside:
        print("A. teacher on the HAM sample, students on HAM + pseudo-labelled outside images", flush=True)
        spec_file = work / "semi-ham.yaml"
        spec = _spec("semi-ham", data_dir=data_dir, base=args.base, epochs=args.epochs)
        spec_file.write_text(yaml.safe_dump(spec))
        results["outside"] = _rounds(work, spec_file=spec_file, name="semi-ham", unlabelled=str(outside / "images"),
                                     rounds=args.rounds, outside=outside)
        n_labelled = len(load_table(data_dir))
        results["outside"].append(_control(work, spec_file=spec_file, name="semi-ham-control",
                                           teacher_epochs=int(spec["fixed"]["epochs"]),
                                           ratio=(n_labelled + n_outside) / n_labelled, outside=outside))
    if not args.skip_hidden:
        print("B. a quarter of the HAM sample labelled, the rest hidden", flush=True)
        quarter, unlabelled, rest = _hidden_split(data_dir, work, seed=args.seed)
        spec_file = work / "semi-quarter.yaml"
        spec = _spec("semi-quarter", data_dir=quarter, base=args.base, epochs=args.epochs)
        spec_file.write_text(yaml.safe_dump(spec))
        results["hidden"] = _rounds(work, spec_file=spec_file, name="semi-quarter", unlabelled=str(unlabelled),
                                    rounds=1, outside=outside, also=rest)
        n_labelled, n_hidden = len(pd.read_csv(quarter / "labels.csv")), len(pd.read_csv(unlabelled))
        results["hidden"].append(_control(work, spec_file=spec_file, name="semi-quarter-control",
                                          teacher_epochs=int(spec["fixed"]["epochs"]),
                                          ratio=(n_labelled + n_hidden) / n_labelled, outside=outside, also=rest))
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\noutside set: {n_outside} images; figures are blend AUCs +- Hanley-McNeil standard error; "
          f"{(time.perf_counter() - started) / 60:.0f} min in all")
    for key, rows in results.items():
        hidden = key == "hidden"
        print(f"\n{'round':<40}{'in-search':>10}{'outside':>17}" + (f"{'hidden rest':>17}" if hidden else "")
              + f"{'minutes':>9}")
        for row in rows:
            name = ("teacher (labelled only)" if row["round"] == 0 else "control (labelled, noise, same steps)"
                    if row["round"] == "control" else f"student round {row['round']}")
            line = f"{name:<40}{row['in_search']:>10.4f}{row['outside']:>10.4f} +-{row['outside_se']:.3f}"
            if hidden:
                line += f"{row['hidden']:>10.4f} +-{row['hidden_se']:.3f}"
            print(line + f"{row['seconds'] / 60:>9.1f}")
        base = rows[0]
        print("  minus the teacher, on the same images (paired bootstrap standard error):")
        for row in rows[1:]:
            print(f"  {row['round']!s:<8} outside {_paired_difference(row, base, on='outside')}"
                  + (f"; hidden rest {_paired_difference(row, base, on='hidden')}" if hidden else ""))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
