"""``python -m melanoma_search.export --study NAME``: the best trials as a rank-blended submission and ensemble.

Reads the study's finished trials (their ``oof.csv``/``test.csv`` artifacts), picks the top ``--top-k`` by the
objective (skipping near-duplicate configurations and trials lacking artifacts, with a message), blends them by
rank (``--method rank``: equal weights; ``greedy``: ensemble selection on OOF AUC), and writes:

* ``--out`` (``submission.csv``): ``image_name,target`` for every test image, in [0, 1];
* ``report.html`` beside it: optimisation history, parameter importances, parallel coordinates, learning curves,
  ROC curves of members and blend, the member table (self-contained, opens offline);
* ``--ensemble-dir``: a self-contained folder to score new images with ``python -m melanoma_search.predict``;

and attaches the blend's ROC curve (``blend-roc.svg``) to the study so it shows in optuna-dashboard.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from melanoma_search.errors import ConfigError, MelanomaSearchError


@dataclass
class Candidate:
    """A finished trial with its downloaded predictions."""

    number: int
    value: float
    params: dict[str, Any]
    folder: Path
    oof: pd.DataFrame
    test: pd.DataFrame | None
    weights_dir: Path | None
    seconds: float
    curve: dict[int, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"trial-{self.number:05d}"


def _signature(params: dict[str, Any]) -> str:
    """Parameters rounded to 2 significant digits: trials that agree on it are near-duplicates."""
    return json.dumps({k: float(f"{v:.2g}") if isinstance(v, float) else v for k, v in sorted(params.items())})


def collect_candidates(study: Any, store: Any, *, top_k: int, need_weights: bool, work: Path,
                       log: Any = print) -> list[Candidate]:
    """Download the top trials' predictions; skip (with a message) duplicates and trials lacking what is needed."""
    from optuna.artifacts import download_artifact, get_all_artifact_meta

    from melanoma_search.search.study import best_first

    done = best_first(study)
    kept_weights: dict[str, str] = study.user_attrs.get("weights", {})
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for trial in done:
        if len(chosen) >= top_k:
            break
        signature = _signature(trial.params)
        if signature in seen:
            log(f"skipping trial {trial.number}: a near-duplicate of a chosen member's configuration")
            continue
        metas = {m.filename: m for m in get_all_artifact_meta(trial, storage=study._storage)}
        if "oof.csv" not in metas or "config.yaml" not in metas:
            log(f"skipping trial {trial.number}: it has no oof.csv/config.yaml artifact")
            continue
        weights = kept_weights.get(str(trial.number))
        if need_weights and (weights is None or not Path(weights).is_dir()):
            log(f"skipping trial {trial.number}: its weights were not kept (only the study's top_k_weights are)")
            continue
        folder = work / f"trial-{trial.number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("oof.csv", "test.csv", "config.yaml", "metrics.yaml"):
            if name in metas:
                download_artifact(artifact_store=store, file_path=str(folder / name), artifact_id=metas[name].artifact_id)
        test = pd.read_csv(folder / "test.csv") if (folder / "test.csv").is_file() else None
        seconds = trial.duration.total_seconds() if trial.duration else float("nan")
        chosen.append(Candidate(number=trial.number, value=trial.values[0], params=dict(trial.params), folder=folder,
                                oof=pd.read_csv(folder / "oof.csv"), test=test,
                                weights_dir=Path(weights) if weights else None, seconds=seconds,
                                curve=dict(trial.intermediate_values)))
        seen.add(signature)
    if not chosen:
        raise ConfigError(f"study {study.study_name!r} has no usable finished trial "
                          f"({len(done)} finished; each needs oof.csv and config.yaml artifacts"
                          + (" and kept weights" if need_weights else "") + ")")
    return chosen


@dataclass
class Blend:
    members: list[Candidate]
    weights: dict[str, float]
    target: np.ndarray
    oof_raw: dict[str, np.ndarray]
    oof_ranked: dict[str, np.ndarray]
    oof_blend: np.ndarray
    auc: float
    best_member_auc: float
    best_member: str
    test: pd.DataFrame | None


def blend_candidates(candidates: list[Candidate], *, method: str) -> Blend:
    """Align members on their common OOF rows and blend by OOF-referenced percentiles."""
    from sklearn.metrics import roc_auc_score

    from melanoma_search.blend import blend, greedy_selection, percentiles

    common = set(candidates[0].oof["image_name"])
    for member in candidates[1:]:
        common &= set(member.oof["image_name"])
    if not common:
        raise ConfigError("the chosen trials share no out-of-fold rows (were they trained on different folds?)")
    reference = candidates[0].oof.set_index("image_name").loc[sorted(common)]
    target = reference["target"].to_numpy()
    raw = {m.name: m.oof.set_index("image_name").loc[sorted(common), "pred"].to_numpy() for m in candidates}
    ranked = {name: percentiles(scores, scores) for name, scores in raw.items()}
    singles = {name: roc_auc_score(target, ranked[name]) for name in ranked}
    if method == "greedy":
        weights = greedy_selection(ranked, target).weights
    else:
        weights = {name: 1.0 / len(ranked) for name in ranked}
    oof_blend = blend(ranked, weights)
    best = max(singles, key=lambda n: singles[n])
    test = None
    members = {m.name: m for m in candidates}
    tests = {n: members[n].test for n in weights if weights[n] > 0}
    if all(t is not None for t in tests.values()):
        names = tests[next(iter(tests))]["image_name"]  # type: ignore[index]
        ranked_test = {n: percentiles(t.set_index("image_name").loc[names, "pred"].to_numpy(), raw[n])  # type: ignore[union-attr]
                       for n, t in tests.items()}
        test = pd.DataFrame({"image_name": names.to_numpy(), "target": blend(ranked_test, weights)})
    return Blend(members=[members[n] for n in weights if weights[n] > 0], weights=weights, target=target,
                 oof_raw=raw, oof_ranked=ranked, oof_blend=oof_blend, auc=float(roc_auc_score(target, oof_blend)),
                 best_member_auc=float(singles[best]), best_member=best, test=test)


def write_ensemble(result: Blend, *, out: Path, study_name: str, method: str) -> Path:
    """The self-contained ensemble folder (see :mod:`melanoma_search.ensemble`)."""
    import optuna
    import timm
    import torch
    import yaml

    from melanoma_search import __version__
    from melanoma_search.ensemble import FORMAT_VERSION, file_digest

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    entries = []
    for member in result.members:
        folder = out / member.name
        folder.mkdir()
        shutil.copy2(member.folder / "config.yaml", folder / "config.yaml")
        metrics = yaml.safe_load((member.folder / "metrics.yaml").read_text())
        (folder / "meta.json").write_text(json.dumps({"classes": metrics["classes"],
                                                      "meta_encoders": metrics["meta_encoders"]}, indent=1))
        # the reference distribution the blend ranked this member's test scores against
        pd.DataFrame({"pred": np.sort(result.oof_raw[member.name])}).to_csv(folder / "oof_scores.csv", index=False)
        assert member.weights_dir is not None
        weights = sorted(member.weights_dir.glob("fold*.safetensors"))
        for path in weights:
            shutil.copy2(path, folder / path.name)
        entries.append({"name": member.name, "trial": member.number, "weight": result.weights[member.name],
                        "value": member.value, "weights": [f"{member.name}/{p.name}" for p in weights]})
    files = {str(p.relative_to(out)): file_digest(p) for p in sorted(out.rglob("*")) if p.is_file()}
    manifest = {
        "format": FORMAT_VERSION, "study": study_name, "method": method, "blend_oof_auc": result.auc,
        "best_member_oof_auc": result.best_member_auc, "members": entries, "files": files,
        "versions": {"melanoma_search": __version__, "torch": torch.__version__, "timm": timm.__version__,
                     "optuna": optuna.__version__, "python": sys.version.split()[0]},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m melanoma_search.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="study name (default storage sqlite:///storage/NAME.db)")
    parser.add_argument("--storage", help="storage URL (default: the run's default for --study)")
    parser.add_argument("--storage-dir", default="storage", help="folder of default storages and artifacts")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--method", choices=["rank", "greedy"], default="rank")
    parser.add_argument("--out", default="submission.csv", help="submission CSV (report.html is written beside it)")
    parser.add_argument("--ensemble-dir", help="also write a self-contained ensemble folder here")
    args = parser.parse_args(argv)
    try:
        return _export(args)
    except MelanomaSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _export(args: argparse.Namespace) -> int:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from melanoma_search.report import write_report
    from melanoma_search.search.artifacts import roc_svg
    from melanoma_search.search.study import default_storage_url, open_storage, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_dir = Path(args.storage_dir)
    url = args.storage or default_storage_url(args.study, storage_dir=storage_dir)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no study storage at {url}; run `python -m melanoma_search.run --study {args.study}` first")
    storage = open_storage(url, heartbeat_interval=None)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {args.study!r} in {redact(url)}") from None
    artifact_dir = storage_dir / args.study / "artifacts"
    store = FileSystemArtifactStore(str(artifact_dir))
    with tempfile.TemporaryDirectory() as tmp:
        candidates = collect_candidates(study, store, top_k=args.top_k, need_weights=bool(args.ensemble_dir),
                                        work=Path(tmp))
        result = blend_candidates(candidates, method=args.method)
        print(f"blend of {len(result.members)} member(s) ({args.method}): OOF AUC {result.auc:.4f} vs best single "
              f"member {result.best_member_auc:.4f} ({result.best_member})")
        for member in result.members:
            print(f"  {member.name}: weight {result.weights[member.name]:.3f}, objective {member.value:.4f}")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if result.test is None:
            print("no submission: the study's dataset has no test split (its trials wrote no test.csv)")
        else:
            result.test.to_csv(out, index=False)
            print(f"submission: {out} ({len(result.test)} rows)")
        report = write_report(study, result, out.with_name("report.html"))
        print(f"report: {report}")
        svg = Path(tmp) / "blend-roc.svg"
        svg.write_text(roc_svg(result.target, result.oof_blend, title=f"blend of {len(result.members)} (OOF)"))
        upload_artifact(artifact_store=store, file_path=str(svg), study_or_trial=study, mimetype="image/svg+xml")
        if args.ensemble_dir:
            folder = write_ensemble(result, out=Path(args.ensemble_dir), study_name=args.study, method=args.method)
            print(f"ensemble: {folder} (score new images with python -m melanoma_search.predict --ensemble {folder})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
