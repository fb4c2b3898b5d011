"""The trial's ROC picture: valid SVG whose axis title stays clear of the tick labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from melanoma_search.search.artifacts import roc_svg

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
