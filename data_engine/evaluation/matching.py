"""COCO's detection-to-ground-truth matching, done once per image, then re-accumulated under any image weights.

Slices (a camera's images), the paired bootstrap (images drawn with replacement) and the operating point
at a score threshold all need COCO's average precision on a different multiset of the same test images.
Running a COCO evaluator for each would cost a full evaluation per slice and per resample; instead the
greedy matching of pycocotools' `evaluateImg` (area "all", 100 detections per image and class) is done
once, and `precision` replays `accumulate` with each image counted `weight` times: a resample is a
weighted cumulative sum over the same sorted detections. With every weight 1 the numbers are COCO's
(a test compares them with pycocotools and faster-coco-eval); an image counted twice gives what COCO
gives on a test set holding that image twice, up to the order of detections with equal scores.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

# pycocotools' Params: the same expressions, so the floats are bit-for-bit the same.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETECTIONS = 100
# Bound on the floats one accumulation step holds (resamples x IoU thresholds x detections of a class).
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections over the test set, sorted as COCO's accumulate sorts them."""

    image: np.ndarray  # (n,) index of the detection's image
    score: np.ndarray  # (n,)
    true_positive: np.ndarray  # (T, n) bool: matched to a ground truth that is not ignored
    false_positive: np.ndarray  # (T, n) bool: unmatched and not ignored
    matched_ground_truth: np.ndarray  # (n,) ground-truth annotation id matched at IoU 0.5, -1 when none
    ground_truths: np.ndarray  # (I,) ground truths per image that are not ignored (crowd boxes are)


@dataclass(frozen=True)
class MatchedTestSet:
    image_ids: list[int]  # image i of the arrays is image_ids[i] of the ground truth
    category_ids: list[int]
    classes: dict[int, ClassMatches]  # category id -> matches

    def precision(self, weights: np.ndarray) -> np.ndarray:
        """COCO's interpolated precision (B, T, R, K) under image weights (B, I); -1 where a class has no ground truth."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        result = -np.ones((weights.shape[0], len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(self.category_ids)))
        for k, category_id in enumerate(self.category_ids):
            matches = self.classes[category_id]
            positives = weights @ matches.ground_truths
            chunk = max(1, _CHUNK_ELEMENTS // max(1, len(IOU_THRESHOLDS) * len(matches.score)))
            for start in range(0, weights.shape[0], chunk):
                rows = slice(start, start + chunk)
                result[rows, :, :, k] = _interpolated_precision(weights[rows][:, matches.image], matches, positives[rows])
        return result

    def average_precision(self, weights: np.ndarray) -> np.ndarray:
        """AP@[.50:.95] over classes, one per row of weights (COCO's stats[0])."""
        return mean_precision(self.precision(weights), axes=(1, 2, 3))


def mean_precision(precision: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Mean of the entries COCO counts (> -1) along `axes`; -1 where there are none (as COCO reports)."""
    valid = precision > -1
    counts = valid.sum(axis=axes)
    sums = np.where(valid, precision, 0.0).sum(axis=axes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), -1.0)


def _interpolated_precision(detection_weights: np.ndarray, matches: ClassMatches, positives: np.ndarray) -> np.ndarray:
    """pycocotools' accumulate for one class and a block of weight rows: (b, n) weights -> (b, T, R)."""
    rows, count = detection_weights.shape
    thresholds = len(IOU_THRESHOLDS)
    result = np.zeros((rows, thresholds, len(RECALL_THRESHOLDS)))
    result[positives == 0] = -1
    if count == 0:
        return result
    true_positives = np.cumsum(detection_weights[:, None, :] * matches.true_positive[None], axis=2)
    counted = np.cumsum(detection_weights[:, None, :] * (matches.true_positive | matches.false_positive)[None], axis=2)
    false_positives = counted - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = true_positives / positives[:, None, None]
    precision = true_positives / (true_positives + false_positives + np.spacing(1))
    precision = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]  # COCO's precision envelope
    flat_recall = recall.reshape(rows * thresholds, count)
    positions = np.stack([np.searchsorted(row, RECALL_THRESHOLDS, side="left") for row in flat_recall])
    found = positions < count
    flat_precision = precision.reshape(rows * thresholds, count)
    values = np.where(found, np.take_along_axis(flat_precision, np.minimum(positions, count - 1), axis=1), 0.0)
    values = values.reshape(rows, thresholds, len(RECALL_THRESHOLDS))
    return np.where((positives > 0)[:, None, None], values, -1.0)


def match_test_set(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> MatchedTestSet:
    """Match COCO results (image_id, category_id, bbox, score) to the ground truth, per image and class."""
    image_ids = sorted(image["id"] for image in ground_truth["images"])
    category_ids = sorted({category["id"] for category in ground_truth["categories"]})
    truths: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for annotation in ground_truth["annotations"]:
        truths[annotation["image_id"], annotation["category_id"]].append(annotation)
    found: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for detection in detections:
        found[detection["image_id"], detection["category_id"]].append(detection)
    classes = {}
    for category_id in category_ids:
        per_image = [_match_image(truths.get((i, category_id), []), found.get((i, category_id), [])) for i in image_ids]
        classes[category_id] = _sorted_class(per_image)
    return MatchedTestSet(image_ids=image_ids, category_ids=category_ids, classes=classes)


def _match_image(truths: list[dict[str, Any]], detections: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """pycocotools' evaluateImg for area "all": greedy by score, best IoU, ignored (crowd) truths last."""
    crowd = np.array([bool(t.get("iscrowd", 0)) for t in truths], dtype=bool)
    order = np.argsort(crowd, kind="mergesort")
    truths = [truths[i] for i in order]
    crowd = crowd[order]
    detections = [detections[i] for i in np.argsort([-d["score"] for d in detections], kind="mergesort")[:MAX_DETECTIONS]]
    thresholds = len(IOU_THRESHOLDS)
    matched_truth = np.full((thresholds, len(detections)), -1, dtype=np.int64)
    ignored = np.zeros((thresholds, len(detections)), dtype=bool)
    if truths and detections:
        ious = _box_iou([d["bbox"] for d in detections], [t["bbox"] for t in truths], crowd)
        taken = np.zeros((thresholds, len(truths)), dtype=bool)
        truth_ids = np.array([t["id"] for t in truths], dtype=np.int64)
        for d in range(len(detections)):
            # Per IoU threshold: the last truth with the highest IoU >= threshold among those not yet
            # taken, non-crowd truths first (crowd truths can match many detections), as the loop in
            # evaluateImg picks it.
            reachable = ious[d][None, :] >= np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
            match = _last_best(np.where(reachable & ~taken & ~crowd[None, :], ious[d][None, :], -np.inf))
            on_crowd = _last_best(np.where(reachable & crowd[None, :], ious[d][None, :], -np.inf))
            match = np.where(match > -1, match, on_crowd)
            hit = match > -1
            ignored[hit, d] = crowd[match[hit]]
            taken[np.flatnonzero(hit), match[hit]] = True
            matched_truth[hit, d] = truth_ids[match[hit]]
    return {
        "score": np.array([d["score"] for d in detections], dtype=np.float64),
        "matched": matched_truth,
        "ignored": ignored,
        "ground_truths": int((~crowd).sum()),
    }


def _last_best(candidates: np.ndarray) -> np.ndarray:
    """Per row, the last column holding the row's maximum; -1 where the row is all -inf."""
    last = candidates.shape[1] - 1 - np.argmax(candidates[:, ::-1], axis=1)
    return np.where(np.isfinite(candidates.max(axis=1)), last, -1)


def _box_iou(detections: list[list[float]], truths: list[list[float]], crowd: np.ndarray) -> np.ndarray:
    """pycocotools' bbox IoU (x, y, w, h); against a crowd box the union is the detection's own area."""
    d = np.asarray(detections, dtype=np.float64)[:, None, :]
    g = np.asarray(truths, dtype=np.float64)[None, :, :]
    width = np.clip(np.minimum(d[..., 0] + d[..., 2], g[..., 0] + g[..., 2]) - np.maximum(d[..., 0], g[..., 0]), 0, None)
    height = np.clip(np.minimum(d[..., 1] + d[..., 3], g[..., 1] + g[..., 3]) - np.maximum(d[..., 1], g[..., 1]), 0, None)
    intersection = width * height
    detection_area = d[..., 2] * d[..., 3]
    union = np.where(crowd[None, :], detection_area, detection_area + g[..., 2] * g[..., 3] - intersection)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, 0.0)


def _sorted_class(per_image: list[dict[str, np.ndarray]]) -> ClassMatches:
    """Concatenate the images' detections in image order and sort by score (stable), as accumulate does."""
    scores = np.concatenate([entry["score"] for entry in per_image])
    images = np.concatenate([np.full(len(entry["score"]), i, dtype=np.int64) for i, entry in enumerate(per_image)])
    matched = np.concatenate([entry["matched"] for entry in per_image], axis=1)
    ignored = np.concatenate([entry["ignored"] for entry in per_image], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    return ClassMatches(
        image=images[order],
        score=scores[order],
        true_positive=(matched > -1) & ~ignored,
        false_positive=(matched == -1) & ~ignored,
        matched_ground_truth=np.where(ignored[0], -1, matched[0]),
        ground_truths=np.array([entry["ground_truths"] for entry in per_image], dtype=np.float64),
    )
