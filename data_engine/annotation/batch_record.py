"""Each review batch's own record of its frames, written when the batch is made, read when it is merged.

A review batch (a task in the annotation tool) names its frames as the tool needs (an uploaded file's
name, a key in a cloud storage); a label version is keyed by frame URI. The record says, per frame,
name -> frame URI, camera and capture time, so an export maps back without parsing the batch's name or
reading any day's files. It lives beside the model's label versions:

    <label store root>/<model>/review_batches/<batch name>.json

It is written before the batch is made and holds only what the plan says (no timestamps), so re-running
writes the same bytes: a crash at any point leaves either no batch or a batch with its record.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from data_engine.objectstore import PreconditionFailed

if TYPE_CHECKING:
    from data_engine.annotation.backend import AnnotationBackend, ProjectInfo, TaskFrame, TaskOutcome, TaskPlan
    from data_engine.objectstore import ObjectStore

FOLDER = "review_batches"
FORMAT = 1
# A batch name becomes an object key: one path segment, no dot segments.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")


@dataclass(frozen=True)
class BatchFrame:
    name: str  # the frame's name in the tool (what an export calls it)
    uri: str
    camera_id: str | None = None
    captured_at: str | None = None  # ISO 8601, UTC

    @classmethod
    def of(cls, frame: TaskFrame) -> BatchFrame:
        captured = frame.captured_at
        if captured is not None and captured.tzinfo is None:
            captured = captured.replace(tzinfo=dt.timezone.utc)
        return cls(frame.name, frame.uri, frame.camera_id, captured.isoformat() if captured else None)


@dataclass(frozen=True)
class BatchRecord:
    """The frames a review batch was made with."""

    model: str
    name: str
    frames: tuple[BatchFrame, ...]

    @classmethod
    def of(cls, model: str, name: str, frames: Iterable[TaskFrame]) -> BatchRecord:
        return cls(model, name, tuple(BatchFrame.of(frame) for frame in frames))

    def frame_uris(self) -> dict[str, str]:
        """Frame name -> frame URI; names are also keyed without their extension when that is unambiguous
        (an export may change it)."""
        mapping = {frame.name: frame.uri for frame in self.frames}
        return mapping | unambiguous_stems(mapping)

    def frame_fields(self) -> dict[str, dict[str, str]]:
        """Frame URI -> {camera_id, captured_at}, the fields the splits group by."""
        fields: dict[str, dict[str, str]] = {}
        for frame in self.frames:
            entry = {key: value for key, value in (("camera_id", frame.camera_id), ("captured_at", frame.captured_at)) if value}
            if entry:
                fields[frame.uri] = entry
        return fields

    def dumps(self) -> bytes:
        frames = [{k: v for k, v in vars(frame).items() if v is not None} for frame in self.frames]
        return json.dumps({"format": FORMAT, "model": self.model, "name": self.name, "frames": frames}, indent=1).encode()

    @classmethod
    def loads(cls, data: bytes, where: str) -> BatchRecord:
        try:
            payload = json.loads(data)
            frames = tuple(
                BatchFrame(str(f["name"]), str(f["uri"]), f.get("camera_id"), f.get("captured_at")) for f in payload["frames"]
            )
            return cls(str(payload["model"]), str(payload["name"]), frames)
        except (ValueError, KeyError, TypeError) as error:
            raise BatchRecordError(f"{where} is not a review batch record ({error}); delete it and re-run review_tasks") from None


class BatchRecordError(RuntimeError):
    """A batch record cannot be read; the message names it and the fix."""


def unambiguous_stems(mapping: Mapping[str, str]) -> dict[str, str]:
    """name without extension -> URI, for the stems only one name has (and that are no name themselves)."""
    stems: dict[str, list[str]] = {}
    for frame_name, uri in mapping.items():
        stems.setdefault(str(PurePosixPath(frame_name).with_suffix("")), []).append(uri)
    return {stem: uris[0] for stem, uris in stems.items() if len(uris) == 1 and stem not in mapping}


def record_key(model: str, name: str) -> str | None:
    """Where a batch's record lives in the label store, or None for a name that cannot be a key (a task
    made by hand in the tool may be named anything; it has no record)."""
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        return None
    return f"{model}/{FOLDER}/{name}.json"


def write_before_creation(store: ObjectStore, record: BatchRecord) -> bool:
    """Writes the record unless one is there. Returns True when a different record is there: the batch
    was made before with other frames (candidates re-selected), and the tool refuses to resume it until
    it is deleted; once the batch holds the new frames, `replace` writes the new record."""
    key = _key(record)
    try:
        store.put(key, record.dumps(), if_none_match=True)
        return False
    except PreconditionFailed:
        return store.get(key) != record.dumps()


def replace(store: ObjectStore, record: BatchRecord) -> None:
    """Writes the record over an older one: only once the tool holds exactly the record's frames."""
    store.put(_key(record), record.dumps())


def ensure_recorded_task(
    backend: AnnotationBackend, store: ObjectStore, model: str, project: ProjectInfo, plan: TaskPlan
) -> TaskOutcome:
    """The batch's task, made or resumed, with its record written first (see the module's docstring)."""
    record = BatchRecord.of(model, plan.name, plan.frames)
    stale = write_before_creation(store, record)
    outcome = backend.ensure_task(project, plan)
    if stale:  # the task holds exactly the plan's frames now (the backend checks that)
        replace(store, record)
    return outcome


def load(store: ObjectStore, model: str, name: str) -> BatchRecord | None:
    """The batch's record, or None when it has none (made by hand, or before batches had records)."""
    key = record_key(model, name)
    if key is None:
        return None
    try:
        data = store.get(key)
    except KeyError:
        return None
    return BatchRecord.loads(data, store.describe(key))


def describe(store: ObjectStore, model: str, name: str) -> str:
    key = record_key(model, name)
    return store.describe(key) if key else f"(no record can exist for the name {name!r})"


def _key(record: BatchRecord) -> str:
    key = record_key(record.model, record.name)
    if key is None:
        raise ValueError(f"review batch name {record.name!r} cannot name its record: use letters, digits, '_', '-' and '.'")
    return key

