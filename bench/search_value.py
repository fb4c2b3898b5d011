"""Does the search earn its keep outside the fold? The shipped search against no search and random search.

In one run on the HAM10000 sample, every arm ends in an exported ensemble that scores the same outside images
(ISIC 2018 Task 3 test, another collection; never read to choose anything here), and each arm is compared with the
no-search baseline by the paired bootstrap difference of their outside AUCs:

  (c) the shipped ``ham-cpu`` study: ``run --timeout T`` then the default ``export`` (timed end to end: W seconds);
  (a) no search: the spec's default configuration (its first enqueued one) bagged over the folds, given the same
      wall time W: (a1) with more epochs, (a2) with the biggest backbone and image size of the space (more epochs
      too when W allows). Which is better is decided by in-search AUC, never by the outside images;
  (b) random search over the same space, pruning off, the same first trial and ``--timeout T``, default export;
  (h) the same space selected on fold 0 (``holdout_auc``, pruned per epoch, the earlier shipped design), its run
      given 2/3 of T and its export refitting the best 2 on the other folds after it (not cut short: its wall
      time is printed beside the others).

Each arm runs the real commands (``python -m melanoma_search.run`` / ``.export``) in its own storage folder, one after
the other, so the arms share nothing but the image cache. The epochs of (a) are sized from a 2-epoch probe of each
configuration on fold 0 (the seconds of one more epoch, and each fold's fixed seconds).

    python bench/search_value.py [--timeout 1800] [--arms c,a,b,h] [--no-search a1-more-epochs,a2-biggest]
        [--workdir storage/bench-search-value]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from melanoma_search.ensemble import load_ensemble
from melanoma_search.metrics import paired_auc_difference
from melanoma_search.report.outside import validate_ensemble
from melanoma_search.search import load_spec
from melanoma_search.train import fit, parse_config, prepare_for
from melanoma_search.train.config import apply_overrides
from melanoma_search.train.device import resolve_device
from melanoma_search.train.phases import PhaseClock


def _absolute(value: Any) -> Any:
    """The spec's ``../shared`` paths (weights, hair overlays, data) made absolute: the bench's specs live elsewhere."""
    if isinstance(value, dict):
        return {k: _absolute(v) for k, v in value.items()}
    if isinstance(value, str) and value.startswith("../") and Path(value).exists():
        return str(Path(value).resolve())
    return value


def _shipped(name: str, data_dir: Path) -> dict[str, Any]:
    """The shipped spec as a plain mapping, its paths absolute (its dataset folder ``data_dir``, unless it trains
    on the built-in synthetic lesions)."""
    spec = load_spec(name)
    raw = spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    if "synthetic" not in raw.get("data", {}):
        raw["data"] = {**raw.get("data", {}), "dir": str(data_dir)}
    raw.pop("name", None)
    return _absolute(raw)


def _write(work: Path, name: str, spec: dict[str, Any]) -> Path:
    path = work / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _module(work: Path, module: str, *args: str) -> float:
    """``python -m melanoma_search.MODULE ARGS`` in ``work``; its seconds. A failure stops the bench."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"melanoma_search.{module}", *args, "--storage-dir", "storage"],
                          cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    for line in done.stdout.splitlines():
        if any(k in line for k in ("complete:", "blend of", "weight ", "refit:", "stopped", "pruned at")):
            print(f"    {line.strip()}", flush=True)
    return time.perf_counter() - start


def _arm(work: Path, name: str, spec: dict[str, Any], *, timeout: float | None, outside: Path,
         time_limit: float | None = None) -> dict[str, Any]:
    """Run and export one arm's study, then score its ensemble on the outside images (not timed)."""
    folder = work / name
    path = _write(folder, name, spec)
    flags = ([] if timeout is None else ["--timeout", str(timeout)]) + (
        [] if time_limit is None else ["--time-limit", str(time_limit)])
    print(f"({name}) run {' '.join(flags)}", flush=True)
    run_args = ["--study", str(path), *flags]
    run_seconds = _module(folder, "run", *run_args)
    export_seconds = _module(folder, "export", "--study", name, "--ensemble-dir", "ensemble")
    ensemble = load_ensemble(folder / "ensemble")
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/storage/{name}.db")
    states = [t.state.name for t in study.trials]
    check = validate_ensemble(ensemble, outside, in_search={"blend": float(ensemble.manifest["blend_oof_auc"])},
                              device=resolve_device("auto"), log=lambda line: None)
    race = study.user_attrs.get("race_agreement")
    rungs: dict[str, int] = {}
    for trial in study.trials:
        place = trial.user_attrs.get("race")
        if isinstance(place, dict):
            rungs[str(place.get("rung"))] = rungs.get(str(place.get("rung")), 0) + 1
    row = {"arm": name, "run_s": run_seconds, "export_s": export_seconds, "wall_s": run_seconds + export_seconds,
           "time_limit": time_limit, "rungs": rungs, "agreement": race,
           "trials": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
           "members": [f"{m.name} {m.config.model.name}@{m.config.image_size} {m.config.target} "
                       f"{m.config.epochs}ep w={m.weight:.2f}" for m in ensemble.members],
           "in_search": check.in_search["blend"], "outside": check.outside["blend"],
           "outside_se": check.standard_error, "scores": check.scores["blend"].tolist(),
           "target": check.target.tolist()}
    (folder / "result.json").write_text(json.dumps(row))
    print(f"({name}) {row['trials']} trials ({row['complete']} complete, {row['pruned']} pruned), "
          f"{row['wall_s']:.0f}s; in-search {row['in_search']:.4f}, outside {row['outside']:.4f}", flush=True)
    if time_limit is not None:
        print(f"({name}) limit {time_limit:.0f}s: run {run_seconds:.0f}s ({run_seconds / time_limit:.1%}), run + "
              f"export {row['wall_s']:.0f}s ({row['wall_s'] / time_limit:.1%}); trials per rung {rungs}; rank "
              f"agreement {race}", flush=True)
    return row


def _probe(base: dict[str, Any], params: dict[str, Any], work: Path) -> tuple[float, float]:
    """Seconds of one more epoch (training pass + validation) and a fold's fixed seconds, from 2 epochs on fold 0."""
    config = parse_config(apply_overrides(base, {**params, "epochs": 2, "data.folds": [0], "save_weights": False,
                                                 "output_dir": str(work / "probe")}))
    clock = PhaseClock()
    result = fit(config, data=prepare_for(config), log=lambda line: None, clock=clock)
    fold = result.folds[0]
    per_epoch = fold.history[1].seconds + clock.seconds.get("validate", 0.0) / 2
    fixed = max(0.0, fold.seconds - 2 * per_epoch)
    return per_epoch, fixed


def _no_search(shipped: dict[str, Any], params: dict[str, Any], *, epochs: int, name: str) -> dict[str, Any]:
    """One configuration, bagged over every fold (``cv_auc``, one trial, nothing searched)."""
    fixed = {**shipped.get("fixed", {})}
    base = apply_overrides(fixed, {**params, "epochs": epochs})
    return {"description": f"bench/search_value.py {name}: no search", "objective": "cv_auc",
            "data": shipped["data"], "fixed": base, "sampler": {"name": "random", "seed": 0},
            "pruner": {"name": "none"}, "budget": {"n_trials": 1},
            "export": {"top_k": 1, "method": "rank", "refit": False}, "top_k_weights": 1}


def _epochs_for(wall: float, *, per_epoch: float, fixed: float, n_folds: int, least: int) -> int:
    return max(least, math.floor((wall / n_folds - fixed) / per_epoch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="ham-cpu", help="the shipped search to judge (its first enqueued "
                        "configuration is the no-search default)")
    parser.add_argument("--data-dir", default="../shared/data/ham10000-224")
    parser.add_argument("--outside", default="../shared/data/isic2018-test-ext")
    parser.add_argument("--timeout", type=float, default=1800, help="each search's run --timeout (seconds)")
    parser.add_argument("--arms", default="c,a,b,h", help="which arms, in order; (a) needs (c)'s wall time; (o) "
                        "is --old-spec run with --timeout")
    parser.add_argument("--old-spec", help="arm o: an earlier spec file of the same study (its relative paths are "
                        "read from the working folder)")
    parser.add_argument("--workdir", default="storage/bench-search-value")
    parser.add_argument("--reuse", action="append", default=[], metavar="ARM=RESULT_JSON",
                        help="take a no-search arm (a1-more-epochs, a2-biggest) from an earlier run's result.json "
                        "instead of training it again (its budget, that run's (c) run time, is printed beside)")
    parser.add_argument("--no-search", default="a1-more-epochs,a2-biggest",
                        help="which no-search arms (a) trains: a1-more-epochs, a2-biggest or both")
    parser.add_argument("--holdout-share", type=float, default=2 / 3,
                        help="(h)'s run gets this share of --timeout: its export's refit takes the rest")
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    outside = Path(args.outside).resolve()
    shipped = _shipped(args.spec, Path(args.data_dir).resolve())
    default = dict(shipped["enqueue"][0])
    space = shipped["space"]
    n_folds = int(shipped["data"]["n_folds"])
    arms = args.arms.split(",")
    print(f"search value of {args.spec} on {args.data_dir} (outside: {args.outside}); searches get --timeout "
          f"{args.timeout:.0f}; arms {', '.join(arms)}", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    reused = {}
    for item in args.reuse:
        label, _, path = item.partition("=")
        row = json.loads(Path(path).read_text())
        earlier_c = json.loads((Path(path).parents[1] / "c-shipped" / "result.json").read_text())
        reused[label] = {**row, "from": path, "budget_s": earlier_c["run_s"]}
    for arm in arms:
        if arm == "c":  # a racing spec gets the limit kept (--time-limit), any other Optuna's --timeout
            races = "race" in shipped
            rows["c"] = _arm(work, "c-shipped", shipped, timeout=None if races else args.timeout, outside=outside,
                             time_limit=args.timeout if races else None)
        elif arm == "o":  # an earlier design of the same study (a spec file), as it ran: --timeout
            if not args.old_spec:
                raise SystemExit("arm o needs --old-spec PATH (e.g. git show ca1f0bc:search_spaces/ham-cpu.yaml)")
            old = _absolute(yaml.safe_load(Path(args.old_spec).read_text()))
            old["data"] = {**old.get("data", {}), "dir": str(Path(args.data_dir).resolve())}
            rows["o"] = _arm(work, "o-earlier", old, timeout=args.timeout, outside=outside)
        elif arm == "b":
            spec = {**shipped, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"},
                    "enqueue": [default]}
            rows["b"] = _arm(work, "b-random", spec, timeout=args.timeout, outside=outside)
        elif arm == "h":  # the earlier shipped design on this space: fold 0, pruned per epoch, refit of the top 2
            spec = {**shipped, "objective": "holdout_auc",
                    "pruner": {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 2},
                    "export": {"top_k": 2, "method": "greedy", "refit": True}, "top_k_weights": 3}
            rows["h"] = _arm(work, "h-holdout-refit", spec, timeout=args.timeout * args.holdout_share,
                             outside=outside)
        elif arm == "a" and reused:
            this_c = rows.get("c", {}).get("run_s", float("nan"))
            for label, row in reused.items():
                print(f"({label}) reused from {row['from']}: trained for that run's (c) run time "
                      f"({row['budget_s']:.0f}s); this run's (c) ran {this_c:.0f}s", flush=True)
                rows[label] = row
        elif arm == "a":
            if "c" not in rows:
                raise SystemExit("arm a needs arm c first (it gets c's wall time)")
            wall = rows["c"]["wall_s"] - rows["c"]["export_s"]  # what (a)'s training gets; its export is short
            base = apply_overrides(shipped.get("fixed", {}), {f"data.{k}": v for k, v in shipped["data"].items()})
            biggest = {"model.name": space["model.name"]["choices"][-1],
                       "image_size": space["image_size"]["choices"][-1]}
            wanted = args.no_search.split(",")
            for label, params in (("a1-more-epochs", default), ("a2-biggest", {**default, **biggest})):
                if label not in wanted:
                    continue
                per_epoch, fixed = _probe(base, params, work / label)
                epochs = _epochs_for(wall, per_epoch=per_epoch, fixed=fixed, n_folds=n_folds,
                                     least=int(params.get("epochs", base.get("epochs", 4))))
                print(f"({label}) {per_epoch:.0f}s per epoch, {fixed:.0f}s fixed per fold: {epochs} epochs x "
                      f"{n_folds} folds to fill (c)'s {wall:.0f}s of run", flush=True)
                rows[label] = _arm(work, label, _no_search(shipped, params, epochs=epochs, name=label), timeout=None,
                                   outside=outside)
    _summary(rows)


def _summary(rows: dict[str, dict[str, Any]]) -> None:
    baselines = [k for k in ("a1-more-epochs", "a2-biggest") if k in rows]
    best = max(baselines, key=lambda k: rows[k]["in_search"]) if baselines else None
    print("\narm                  trials (done/pruned)   wall s   in-search   outside (+-se)")
    for row in rows.values():
        print(f"{row['arm']:<20} {row['trials']:>3} ({row['complete']}/{row['pruned']}){'':<10}{row['wall_s']:>7.0f}"
              f"   {row['in_search']:.4f}     {row['outside']:.4f} +-{row['outside_se']:.3f}")
        for member in row["members"]:
            print(f"{'':<24}{member}")
    if best is not None:
        print(f"\n(a) = {best} (the better no-search arm by in-search AUC)")
    for left, right in (("c", best), ("c", "o"), ("c", "b"), ("c", "h"), ("o", best), ("b", best), ("h", best)):
        if left in rows and right is not None and right in rows:
            a, b = rows[left], rows[right]
            diff = paired_auc_difference(np.asarray(a["target"]), np.asarray(a["scores"]), np.asarray(b["scores"]))
            print(f"outside {a['arm']} - {b['arm']}: {diff}   (in-search {a['in_search'] - b['in_search']:+.4f})")
    if best is not None and "c" in rows:
        for other in baselines:
            if other != best:
                diff = paired_auc_difference(np.asarray(rows["c"]["target"]), np.asarray(rows["c"]["scores"]),
                                             np.asarray(rows[other]["scores"]))
                print(f"outside {rows['c']['arm']} - {other}: {diff}   (the other no-search arm)")


if __name__ == "__main__":
    main()
