"""Figures per subgroup: counts, AUC as computed directly, and groups too small to say anything."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.calibration import OperatingPoint
from melanoma_search.report.subgroups import MIN_EACH, subgroups


def test_each_group_gets_its_own_figures_and_a_small_one_says_so() -> None:
    rng = np.random.default_rng(0)
    n = 600
    rows = pd.DataFrame({"sex": rng.choice(["male", "female"], n), "age_approx": rng.choice([25, 50, 70], n),
                         "site": rng.choice(["torso", "head/neck"], n), "source": "HAM10000"})
    rows.loc[:7, "site"] = "palms/soles"  # eight images: too few to say anything
    target = (rng.random(n) < 0.25).astype(float)
    score = target * np.where(rows["sex"] == "male", 2.0, 0.3) + rng.normal(0, 1, n)  # better on men
    point = OperatingPoint(name="youden", threshold=0.5, sensitivity=0.0, specificity=0.0,
                           sensitivity_ci=(0.0, 0.0), specificity_ci=(0.0, 0.0))
    result = subgroups(rows, target, score, points=[point], where="test")
    table = result.table.set_index(["attribute", "group"])
    for sex in ("male", "female"):
        mask = (rows["sex"] == sex).to_numpy()
        assert table.loc[("sex", sex), "images"] == mask.sum()
        assert table.loc[("sex", sex), "melanomas"] == target[mask].sum()
        assert table.loc[("sex", sex), "auc"] == pytest.approx(roc_auc_score(target[mask], score[mask]))
        low, high = table.loc[("sex", sex), ["auc_low", "auc_high"]]
        assert low < table.loc[("sex", sex), "auc"] < high
    assert table.loc[("sex", "male"), "auc"] > table.loc[("sex", "female"), "auc"] + 0.2
    assert np.isnan(table.loc[("site", "palms/soles"), "auc"])  # fewer than MIN_EACH of each class
    assert set(table.loc["age"].index) == {"<30", "45-59", "60-74"}
    sensitivity = table.loc[("sex", "male"), "sens@youden"]
    male = (rows["sex"] == "male").to_numpy() & (target > 0.5)
    assert sensitivity.startswith(f"{(score[male] >= 0.5).mean():.2f} [")
    header, cells = result.cells()
    small = next(row for row in cells if row[1] == "palms/soles")
    assert small[4] == "too few to say" and small[2] == "8"
    assert f"{MIN_EACH}+ melanomas" in result.markdown() and header[:4] == ["attribute", "group", "images",
                                                                           "melanomas"]
