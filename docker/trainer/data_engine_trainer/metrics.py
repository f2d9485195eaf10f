"""COCO box metrics with faster-coco-eval (the same 12 numbers as pycocotools, computed faster)."""

from __future__ import annotations

from typing import Any

STAT_NAMES = (
    "map", "map50", "map75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip


def coco_metrics(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """The 12 COCO stats of `detections` (COCO results: image_id, category_id, bbox, score) against
    `ground_truth`; -1 where a stat has no ground truth (e.g. no large objects); 0 with no detections."""
    from faster_coco_eval import COCO, COCOeval_faster

    if not detections:
        return {name: 0.0 for name in STAT_NAMES}
    quiet = lambda *args, **kwargs: None  # noqa: E731
    truth = COCO(ground_truth, print_function=quiet)
    evaluation = COCOeval_faster(truth, truth.loadRes(detections), "bbox", print_function=quiet)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return {name: round(float(value), 6) for name, value in zip(STAT_NAMES, evaluation.stats)}
