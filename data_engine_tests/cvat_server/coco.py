"""COCO 1.0 export as CVAT (via Datumaro) writes it: `annotations/instances_default.json` in a zip.

Only what a detection pipeline reads is produced: images (file_name = frame name), categories
(one per label, ids from 1 in label order), and rectangle/polygon shapes as annotations.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from .records import Label, Task

ANNOTATIONS_PATH = "annotations/instances_default.json"


def _bbox(shape: dict[str, Any]) -> list[float]:
    xs, ys = shape["points"][0::2], shape["points"][1::2]
    x0, y0 = min(xs), min(ys)
    return [float(x0), float(y0), float(max(xs) - x0), float(max(ys) - y0)]


def _polygon_area(points: list[float]) -> float:
    xs, ys = points[0::2], points[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def build_coco(task: Task, labels: list[Label]) -> dict[str, Any]:
    category_ids = {label.id: i for i, label in enumerate(labels, start=1)}
    images = [
        {
            "id": index + 1,
            "width": frame.width,
            "height": frame.height,
            "file_name": frame.name,
            "license": 0,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": 0,
        }
        for index, frame in enumerate(task.frames)
        if index not in task.deleted_frames  # CVAT leaves deleted frames out of its exports
    ]
    annotations = []
    for shape in sorted(task.shapes.values(), key=lambda s: (s["frame"], s["id"])):
        if shape["type"] not in ("rectangle", "polygon") or shape["label_id"] not in category_ids or shape["frame"] in task.deleted_frames:
            continue
        bbox = _bbox(shape)
        if shape["type"] == "rectangle":
            segmentation: list[Any] = []
            area = bbox[2] * bbox[3]
        else:
            segmentation = [list(map(float, shape["points"]))]
            area = _polygon_area(shape["points"])
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": shape["frame"] + 1,
                "category_id": category_ids[shape["label_id"]],
                "segmentation": segmentation,
                "area": float(area),
                "bbox": bbox,
                "iscrowd": 0,
                "attributes": {"occluded": shape["occluded"], "rotation": shape["rotation"]},
            }
        )
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""},
        "categories": [{"id": category_ids[label.id], "name": label.name, "supercategory": ""} for label in labels],
        "images": images,
        "annotations": annotations,
    }


def export_zip(coco: dict[str, Any], corruption: str | None = None) -> bytes:
    """The archive bytes; `corruption` ('truncated' | 'invalid_json') simulates a broken export."""
    payload = json.dumps(coco).encode()
    if corruption == "invalid_json":
        payload = payload[: len(payload) // 2]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ANNOTATIONS_PATH, payload)
    data = buffer.getvalue()
    if corruption == "truncated":
        data = data[: len(data) // 2]
    return data
