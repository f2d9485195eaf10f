"""Merging reviewed task exports into a label set with pyodi's `coco_merge`.

pyodi appends every image of the added file and renumbers ids; it never de-duplicates. A reviewed
frame that is already in the label set must *replace* its old annotations, so the frames being
re-reviewed (or removed) are dropped from the base before pyodi appends the reviewed ones. Labels
are matched by name to the model's classes, and both inputs carry the model's categories (ids 1..n
in config order), so pyodi's name matching adds no category.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

# How many frames `MergeCounts.changed_annotations_by_frame` names.
MOST_CHANGED_FRAMES = 5

from data_engine.labels.coco import (
    Coco,
    ExportError,
    TaskExport,
    categories_for,
    check_coco,
    empty_label_set,
    parse_updated_date,
    write_coco,
)


@dataclass(frozen=True)
class LabelPolicy:
    """What a merge does with a label that is not one of the model's classes (config `labels:`)."""

    unknown_label: Literal["fail", "skip", "map"] = "fail"
    label_mapping: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, labels_config: Any) -> LabelPolicy:
        return cls(unknown_label=labels_config.unknown_label, label_mapping=dict(labels_config.label_mapping))


@dataclass(frozen=True)
class MergeCounts:
    """What one merge changed; stored in the manifest and shown as Dagster metadata."""

    parent_images: int
    parent_annotations: int
    images: int
    annotations: int
    images_added: int  # reviewed frames new to the label set
    images_replaced: int  # reviewed frames that were in the label set: their old annotations are gone
    images_removed: int  # frames dropped by a reviewer (TaskExport.removed_frames)
    annotations_added: int
    annotations_removed: int  # every annotation of the replaced and removed frames, as they were
    # Of those, the ones the new reviews do not keep as they were (same class, same box): what
    # labels.max_changed_annotation_fraction bounds. A re-review that only adds boxes changes none.
    annotations_changed: int
    skipped_annotations: dict[str, int] = field(default_factory=dict)  # unknown label -> count (policy skip)
    changed_annotations_by_frame: dict[str, int] = field(default_factory=dict)  # the frames changed most, for messages

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MergeResult:
    annotations_json: bytes  # the new label set, as stored (pyodi's output file)
    counts: MergeCounts


def conform(
    coco: Coco,
    classes: Sequence[str],
    policy: LabelPolicy,
    where: str,
    export: TaskExport | None = None,
) -> tuple[Coco, Counter[str]]:
    """A copy of `coco` on the model's categories, with file_name as the frame URI.

    Returns the conformed set and the count of annotations skipped per unknown label.
    """
    check_coco(coco, where)
    class_ids = {name: index for index, name in enumerate(classes, start=1)}
    category_map: dict[int, int | None] = {}
    for category in coco["categories"]:
        name = category["name"]
        if name in class_ids:
            category_map[category["id"]] = class_ids[name]
        elif policy.unknown_label == "map" and policy.label_mapping.get(name) in class_ids:
            category_map[category["id"]] = class_ids[policy.label_mapping[name]]
        elif policy.unknown_label == "skip":
            category_map[category["id"]] = None
        else:
            used = any(a["category_id"] == category["id"] for a in coco["annotations"])
            if not used:
                category_map[category["id"]] = None  # an unused label (CVAT exports every task label) harms nothing
                continue
            hint = (
                f"add {name!r} to labels.label_mapping"
                if policy.unknown_label == "map"
                else "fix the label in CVAT, or set labels.unknown_label to skip or map"
            )
            raise ExportError(f"{where}: label {name!r} is not one of the model's classes {list(classes)}; {hint}")

    images = []
    for image in coco["images"]:
        image = dict(image)
        if export is not None:
            image["file_name"] = export.frame_uri(image["file_name"])
            if export.frame_fields and image["file_name"] in export.frame_fields:
                image.update(export.frame_fields[image["file_name"]])
        images.append(image)

    skipped: Counter[str] = Counter()
    names = {category["id"]: category["name"] for category in coco["categories"]}
    annotations = []
    for annotation in coco["annotations"]:
        target = category_map[annotation["category_id"]]
        if target is None:
            skipped[names[annotation["category_id"]]] += 1
            continue
        if target != annotation["category_id"]:
            annotation = {**annotation, "category_id": target}
        annotations.append(annotation)
    conformed = {k: v for k, v in coco.items() if k not in ("categories", "images", "annotations")}
    conformed.update(categories=categories_for(classes), images=images, annotations=annotations)
    return conformed, skipped


def merge_label_sets(
    base_json: bytes | None,
    exports: Sequence[TaskExport],
    classes: Sequence[str],
    policy: LabelPolicy = LabelPolicy(),
    *,
    base_name: str = "the base label set",
) -> MergeResult:
    """Merge reviewed task exports into a label set (None: an empty one) with pyodi's coco_merge.

    Exports apply in order of their updated_date: when two tasks hold the same frame, the later
    review wins. Raises ExportError (naming the task) for an export that cannot be merged.
    """
    reviewed: dict[str, tuple[dict, list[dict]]] = {}  # frame URI -> (image, annotations), latest review wins
    removed: set[str] = set()
    skipped: Counter[str] = Counter()
    for export in sorted(exports, key=lambda e: parse_updated_date(e.updated_date, e.name)):
        coco, skipped_here = conform(export.coco, classes, policy, export.name, export)
        skipped += skipped_here
        by_image: dict[int, list[dict]] = {image["id"]: [] for image in coco["images"]}
        for annotation in coco["annotations"]:
            by_image[annotation["image_id"]].append(annotation)
        seen: set[str] = set()
        for image in coco["images"]:
            if image["file_name"] in seen:
                raise ExportError(f"{export.name}: frame {image['file_name']} appears twice in the export; check the frame URI mapping")
            seen.add(image["file_name"])
            reviewed.pop(image["file_name"], None)  # re-insert so the dict keeps the latest review's order
            reviewed[image["file_name"]] = (image, by_image[image["id"]])
            removed.discard(image["file_name"])
        for frame in export.removed_frames:
            reviewed.pop(frame, None)
            removed.add(frame)

    base_is_canonical = True
    if base_json is None:
        base = empty_label_set(classes)
        base_is_canonical = False
    else:
        base = json.loads(base_json)
        if base.get("categories") != categories_for(classes):
            base, skipped_base = conform(base, classes, policy, base_name)
            skipped += skipped_base
            base_is_canonical = False
    parent_images, parent_annotations = len(base["images"]), len(base["annotations"])

    # Drop the frames being replaced or removed, with their annotations (one pass, set lookups).
    dropped_ids = {image["id"] for image in base["images"] if image["file_name"] in reviewed or image["file_name"] in removed}
    if not base_is_canonical or dropped_ids:
        base_json = None  # pyodi gets the rewritten base; let the original bytes go now (peak memory)
    images_replaced = images_removed = annotations_removed = 0
    changed_by_frame: Counter[str] = Counter()
    if dropped_ids:
        kept_images, dropped_images = [], []
        for image in base["images"]:
            (dropped_images if image["id"] in dropped_ids else kept_images).append(image)
        kept_annotations, old_boxes = [], {image_id: Counter() for image_id in dropped_ids}
        for annotation in base["annotations"]:
            if annotation["image_id"] in dropped_ids:
                old_boxes[annotation["image_id"]][_box(annotation)] += 1
            else:
                kept_annotations.append(annotation)
        for image in dropped_images:
            old = old_boxes[image["id"]]
            if image["file_name"] in reviewed:
                images_replaced += 1
                old -= Counter(_box(a) for a in reviewed[image["file_name"]][1])  # what the review kept is no change
            else:
                images_removed += 1
            if old.total():
                changed_by_frame[image["file_name"]] = old.total()
        annotations_removed = len(base["annotations"]) - len(kept_annotations)
        base["images"], base["annotations"] = kept_images, kept_annotations
        del kept_images, kept_annotations, dropped_images, old_boxes  # `base` holds the only reference, so this frees them

    # Fresh ids for the reviewed frames; pyodi renumbers everything anyway.
    add = {"categories": categories_for(classes), "images": [], "annotations": []}
    for image_id, (image, boxes) in enumerate(reviewed.values(), start=1):
        add["images"].append({**image, "id": image_id})
        add["annotations"].extend({**a, "image_id": image_id} for a in boxes)
    for annotation_id, annotation in enumerate(add["annotations"], start=1):
        annotation["id"] = annotation_id

    merged = _pyodi_merge(base_json, base, add, base_name)
    images = parent_images - images_replaced - images_removed + len(add["images"])
    annotations = parent_annotations - annotations_removed + len(add["annotations"])
    counts = MergeCounts(
        parent_images=parent_images,
        parent_annotations=parent_annotations,
        images=images,
        annotations=annotations,
        images_added=len(add["images"]) - images_replaced,
        images_replaced=images_replaced,
        images_removed=images_removed,
        annotations_added=len(add["annotations"]),
        annotations_removed=annotations_removed,
        annotations_changed=changed_by_frame.total(),
        skipped_annotations=dict(sorted(skipped.items())),
        changed_annotations_by_frame=dict(changed_by_frame.most_common(MOST_CHANGED_FRAMES)),
    )
    return MergeResult(annotations_json=merged, counts=counts)


def _box(annotation: Mapping[str, Any]) -> tuple:
    """An annotation's class and box (to 1/100 px): equal for a box a re-review left as it was."""
    return annotation["category_id"], *(round(v, 2) for v in annotation["bbox"])


def _pyodi_merge(base_json: bytes | None, base: Coco, add: Coco, base_name: str) -> bytes:
    """pyodi's coco_merge on temporary files; `base_json` (when unchanged) is written as it is."""
    from pyodi.apps.coco import coco_merge

    with tempfile.TemporaryDirectory(prefix="label-merge-") as tmp:
        base_path, add_path, out_path = Path(tmp, "base.json"), Path(tmp, "add.json"), Path(tmp, "merged.json")
        if base_json is not None:
            base_path.write_bytes(base_json)
        else:
            try:
                write_coco(base_path, base)
            except ValueError as error:  # NaN or infinity, in a version written before the checks refused them
                raise ExportError(
                    f"{base_name} holds numbers that are not JSON ({error}); roll back to a good version with"
                    " `data-engine labels rollback` (list them with `data-engine labels versions`)"
                ) from None
        write_coco(add_path, add)
        base.clear()  # the caller's parsed base is no longer needed; pyodi parses its own copy
        _quiet_pyodi()
        coco_merge(str(base_path), str(add_path), str(out_path))
        return out_path.read_bytes()


def _quiet_pyodi() -> None:
    """pyodi logs each merge's counts at INFO through loguru; ours are in the manifest."""
    from loguru import logger

    logger.disable("pyodi")
