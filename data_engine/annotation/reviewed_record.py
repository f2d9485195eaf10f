"""The record of reviewed tasks per model: one Parquet object that concurrent runs add to without loss.

Runs of one model may record at the same time, so the object is replaced by a conditional write
(compare-and-swap on its ETag) and re-read and re-merged when another run wrote first.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from data_engine.objectstore import PreconditionFailed

if TYPE_CHECKING:
    from data_engine.annotation.backend import TaskSnapshot
    from data_engine.objectstore import ObjectStore

MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class ReviewedTask:
    """A task reviewed and accepted, as the tool has it: the one shape the sensor, the run's check, the
    record and the merge share (its updated_date stays a datetime; only run config and manifests hold text)."""

    task_id: int
    name: str
    updated_date: dt.datetime  # UTC
    project_id: int | None
    frame_count: int

    @classmethod
    def of(cls, task: TaskSnapshot) -> ReviewedTask:
        return cls(
            task_id=task.id,
            name=task.name,
            updated_date=task.updated_date.astimezone(dt.timezone.utc),
            project_id=task.project_id,
            frame_count=task.frame_count,
        )


class RecordContention(RuntimeError):
    """Other writers kept winning the conditional write; re-running the run records the tasks."""


@dataclass(frozen=True)
class RecordOutcome:
    rows: list[dict[str, Any]]  # the whole record after this write, by task id
    added: list[int]
    updated: list[int]  # recorded before, now with a newer updated_date
    forgotten: list[int]  # removed from the record on request
    location: str

    @property
    def tasks(self) -> list[ReviewedTask]:
        """The whole record, oldest review first."""
        return _tasks_of(self.rows)


def _record_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("task_id", pa.int64()),
            ("name", pa.string()),
            ("updated_date", pa.timestamp("us", tz="UTC")),
            ("project_id", pa.int64()),
            ("frame_count", pa.int64()),
            ("recorded_by_run", pa.string()),
        ]
    )


def read_reviewed_tasks(store: ObjectStore, key: str) -> list[ReviewedTask]:
    """The record at `key` (empty when no task was recorded yet), oldest review first."""
    import pyarrow.parquet as pq

    try:
        return _tasks_of(pq.read_table(io.BytesIO(store.get(key))).to_pylist())
    except KeyError:
        return []


def _tasks_of(rows: Iterable[dict[str, Any]]) -> list[ReviewedTask]:
    tasks = [
        ReviewedTask(row["task_id"], row["name"], row["updated_date"], row["project_id"], int(row["frame_count"] or 0))
        for row in rows
    ]
    return sorted(tasks, key=lambda task: (task.updated_date, task.task_id))


def record_reviewed_tasks(
    store: ObjectStore,
    key: str,
    tasks: Iterable[ReviewedTask],
    run_id: str,
    logger: logging.Logger | None = None,
    forget: Iterable[int] = (),
) -> RecordOutcome:
    """Adds the tasks to the record at `key`, keeping what earlier runs recorded; a task accepted again
    keeps its latest updated_date. The tasks in `forget` are removed first (a bad record's way out: a
    removed task is merged again once it is recorded again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    log = logger or logging.getLogger(__name__)
    tasks = list(tasks)
    forget = set(forget)
    for _attempt in range(MAX_ATTEMPTS):
        try:
            data, etag = store.get_with_etag(key)
            previous = pq.read_table(io.BytesIO(data)).to_pylist()
        except KeyError:
            previous, etag = [], None
        merged = {row["task_id"]: row for row in previous if row["task_id"] not in forget}
        forgotten = sorted(row["task_id"] for row in previous if row["task_id"] in forget)
        added, updated = [], []
        for task in tasks:
            when = task.updated_date.astimezone(dt.timezone.utc)
            old = merged.get(task.task_id)
            if old is not None and old["updated_date"] >= when:
                continue
            (updated if old is not None else added).append(task.task_id)
            merged[task.task_id] = {
                "task_id": task.task_id,
                "name": task.name,
                "updated_date": when,
                "project_id": task.project_id,
                "frame_count": task.frame_count,
                "recorded_by_run": run_id,
            }
        rows = sorted(merged.values(), key=lambda row: row["task_id"])
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=_record_schema()), buffer)
        try:
            if etag is None:
                store.put(key, buffer.getvalue(), if_none_match=True)
            else:
                store.put(key, buffer.getvalue(), if_match=etag)
            return RecordOutcome(rows=rows, added=added, updated=updated, forgotten=forgotten, location=store.describe(key))
        except PreconditionFailed:
            log.info(f"{store.describe(key)} changed while merging; merging again")
    raise RecordContention(f"{store.describe(key)} kept changing under {MAX_ATTEMPTS} merge attempts; re-run the run")
