"""A model-day's review candidates -> the CVAT tasks to make: order, chunks, names, frames, shapes.

Everything here is deterministic in its inputs: a retry of the same partition plans the same tasks,
which is what lets task names serve as idempotency keys.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from pathlib import Path

from data_engine.annotation.backend import Box, TaskFrame, TaskPlan, TaskSettings
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
    """The file name of an uploaded frame: CVAT keeps only base names, so make them unique and ordered."""
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
    jobs_before = 0
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
        plans.append(TaskPlan(name=config.task_name(model, day, index + 1), frames=frames, first_job_index=jobs_before))
        jobs_before += -(-len(frames) // config.cvat.segment_size)
    return plans


def task_settings(config: AnnotationConfig, *, upload: bool) -> TaskSettings:
    cvat = config.cvat
    return TaskSettings(
        segment_size=cvat.segment_size,
        image_quality=cvat.image_quality,
        assignees=tuple(cvat.assignees),
        annotation_batch_size=cvat.annotation_batch_size,
        cloud_storage_id=None if upload else cvat.cloud_storage_id,
        manifest=cvat.manifest,
        manifest_min_frames=cvat.manifest_min_frames,
    )


def prediction_boxes(predictions: Iterable[dict]) -> Iterable[Box]:
    """Boxes from prediction rows (class_name, score and pixel corners)."""
    for p in predictions:
        yield Box(p["class_name"], float(p["score"]), float(p["x_min"]), float(p["y_min"]), float(p["x_max"]), float(p["y_max"]))


def rectangle(box: Box, frame: TaskFrame) -> list[float]:
    """CVAT rectangle points [x1, y1, x2, y2] in pixels, clamped to the image."""
    return [
        min(max(box.x_min, 0.0), frame.width),
        min(max(box.y_min, 0.0), frame.height),
        min(max(box.x_max, 0.0), frame.width),
        min(max(box.y_max, 0.0), frame.height),
    ]


def shape_batches(
    frames: Sequence[TaskFrame], pending: Iterable[int], label_ids: dict[str, int], batch_size: int
) -> Iterable[tuple[list[int], list[dict]]]:
    """Shapes (CVAT LabeledShapeRequest fields, source=auto with the score) of the `pending` frame
    indices, in batches of whole frames holding at most `batch_size` shapes (one frame with more
    shapes makes a batch of its own). A frame's shapes are never split across two requests, so
    "frames with auto shapes" tells exactly which batches landed."""
    batch_frames: list[int] = []
    batch: list[dict] = []
    for index in sorted(pending):
        frame = frames[index]
        shapes = [
            {
                "type": "rectangle",
                "frame": index,
                "label_id": label_ids[box.class_name],
                "points": rectangle(box, frame),
                "source": "auto",
                "score": box.score,
            }
            for box in frame.boxes
            if box.class_name in label_ids
        ]
        if not shapes:
            continue
        if batch and len(batch) + len(shapes) > batch_size:
            yield batch_frames, batch
            batch_frames, batch = [], []
        batch_frames.append(index)
        batch.extend(shapes)
    if batch:
        yield batch_frames, batch


def local_files(objects_root: Path, frames: Sequence[TaskFrame], staging: Path) -> list[Path]:
    """Hard links (copies across file systems) named like the task's frames to the local images
    (frame_path), for upload; cvat-sdk follows symlinks to the target's name, so no symlinks."""
    import os
    import shutil

    paths = []
    for frame in frames:
        source = frame_path(objects_root, frame.uri)
        if not source.is_file():
            raise FileNotFoundError(f"frame {frame.uri}: no local image at {source}")
        link = staging / frame.name
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)
        paths.append(link)
    return paths
