"""Synthetic test splits and detections for the evaluation tests and benchmark: ground truth boxes of
a few classes over several cameras, and a model's detections drawn around them (jittered hits, misses,
wrong classes, false positives), seeded so every run sees the same data."""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSES = ["PET", "HDPE", "Cardboard", "Film"]
CAMERAS = {"cam-01": "acme", "cam-02": "acme", "cam-03": "bravo"}


def synthetic_split(images: int, boxes_per_image: int = 6, seed: int = 0, crowd_fraction: float = 0.0) -> dict[str, Any]:
    """A COCO ground truth: images carry file_name (a frame URI) and camera_id, like label versions."""
    rng = np.random.default_rng(seed)
    cameras = list(CAMERAS)
    coco: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(CLASSES)],
    }
    for image_id in range(1, images + 1):
        camera = cameras[image_id % len(cameras)]
        coco["images"].append(
            {"id": image_id, "file_name": f"s3://frames/m/{camera}/20261120/{image_id // 60 % 24:02d}{image_id % 60:02d}00-{image_id}.jpg", "width": 640, "height": 480, "camera_id": camera}
        )
        for _ in range(int(rng.integers(0, 2 * boxes_per_image + 1))):
            w, h = rng.uniform(8, 200, size=2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, len(CLASSES) + 1)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": int(rng.random() < crowd_fraction),
                }
            )
    return coco


def detections(ground_truth: dict[str, Any], seed: int = 1, quality: float = 0.8, false_positives: int = 3) -> list[dict[str, Any]]:
    """COCO results around the ground truth: better `quality` means tighter boxes, fewer misses and confusions."""
    rng = np.random.default_rng(seed)
    results = []
    for annotation in ground_truth["annotations"]:
        if rng.random() > quality:
            continue
        x, y, w, h = annotation["bbox"]
        jitter = (1 - quality) * 0.5
        box = [x + rng.normal(0, jitter) * w, y + rng.normal(0, jitter) * h, w * rng.uniform(1 - jitter, 1 + jitter), h * rng.uniform(1 - jitter, 1 + jitter)]
        category = annotation["category_id"] if rng.random() < quality + 0.15 else int(rng.integers(1, len(CLASSES) + 1))
        results.append({"image_id": annotation["image_id"], "category_id": category, "bbox": [float(v) for v in box], "score": float(rng.uniform(0.3, 1.0) * quality + 0.1)})
    for image in ground_truth["images"]:
        for _ in range(int(rng.integers(0, false_positives + 1))):
            w, h = rng.uniform(8, 150, size=2)
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.integers(1, len(CLASSES) + 1)),
                    "bbox": [float(rng.uniform(0, 640 - w)), float(rng.uniform(0, 480 - h)), float(w), float(h)],
                    "score": float(rng.uniform(0.01, 0.7)),
                }
            )
    return results
