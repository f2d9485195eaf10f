"""COCO box metrics of one model's detections on the test split, computed with faster-coco-eval.

faster-coco-eval is pycocotools' algorithm with a C++ core (a test checks the numbers are equal); it is
imported inside the function so loading the code location stays cheap.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from data_engine.evaluation.matching import mean_precision

# COCOeval.stats, in order.
SUMMARY_METRICS = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large", "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large")


def coco_evaluation(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, Any]:
    """The 12 COCO numbers, per-class AP/AP50 and support, and the precision array for PR curves.

    `detections` are COCO results whose image and category ids are the ground truth's.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    # COCO and loadRes add fields to the records they are given (area, id, segmentation): they get copies.
    gt = COCO({key: [dict(record) for record in ground_truth[key]] for key in ("images", "annotations", "categories")})
    # loadRes rejects an empty list; an empty result set scores 0 (or -1 where there is no ground truth).
    dt = gt.loadRes([dict(detection) for detection in detections]) if detections else COCO({**ground_truth, "annotations": []})
    evaluator = COCOeval_faster(gt, dt, "bbox", print_function=logging.getLogger(__name__).debug)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = np.asarray(evaluator.eval["precision"])  # [T IoU, R recall, K class, A area, M maxDets]
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    category_ids = list(evaluator.params.catIds)
    support = {category_id: 0 for category_id in category_ids}
    for annotation in ground_truth["annotations"]:
        if not annotation.get("iscrowd", 0) and annotation["category_id"] in support:
            support[annotation["category_id"]] += 1
    all_areas_100 = precision[:, :, :, 0, -1]
    per_class_ap = mean_precision(all_areas_100, axes=(0, 1))
    per_class_ap50 = mean_precision(all_areas_100[0], axes=(0,))
    return {
        **{name: float(value) for name, value in zip(SUMMARY_METRICS, evaluator.stats)},
        "per_class": {
            names[category_id]: {"ap": float(per_class_ap[k]), "ap50": float(per_class_ap50[k]), "support": support[category_id]}
            for k, category_id in enumerate(category_ids)
        },
        "images": len(ground_truth["images"]),
        "boxes": sum(support.values()),
        "pr_curve": {
            names[category_id]: [float(value) for value in all_areas_100[0, :, k]] for k, category_id in enumerate(category_ids)
        },
    }
