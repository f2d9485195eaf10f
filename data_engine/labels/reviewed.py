"""From reviewed tasks to TaskExports: which tasks are pending, and an export keyed by frame URI.

A COCO export names images by the tool's frame names; the caller says how those names map to frame URIs
(the review batch's own record, or the tool's cloud-storage keys) and which frames the task was made
with. Nothing here reads a store or calls an annotation tool: callers pass rows, mappings and the exported
COCO, and get TaskExports or an ExportError naming the task and what is missing
(`data_engine.annotation.reviewed_exports` fetches the exports).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from data_engine.labels.coco import ExportError, TaskExport, check_coco, parse_updated_date


class Reviewed(Protocol):
    """What labels needs of a reviewed task (the annotation package's ReviewedTask has it)."""

    task_id: int
    name: str
    updated_date: dt.datetime  # aware


T = TypeVar("T", bound=Reviewed)


def pending_tasks(reviewed: Iterable[T], merged: Mapping[str, Mapping[str, Any]]) -> list[T]:
    """The reviewed tasks not yet in a manifest's `tasks` with the same or a newer updated_date, oldest
    review first."""
    pending = [
        task
        for task in reviewed
        if (entry := merged.get(str(task.task_id))) is None
        or parse_updated_date(entry["updated_date"], f"task {task.task_id}") < task.updated_date
    ]
    return sorted(pending, key=lambda task: (task.updated_date, task.task_id))


def reviewed_task_export(
    task: Reviewed,
    coco: Any,
    frame_uris: Mapping[str, str],
    made_with: Collection[str],
    frames_where: str,
    frame_fields: Mapping[str, Mapping[str, Any]] | None = None,
) -> TaskExport:
    """A pending task and its COCO export (images named by the tool's frame names) -> a TaskExport keyed by
    frame URI.

    `frame_uris` maps the tool's frame names to frame URIs, `made_with` holds the frame URIs the task was
    made with. A frame the task was made with that the export lacks was deleted by a reviewer (the tools
    leave deleted frames out of their exports): it is a removed frame, which leaves the label set (and counts
    against `max_removed_image_fraction`). Raises ExportError (naming the task) for a malformed export or
    a frame without a known URI.
    """
    check_coco(coco, f"task {task.task_id}")
    export = TaskExport(task.task_id, task.updated_date.isoformat(), coco, frame_uris=frame_uris, frame_fields=frame_fields or None)
    unknown = [image["file_name"] for image in export.coco["images"] if image["file_name"] not in frame_uris]
    if unknown:
        raise ExportError(
            f"task {task.task_id} ({task.name}): {len(unknown)} exported frame(s) are not frames of the task in"
            f" {frames_where}, e.g. {unknown[:3]}; was the task's data changed in the annotation tool?"
        )
    exported = {frame_uris[image["file_name"]] for image in export.coco["images"]}
    return dataclasses.replace(export, removed_frames=tuple(sorted(set(made_with) - exported)))

