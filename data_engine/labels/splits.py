"""Deterministic train/val/test splits, grouped so near-duplicate frames never straddle splits.

Frames of one camera within one time window (fixed windows, e.g. each clock hour) form a group, and
the whole group goes to one split chosen by a stable hash of (seed, group). Hashing instead of
shuffling keeps a group's split the same in every later label version, so frames never move from
test into train as the set grows; Python's hash() is salted per process, so sha256 is used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "val", "test")

# Frame URIs look like s3://bucket/<model>/<camera>/<YYYYMMDD>/<HHMMSS>-<n>.<ext> (see data_engine/demo.py).
_URI_CAMERA_TIME = re.compile(r"/(?P<camera>[^/]+)/(?P<date>\d{8})/(?P<time>\d{6})[^/]*$")


@dataclass(frozen=True)
class SplitSettings:
    ratios: Mapping[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0
    window: dt.timedelta = dt.timedelta(hours=1)

    @classmethod
    def from_config(cls, labels_config: Any) -> SplitSettings:
        ratios = labels_config.split_ratios
        return cls(
            ratios={"train": ratios.train, "val": ratios.val, "test": ratios.test},
            seed=labels_config.split_seed,
            window=dt.timedelta(minutes=labels_config.split_window_minutes),
        )


def camera_and_time(image: Mapping[str, Any]) -> tuple[str | None, dt.datetime | None]:
    """The image's `camera_id` and `captured_at` fields, else what the frame URI's path says."""
    camera, captured = image.get("camera_id"), image.get("captured_at")
    captured_at = _parse_time(captured) if captured else None
    if camera and captured_at:
        return str(camera), captured_at
    match = _URI_CAMERA_TIME.search(image["file_name"])
    if match:
        camera = camera or match["camera"]
        if captured_at is None:
            captured_at = dt.datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S").replace(tzinfo=dt.timezone.utc)
    return (str(camera) if camera else None), captured_at


def group_key(image: Mapping[str, Any], window: dt.timedelta) -> str:
    """`<camera>|<window index>`. Unknown camera: the frame's folder; unknown time: one group per camera."""
    camera, captured_at = camera_and_time(image)
    if camera is None:
        camera = image["file_name"].rsplit("/", 1)[0]
    if captured_at is None:
        return f"{camera}|undated"
    return f"{camera}|{int(captured_at.timestamp() // window.total_seconds())}"


def split_of(key: str, settings: SplitSettings) -> str:
    """The split a group goes to: a uniform draw from sha256(seed, key) against the cumulative ratios."""
    digest = hashlib.sha256(f"{settings.seed}\x00{key}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split in SPLITS:
        cumulative += settings.ratios.get(split, 0.0)
        if draw < cumulative:
            return split
    return next(s for s in reversed(SPLITS) if settings.ratios.get(s, 0.0) > 0)


def assign_splits(images: Iterable[Mapping[str, Any]], settings: SplitSettings = SplitSettings()) -> dict[str, str]:
    """Frame URI (file_name) -> split, for every image."""
    cache: dict[str, str] = {}
    result = {}
    for image in images:
        key = group_key(image, settings.window)
        if key not in cache:
            cache[key] = split_of(key, settings)
        result[image["file_name"]] = cache[key]
    return result


def split_summary(coco: Mapping[str, Any], settings: SplitSettings = SplitSettings()) -> dict[str, dict[str, int]]:
    """Per split: images, annotations and groups (camera x time window), for metadata and reports."""
    summary = {split: {"images": 0, "annotations": 0, "groups": 0} for split in SPLITS}
    groups: dict[str, str] = {}
    split_of_image: dict[int, str] = {}
    for image in coco["images"]:
        key = group_key(image, settings.window)
        if key not in groups:
            groups[key] = split_of(key, settings)
            summary[groups[key]]["groups"] += 1
        split_of_image[image["id"]] = groups[key]
        summary[groups[key]]["images"] += 1
    for annotation in coco["annotations"]:
        split = split_of_image.get(annotation["image_id"])
        if split is not None:
            summary[split]["annotations"] += 1
    return summary


def _parse_time(value: Any) -> dt.datetime | None:
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
