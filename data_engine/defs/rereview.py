"""Label-error re-review from the launchpad: `label_rereview_job` sends frames of a label version back
for review as one pre-annotated batch (`data_engine.annotation.rereview`). The review sensor notices it
once accepted, and the merge replaces those frames' labels."""

import dagster as dg
from pydantic import Field

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import AnnotationResource
from data_engine.defs.resources import LabelStoreResource

LABEL_REREVIEW_JOB = "label_rereview_job"


class RereviewConfig(dg.Config):
    """Which frames to review again. `label` names the batch `<prefix>-<model>-rereview-<label>`: the same
    label again resumes that batch instead of making another."""

    model: str = Field(description="a model of the fleet config")
    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$", description="letters, digits, '_', '-', '.'")
    frame_uris: list[str] = Field(min_length=1, description="frames of the label version, as their frame URIs")
    label_version: str | None = Field(default=None, description="default: the version latest.json names")


def build_rereview_job(fleet: FleetConfig) -> dg.JobDefinition:
    @dg.op(out=dg.Out(dg.Nothing))
    def rereview_batch(
        context: dg.OpExecutionContext, config: RereviewConfig, annotation: AnnotationResource, label_stores: LabelStoreResource
    ) -> None:
        """A review batch of frames already in a label version, pre-annotated with their current labels."""
        from data_engine.annotation.backend import AnnotationError
        from data_engine.annotation.batch_record import ensure_recorded_task
        from data_engine.annotation.rereview import RereviewError, rereview_plan
        from data_engine.annotation.tasks import task_settings
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
        try:
            with annotation.open(logger=context.log) as backend:
                project = backend.ensure_project(review_config.project_name_for(model), list(fleet.models[model].classes))
                outcome = ensure_recorded_task(backend, store.objects, model, project, plan, task_settings(review_config, upload=upload))
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
                "boxes_from_labels": outcome.shapes_total,
                "this_run": ", ".join(outcome.steps) or "-",
            }
        )

    @dg.job(name=LABEL_REREVIEW_JOB, description=__doc__)
    def label_rereview_job():
        rereview_batch()

    return label_rereview_job
