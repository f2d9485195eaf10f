"""One bounded step of watching CVAT for reviewed tasks: the review sensor's logic, without Dagster.

The cursor is a keyset position (updated_date, task id) in CVAT's task order, so each step lists only
tasks changed since the last one, with ties on updated_date broken by id: nothing is skipped or seen
twice. Tasks are mapped to models by `sql/task_models.sql` (task-name patterns from the config)
on an in-memory DuckDB. A task that cannot be handled is reported and parked in the cursor's retry
list; the cursor still moves past it, so one bad task never holds back the others.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from data_engine.annotation.backend import AnnotationBackend, AnnotationError, TaskPosition, TaskSnapshot
from data_engine.annotation.reviewed_record import ReviewedTask
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


@dataclass
class ScanResult:
    reviewed: dict[str, list[ReviewedTask]]
    cursor: ReviewCursor
    listed: int
    failures: list[str]
    more: bool


def run_key(model: str, tasks: list[ReviewedTask]) -> str:
    """Same tasks at the same updated_date -> same key; a task accepted again gets a new one."""
    digest = hashlib.sha256(
        ",".join(f"{t.task_id}@{t.updated_date.isoformat()}" for t in sorted(tasks, key=lambda t: t.task_id)).encode()
    )
    return f"reviewed:{model}:{digest.hexdigest()[:24]}"


def task_name_patterns(config: FleetConfig) -> dict[str, str]:
    """model -> the task-name pattern that maps review tasks to it."""
    return {model: model_config.annotation.task_name_pattern_for(model) for model, model_config in config.models.items()}


def task_models(tasks: list[TaskSnapshot], patterns: dict[str, str]) -> pa.Table:
    """`sql/task_models.sql` over the listed tasks, on an in-memory DuckDB."""
    import duckdb
    import pyarrow as pa

    from data_engine.warehouse import sql

    listed_tasks = pa.table(
        {
            "task_id": pa.array([t.id for t in tasks], pa.int64()),
            "task_name": pa.array([t.name for t in tasks], pa.string()),
            "updated_date": pa.array([t.updated_date for t in tasks], pa.timestamp("us", tz="UTC")),
            "project_id": pa.array([t.project_id for t in tasks], pa.int64()),
            "frame_count": pa.array([t.frame_count for t in tasks], pa.int64()),
            "accepted": pa.array([t.accepted for t in tasks], pa.bool_()),
        }
    )
    task_patterns = pa.table(
        {"model": pa.array(list(patterns), pa.string()), "pattern": pa.array(list(patterns.values()), pa.string())}
    )
    query = sql.Query("task_models", sql.load("task_models"))
    with duckdb.connect(":memory:") as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("listed_tasks", listed_tasks)
        connection.register("task_patterns", task_patterns)
        return connection.sql(query.render("duckdb", {})).to_arrow_table()


def scan(backend: AnnotationBackend, config: FleetConfig, cursor: ReviewCursor, limit: int) -> ScanResult:
    page = backend.tasks_updated_after(cursor.position, limit)
    listed_ids = {task.id for task in page.tasks}
    retry_ids = [task_id for task_id in cursor.retry if task_id not in listed_ids]
    tasks = page.tasks + backend.tasks_by_id(retry_ids)  # deleted tasks drop out of the retry list
    rows: dict[int, list[dict]] = defaultdict(list)
    if tasks:
        for row in task_models(tasks, task_name_patterns(config)).to_pylist():
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
            reviewed[model].append(ReviewedTask.of(task))
        except Exception as error:  # noqa: BLE001 - one task's failure must not stop the others
            attempts = cursor.retry.get(task.id, 0) + 1
            if attempts < MAX_ATTEMPTS:
                retry[task.id] = attempts
                failures.append(f"{error} (attempt {attempts} of {MAX_ATTEMPTS}; retried next tick)")
            else:
                failures.append(f"{error} (attempt {attempts} of {MAX_ATTEMPTS}; given up: fix it, then touch the task in CVAT)")

    position = cursor.position
    if page.next_position is not None:
        position = page.next_position
    elif page.tasks:
        last = page.tasks[-1]
        position = TaskPosition(last.updated_date, last.id)
    return ScanResult(
        reviewed=dict(reviewed),
        cursor=ReviewCursor(position, retry),
        listed=len(tasks),
        failures=failures,
        more=page.more,
    )


class RunConfigError(ValueError):
    """Tasks listed in a run's config that cannot be recorded; the message names each entry and the fix."""


def confirm_reviewed(
    backend: AnnotationBackend, config: FleetConfig, model: str, requested: Sequence[Mapping]
) -> tuple[list[ReviewedTask], list[dict]]:
    """The tasks a run's config lists (`task_id`, `name`, optional `updated_date`) as CVAT has them now.

    Run config may be typed on the launchpad, and a recorded task stays recorded, so nothing of it is
    trusted: each task must exist in CVAT under that name and match this model's task_name_pattern (and
    no other's). What is recorded (updated_date, project, frames) is CVAT's. A task not accepted any more
    (reopened since the sensor saw it) is skipped and reported: its next acceptance is recorded then.
    Returns (tasks to record, skipped tasks); raises RunConfigError naming every bad entry.
    """
    problems: list[str] = []
    seen: set[int] = set()
    for index, entry in enumerate(requested):
        if entry["task_id"] in seen:
            problems.append(f"tasks[{index}].task_id: task {entry['task_id']} is listed twice")
        seen.add(entry["task_id"])
        if entry.get("updated_date") is not None:
            try:
                dt.datetime.fromisoformat(str(entry["updated_date"]))
            except ValueError:
                problems.append(
                    f"tasks[{index}].updated_date: {entry['updated_date']!r} is not an ISO 8601 date-time"
                    " (e.g. 2026-11-24T10:00:00+00:00); it may also be left out: CVAT's updated_date is recorded"
                )
    if problems:
        raise RunConfigError("; ".join(problems))
    current = {task.id: task for task in backend.tasks_by_id(sorted(seen))}
    verdicts: dict[int, list[dict]] = defaultdict(list)
    if current:
        for row in task_models(list(current.values()), task_name_patterns(config)).to_pylist():
            verdicts[row["task_id"]].append(row)
    confirmed: list[ReviewedTask] = []
    skipped: list[dict] = []
    for index, entry in enumerate(requested):
        task = current.get(entry["task_id"])
        if task is None:
            problems.append(f"tasks[{index}].task_id: CVAT has no task {entry['task_id']} (deleted, or a wrong id)")
            continue
        if task.name != entry["name"]:
            problems.append(f"tasks[{index}].name: task {task.id} is named {task.name!r} in CVAT, not {entry['name']!r}")
            continue
        models = sorted(row["model"] for row in verdicts[task.id] if row["model"] is not None)
        if models != [model]:
            owner = f"matches the task_name_pattern of {models}" if models else "matches no model's task_name_pattern"
            problems.append(f"tasks[{index}]: task {task.id} ({task.name!r}) is not a task of model {model!r}: it {owner}")
            continue
        if not verdicts[task.id][0]["reviewed"]:
            skipped.append({"task_id": task.id, "name": task.name, "reason": "not accepted in CVAT now"})
            continue
        confirmed.append(ReviewedTask.of(task))
    if problems:
        raise RunConfigError("; ".join(problems) + "; fix these entries of the run config (or leave them out), then re-run")
    return confirmed, skipped
