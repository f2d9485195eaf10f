"""Numbers beyond COCO's summary, from the matching done once per image (data_engine.evaluation.matching):
the operating point at each class's deployed score threshold, slices of the test images, the paired
bootstrap of the AP difference between two models, and prediction churn between them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from data_engine.evaluation.matching import MatchedTestSet, mean_precision
from data_engine.labels.splits import camera_and_time


def operating_point(matched: MatchedTestSet, class_names: Mapping[int, str], thresholds: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per class, at its score threshold: precision, recall and false positives per image at IoU 0.5.

    COCO matches detections greedily by score, so the detections above a threshold match exactly as
    they do in the full matching: the counts are read off it.
    """
    images = len(matched.image_ids)
    result = {}
    for category_id in matched.category_ids:
        name = class_names[category_id]
        matches = matched.classes[category_id]
        kept = matches.score >= thresholds[name]
        true_positives = int((matches.true_positive[0] & kept).sum())
        false_positives = int((matches.false_positive[0] & kept).sum())
        positives = int(matches.ground_truths.sum())
        result[name] = {
            "threshold": thresholds[name],
            "precision": true_positives / (true_positives + false_positives) if true_positives + false_positives else None,
            "recall": true_positives / positives if positives else None,
            "false_positives_per_image": false_positives / images,
        }
    return result


def slice_metrics(matched: MatchedTestSet, members: Mapping[str, np.ndarray], min_support: int) -> dict[str, dict[str, Any]]:
    """AP and AP50 over each slice's images (a 0/1 weight per test image); `reliable` when its boxes reach min_support."""
    names = sorted(members)
    if not names:
        return {}
    weights = np.stack([members[name].astype(np.float64) for name in names])
    precision = matched.precision(weights)
    ap = mean_precision(precision, axes=(1, 2, 3))
    ap50 = mean_precision(precision[:, 0], axes=(1, 2))
    boxes = weights @ sum(matches.ground_truths for matches in matched.classes.values())
    return {
        name: {
            "ap": float(ap[row]),
            "ap50": float(ap50[row]),
            "images": int(weights[row].sum()),
            "boxes": int(boxes[row]),
            "reliable": bool(boxes[row] >= min_support),
        }
        for row, name in enumerate(names)
    }


def slice_members(images: list[dict[str, Any]], image_ids: list[int], camera_clients: Mapping[str, str]) -> dict[str, dict[str, np.ndarray]]:
    """{"client": {name: mask}, "camera": {name: mask}} over the matched image order. The camera is the image's
    `camera_id`, else the one its frame URI names (as the splits read it); unknown cameras form no slice."""
    by_id = {image["id"]: image for image in images}
    cameras = np.array([camera_and_time(by_id[image_id])[0] or "" for image_id in image_ids])
    clients = np.array([camera_clients.get(camera, "") for camera in cameras])
    return {
        "client": {name: clients == name for name in sorted(set(clients) - {""})},
        "camera": {name: cameras == name for name in sorted(set(cameras) - {""})},
    }


def paired_bootstrap(candidate: MatchedTestSet, production: MatchedTestSet, resamples: int, seed: int) -> dict[str, Any]:
    """AP(candidate) − AP(production) over test images drawn with replacement; both models see the same draws.

    Each resample is a vector of counts per image (multinomial), applied to both models' matchings.
    """
    if candidate.image_ids != production.image_ids:
        raise ValueError("the paired bootstrap needs both models scored on the same test images")
    images = len(candidate.image_ids)
    counts = np.random.default_rng(seed).multinomial(images, np.full(images, 1.0 / images), size=resamples)
    differences = candidate.average_precision(counts) - production.average_precision(counts)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "resamples": resamples,
        "seed": seed,
        "mean": float(differences.mean()),
        "ci95": [float(low), float(high)],
    }


def prediction_churn(
    candidate: MatchedTestSet, production: MatchedTestSet, class_names: Mapping[int, str], thresholds: Mapping[str, float]
) -> dict[str, Any]:
    """The fraction of test images whose outcome at the deployed thresholds differs between the two models.

    An image's outcome: the ground-truth boxes found (matched at IoU 0.5) and the false positives per class.
    """
    changed = np.zeros(len(candidate.image_ids), dtype=bool)
    for category_id in candidate.category_ids:
        threshold = thresholds[class_names[category_id]]
        found = [_found_and_false(model.classes[category_id], threshold, len(candidate.image_ids)) for model in (candidate, production)]
        (found_a, false_a), (found_b, false_b) = found
        changed |= false_a != false_b
        for image in range(len(changed)):
            if not changed[image] and found_a[image] != found_b[image]:
                changed[image] = True
    return {"images": len(changed), "changed": int(changed.sum()), "fraction": float(changed.mean()) if len(changed) else 0.0}


def _found_and_false(matches: Any, threshold: float, images: int) -> tuple[list[frozenset[int]], np.ndarray]:
    kept = matches.score >= threshold
    found: list[set[int]] = [set() for _ in range(images)]
    hits = kept & matches.true_positive[0]
    for image, truth in zip(matches.image[hits], matches.matched_ground_truth[hits]):
        found[image].add(int(truth))
    false = np.bincount(matches.image[kept & matches.false_positive[0]], minlength=images)
    return [frozenset(s) for s in found], false
