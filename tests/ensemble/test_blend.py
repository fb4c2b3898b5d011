from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.blend import blend, greedy_selection, percentiles


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
    np.testing.assert_allclose(blend(ranked, weights), blend(ranked_t, weights))


def test_percentiles_do_not_depend_on_the_batch() -> None:
    reference = np.linspace(0, 1, 101)
    alone = percentiles(np.array([0.42]), reference)
    batch = percentiles(np.array([0.9, 0.42, 0.1]), reference)
    assert alone[0] == batch[1] and 0 <= batch.min() and batch.max() <= 1
    assert percentiles(np.array([-5.0, 5.0]), reference).tolist() == [0.0, 1.0]


def test_greedy_never_scores_below_its_best_member(members: tuple[dict[str, np.ndarray], np.ndarray]) -> None:
    scores, target = members
    ranked = {n: percentiles(s, s) for n, s in scores.items()}
    result = greedy_selection(ranked, target)
    best = max(roc_auc_score(target, r) for r in ranked.values())
    assert result.auc >= best
    assert sum(result.weights.values()) == pytest.approx(1.0)
    assert result.auc == pytest.approx(roc_auc_score(target, blend(ranked, result.weights)))


def test_greedy_with_one_member_is_that_member() -> None:
    target = np.array([0, 1, 0, 1, 1, 0.0])
    result = greedy_selection({"only": np.array([0.1, 0.8, 0.3, 0.6, 0.9, 0.2])}, target)
    assert result.weights == {"only": 1.0} and result.auc == 1.0
