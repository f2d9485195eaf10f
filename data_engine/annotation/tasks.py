"""A model-day's review candidates -> the review batches to make: order, chunks, names, frames, boxes.

Everything here is deterministic in its inputs: a retry of the same partition plans the same tasks,
which is what lets task names serve as idempotency keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_engine.annotation.backend import Box, TaskFrame, TaskPlan
from data_engine.config.models import AnnotationConfig


def cloud_key(frame_uri: str) -> tuple[str, str]:
    """`s3://bucket/key` or `gs://bucket/key` -> (bucket, key)."""
    scheme, _, rest = frame_uri.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme not in ("s3", "gs") or not bucket or not key:
        raise ValueError(f"frame URI {frame_uri!r} is not of the form s3://bucket/key or gs://bucket/key")
    return bucket, key


def local_segments(frame_uri: str) -> tuple[str, ...]:
    """The path segments (bucket, then key) of the local image of a frame URI, which must stay under the
    local object root: a key that is absolute or has `.`/`..` segments would reach other files (and
    upload them to CVAT), so it is refused."""
    bucket, key = cloud_key(frame_uri)
    segments = (bucket, *key.split("/"))
    if key.startswith("/") or any(segment in (".", "..") for segment in segments):
        raise ValueError(
            f"frame URI {frame_uri!r}: the local profile reads frames only under $DATA_ENGINE_HOME/objects, and this"
            " key is absolute or contains '.' or '..' segments; fix the frame_uri in the warehouse tables"
        )
    return segments


def frame_path(objects_root: Path, frame_uri: str) -> Path:
    """Where the local profile keeps the image of `s3://bucket/key` or `gs://bucket/key`."""
    return objects_root.joinpath(*local_segments(frame_uri))


def upload_name(position: int, frame_uri: str) -> str:
    """The file name of an uploaded frame: tools keep only base names (CVAT), so make them unique and ordered."""
    _, key = cloud_key(frame_uri)
    return f"{position:06d}_{key.replace('/', '__')}"


def frame_name(position: int, frame_uri: str, *, upload: bool) -> str:
    """A frame's name in its task: for upload (upload_name), or its key in the bucket (the cloud storage)."""
    return upload_name(position, frame_uri) if upload else cloud_key(frame_uri)[1]


def plan_tasks(
    model: str, day: dt.date, config: AnnotationConfig, candidates: Sequence[dict], *, upload: bool
) -> list[TaskPlan]:
    """Order the candidates (config.frame_order), cut them into tasks of at most max_frames_per_task
    frames, and name them `<prefix>-<model>-<day>-<NNN>`. With `upload`, frames are named for upload;
    otherwise by their key in the bucket (the cloud storage)."""
    if config.frame_order == "priority":
        ordered = sorted(candidates, key=lambda row: (row["priority"], row["frame_uri"]))
    else:
        ordered = sorted(candidates, key=lambda row: (row["captured_at"], row["frame_uri"]))
    if upload:
        for row in ordered:  # refuse frames outside the local object root before any task is made
            local_segments(row["frame_uri"])
    size = config.max_frames_per_task
    plans: list[TaskPlan] = []
    for index, start in enumerate(range(0, len(ordered), size)):
        chunk = ordered[start : start + size]
        frames = tuple(
            TaskFrame(
                uri=row["frame_uri"],
                name=frame_name(position, row["frame_uri"], upload=upload),
                width=int(row["image_width"]),
                height=int(row["image_height"]),
                boxes=tuple(prediction_boxes(row.get("predictions") or [])),
                camera_id=str(row["camera_id"]) if row.get("camera_id") else None,
                captured_at=row.get("captured_at"),
            )
            for position, row in enumerate(chunk)
        )
        plans.append(TaskPlan(name=config.task_name(model, day, index + 1), frames=frames, day_index=index))
    return plans


def prediction_boxes(predictions: Iterable[dict]) -> Iterable[Box]:
    """Boxes from prediction rows (class_name, score and pixel corners)."""
    for p in predictions:
        yield Box(p["class_name"], float(p["score"]), float(p["x_min"]), float(p["y_min"]), float(p["x_max"]), float(p["y_max"]))
