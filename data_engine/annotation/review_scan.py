"""One bounded step of watching CVAT for reviewed tasks: the review sensor's logic, without Dagster.

The cursor is a keyset position (updated_date, task id) in CVAT's task order, so each step lists only
tasks changed since the last one, with ties on updated_date broken by id: nothing is skipped or seen
twice. Tasks are mapped to models by `sql/cvat_task_models.sql` (task-name patterns from the config)
on an in-memory DuckDB. A task that cannot be handled is reported and parked in the cursor's retry
list; the cursor still moves past it, so one bad task never holds back the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from data_engine.annotation.backend import AnnotationBackend, AnnotationError, TaskPosition, TaskSnapshot
from data_engine.config import FleetConfig

if TYPE_CHECKING:
    import pyarrow as pa

MAX_ATTEMPTS = 5


@dataclass
class ReviewCursor:
    position: TaskPosition | None = None
    retry: dict[int, int] = field(default_factory=dict)  # task id -> failed attempts so far

    @classmethod
    def parse(cls, text: str | None) -> ReviewCursor:
        if not text:
            return cls()
        data = json.loads(text)
        position = None
        if data.get("updated_date"):
            position = TaskPosition(dt.datetime.fromisoformat(data["updated_date"]), int(data["task_id"]))
        return cls(position, {int(k): int(v) for k, v in data.get("retry", {}).items()})

    def dumps(self) -> str:
        data: dict = {}
        if self.position is not None:
            data = {"updated_date": self.position.updated_date.isoformat(), "task_id": self.position.task_id}
        if self.retry:
            data["retry"] = {str(k): v for k, v in sorted(self.retry.items())}
        return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class ReviewedTask:
    task_id: int
    name: str
    updated_date: str  # ISO 8601, UTC
    project_id: int | None
    frame_count: int


@dataclass
class ScanResult:
    reviewed: dict[str, list[ReviewedTask]]
    cursor: ReviewCursor
    listed: int
    failures: list[str]
    more: bool


def run_key(model: str, tasks: list[ReviewedTask]) -> str:
    """Same tasks at the same updated_date -> same key; a task accepted again gets a new one."""
    digest = hashlib.sha256(",".join(f"{t.task_id}@{t.updated_date}" for t in sorted(tasks, key=lambda t: t.task_id)).encode())
    return f"reviewed:{model}:{digest.hexdigest()[:24]}"


def task_models(tasks: list[TaskSnapshot], patterns: dict[str, str]) -> pa.Table:
    """`sql/cvat_task_models.sql` over the listed tasks, on an in-memory DuckDB."""
    import duckdb
    import pyarrow as pa

    from data_engine.warehouse import sql

    cvat_tasks = pa.table(
        {
            "task_id": pa.array([t.id for t in tasks], pa.int64()),
            "task_name": pa.array([t.name for t in tasks], pa.string()),
            "updated_date": pa.array([t.updated_date for t in tasks], pa.timestamp("us", tz="UTC")),
            "project_id": pa.array([t.project_id for t in tasks], pa.int64()),
            "frame_count": pa.array([t.frame_count for t in tasks], pa.int64()),
            "jobs_count": pa.array([t.jobs_count for t in tasks], pa.int64()),
            "jobs_completed": pa.array([t.jobs_completed for t in tasks], pa.int64()),
        }
    )
    cvat_task_name_patterns = pa.table(
        {"model": pa.array(list(patterns), pa.string()), "pattern": pa.array(list(patterns.values()), pa.string())}
    )
    query = sql.Query("cvat_task_models", sql.load("cvat_task_models"))
    with duckdb.connect(":memory:") as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("cvat_tasks", cvat_tasks)
        connection.register("cvat_task_name_patterns", cvat_task_name_patterns)
        return connection.sql(query.render("duckdb", {})).to_arrow_table()


def scan(backend: AnnotationBackend, config: FleetConfig, cursor: ReviewCursor, limit: int) -> ScanResult:
    page = backend.tasks_updated_after(cursor.position, limit)
    listed_ids = {task.id for task in page.tasks}
    retry_ids = [task_id for task_id in cursor.retry if task_id not in listed_ids]
    tasks = page.tasks + backend.tasks_by_id(retry_ids)  # deleted tasks drop out of the retry list
    patterns = {model: model_config.cvat.task_name_pattern_for(model) for model, model_config in config.models.items()}
    rows: dict[int, list[dict]] = defaultdict(list)
    if tasks:
        for row in task_models(tasks, patterns).to_pylist():
            rows[row["task_id"]].append(row)

    reviewed: dict[str, list[ReviewedTask]] = defaultdict(list)
    failures: list[str] = []
    retry: dict[int, int] = {}
    for task in tasks:
        try:
            matches = rows[task.id]
            if matches[0]["models_matched"] > 1:
                raise AnnotationError(
                    f"task {task.name!r} (id {task.id}) matches the task_name_pattern of several models"
                    f" ({sorted(r['model'] for r in matches)}); make the patterns in the fleet config exclusive"
                )
            model = matches[0]["model"]
            if model is None or not matches[0]["reviewed"]:
                continue
            reviewed[model].append(
                ReviewedTask(
                    task_id=task.id,
                    name=task.name,
                    updated_date=task.updated_date.astimezone(dt.timezone.utc).isoformat(),
                    project_id=task.project_id,
                    frame_count=task.frame_count,
                )
            )
        except Exception as error:  # noqa: BLE001 - one task's failure must not stop the others
            attempts = cursor.retry.get(task.id, 0) + 1
            if attempts < MAX_ATTEMPTS:
                retry[task.id] = attempts
                failures.append(f"{error} (attempt {attempts} of {MAX_ATTEMPTS}; retried next tick)")
            else:
                failures.append(f"{error} (attempt {attempts} of {MAX_ATTEMPTS}; given up: fix it, then touch the task in CVAT)")

    position = cursor.position
    if page.tasks:
        last = page.tasks[-1]
        position = TaskPosition(last.updated_date, last.id)
    return ScanResult(
        reviewed=dict(reviewed),
        cursor=ReviewCursor(position, retry),
        listed=len(tasks),
        failures=failures,
        more=page.more,
    )
