"""How the ensemble does for whom: AUC, partial AUC, and sensitivity and specificity at the operating points, per
sex, age band, anatomical site and source collection, with counts and intervals (fairlearn's ``MetricFrame``).

A group with fewer than :data:`MIN_EACH` melanomas or benign images says "too few" instead of a number: an AUC on
five melanomas moves by more than any difference worth reading. Intervals: AUC +- 1.96 Hanley-McNeil standard errors,
proportions Wilson's (``scipy.stats.binomtest``).

The AUC and partial AUC of a group are always those of the scores as they are (out of fold: the shipped blend of
the fold model that scored each row, on the ensemble's common percentile scale, pooled over the group's rows): an
estimate that reads the labels to move scores would inflate any rank figure by construction. The rates at the
operating points may be read on other scores (``rates_on``: the out-of-fold rows as the combination of fold models
is estimated to score them), and the table then says they are estimates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from melanoma_search.ensemble.calibration import OperatingPoint
from melanoma_search.metrics import auc_standard_error, partial_auc

__all__ = ["MIN_EACH", "Subgroups", "subgroups"]

#: Fewest melanomas and fewest benign images a group needs for its figures to be shown.
MIN_EACH = 10
_AGE_BANDS = (0, 30, 45, 60, 75, 200)
_AGE_LABELS = ("<30", "30-44", "45-59", "60-74", "75+")


def _groupings(rows: pd.DataFrame) -> dict[str, pd.Series]:
    """The attributes to split by, where the rows have them (a column of nothing but missing values is skipped)."""
    out: dict[str, pd.Series] = {}
    if rows["sex"].notna().any():
        out["sex"] = rows["sex"].fillna("unknown").astype(str)
    if rows["age_approx"].notna().any():
        bands = pd.cut(rows["age_approx"], bins=_AGE_BANDS, labels=_AGE_LABELS, right=False).astype(object)
        out["age"] = bands.where(bands.notna(), "unknown").astype(str)
    if rows["site"].notna().any():
        out["site"] = rows["site"].fillna("unknown").astype(str)
    out["source"] = rows["source"].astype(str)
    return out


def _enough(target: np.ndarray) -> bool:
    positives = int(np.sum(target))
    return positives >= MIN_EACH and len(target) - positives >= MIN_EACH


@dataclass(frozen=True)
class Subgroups:
    """Per attribute, one row per group: counts, and figures (``None`` where the group is too small)."""

    where: str
    table: pd.DataFrame

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """The table as text: its header, and one row per group (a group too small to say anything says so)."""
        rates = [c for c in self.table.columns if c.startswith(("sens@", "spec@"))]
        header = ["attribute", "group", "images", "melanomas", "AUC [95 %]", "pAUC", *rates]
        rows = []
        for _, row in self.table.iterrows():
            figures = (["too few to say", "", *("" for _ in rates)] if pd.isna(row["auc"]) else
                       [f"{row['auc']:.3f} [{row['auc_low']:.3f}, {row['auc_high']:.3f}]", f"{row['pauc']:.3f}",
                        *(str(row[c]) for c in rates)])
            rows.append([str(row["attribute"]), str(row["group"]), str(row["images"]), str(row["melanomas"]),
                         *figures])
        return header, rows

    def markdown(self) -> str:
        header, rows = self.cells()
        return "\n".join([f"{self.where} (a figure needs {MIN_EACH}+ melanomas and {MIN_EACH}+ benign images):", "",
                          "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                          *("| " + " | ".join(r) + " |" for r in rows)])

    def to_dict(self) -> list[dict[str, Any]]:
        return [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
                for row in self.table.to_dict(orient="records")]


def _proportion(hits: int, total: int) -> str:
    if total == 0:
        return ""
    interval = binomtest(hits, total).proportion_ci(method="wilson")
    return f"{hits / total:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def subgroups(rows: pd.DataFrame, target: np.ndarray, score: np.ndarray, *, points: list[OperatingPoint],
              where: str, rates_on: np.ndarray | None = None) -> Subgroups:
    """Figures per group of ``rows`` (the scored images' metadata, in the order of ``target`` and ``score``): rank
    figures of ``score``, rates at the operating points of ``rates_on`` (default ``score``)."""
    from fairlearn.metrics import MetricFrame

    target, score = np.asarray(target, dtype=np.float64), np.asarray(score, dtype=np.float64)
    rated = score if rates_on is None else np.asarray(rates_on, dtype=np.float64)

    def auc(y: np.ndarray, at: np.ndarray) -> float:  # ``at``: the group's row positions (see y_pred below)
        return float(roc_auc_score(y, score[at.astype(int)])) if _enough(y) else float("nan")

    def pauc(y: np.ndarray, at: np.ndarray) -> float:
        return partial_auc(y, score[at.astype(int)]) if _enough(y) else float("nan")

    def melanomas(y: np.ndarray, s: np.ndarray) -> int:
        return int(np.sum(y))

    def images(y: np.ndarray, s: np.ndarray) -> int:
        return len(y)

    metrics: dict[str, Any] = {"images": images, "melanomas": melanomas, "auc": auc, "pauc": pauc}
    for point in points:
        def sensitivity(y: np.ndarray, at: np.ndarray, t: float = point.threshold) -> str:
            s = rated[at.astype(int)]
            return _proportion(int(np.sum((s >= t) & (y > 0.5))), int(np.sum(y > 0.5))) if _enough(y) else ""

        def specificity(y: np.ndarray, at: np.ndarray, t: float = point.threshold) -> str:
            s = rated[at.astype(int)]
            return _proportion(int(np.sum((s < t) & (y < 0.5))), int(np.sum(y < 0.5))) if _enough(y) else ""

        metrics[f"sens@{point.name}"] = sensitivity
        metrics[f"spec@{point.name}"] = specificity
    frames = []
    for attribute, groups in _groupings(rows.reset_index(drop=True)).items():
        # y_pred carries each row's position, so a metric reads the group's rank scores and rated scores alike
        frame = MetricFrame(metrics=metrics, y_true=target, y_pred=np.arange(len(target), dtype=np.float64),
                            sensitive_features=groups.rename(attribute)).by_group.reset_index()
        frame = frame.rename(columns={attribute: "group"})
        frame.insert(0, "attribute", attribute)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    errors = [auc_standard_error(a, positives=m, negatives=n - m) if not pd.isna(a) else np.nan
              for a, m, n in zip(table["auc"], table["melanomas"], table["images"], strict=True)]
    table.insert(table.columns.get_loc("auc") + 1, "auc_low", table["auc"] - 1.96 * np.asarray(errors))
    table.insert(table.columns.get_loc("auc_low") + 1, "auc_high", table["auc"] + 1.96 * np.asarray(errors))
    if rates_on is not None:
        where += (" (AUC and pAUC of the out-of-fold scores as they are; sensitivity and specificity at the operating "
                  "points estimated for the combination of fold models)")
    return Subgroups(where=where, table=table)
