"""Checks of a label set, each returning a list of problems (empty when fine).

The asset checks on `training_labels` report these lists; the merge uses the shape and id checks to
reject a bad export up front. Lists are capped so a wholly broken set still gives a readable message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

MAX_PROBLEMS = 20


class _Problems:
    """Collects the first MAX_PROBLEMS messages and counts the rest."""

    def __init__(self, limit: int = MAX_PROBLEMS):
        self.limit, self.items, self.more = limit, [], 0

    def add(self, message: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(message)
        else:
            self.more += 1

    def result(self) -> list[str]:
        return self.items + ([f"... and {self.more} more"] if self.more else [])


def _number(value: Any) -> bool:
    """A finite number: NaN and infinity pass every comparison test silently, so they are no numbers here."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def structure_problems(coco: Any) -> list[str]:
    """The shape every module relies on: lists of images, annotations and categories with their fields."""
    problems = _Problems()
    if not isinstance(coco, dict):
        return [f"expected a JSON object with images, annotations and categories, got {type(coco).__name__}"]
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            problems.add(f"'{key}' is missing or not a list")
    if problems.items:
        return problems.result()
    for image in coco["images"]:
        if not isinstance(image, dict) or not isinstance(image.get("id"), int) or not isinstance(image.get("file_name"), str):
            problems.add(f"image {_short(image)} needs an integer 'id' and a string 'file_name'")
        elif not (_number(image.get("width")) and _number(image.get("height")) and image["width"] > 0 and image["height"] > 0):
            problems.add(
                f"image {image['id']} ({image['file_name']}) needs a positive, finite 'width' and 'height'"
                f" (has {image.get('width')!r} x {image.get('height')!r})"
            )
    for annotation in coco["annotations"]:
        if not isinstance(annotation, dict) or not all(
            isinstance(annotation.get(k), int) for k in ("id", "image_id", "category_id")
        ):
            problems.add(f"annotation {_short(annotation)} needs integer 'id', 'image_id' and 'category_id'")
        elif not (isinstance(annotation.get("bbox"), list) and len(annotation["bbox"]) == 4 and all(map(_number, annotation["bbox"]))):
            problems.add(
                f"annotation {annotation['id']} needs a 'bbox' of 4 finite numbers [x, y, width, height]"
                f" (has {_short(annotation.get('bbox'))})"
            )
    for category in coco["categories"]:
        if not isinstance(category, dict) or not isinstance(category.get("id"), int) or not isinstance(category.get("name"), str):
            problems.add(f"category {_short(category)} needs an integer 'id' and a string 'name'")
    return problems.result()


def id_problems(coco: Mapping[str, Any]) -> list[str]:
    """Ids unique within images, annotations and categories; every annotation's image and category exist."""
    problems = _Problems()
    image_ids = _unique_ids(coco["images"], "image", problems)
    category_ids = _unique_ids(coco["categories"], "category", problems)
    _unique_ids(coco["annotations"], "annotation", problems)
    for annotation in coco["annotations"]:
        if annotation["image_id"] not in image_ids:
            problems.add(f"annotation {annotation['id']} refers to image {annotation['image_id']}, which does not exist")
        if annotation["category_id"] not in category_ids:
            problems.add(f"annotation {annotation['id']} refers to category {annotation['category_id']}, which does not exist")
    return problems.result()


def box_problems(coco: Mapping[str, Any], tolerance: float = 1e-6) -> list[str]:
    """Every box has positive width and height and lies inside its image (within `tolerance` pixels)."""
    problems = _Problems()
    sizes = {image["id"]: (image["width"], image["height"], image["file_name"]) for image in coco["images"]}
    for annotation in coco["annotations"]:
        x, y, w, h = annotation["bbox"]
        if not (w > 0 and h > 0):
            problems.add(f"annotation {annotation['id']} has an empty box {annotation['bbox']} (width and height must be > 0)")
            continue
        size = sizes.get(annotation["image_id"])
        if size is None:
            continue  # id_problems reports it
        width, height, file_name = size
        if x < -tolerance or y < -tolerance or x + w > width + tolerance or y + h > height + tolerance:
            problems.add(f"annotation {annotation['id']} box {annotation['bbox']} lies outside its image {file_name} ({width}x{height})")
    return problems.result()


def duplicate_image_problems(coco: Mapping[str, Any]) -> list[str]:
    """No frame appears twice (file_name is the frame URI)."""
    problems = _Problems()
    seen: set[str] = set()
    for image in coco["images"]:
        if image["file_name"] in seen:
            problems.add(f"frame {image['file_name']} appears more than once")
        seen.add(image["file_name"])
    return problems.result()


def category_problems(coco: Mapping[str, Any], classes: Sequence[str]) -> list[str]:
    """The categories are exactly the model's classes: none missing, none extra, none twice."""
    names = [category["name"] for category in coco["categories"]]
    problems = []
    if missing := [c for c in classes if c not in names]:
        problems.append(f"classes missing from the categories: {missing}")
    if extra := sorted({n for n in names if n not in classes}):
        problems.append(f"categories that are not model classes: {extra}")
    if twice := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"categories listed more than once: {twice}")
    return problems


def validate_label_set(coco: Any, classes: Sequence[str]) -> dict[str, list[str]]:
    """Every content check by name (the asset checks' names), each with its problems."""
    shape = structure_problems(coco)
    if shape:
        not_checked = ["not checked: the label set is not valid COCO (see valid_coco)"]
        return {
            "valid_coco": shape,
            "boxes_inside_images": not_checked,
            "no_duplicate_images": not_checked,
            "categories_match_classes": not_checked,
        }
    return {
        "valid_coco": id_problems(coco),
        "boxes_inside_images": box_problems(coco),
        "no_duplicate_images": duplicate_image_problems(coco),
        "categories_match_classes": category_problems(coco, classes),
    }


def change_problems(
    counts: Mapping[str, Any], *, max_removed_image_fraction: float, max_changed_annotation_fraction: float
) -> list[str]:
    """One merge's change to the labels its parent already had, within the configured bounds (a
    manifest's `counts`). Growth is the loop working: added frames and added boxes never count.

    The first version (no parent images) is always within bounds. Manifests written before
    `annotations_changed` was counted passed the bound of their time and are not re-judged.
    """
    parent_images, parent_annotations = counts.get("parent_images", 0), counts.get("parent_annotations", 0)
    problems = []
    if parent_images and counts["images_removed"] / parent_images > max_removed_image_fraction:
        problems.append(
            f"{counts['images_removed']} of {parent_images} images removed ({counts['images_removed'] / parent_images:.2%}),"
            f" more than the allowed labels.max_removed_image_fraction {max_removed_image_fraction:.2%}"
        )
    changed = counts.get("annotations_changed")
    if parent_annotations and changed is not None and changed / parent_annotations > max_changed_annotation_fraction:
        frames = ", ".join(f"{uri} ({n})" for uri, n in counts.get("changed_annotations_by_frame", {}).items())
        problems.append(
            f"{changed} of the parent's {parent_annotations} annotations were deleted or altered ({changed / parent_annotations:.2%}),"
            f" more than the allowed labels.max_changed_annotation_fraction {max_changed_annotation_fraction:.2%}"
            + (f"; most in {frames}" if frames else "")
        )
    return problems


def _unique_ids(items: Iterable[Mapping[str, Any]], what: str, problems: _Problems) -> set[int]:
    ids: set[int] = set()
    for item in items:
        if item["id"] in ids:
            problems.add(f"{what} id {item['id']} is used more than once")
        ids.add(item["id"])
    return ids


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
