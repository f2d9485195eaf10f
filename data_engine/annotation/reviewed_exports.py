"""The exports of reviewed tasks, fetched from the annotation tool and handed to `data_engine.labels`,
which never calls a tool itself."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_engine.annotation.backend import AnnotationBackend, AnnotationError
from data_engine.labels.coco import ExportError, TaskExport
from data_engine.labels.reviewed import DayRows, reviewed_task_export, task_day


def collect_reviewed_exports(
    backend: AnnotationBackend,
    model: str,
    pending: Sequence[Mapping[str, Any]],
    load_day: Callable[[str], DayRows],
    logger: logging.Logger | None = None,
) -> tuple[list[TaskExport], list[dict[str, Any]], list[str]]:
    """The pending tasks' exports, the tasks skipped (task_id, name, reason), and the errors of tasks that
    cannot be merged (each names the task and the fix).

    Only tasks still accepted now are exported: one reopened or rejected since (e.g. after a rollback) waits
    for its next acceptance, which the sensor records with a newer updated_date. A task that cannot be
    merged (its export failed or is broken, its frames cannot be mapped back) is skipped too, so it never
    blocks the model's other tasks; it stays pending and is tried again by the next merge.
    `load_day` runs once per day.
    """
    log = logger or logging.getLogger(__name__)
    current = {task.id: task for task in backend.tasks_by_id([int(t["task_id"]) for t in pending])}
    days: dict[str, DayRows] = {}
    exports: list[TaskExport] = []
    skipped: list[dict[str, Any]] = []
    errors: list[str] = []
    for task in pending:
        snapshot = current.get(int(task["task_id"]))
        if snapshot is None or not snapshot.accepted:
            reason = "deleted in the annotation tool" if snapshot is None else "no longer accepted (reopened or rejected)"
            skipped.append({"task_id": task["task_id"], "name": task["name"], "reason": reason})
            log.warning(f"task {task['task_id']} ({task['name']}) is {reason}: not merged")
            continue
        try:
            exports.append(_export(backend, model, task, days, load_day))
        except (ExportError, AnnotationError) as error:
            errors.append(str(error))
            skipped.append({"task_id": task["task_id"], "name": task["name"], "reason": f"cannot be merged: {error}"})
            log.warning(f"{error}: not merged; the other tasks go on, this one is tried again by the next merge")
    return exports, skipped, errors


def _export(
    backend: AnnotationBackend, model: str, task: Mapping[str, Any], days: dict[str, DayRows], load_day: Callable[[str], DayRows]
) -> TaskExport:
    day = task_day(task["name"]).isoformat()
    if day not in days:
        days[day] = load_day(day)
    frames, candidates, where = days[day]
    if frames is None:
        raise ExportError(
            f"task {task['task_id']} ({task['name']}): review_tasks of {day}|{model} is not at"
            f" {where}, so its frame names cannot be mapped to frame URIs;"
            " materialize review_tasks for that partition (it finds the existing tasks by name)"
        )
    data = backend.export_task_coco(int(task["task_id"]))
    return reviewed_task_export(task, data, frames, where, candidates)
