"""Label-error re-review from the launchpad: `label_rereview_job` sends frames of a label version back
for review as one pre-annotated batch (`data_engine.annotation.rereview`), optionally with the model's
latest predictions from the warehouse as a group of their own. The review sensor notices it once accepted,
and the merge replaces those frames' labels."""

from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import AnnotationResource
from data_engine.defs.metadata import query_cost
from data_engine.defs.resources import LabelStoreResource, WarehouseResource

if TYPE_CHECKING:
    from data_engine.annotation.backend import TaskPlan

LABEL_REREVIEW_JOB = "label_rereview_job"


class RereviewConfig(dg.Config):
    """Which frames to review again. `label` names the batch `<prefix>-<model>-rereview-<label>`: the same
    label again resumes that batch instead of making another."""

    model: str = Field(description="a model of the fleet config")
    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$", description="letters, digits, '_', '-', '.'")
    frame_uris: list[str] = Field(min_length=1, description="frames of the label version, as their frame URIs")
    label_version: str | None = Field(default=None, description="default: the version latest.json names")
    include_predictions: bool = Field(
        default=False,
        description="also show each frame's latest production predictions (any day, from the warehouse) as a"
        " separate group of boxes, labelled prediction:<class>; the merge never takes them as labels",
    )


def build_rereview_job(fleet: FleetConfig) -> dg.JobDefinition:
    @dg.op(out=dg.Out(dg.Nothing))
    def rereview_batch(
        context: dg.OpExecutionContext,
        config: RereviewConfig,
        annotation: AnnotationResource,
        label_stores: LabelStoreResource,
        warehouse: WarehouseResource,
    ) -> None:
        """A review batch of frames already in a label version, pre-annotated with their current labels
        (and the model's predictions, when asked)."""
        from data_engine.annotation.backend import AnnotationError
        from data_engine.annotation.batch_record import ensure_recorded_task
        from data_engine.annotation.rereview import RereviewError, rereview_plan
        from data_engine.labels import LabelStoreError
        from data_engine.labels.store import check_version_id

        model = config.model
        if model not in fleet.models:
            known = sorted(fleet.models)
            raise dg.Failure(f"run config of {LABEL_REREVIEW_JOB}: model {model!r} is not in the fleet config ({known})")
        review_config = fleet.models[model].annotation
        store = label_stores.open(model)
        upload = annotation.local_frames
        try:
            if config.label_version is not None:
                check_version_id(model, config.label_version)
            head = store.latest(model)
            version = config.label_version or (head.version if head else None)
            if version is None:
                raise dg.Failure(f"model {model!r} has no label version at {store.describe(model)}: nothing to review again")
            coco = store.label_set(model, version)
            name = review_config.rereview_name(model, config.label)
            plan = rereview_plan(name, coco, config.frame_uris, version, upload=upload, max_frames=review_config.max_frames_per_task)
        except (RereviewError, ValueError) as error:
            raise dg.Failure(f"run config of {LABEL_REREVIEW_JOB}: {error}") from None
        except LabelStoreError as error:
            raise dg.Failure(f"run config of {LABEL_REREVIEW_JOB}: {error}") from error
        cost: dict[str, object] = {}
        if config.include_predictions:
            plan, cost = _with_latest_predictions(context, warehouse, model, plan)
        try:
            with annotation.open(logger=context.log) as backend:
                project = backend.ensure_project(model, list(fleet.models[model].classes), review_config)
                outcome = ensure_recorded_task(backend, store.objects, model, project, plan)
        except AnnotationError as error:
            raise dg.Failure(str(error)) from error
        context.log.info(f"{plan.name}: task {outcome.task_id}, {outcome.frames} frames ({', '.join(outcome.steps) or 'nothing to do'})")
        context.add_output_metadata(
            {
                "task": dg.MetadataValue.url(outcome.url),
                "task_id": outcome.task_id,
                "task_name": plan.name,
                "label_version": version,
                "frames": outcome.frames,
                "boxes_from_labels": sum(len(frame.boxes) for frame in plan.frames),
                "prediction_boxes": sum(len(frame.predictions) for frame in plan.frames),
                "shapes_on_task": outcome.shapes_total,
                **cost,
                "this_run": ", ".join(outcome.steps) or "-",
            }
        )

    def _with_latest_predictions(
        context: dg.OpExecutionContext, warehouse: WarehouseResource, model: str, plan: "TaskPlan"
    ) -> tuple["TaskPlan", dict[str, object]]:
        """The plan with each frame's latest predictions as its prediction group, and the query's cost."""
        from data_engine.annotation.rereview import predictions_by_frame, with_predictions
        from data_engine.selection.queries import latest_frame_predictions_query
        from data_engine.warehouse import WarehouseError

        query = latest_frame_predictions_query(model, fleet.models[model], [frame.uri for frame in plan.frames])
        labels = {"model": model, "dagster_run_id": context.run.run_id, "job": LABEL_REREVIEW_JOB}
        try:
            result = warehouse.open().run(query, labels)
        except WarehouseError as error:
            raise dg.Failure(f"{plan.name}: the frames' predictions could not be read, nothing was made: {error}") from error
        rows = result.table.to_pylist()
        predictions = predictions_by_frame(rows)
        missing = len(plan.frames) - len(predictions)
        if missing:
            context.log.warning(f"{plan.name}: {missing} of {len(plan.frames)} frames have no valid prediction in the warehouse")
        versions = sorted({str(row["model_version"]) for row in rows})
        cost = query_cost(result) | {"frames_with_predictions": len(predictions), "prediction_model_versions": ", ".join(versions) or "-"}
        return with_predictions(plan, predictions), cost

    @dg.job(name=LABEL_REREVIEW_JOB, description=__doc__)
    def label_rereview_job():
        rereview_batch()

    return label_rereview_job
