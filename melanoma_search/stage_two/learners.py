"""Stage two's tree learners, as a table: LightGBM, XGBoost and CatBoost, the three every top ISIC 2024 team stacked.

Each entry samples its own hyperparameters from an Optuna trial (named ``<learner>.<param>``, so a study over several
learners keeps each one's parameters apart), fits on a feature table with NaN for missing values, predicts
P(melanoma), and saves and loads a fitted model in the library's own format: LightGBM's text model, XGBoost's JSON,
CatBoost's ``.cbm``. None is a pickle, so loading an ensemble folder runs no code. LightGBM is a core dependency
(about 3 MB, and the fastest here: docs/stage-two.md); XGBoost and CatBoost come with the ``trees`` extra
(``pip install 'melanoma_search[trees]'``), and a spec that names one without it installed is refused in one line.

A new learner is one :func:`register_learner` call with those five functions.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from melanoma_search.errors import ConfigError
from melanoma_search.registry import Registry

__all__ = ["Learner", "get_learner", "list_learners", "register_learner"]

Params = dict[str, Any]


@dataclass(frozen=True)
class Learner:
    name: str
    module: str
    """The library it needs (checked before a study starts)."""
    suffix: str
    """The saved model's file suffix (its format)."""
    suggest: Callable[[optuna.Trial], Params]
    fit: Callable[[pd.DataFrame, np.ndarray, Params, int], Any]
    """``(features, target, params, seed) -> model``."""
    predict: Callable[[Any, pd.DataFrame], np.ndarray]
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]

    def check_installed(self) -> None:
        if importlib.util.find_spec(self.module) is None:
            raise ConfigError(f"stage_two.learners: {self.name} needs the {self.module} package: "
                              "pip install 'melanoma_search[trees]'")


_LEARNERS: Registry[Learner] = Registry("stage-two learner", error=ConfigError)


def register_learner(learner: Learner) -> Learner:
    _LEARNERS.add(learner.name, learner)
    return learner


def get_learner(name: str) -> Learner:
    return _LEARNERS.get(name)


def list_learners() -> tuple[str, ...]:
    return _LEARNERS.names()


def _threads() -> int:
    return max(1, os.cpu_count() or 1)


# ---- LightGBM

def _lgb_suggest(trial: optuna.Trial) -> Params:
    return {"num_leaves": trial.suggest_int("lightgbm.num_leaves", 7, 63, log=True),
            "learning_rate": trial.suggest_float("lightgbm.learning_rate", 0.01, 0.2, log=True),
            "rounds": trial.suggest_int("lightgbm.rounds", 100, 500, step=50),
            "min_child_samples": trial.suggest_int("lightgbm.min_child_samples", 5, 100, log=True),
            "feature_fraction": trial.suggest_float("lightgbm.feature_fraction", 0.4, 1.0),
            "bagging_fraction": trial.suggest_float("lightgbm.bagging_fraction", 0.5, 1.0),
            "lambda_l2": trial.suggest_float("lightgbm.lambda_l2", 1e-3, 10.0, log=True)}


def _lgb_fit(features: pd.DataFrame, target: np.ndarray, params: Params, seed: int) -> Any:
    import lightgbm as lgb

    options = {k: v for k, v in params.items() if k != "rounds"}
    options.update(objective="binary", seed=seed, bagging_freq=1, verbose=-1, num_threads=_threads(),
                   deterministic=True, force_col_wise=True)
    data = lgb.Dataset(features.to_numpy(np.float32), label=target, feature_name=_safe_names(features))
    return lgb.train(options, data, num_boost_round=int(params["rounds"]))


def _safe_names(features: pd.DataFrame) -> list[str]:
    """Feature names the libraries accept (no JSON specials): the columns by position; the table keeps the names."""
    return [f"f{i}" for i in range(features.shape[1])]


def _lgb_load(path: Path) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_file=str(path))


register_learner(Learner(
    name="lightgbm", module="lightgbm", suffix=".lgb.txt", suggest=_lgb_suggest, fit=_lgb_fit,
    predict=lambda model, features: np.asarray(model.predict(features.to_numpy(np.float32))),
    save=lambda model, path: model.save_model(str(path)), load=_lgb_load))


# ---- XGBoost

def _xgb_suggest(trial: optuna.Trial) -> Params:
    return {"max_depth": trial.suggest_int("xgboost.max_depth", 2, 8),
            "eta": trial.suggest_float("xgboost.eta", 0.01, 0.2, log=True),
            "rounds": trial.suggest_int("xgboost.rounds", 100, 500, step=50),
            "subsample": trial.suggest_float("xgboost.subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("xgboost.colsample_bytree", 0.4, 1.0),
            "min_child_weight": trial.suggest_float("xgboost.min_child_weight", 0.5, 20.0, log=True),
            "lambda": trial.suggest_float("xgboost.lambda", 1e-3, 10.0, log=True)}


def _xgb_fit(features: pd.DataFrame, target: np.ndarray, params: Params, seed: int) -> Any:
    import xgboost as xgb

    options = {k: v for k, v in params.items() if k != "rounds"}
    options.update(objective="binary:logistic", seed=seed, nthread=_threads(), tree_method="hist")
    data = xgb.DMatrix(features.to_numpy(np.float32), label=target, missing=np.nan)
    return xgb.train(options, data, num_boost_round=int(params["rounds"]))


def _xgb_predict(model: Any, features: pd.DataFrame) -> np.ndarray:
    import xgboost as xgb

    return np.asarray(model.predict(xgb.DMatrix(features.to_numpy(np.float32), missing=np.nan)))


def _xgb_load(path: Path) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


register_learner(Learner(
    name="xgboost", module="xgboost", suffix=".xgb.json", suggest=_xgb_suggest, fit=_xgb_fit,
    predict=_xgb_predict, save=lambda model, path: model.save_model(str(path)), load=_xgb_load))


# ---- CatBoost

def _cat_suggest(trial: optuna.Trial) -> Params:
    return {"depth": trial.suggest_int("catboost.depth", 3, 8),
            "learning_rate": trial.suggest_float("catboost.learning_rate", 0.01, 0.2, log=True),
            "rounds": trial.suggest_int("catboost.rounds", 100, 500, step=50),
            "l2_leaf_reg": trial.suggest_float("catboost.l2_leaf_reg", 0.5, 20.0, log=True)}


def _cat_fit(features: pd.DataFrame, target: np.ndarray, params: Params, seed: int) -> Any:
    from catboost import CatBoostClassifier

    model = CatBoostClassifier(iterations=int(params["rounds"]), depth=params["depth"],
                               learning_rate=params["learning_rate"], l2_leaf_reg=params["l2_leaf_reg"],
                               random_seed=seed, thread_count=_threads(), verbose=False, allow_writing_files=False)
    return model.fit(features.to_numpy(np.float32), target)


def _cat_load(path: Path) -> Any:
    from catboost import CatBoostClassifier

    return CatBoostClassifier().load_model(str(path), format="cbm")


register_learner(Learner(
    name="catboost", module="catboost", suffix=".cbm", suggest=_cat_suggest, fit=_cat_fit,
    predict=lambda model, features: np.asarray(model.predict_proba(features.to_numpy(np.float32))[:, 1]),
    save=lambda model, path: model.save_model(str(path), format="cbm"), load=_cat_load))
