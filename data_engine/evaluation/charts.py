"""The report's two charts as PNG bytes: precision/recall curves at IoU 0.5, and per-class AP of both models.

matplotlib (Agg, no display) is imported inside the functions so loading the code location stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from data_engine.evaluation.matching import RECALL_THRESHOLDS


def pr_curve_png(report: Mapping[str, Any]) -> bytes:
    """One panel per class: the candidate's (solid) and production's (dashed) PR curve at IoU 0.5."""
    plt = _pyplot()
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    classes = list(candidate["pr_curve"])
    columns = min(3, len(classes))
    rows = (len(classes) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for axis, name in zip(axes.flat, classes):
        axis.plot(RECALL_THRESHOLDS, _curve(candidate["pr_curve"][name]), label="candidate")
        if production and name in production["pr_curve"]:
            axis.plot(RECALL_THRESHOLDS, _curve(production["pr_curve"][name]), linestyle="--", label="production")
        axis.set(title=name, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        axis.legend(loc="lower left", fontsize="small")
    for axis in list(axes.flat)[len(classes) :]:
        axis.set_visible(False)
    return _png(figure, plt)


def per_class_bar_png(report: Mapping[str, Any]) -> bytes:
    """Per-class AP@[.50:.95] of the candidate beside production's."""
    plt = _pyplot()
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    classes = list(candidate["per_class"])
    positions = range(len(classes))
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(classes)), 3.5))
    width = 0.4 if production else 0.8
    axis.bar([p - (width / 2 if production else 0) for p in positions], [max(0.0, candidate["per_class"][c]["ap"]) for c in classes], width, label="candidate")
    if production:
        values = [max(0.0, production["per_class"].get(c, {}).get("ap", 0.0)) for c in classes]
        axis.bar([p + width / 2 for p in positions], values, width, label="production")
    axis.set_xticks(list(positions), classes, rotation=30, ha="right")
    axis.set(ylabel="AP@[.50:.95]", ylim=(0, 1))
    axis.legend()
    return _png(figure, plt)


def _curve(values: list[float]) -> list[float]:
    return [max(0.0, value) for value in values]  # -1: no ground truth of the class


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure, plt) -> bytes:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
