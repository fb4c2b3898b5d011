"""Blending on one scale, and the table of blend methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.blend import blend_candidates
from melanoma_search.ensemble.candidates import Candidate
from melanoma_search.ensemble.methods import (
    cross_half,
    get_blend_method,
    greedy_selection,
    list_blend_methods,
    register_blend,
)
from melanoma_search.ensemble.scale import fold_percentiles, oof_percentiles, percentiles, weighted_mean
from melanoma_search.errors import ConfigError
from melanoma_search.metrics import AUC, RankMetric, partial_auc, rank_metric


@pytest.fixture()
def members() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    target = (rng.random(400) < 0.25).astype(float)
    scores = {f"m{i}": target * rng.uniform(0.3, 1.5) + rng.normal(0, 1, 400) for i in range(5)}
    return scores, target


def test_rank_blend_is_invariant_to_monotone_transforms(members: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    scores, _ = members
    ranked = {n: percentiles(s, s) for n, s in scores.items()}
    transformed = dict(scores, m0=np.exp(scores["m0"]) * 7 + 3, m1=1 / (1 + np.exp(-scores["m1"])))
    ranked_t = {n: percentiles(s, s) for n, s in transformed.items()}
    weights = {n: 1.0 for n in scores}
    np.testing.assert_allclose(weighted_mean(ranked, weights), weighted_mean(ranked_t, weights))


def test_percentiles_do_not_depend_on_the_batch() -> None:
    reference = np.linspace(0, 1, 101)
    alone = percentiles(np.array([0.42]), reference)
    batch = percentiles(np.array([0.9, 0.42, 0.1]), reference)
    assert alone[0] == batch[1] and 0 <= batch.min() and batch.max() <= 1
    assert percentiles(np.array([-5.0, 5.0]), reference).tolist() == [0.0, 1.0]


def test_fold_models_that_disagree_in_scale_are_each_ranked_on_their_own() -> None:
    """Fold 0's model scores in [0, 0.1], fold 1's in [0.9, 1]: the same ranking, on other scales."""
    reference = pd.DataFrame({"fold": [0] * 100 + [1] * 100,
                              "pred": np.r_[np.linspace(0.0, 0.1, 100), np.linspace(0.9, 1.0, 100)]})
    top, bottom = {0: np.array([0.1]), 1: np.array([1.0])}, {0: np.array([0.0]), 1: np.array([0.9])}
    assert fold_percentiles(top, reference)[0] == pytest.approx(1.0, abs=0.01)  # both models' highest score
    assert fold_percentiles(bottom, reference)[0] == pytest.approx(0.0, abs=0.01)  # both models' lowest
    # the mean raw score ranked against the pooled reference (the old scale) puts both in the middle
    pooled = reference["pred"].to_numpy()
    assert percentiles(np.array([np.mean([0.1, 1.0])]), pooled)[0] == pytest.approx(0.5)
    assert percentiles(np.array([np.mean([0.0, 0.9])]), pooled)[0] == pytest.approx(0.5)
    # an out-of-fold row is its own fold model's percentile: the same scale as new images get
    np.testing.assert_allclose(oof_percentiles(reference), np.r_[percentiles(pooled[:100], pooled[:100]),
                                                                   percentiles(pooled[100:], pooled[100:])])


def test_weighted_mean_ignores_zero_weights_and_needs_one() -> None:
    scores = {"a": np.array([0.2, 0.4]), "b": np.array([0.6, 0.8]), "c": np.array([1.0, 1.0])}
    np.testing.assert_allclose(weighted_mean(scores, {"a": 3, "b": 1, "c": 0}), [0.3, 0.5])
    with pytest.raises(ValueError, match="positive weight"):
        weighted_mean(scores, {"a": 0.0})


def test_greedy_never_scores_below_its_best_member(members: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    scores, target = members
    ranked = {n: percentiles(s, s) for n, s in scores.items()}
    result = greedy_selection(ranked, target)
    best = max(roc_auc_score(target, r) for r in ranked.values())
    assert result.auc >= best
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert result.auc == pytest.approx(roc_auc_score(target, weighted_mean(ranked, result.weights)))


def test_greedy_with_one_member_is_that_member() -> None:
    target = np.array([0, 1, 0, 1, 1, 0.0])
    result = greedy_selection({"only": np.array([0.1, 0.8, 0.3, 0.6, 0.9, 0.2])}, target)
    assert result.weights == {"only": 1.0} and result.auc == 1.0


def test_greedy_leaves_out_a_member_that_adds_nothing(members: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    scores, target = members
    noise = np.random.default_rng(5).random(len(target))  # knows nothing of the labels
    ranked = {**{n: percentiles(s, s) for n, s in scores.items()}, "noise": noise}
    assert "noise" in greedy_selection(ranked, target).weights  # plain selection fits this sample's noise ...
    chosen = get_blend_method("greedy").choose(ranked, target)
    assert "noise" not in chosen and len(chosen) >= 2  # ... the export's greedy keeps what helps on both halves
    assert "noise" in get_blend_method("rank").choose(ranked, target)  # rank blends whatever it is given


def test_fitted_weights_are_scored_on_the_other_half(members: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    scores, target = members
    ranked = {n: percentiles(s, s) for n, s in scores.items()}
    greedy = get_blend_method("greedy")
    honest = roc_auc_score(target, cross_half(greedy, ranked, target))
    in_sample = roc_auc_score(target, weighted_mean(ranked, greedy.choose(ranked, target)))
    assert greedy.fitted and not get_blend_method("rank").fitted
    assert honest < in_sample  # weights chosen on the rows flatter the rows


def test_a_new_blend_method_is_one_registered_function(tmp_path: Path) -> None:
    name = "top-two"
    if name not in list_blend_methods():
        @register_blend(name, fitted=True, summary="the two best candidates, equally weighted")
        def _top_two(scores: dict[str, np.ndarray], target: np.ndarray, *, metric: RankMetric = AUC,
                     folds: np.ndarray | None = None) -> dict[str, float]:
            return {n: 0.5 for n in sorted(scores, key=lambda n: -metric(target, scores[n], folds))[:2]}

    rng = np.random.default_rng(1)
    target = np.r_[np.ones(30), np.zeros(90)]
    names = [f"ISIC_{i:04d}" for i in range(120)]
    candidates = []
    for number, signal in enumerate((2.0, 0.5, 0.1)):
        pred = 1 / (1 + np.exp(-(signal * target + rng.normal(0, 1, 120))))
        oof = pd.DataFrame({"image_name": names, "target": target, "pred": pred, "fold": np.arange(120) % 3})
        candidates.append(Candidate(number=number, value=0.0, params={}, folder=tmp_path, oof=oof, test=None,
                                    seconds=1.0))
    result = blend_candidates(candidates, method=name)
    assert [m.name for m in result.members] == ["trial-00000", "trial-00001"]
    assert result.weights == {"trial-00000": 0.5, "trial-00001": 0.5}
    assert len(result.candidates) == 3 and result.in_sample_auc is not None
    with pytest.raises(ConfigError, match="unknown blend method 'nope'; available: rank, greedy, best-single"):
        blend_candidates(candidates, method="nope")


def _candidates(tmp_path: Path, scores: dict[str, np.ndarray], target: np.ndarray) -> list[Candidate]:
    names = [f"ISIC_{i:04d}" for i in range(len(target))]
    return [Candidate(number=number, value=0.0, params={}, folder=tmp_path, seconds=1.0, test=None,
                      oof=pd.DataFrame({"image_name": names, "target": target, "pred": pred,
                                        "fold": np.arange(len(target)) % 3}))
            for number, pred in enumerate(scores.values())]


def test_what_ships_is_the_final_weights_blend_and_its_rival_is_chosen_the_same_way(
        members: tuple[dict[str, np.ndarray], np.ndarray], tmp_path: Path) -> None:
    """Greedy weights chosen on one half score the other (the honest AUC), but new images get the final weights:
    the probability map and the operating points are fitted on those. The best member is compared like with like:
    chosen on one half and scored on the other, not the in-sample maximum over candidates."""
    scores, target = members
    result = blend_candidates(_candidates(tmp_path, scores, target), method="greedy")
    final = weighted_mean(result.oof_ranked, result.weights)
    assert np.allclose(result.shipped, final) and not np.allclose(result.oof_blend, final)
    assert np.allclose(result.calibration_scores, result.shipped)  # no test split: nothing measured to remove
    assert result.best_member_cross_half_auc is not None
    assert result.best_member_cross_half_auc <= result.best_member_auc
    best_on_halves = cross_half(get_blend_method("best-single"), result.oof_ranked, target, folds=result.folds)
    assert result.best_member_cross_half_auc == pytest.approx(AUC(target, best_on_halves, result.folds))
    rng = np.random.default_rng(4)  # six equally good candidates: the best on all rows is the luckiest one
    alike = {f"m{i}": 0.8 * target + rng.normal(0, 1, len(target)) for i in range(6)}
    tied = blend_candidates(_candidates(tmp_path, alike, target), method="greedy")
    assert tied.best_member_cross_half_auc is not None
    assert tied.best_member_cross_half_auc < tied.best_member_auc - 0.005  # the in-sample maximum flatters
    rank = blend_candidates(_candidates(tmp_path, scores, target), method="rank")
    assert np.allclose(rank.shipped, rank.oof_blend)  # nothing fitted: one blend


def _two_kinds(n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two scorings: ``broad`` ranks well overall but hides a fifth of the melanomas among the lowest
    scores; ``screen`` ranks less well overall but leaves no melanoma that far below the benign lesions (the high-
    sensitivity end ISIC 2024's partial AUC reads)."""
    rng = np.random.default_rng(3)
    target = (rng.random(n) < 0.25).astype(float)
    hidden = (target == 1) & (rng.random(n) < 0.22)
    broad = np.where(hidden, rng.normal(-2.0, 0.3, n), 4.0 * target + rng.normal(0, 1, n))
    screen = 0.8 * target + rng.normal(0, 1, n)
    return target, broad, screen


def test_the_blend_chooses_by_the_studys_metric(tmp_path: Path) -> None:
    """A pauc study's blend is chosen for its partial AUC, an AUC study's for AUC: the same two candidates, the
    other one chosen (on d4b4a5f every method maximised AUC whatever the objective)."""
    target, broad, screen = _two_kinds()
    pauc = rank_metric("pauc@0.8")
    assert roc_auc_score(target, broad) > roc_auc_score(target, screen)
    assert partial_auc(target, screen) > partial_auc(target, broad)
    names = [f"ISIC_{i:04d}" for i in range(len(target))]
    candidates = [Candidate(number=number, value=0.0, params={}, folder=tmp_path, seconds=1.0, test=None,
                            oof=pd.DataFrame({"image_name": names, "target": target, "pred": pred,
                                              "fold": np.arange(len(target)) % 2}))
                  for number, pred in enumerate((broad, screen))]
    by_auc = blend_candidates(candidates, method="best-single", metric=AUC)
    by_pauc = blend_candidates(candidates, method="best-single", metric=pauc)
    assert set(by_auc.weights) == {"trial-00000"} and set(by_pauc.weights) == {"trial-00001"}
    assert by_pauc.metric == "pauc@0.8" and by_pauc.value == pytest.approx(by_pauc.pauc)
    assert set(greedy_selection({"a": broad, "b": screen}, target, metric=pauc).weights) >= {"b"}


def test_fold_models_that_rank_perfectly_on_different_scales_score_one(tmp_path: Path) -> None:
    """Out-of-fold AUC is the mean of the folds': two fold models that each rank their rows perfectly, one in
    [0, 0.2] and one in [0.6, 1], score 1.0 in the blend, where pooling their raw scores (as d4b4a5f's objective
    did) scores less."""
    target = np.tile([0.0, 0.0, 1.0, 0.0, 1.0, 0.0], 20)
    folds = np.repeat([0, 1], 60)
    raw = np.where(folds == 0, 0.2 * (target * 0.5 + np.linspace(0, 0.4, 120)),
                   0.6 + 0.4 * (target * 0.5 + np.linspace(0, 0.4, 120)))
    assert roc_auc_score(target, raw) < 0.9  # pooled raw: the scales, not the ranking, decide
    names = [f"ISIC_{i:04d}" for i in range(120)]
    oof = pd.DataFrame({"image_name": names, "target": target, "pred": raw, "fold": folds})
    result = blend_candidates([Candidate(number=0, value=1.0, params={}, folder=tmp_path, oof=oof, test=None,
                                         seconds=1.0)], method="rank")
    assert result.auc == 1.0 and result.member_aucs == {"trial-00000": 1.0} and result.best_member_auc == 1.0


def test_greedy_keeps_the_best_candidate_when_the_halves_start_elsewhere() -> None:
    """Near-equal candidates: a half may start its selection from another one and never pick the best; the blend
    still starts from the best on all rows (on cd00ee2's rule a ham-quick export left its best of six out)."""
    greedy = get_blend_method("greedy")
    for seed in range(12):
        rng = np.random.default_rng(seed)
        target = (rng.random(300) < 0.25).astype(float)
        folds = np.arange(300) % 3
        shared = target + rng.normal(0, 1, 300)  # two near-twins (one adds nothing to the other) and a weaker
        scores = {"a": shared + rng.normal(0, 0.15, 300), "b": shared + rng.normal(0, 0.15, 300),  # independent one
                  "c": 0.7 * target + rng.normal(0, 1, 300)}
        best = max(scores, key=lambda n: AUC(target, scores[n], folds))
        assert best in greedy.choose(scores, target, metric=AUC, folds=folds), seed
