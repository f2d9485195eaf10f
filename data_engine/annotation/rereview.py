"""Label-error re-review: frames already in a label version, sent back for review as one batch.

The batch is pre-annotated with the frames' current labels (score 1.0), so a reviewer corrects them
instead of drawing from scratch, and optionally shows the model's latest predictions beside them as a
group of their own (`TaskFrame.predictions`), never merged as labels. It is named
`<prefix>-<model>-rereview-<label>` (naming), records its frames like any batch, and its accepted export
replaces those frames' labels through the same merge.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from data_engine.annotation.backend import Box, TaskFrame, TaskPlan
from data_engine.annotation.tasks import frame_name, local_segments, prediction_boxes

MAX_LISTED = 5


class RereviewError(ValueError):
    """The frames asked for cannot make a re-review batch; the message names them and the fix."""


def predictions_by_frame(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[Box, ...]]:
    """Frame URI -> its boxes, from rows of `sql/latest_frame_predictions.sql` (one per box)."""
    grouped: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[row["frame_uri"]].append(row)
    return {uri: tuple(prediction_boxes(frame_rows)) for uri, frame_rows in grouped.items()}


def rereview_plan(
    name: str, coco: Mapping[str, Any], frame_uris: Sequence[str], version: str, *, upload: bool, max_frames: int
) -> TaskPlan:
    """The batch `name` of `frame_uris` (in that order) from the label set `coco` of label version `version`,
    each frame pre-annotated with its current boxes. Raises RereviewError naming every frame that is listed
    twice or is not in the version, and a list longer than `max_frames` (the model's max_frames_per_task)."""
    images = {image["file_name"]: image for image in coco["images"]}
    twice = sorted(uri for uri, count in Counter(frame_uris).items() if count > 1)
    unknown = [uri for uri in frame_uris if uri not in images]
    problems = []
    if not frame_uris:
        problems.append("no frame URIs are listed")
    if twice:
        problems.append(f"{len(twice)} frame URI(s) are listed twice, e.g. {twice[:MAX_LISTED]}")
    if unknown:
        problems.append(f"{len(unknown)} frame URI(s) are not in label version {version}, e.g. {unknown[:MAX_LISTED]}")
    if len(frame_uris) > max_frames:
        problems.append(f"{len(frame_uris)} frames are more than annotation.max_frames_per_task ({max_frames}): split the list")
    if problems:
        raise RereviewError("; ".join(problems) + "; fix frame_uris in the run config")
    if upload:
        for uri in frame_uris:  # refuse frames outside the local object root before anything is made
            local_segments(uri)
    classes = {category["id"]: category["name"] for category in coco["categories"]}
    boxes: dict[Any, list[Box]] = defaultdict(list)
    for annotation in coco["annotations"]:
        x, y, width, height = annotation["bbox"]
        boxes[annotation["image_id"]].append(Box(classes[annotation["category_id"]], 1.0, x, y, x + width, y + height))
    frames = []
    for position, uri in enumerate(frame_uris):
        image = images[uri]
        captured = image.get("captured_at")
        frames.append(
            TaskFrame(
                uri=uri,
                name=frame_name(position, uri, upload=upload),
                width=int(image["width"]),
                height=int(image["height"]),
                boxes=tuple(boxes[image["id"]]),
                camera_id=image.get("camera_id"),
                captured_at=dt.datetime.fromisoformat(captured) if captured else None,
            )
        )
    return TaskPlan(name=name, frames=tuple(frames))


def with_predictions(plan: TaskPlan, predictions: Mapping[str, Sequence[Box]]) -> TaskPlan:
    """The plan with the model's boxes of each frame (`predictions`: frame URI -> boxes) as its prediction group."""
    frames = tuple(dataclasses.replace(frame, predictions=tuple(predictions.get(frame.uri, ()))) for frame in plan.frames)
    return dataclasses.replace(plan, frames=frames)
