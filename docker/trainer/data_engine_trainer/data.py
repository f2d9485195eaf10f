"""The training data: a label version's COCO file, the split assignment, and the frame images.

Class indexes follow the model's class list (extras `classes`), not the COCO category ids, so every
checkpoint of a model predicts the same indexes; label `i + 1` is class `i` (0 is the background)."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from data_engine_trainer import storage


def load_json(uri: str) -> Any:
    return json.loads(storage.read_bytes(uri))


def split_images(coco: dict[str, Any], splits: dict[str, str], split: str) -> list[dict[str, Any]]:
    """The COCO images assigned to `split`; an image missing from the assignment is an error."""
    missing = [image["file_name"] for image in coco["images"] if image["file_name"] not in splits]
    if missing:
        raise ValueError(f"{len(missing)} image(s) have no split in the assignment, e.g. {missing[0]!r}")
    return [image for image in coco["images"] if splits[image["file_name"]] == split]


def targets_by_image(coco: dict[str, Any], classes: list[str]) -> dict[int, dict[str, torch.Tensor]]:
    """Per image id: `boxes` (x1, y1, x2, y2 in pixels) and `labels` (class index + 1)."""
    names = {category["id"]: category["name"] for category in coco["categories"]}
    unknown = sorted(set(names.values()) - set(classes))
    if unknown:
        raise ValueError(f"categories {unknown} are not among the model's classes {classes}")
    boxes: dict[int, list[list[float]]] = defaultdict(list)
    labels: dict[int, list[int]] = defaultdict(list)
    for annotation in coco["annotations"]:
        x, y, width, height = annotation["bbox"]
        boxes[annotation["image_id"]].append([x, y, x + width, y + height])
        labels[annotation["image_id"]].append(classes.index(names[annotation["category_id"]]) + 1)
    return {
        image["id"]: {
            "boxes": torch.tensor(boxes[image["id"]], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels[image["id"]], dtype=torch.int64),
        }
        for image in coco["images"]
    }


def load_image(frame_uri: str, frames_root: str | None) -> torch.Tensor:
    """The frame as a float RGB tensor in [0, 1]."""
    with Image.open(io.BytesIO(storage.frame_bytes(frame_uri, frames_root))) as image:
        return pil_to_tensor(image.convert("RGB")).float() / 255


class DetectionDataset(torch.utils.data.Dataset):
    """Images decoded once and kept in memory (the reference trainer trains small sets)."""

    def __init__(self, images: list[dict[str, Any]], targets: dict[int, dict[str, torch.Tensor]], frames_root: str | None):
        self.images = images
        self.targets = targets
        self.pixels = [load_image(image["file_name"], frames_root) for image in images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.pixels[index], self.targets[self.images[index]["id"]]


def collate(batch: list) -> tuple[list, list]:
    return [item[0] for item in batch], [item[1] for item in batch]
