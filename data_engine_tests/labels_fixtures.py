"""Builders of CVAT-like COCO exports and label stores (local folder and SeaweedFS) for the label tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any

import pytest

from data_engine.labels import LabelStore, TaskExport
from data_engine.objectstore import ObjectStore

CLASSES = ["PET", "Other PET", "HDPE", "Cardboard", "Film", "Metal Can"]
MODEL = "municipals"


def frame(camera: str = "cam-01", day: str = "20260301", time: str = "101500", index: int = 0) -> str:
    return f"s3://frames/{MODEL}/{camera}/{day}/{time}-{index:03d}.png"


def coco_export(
    frames: dict[str, list[tuple[str, list[float]]]],
    labels: Iterable[str] = CLASSES,
    size: tuple[int, int] = (640, 480),
) -> dict[str, Any]:
    """A COCO dict shaped like CVAT's: {file_name: [(label, [x, y, w, h]), ...]}; ids from 1 in label order."""
    labels = list(labels)
    category = {name: i for i, name in enumerate(labels, start=1)}
    images, annotations = [], []
    for image_id, (file_name, boxes) in enumerate(frames.items(), start=1):
        images.append({"id": image_id, "width": size[0], "height": size[1], "file_name": file_name, "license": 0})
        for label, bbox in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category[label],
                    "segmentation": [],
                    "area": bbox[2] * bbox[3],
                    "bbox": bbox,
                    "iscrowd": 0,
                    "attributes": {"occluded": False},
                }
            )
    return {
        "licenses": [{"name": "", "id": 0, "url": ""}],
        "info": {"description": ""},
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in category.items()],
        "images": images,
        "annotations": annotations,
    }


def task(task_id: int, frames: dict, updated_date: str = "2026-03-02T10:00:00Z", **kwargs) -> TaskExport:
    return TaskExport(task_id=task_id, updated_date=updated_date, coco=coco_export(frames, **kwargs))


def labels_of(coco: dict[str, Any]) -> dict[str, list[tuple[str, list[float]]]]:
    """{frame URI: sorted [(class, bbox)]}: a label set compared by content, ids aside."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list] = {image["id"]: [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[annotation["image_id"]].append((names[annotation["category_id"]], annotation["bbox"]))
    return {image["file_name"]: sorted(by_image[image["id"]]) for image in coco["images"]}


def latest_coco(store: LabelStore, model: str = MODEL) -> dict[str, Any]:
    return json.loads(store.annotations(model, store.latest(model).version))


def all_keys(store: LabelStore) -> list[str]:
    return store.objects.list("")


class DelegatingStore(ObjectStore):
    """An ObjectStore that forwards to another; tests override a method to inject a fault."""

    def __init__(self, inner: ObjectStore):
        self.inner = inner

    def put(self, key, data, *, if_none_match=False, if_match=None):
        return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match)

    def get(self, key):
        return self.inner.get(key)

    def get_with_etag(self, key):
        return self.inner.get_with_etag(key)

    def list(self, prefix):
        return self.inner.list(prefix)

    def describe(self, key):
        return self.inner.describe(key)


@pytest.fixture(params=["local", "s3"])
def label_store(request, tmp_path) -> LabelStore:
    """The label store on a local folder, and on SeaweedFS with a bucket of its own."""
    if request.param == "local":
        return LabelStore.local(tmp_path / "labels")
    server = request.getfixturevalue("s3_server")
    client = server.client()
    bucket = f"labels-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return LabelStore.s3(bucket, "labels", client=client)
