"""The exports of reviewed tasks, fetched from the annotation tool and handed to `data_engine.labels`,
which never calls a tool itself.

A task's frame names map back to frame URIs through the review batch's own record (written when the batch
was made, `batch_record`); a task with no record whose frames come from a cloud storage (made by hand in
CVAT, say) maps back through the bucket's keys, which are its frame names. Boxes of a re-review's
prediction group (`naming.prediction_label`) left in an export are dropped here: they are the model's, not
a reviewer's labels.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from data_engine.annotation import batch_record
from data_engine.annotation.backend import AnnotationBackend, AnnotationError
from data_engine.annotation.naming import is_prediction_label
from data_engine.annotation.reviewed_record import ReviewedTask
from data_engine.labels.coco import ExportError, TaskExport
from data_engine.labels.reviewed import reviewed_task_export

if TYPE_CHECKING:
    from data_engine.objectstore import ObjectStore


def collect_reviewed_exports(
    backend: AnnotationBackend,
    records: ObjectStore,
    model: str,
    pending: Sequence[ReviewedTask],
    logger: logging.Logger | None = None,
) -> tuple[list[TaskExport], list[dict[str, Any]], list[str]]:
    """The pending tasks' exports, the tasks skipped (task_id, name, reason), and the errors of tasks that
    cannot be merged (each names the task and the fix). `records` is the store of the batch records.

    Only tasks still accepted now are exported: one reopened or rejected since (e.g. after a rollback) waits
    for its next acceptance, which the sensor records with a newer updated_date. A task that cannot be
    merged (its export failed or is broken, its frames cannot be mapped back) is skipped too, so it never
    blocks the model's other tasks; it stays pending and is tried again by the next merge.
    """
    log = logger or logging.getLogger(__name__)
    current = {task.id: task for task in backend.tasks_by_id([task.task_id for task in pending])}
    exports: list[TaskExport] = []
    skipped: list[dict[str, Any]] = []
    errors: list[str] = []
    for task in pending:
        snapshot = current.get(task.task_id)
        if snapshot is None or not snapshot.accepted:
            reason = "deleted in the annotation tool" if snapshot is None else "no longer accepted (reopened or rejected)"
            skipped.append({"task_id": task.task_id, "name": task.name, "reason": reason})
            log.warning(f"task {task.task_id} ({task.name}) is {reason}: not merged")
            continue
        try:
            exports.append(_without_prediction_group(_export(backend, records, model, task), log))
        except (ExportError, AnnotationError, batch_record.BatchRecordError) as error:
            errors.append(str(error))
            skipped.append({"task_id": task.task_id, "name": task.name, "reason": f"cannot be merged: {error}"})
            log.warning(f"{error}: not merged; the other tasks go on, this one is tried again by the next merge")
    return exports, skipped, errors


def _without_prediction_group(export: TaskExport, log: logging.Logger) -> TaskExport:
    """The export without the prediction group's categories and boxes."""
    coco = export.coco
    group = {category["id"] for category in coco["categories"] if is_prediction_label(category["name"])}
    if not group:
        return export
    kept = [annotation for annotation in coco["annotations"] if annotation["category_id"] not in group]
    dropped = len(coco["annotations"]) - len(kept)
    if dropped:
        log.info(f"{export.name}: {dropped} box(es) of the prediction group left in the export, dropped (not labels)")
    categories = [category for category in coco["categories"] if category["id"] not in group]
    return dataclasses.replace(export, coco={**coco, "categories": categories, "annotations": kept})


def _export(backend: AnnotationBackend, records: ObjectStore, model: str, task: ReviewedTask) -> TaskExport:
    task_id, name = task.task_id, task.name
    record = batch_record.load(records, model, name)
    if record is not None:
        mapping, fields = record.frame_uris(), record.frame_fields()
        made_with = {frame.uri for frame in record.frames}
        where = f"its batch record {batch_record.describe(records, model, name)}"
    else:
        keys = backend.cloud_frame_uris(task_id)
        if keys is None:
            raise ExportError(
                f"task {task_id} ({name}): no batch record at {batch_record.describe(records, model, name)}, and its"
                " frames are not from a cloud storage, so they cannot be mapped to frame URIs. A task made before batch"
                " records existed gets its record when review_tasks of its day and model is materialized again (it finds"
                " the task by name and changes nothing in it); a task made by hand must take its frames from a cloud storage"
            )
        mapping, fields, made_with = keys | batch_record.unambiguous_stems(keys), None, set(keys.values())
        where = "its cloud storage (frame names are the bucket's keys)"
    return reviewed_task_export(task, backend.export_task_coco(task_id), mapping, made_with, where, fields)
