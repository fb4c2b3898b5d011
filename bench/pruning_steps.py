"""How many fold models a poor configuration costs under each shipped spec's pruner, before and after steps counted
from 1 (a simulation: the trial's real reporter and the spec's real pruner, no training).

Every fold-reporting spec (``cv_auc`` / ``pauc``: ``b5-search``, ``ham-cpu``) runs 200 simulated trials in an
in-memory study opened as a run opens it. A trial has a true quality q ~ U(0.75, 0.90) and each fold model scores
q + N(0, 0.015) (the fold-to-fold noise of a ~150-melanoma fold). Two arms, same trials:

  before (d4b4a5f): fold k reported at step k - 1, and the spec's pruner as it shipped then (b5-search: Hyperband,
      ``min_resource: 1``, ``reduction_factor: 3``);
  after: fold k reported at step k, and the spec's pruner as it ships now (b5-search: successive halving);
  for b5-search also the step base alone under its old Hyperband.

Printed per arm: trials pruned after their first fold model, mean fold models per trial in the worst half of the
qualities and in all, and whether the best quality finished every fold. It cannot show real learning curves (a
fold's score here does not depend on the fold before it) nor the cost of a fold model in seconds.

    python bench/pruning_steps.py [--trials 200]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import optuna
import pandas as pd

from melanoma_search.search import records
from melanoma_search.search.objective import load_objective
from melanoma_search.search.spec import PrunerSpec, load_spec
from melanoma_search.search.study import build_pruner, open_study
from melanoma_search.search.trial import _Reporter
from melanoma_search.train.results import FoldResult

#: The pruners the fold-reporting specs shipped with on d4b4a5f (where they differ from today's).
BEFORE = {"b5-search": {"name": "hyperband", "min_resource": 1, "reduction_factor": 3}}


def _fold(fold: int, auc: float, rng: np.random.Generator) -> FoldResult:
    """A fold model whose out-of-fold AUC is about ``auc`` (binormal: separation sqrt(2) * probit(auc))."""
    from scipy.special import ndtri

    target = (np.arange(400) % 5 == 0).astype(float)
    pred = np.sqrt(2) * ndtri(np.clip(auc, 0.51, 0.99)) * target + rng.normal(0, 1, 400)
    oof = pd.DataFrame({"image_name": [f"{fold}-{i}" for i in range(400)], "target": target, "fold": fold,
                        "pred": pred})
    return FoldResult(fold=fold, checkpoint="last", best_epoch=1, best_epoch_auc=0.5, auc=auc, oof=oof, test=None,
                      history=[], lr=1e-3, seconds=1.0, images_per_s=1.0)


def simulate(name: str, *, first_step: int, pruner: dict[str, object] | None, trials: int, seed: int
             ) -> dict[str, object]:
    spec = load_spec(name)
    if pruner is not None:
        spec = spec.model_copy(update={"pruner": PrunerSpec.model_validate(pruner)})
    objective = load_objective(spec.objective)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, objective, storage=optuna.storages.InMemoryStorage(), study_name=name, seed=seed)
    study.pruner = build_pruner(spec.pruner)
    study.set_user_attr(records.FIRST_STEP, first_step)
    folds = list(objective.folds(int(spec.data.get("n_folds", 5))))
    rng = np.random.default_rng(seed)
    qualities, trained = rng.uniform(0.75, 0.90, trials), []
    for quality in qualities:
        trial = study.ask()
        reporter, count = _Reporter(trial, objective=objective, earlier=set(), log=lambda line: None), 0
        try:
            for fold in folds:
                count += 1
                reporter.fold(_fold(fold, quality + rng.normal(0, 0.015), rng))
            study.tell(trial, float(quality))
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        trained.append(count)
    trained_arr = np.asarray(trained)
    worst = qualities < np.median(qualities)
    return {"spec": name, "pruner": spec.pruner.name, "first_step": first_step, "folds": len(folds),
            "pruned_after_first_fold": int((trained_arr == 1).sum()),
            "fold_models_per_trial_worst_half": round(float(trained_arr[worst].mean()), 2),
            "fold_models_per_trial": round(float(trained_arr.mean()), 2),
            "best_finished": bool(trained_arr[int(np.argmax(qualities))] == len(folds))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("b5-search", "ham-cpu"):
        arms = [("before", 0, BEFORE.get(name)), ("after", 1, None)]
        if name in BEFORE:  # the step base alone, under the old pruner
            arms.insert(1, ("steps from 1, old pruner", 1, BEFORE[name]))
        for arm, first, pruner in arms:
            row = simulate(name, first_step=first, pruner=pruner, trials=args.trials, seed=args.seed)
            print(json.dumps({"arm": arm, **row}))


if __name__ == "__main__":
    main()
