"""From reviewed CVAT tasks to TaskExports: which tasks are pending, and how their frames map back.

The review stage records, per model-day, one row per task frame (`review_tasks`: task id and name,
frame index, the frame's name in CVAT, its frame URI). A COCO export names images by the CVAT frame
name, so the frames of a task are found through the `review_tasks` rows of the day in its name
(`<prefix>-<model>-<YYYY-MM-DD>-<NNN>`). Nothing here reads a store or calls an annotation tool: callers
pass rows and the export bytes, and get TaskExports or an ExportError naming the task and what is missing
(`data_engine.annotation.reviewed_exports` fetches the exports).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from data_engine.labels.coco import ExportError, TaskExport, load_task_export, parse_updated_date

# A day's review_tasks rows (None: that partition was never materialized), its review_candidates rows,
# and where the review_tasks rows live (for messages).
DayRows = tuple[Sequence[Mapping[str, Any]] | None, Sequence[Mapping[str, Any]], str]

_TASK_DAY = re.compile(r"-(?P<day>\d{4}-\d{2}-\d{2})-\d{3,}$")


def task_day(name: str) -> dt.date:
    """The model-day a task was made for, from its name `<prefix>-<model>-<YYYY-MM-DD>-<NNN>`."""
    match = _TASK_DAY.search(name)
    if match is None:
        raise ExportError(
            f"task {name!r}: its name does not end in -<YYYY-MM-DD>-<NNN>, so its review_tasks day (and the"
            " frame URIs of its frames) cannot be found; only tasks made by review_tasks can be merged"
        )
    try:
        return dt.date.fromisoformat(match["day"])
    except ValueError:
        raise ExportError(f"task {name!r}: {match['day']!r} is not a date") from None


def pending_tasks(reviewed: Iterable[Mapping[str, Any]], merged: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The reviewed tasks (rows with task_id, name, updated_date) not yet in a manifest's `tasks`
    with the same or a newer updated_date, oldest review first."""
    pending = []
    for row in reviewed:
        updated = _as_datetime(row["updated_date"], f"task {row['task_id']}")
        entry = merged.get(str(row["task_id"]))
        if entry is not None and parse_updated_date(entry["updated_date"], f"task {row['task_id']}") >= updated:
            continue
        pending.append({**row, "updated_date": updated.isoformat()})
    return sorted(pending, key=lambda row: (row["updated_date"], row["task_id"]))


def frame_uris(task_id: int, name: str, frames: Iterable[Mapping[str, Any]], where: str) -> dict[str, str]:
    """CVAT frame name -> frame URI for one task, from its `review_tasks` rows.

    Names are also keyed without their extension when that is unambiguous (an export may change it).
    """
    rows = [row for row in frames if int(row["task_id"]) == int(task_id)]
    if not rows:
        raise ExportError(
            f"task {task_id} ({name}): no frames of it in {where}; the task was not made by this review_tasks"
            " partition (was review_tasks re-run after the task was deleted and re-made?)"
        )
    mapping = {row["frame_name"]: row["frame_uri"] for row in rows}
    stems: dict[str, list[str]] = {}
    for frame_name, uri in mapping.items():
        stems.setdefault(str(PurePosixPath(frame_name).with_suffix("")), []).append(uri)
    for stem, uris in stems.items():
        if len(uris) == 1 and stem not in mapping:
            mapping[stem] = uris[0]
    return mapping


def frame_fields(candidates: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """frame URI -> {camera_id, captured_at (ISO 8601)} from `review_candidates` rows, for the splits."""
    fields: dict[str, dict[str, Any]] = {}
    for row in candidates:
        entry: dict[str, Any] = {}
        if row.get("camera_id"):
            entry["camera_id"] = str(row["camera_id"])
        captured = row.get("captured_at")
        if isinstance(captured, dt.datetime):
            entry["captured_at"] = (captured if captured.tzinfo else captured.replace(tzinfo=dt.timezone.utc)).isoformat()
        elif captured:
            entry["captured_at"] = str(captured)
        if entry:
            fields[row["frame_uri"]] = entry
    return fields


def reviewed_task_export(
    task: Mapping[str, Any],
    export_zip: bytes,
    frames: Sequence[Mapping[str, Any]],
    frames_where: str,
    candidates: Sequence[Mapping[str, Any]] = (),
) -> TaskExport:
    """A pending task (row of `pending_tasks`) and its COCO export zip -> a TaskExport keyed by frame URI.

    A frame the task was made with that the export lacks was deleted by a reviewer (the tools leave deleted
    frames out of their exports): it is a removed frame, which leaves the label set (and counts against
    `max_removed_image_fraction`). Raises ExportError (naming the task) for a malformed export or a frame
    without a known URI.
    """
    mapping = frame_uris(task["task_id"], task["name"], frames, frames_where)
    export = load_task_export(
        task["task_id"],
        task["updated_date"],
        export_zip,
        frame_uris=mapping,
        frame_fields=frame_fields(candidates) or None,
    )
    unknown = [image["file_name"] for image in export.coco["images"] if image["file_name"] not in mapping]
    if unknown:
        raise ExportError(
            f"task {task['task_id']} ({task['name']}): {len(unknown)} exported frame(s) are not frames of the task in"
            f" {frames_where}, e.g. {unknown[:3]}; was the task's data changed in CVAT?"
        )
    exported = {mapping[image["file_name"]] for image in export.coco["images"]}
    made_with = {row["frame_uri"] for row in frames if int(row["task_id"]) == int(task["task_id"])}
    return dataclasses.replace(export, removed_frames=tuple(sorted(made_with - exported)))


def _as_datetime(value: Any, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    return parse_updated_date(str(value), where)
