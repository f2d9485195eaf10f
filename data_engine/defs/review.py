"""Stage 3 of the loop: CVAT review tasks for a model-day, and the sensor that notices reviewed ones.

Thin: planning, CVAT calls and the record of reviewed tasks live in `data_engine.annotation`; this module
adds partitions, metadata, and the sensor, whose runs (`label_merge_job`, data_engine.defs.labels) record
reviewed tasks and merge them.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import LABEL_STUDIO_NOT_STARTED, AnnotationResource
from data_engine.defs.io_manager import REVIEWED_TASKS_IO_MANAGER, output_key
from data_engine.defs.labels import LABEL_MERGE_JOB, merge_tags
from data_engine.defs.metadata import markdown_table
from data_engine.defs.partitions import daily_model_partitions, model_and_day, model_partitions
from data_engine.defs.rereview import build_rereview_job
from data_engine.defs.resources import LabelStoreResource, ObjectStoreResource

if TYPE_CHECKING:
    from data_engine.annotation.reviewed_record import ReviewedTask

GROUP = "review"


class ReviewedTaskConfig(dg.Config):
    """A task to record; checked against CVAT, whose updated_date, project and frame count are recorded
    (the optional fields say what the sensor saw)."""

    task_id: int
    name: str
    updated_date: str | None = None  # ISO 8601
    project_id: int | None = None
    frame_count: int = 0

    @classmethod
    def of(cls, task: "ReviewedTask") -> "ReviewedTaskConfig":
        return cls(
            task_id=task.task_id,
            name=task.name,
            updated_date=task.updated_date.isoformat(),
            project_id=task.project_id,
            frame_count=task.frame_count,
        )


class ReviewedTasksConfig(dg.Config):
    """The tasks the review sensor found reviewed and accepted (one model), and tasks to remove from the
    record (`forget_task_ids`: a task recorded by mistake; list it in `tasks` again to re-record it)."""

    tasks: list[ReviewedTaskConfig] = []
    forget_task_ids: list[int] = []


def _task_frames_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("task_id", pa.int64()),
            ("task_name", pa.string()),
            ("frame", pa.int64()),
            ("frame_name", pa.string()),
            ("frame_uri", pa.string()),
        ]
    )


class ModelsWithReviewAutomation(dg.AutomationCondition):
    """True for the partitions of the models whose config keeps `review_automation` on."""

    def __init__(self, models: Iterable[str]):
        self.models = frozenset(models)

    @property
    def name(self) -> str:
        return f"model in {sorted(self.models)}"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        keys = {key for key in context.candidate_subset.expensively_compute_partition_keys() if key.split("|")[-1] in self.models}
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection_with_partition_keys(keys))


def review_automation(fleet: FleetConfig) -> dg.AutomationCondition | None:
    """review_tasks follows review_candidates (declarative automation) for the models that want it."""
    models = [model for model, model_config in fleet.models.items() if model_config.review_automation]
    if not models:
        return None
    # Any day, not only the latest: a backfill of earlier days' candidates gets its review tasks too.
    condition = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    if len(models) == len(fleet.models):
        return condition
    return condition & ModelsWithReviewAutomation(models)


def build_review_defs(config: FleetConfig, automatic: bool = False) -> dg.Definitions:
    """`automatic`: the profile has an annotation server, so the loop runs by itself: review_tasks follows
    review_candidates (for models whose `review_automation` is on) and the review sensor is on by default."""
    fleet = config

    @dg.asset(
        partitions_def=daily_model_partitions(fleet),
        group_name=GROUP,
        kinds={"parquet"},
        automation_condition=review_automation(fleet) if automatic else None,
    )
    def review_tasks(
        context: dg.AssetExecutionContext, annotation: AnnotationResource, label_stores: LabelStoreResource, review_candidates
    ) -> dg.Output:
        """The day's review candidates as pre-annotated tasks in the model's project, one row per task frame
        (task id and name, frame index and name, frame URI). Each task's frame record (name -> frame URI,
        camera, capture time) is written beside the label versions before the task is made, so its export
        maps back by itself. Re-running resumes: tasks are found by name, and only missing data, assignees
        and pre-annotations are added."""
        import pyarrow as pa

        from data_engine.annotation.batch_record import ensure_recorded_task
        from data_engine.annotation.tasks import plan_tasks

        model, day = model_and_day(context)
        review_config = fleet.models[model].annotation
        if review_config.backend not in (None, annotation.backend):
            raise dg.Failure(
                f"models.{model}.annotation.backend is {review_config.backend!r}, but this profile's annotation server is"
                f" {annotation.backend!r}: point the profile at {review_config.backend} (CVAT_URL for cvat; unset it for"
                " label_studio in the local profile), or remove the key"
            )
        candidates = review_candidates.to_pylist()
        empty = pa.Table.from_pylist([], schema=_task_frames_schema())
        if not candidates:
            return dg.Output(empty, metadata={"tasks": 0, "frames": 0, "note": "no review candidates for this day"})
        plans = plan_tasks(model, day, review_config, candidates, upload=annotation.local_frames)
        records = label_stores.open(model).objects
        outcomes = []
        with annotation.open(logger=context.log) as backend:
            project = backend.ensure_project(model, list(fleet.models[model].classes), review_config)
            for plan in plans:
                outcome = ensure_recorded_task(backend, records, model, project, plan)
                context.log.info(
                    f"{plan.name}: task {outcome.task_id}, {outcome.frames} frames, {outcome.shapes_total} auto shapes"
                    f" ({', '.join(outcome.steps) or 'nothing to do'})"
                )
                outcomes.append(outcome)
        rows = [
            {"task_id": o.task_id, "task_name": p.name, "frame": i, "frame_name": f.name, "frame_uri": f.uri}
            for o, p in zip(outcomes, plans, strict=True)
            for i, f in enumerate(p.frames)
        ]
        table_rows = [
            {
                "task": f"[{o.name}]({o.url})",
                "id": o.task_id,
                "frames": o.frames,
                "shapes": o.shapes_total,
                "shapes uploaded now": o.shapes_uploaded,
                "this run": ", ".join(o.steps) or "-",
            }
            for o in outcomes
        ]
        return dg.Output(
            pa.Table.from_pylist(rows, schema=_task_frames_schema()),
            metadata={
                "tasks": len(outcomes),
                "task_ids": dg.MetadataValue.json([o.task_id for o in outcomes]),
                "frames": sum(o.frames for o in outcomes),
                "shapes": sum(o.shapes_total for o in outcomes),
                "shapes_uploaded": sum(o.shapes_uploaded for o in outcomes),
                "tasks_table": markdown_table(table_rows),
                "project": dg.MetadataValue.url(project.url),
                "project_labels_added": dg.MetadataValue.json(list(project.labels_added)),
                "project_labels_not_in_config": dg.MetadataValue.json(list(project.labels_not_in_config)),
            },
        )

    @dg.asset(partitions_def=model_partitions(fleet), group_name=GROUP, kinds={"parquet"}, io_manager_key=REVIEWED_TASKS_IO_MANAGER)
    def reviewed_tasks(
        context: dg.AssetExecutionContext, config: ReviewedTasksConfig, object_store: ObjectStoreResource, annotation: AnnotationResource
    ) -> dg.Output:
        """Every CVAT task of the model that was reviewed and accepted (task id, name, updated_date, project id,
        frame count, as CVAT has them), at `assets/reviewed_tasks/<model>.parquet`. Each run keeps what
        earlier runs recorded, removes the tasks of `forget_task_ids`, and adds or updates the tasks of its
        run config once CVAT confirms them (they exist under that name, are this model's, and are accepted
        now; a task accepted again keeps its latest updated_date). The file is replaced by a conditional
        write, re-read and re-merged when another run of the same model wrote first, so concurrent runs
        lose nothing."""
        from data_engine.annotation.review_scan import RunConfigError, confirm_reviewed
        from data_engine.annotation.reviewed_record import RecordContention, record_reviewed_tasks

        model = context.partition_key
        both = sorted({task.task_id for task in config.tasks} & set(config.forget_task_ids))
        if both:
            raise dg.Failure(f"run config of reviewed_tasks: tasks {both} are listed in both tasks and forget_task_ids; keep one")
        tasks, skipped = [], []
        if config.tasks:
            try:
                with annotation.open(logger=context.log) as backend:
                    tasks, skipped = confirm_reviewed(backend, fleet, model, [task.model_dump() for task in config.tasks])
            except RunConfigError as error:
                raise dg.Failure(f"run config of reviewed_tasks ({model}): {error}") from None
        for task in skipped:
            context.log.warning(f"task {task['task_id']} ({task['name']}) is {task['reason']}: not recorded")
        key = output_key(context.asset_key, model)
        try:
            record = record_reviewed_tasks(
                object_store.open(), key, tasks, context.run.run_id, logger=context.log, forget=config.forget_task_ids
            )
        except RecordContention as error:
            raise dg.Failure(description=str(error)) from error
        changed = set(record.added) | set(record.updated)
        recent = [
            {"task_id": r["task_id"], "name": r["name"], "updated_date": r["updated_date"].isoformat(), "frames": r["frame_count"]}
            for r in record.rows
            if r["task_id"] in changed
        ]
        return dg.Output(
            record.tasks,
            metadata={
                "path": record.location,
                "tasks_total": len(record.rows),
                "tasks_added": len(record.added),
                "tasks_updated": len(record.updated),
                "tasks_forgotten": dg.MetadataValue.json(record.forgotten),
                "tasks_skipped": markdown_table(skipped, ["task_id", "name", "reason"]),
                "frames_total": sum(r["frame_count"] for r in record.rows),
                "tasks_this_run": markdown_table(recent),
            },
        )

    @dg.sensor(
        name="cvat_review_sensor",
        job_name=LABEL_MERGE_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING if automatic else dg.DefaultSensorStatus.STOPPED,
    )
    def cvat_review_sensor(context: dg.SensorEvaluationContext, annotation: AnnotationResource):
        """Lists only the CVAT tasks updated since its cursor (one bounded page per tick), maps them to models
        by task name (sql/task_models.sql), and requests one `label_merge_job` run per model whose
        tasks were all accepted (every job in stage acceptance, state completed): the run records them in
        `reviewed_tasks`, merges them into `training_labels` and exports `yolo_dataset`."""
        from data_engine.annotation.review_scan import ReviewCursor, run_key, scan

        if not annotation.configured:
            return dg.SkipReason(LABEL_STUDIO_NOT_STARTED)
        cursor = ReviewCursor.parse(context.cursor)
        with annotation.open(quick=True, logger=context.log) as backend:
            result = scan(backend, fleet, cursor, annotation.tasks_per_tick)
        for failure in result.failures:
            context.log.warning(failure)
        run_requests = [
            dg.RunRequest(
                run_key=run_key(model, tasks),
                partition_key=model,
                run_config=dg.RunConfig(
                    ops={"reviewed_tasks": ReviewedTasksConfig(tasks=[ReviewedTaskConfig.of(t) for t in tasks])}
                ),
                tags={"data_engine/reviewed_task_count": str(len(tasks)), **merge_tags(model)},
            )
            for model, tasks in sorted(result.reviewed.items())
        ]
        summary = f"{result.listed} task(s) changed, {sum(len(t) for t in result.reviewed.values())} newly reviewed"
        if result.failures:
            summary += f"; {len(result.failures)} failed: " + " | ".join(result.failures)
        if result.more:
            summary += "; more changes are waiting for the next tick"
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=result.cursor.dumps(),
            skip_reason=None if run_requests else dg.SkipReason(summary),
        )

    # Dagster's implicit automation sensor starts stopped in a fresh instance; this one is on by default
    # when the profile has an annotation server, so review_tasks follows review_candidates without a click.
    review_automation_sensor = dg.AutomationConditionSensorDefinition(
        "review_automation_sensor",
        target=dg.AssetSelection.assets(review_tasks),
        default_status=dg.DefaultSensorStatus.RUNNING if automatic else dg.DefaultSensorStatus.STOPPED,
        description="Creates a day's review tasks once its review candidates are materialized (review_tasks' automation condition).",
    )
    return dg.Definitions(
        assets=[review_tasks, reviewed_tasks],
        jobs=[build_rereview_job(fleet)],
        sensors=[cvat_review_sensor, review_automation_sensor],
    )
