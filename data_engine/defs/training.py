"""Stage 5 of the loop, training: `trained_model` runs one training of a model on a label version
through the profile's trainer launcher, and `selected_checkpoint` picks the run's best checkpoint.

Thin: the model store, checkpoint selection and split assignment come from `data_engine.training`
and `data_engine.labels`. This module adds partitions, the training request, metadata, data versions,
the training job and its concurrency tag.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import time
from typing import Any

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.metadata import markdown_table
from data_engine.defs.partitions import model_partitions
from data_engine.defs.resources import LabelStoreResource, ModelStoreResource
from data_engine.defs.trainer_launcher import TrainerLauncherResource

GROUP = "training"
TRAINING_JOB = "training_job"
# Runs carrying this tag with the same value (the model) run one at a time (tag_concurrency_limits in
# dagster.yaml): two trainings of one model would compete for the same GPUs for nothing.
TRAINING_TAG = "data_engine/training"
# The metrics shown per checkpoint, when the trainer reports them (all of them are in checkpoints.json).
TABLE_METRICS = ("map", "map50", "map75", "mar_100")


def training_tags(model: str) -> dict[str, str]:
    return {TRAINING_TAG: model}


class TrainingRunConfig(dg.Config):
    """Launchpad config of trained_model: which label version to train on."""

    label_version: str | None = None  # a version id (`data-engine labels versions`); none: the latest


def _requested_by(context: dg.AssetExecutionContext) -> str:
    tags = context.run.tags
    for tag, what in (("dagster/user", "user"), ("dagster/sensor_name", "sensor"), ("dagster/schedule_name", "schedule"), ("dagster/backfill", "backfill")):
        if tags.get(tag):
            return f"{what} {tags[tag]}"
    return f"dagster run {context.run.root_run_id or context.run.run_id}"


def _checkpoint_rows(checkpoints: list[dict[str, Any]], selected: str | None = None) -> dg.MarkdownMetadataValue:
    metrics = [name for name in TABLE_METRICS if name in checkpoints[0]["metrics"]] or sorted(checkpoints[0]["metrics"])
    rows = [
        {
            "checkpoint": entry["name"] + (" (selected)" if entry["name"] == selected else ""),
            "epoch": entry["epoch"],
            "step": entry["step"],
            **{name: entry["metrics"].get(name, "") for name in metrics},
        }
        for entry in checkpoints
    ]
    return markdown_table(rows, ["checkpoint", "epoch", "step", *metrics])


def build_training_defs(config: FleetConfig) -> dg.Definitions:
    fleet = config
    partitions = model_partitions(fleet)

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"pytorch"}, deps=[dg.AssetKey("training_labels")])
    def trained_model(
        context: dg.AssetExecutionContext,
        config: TrainingRunConfig,
        trainer: TrainerLauncherResource,
        label_stores: LabelStoreResource,
        model_stores: ModelStoreResource,
    ) -> dg.MaterializeResult:
        """One training run of the model on a label version (run config `label_version`, else the latest):
        `<root>/<model>/runs/<run_id>/request.json` (with `splits.json`, the split assignment) is written
        before the trainer starts, and the trainer writes checkpoints and `checkpoints.json` beside it. The
        run id is the Dagster run's root run id, so a retried run finds its request (and, once the trainer
        finished, its checkpoints) and never starts a second training. Its data version is the run id; the
        label version it trained on is recorded in metadata, and a newer label version marks it stale."""
        from data_engine.labels import LabelStoreError, SplitSettings, assign_splits
        from data_engine.training import ModelStoreError

        model = context.partition_key
        model_config = fleet.models[model]
        run_id = context.run.root_run_id or context.run.run_id
        request_id = f"{model}-{run_id}"
        store = model_stores.open(model)
        try:
            request = store.request(model, run_id)
            if request is None:
                labels = label_stores.open(model)
                version = config.label_version or (head.version if (head := labels.latest(model)) else None)
                if version is None:
                    raise dg.Failure(f"model {model!r} has no label version at {labels.describe(model)}; materialize training_labels first")
                coco = labels.label_set(model, version)
                splits = assign_splits(coco["images"], SplitSettings.from_config(model_config.labels))
                training = model_config.training
                request = store.write_request(
                    model,
                    run_id,
                    {
                        "request_id": request_id,
                        "run_id": run_id,
                        "model": model,
                        "label_version": version,
                        "label_version_uri": labels.describe(model, version),
                        "hyperparameters": dict(training.hyperparameters),
                        "initial_weights_uri": training.initial_weights_uri,
                        "launcher": type(trainer).__name__,
                        "batch": training.batch.model_dump() if training.batch else None,  # queue, job definition, image
                        "requested_by": _requested_by(context),
                        "requested_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "dagster_run_id": context.run.run_id,
                    },
                    splits,
                )
            else:
                context.log.info(f"run {run_id} already has a training request ({request['requested_at']}); reusing it")
            metadata: dict[str, Any] = {}
            checkpoints = store.checkpoints(model, run_id)
            if checkpoints is None:
                extras = {
                    "model": model,
                    "classes": list(model_config.classes),
                    "label_version": request["label_version"],
                    "label_version_uri": request["label_version_uri"],
                    "splits_uri": store.describe(model, run_id, "splits.json"),
                    "run_uri": store.run_uri(model, run_id),
                    "hyperparameters": request["hyperparameters"],
                    "initial_weights_uri": request["initial_weights_uri"],
                }
                started = time.monotonic()
                invocation = trainer.run(context, model=model, request_id=request_id, entrypoint="train", extras=extras)
                for result in invocation.get_results():
                    metadata |= dict(result.metadata or {})
                metadata["wall_seconds"] = round(time.monotonic() - started, 1)
                checkpoints = store.checkpoints(model, run_id)
                if checkpoints is None:
                    raise dg.Failure(
                        f"the trainer finished without writing {store.describe(model, run_id, 'checkpoints.json')}"
                        " (the trainer contract: it writes checkpoints.json last)"
                    )
            else:
                context.log.info(f"run {run_id} already finished training; reporting its checkpoints")
        except (LabelStoreError, ModelStoreError) as error:
            raise dg.Failure(description=str(error)) from error

        metadata |= {
            "label_version": request["label_version"],
            "run_id": run_id,
            "request_id": request_id,
            "run_folder": store.run_uri(model, run_id),
            "launched_now": "wall_seconds" in metadata,
            "requested_by": request["requested_by"],
            "epochs": max(entry["epoch"] for entry in checkpoints),
            "gpus": metadata.get("gpus", "not reported"),
            "checkpoint_count": len(checkpoints),
            "checkpoints": _checkpoint_rows(checkpoints),
            "checkpoint_metrics": dg.MetadataValue.json(checkpoints),
        }
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(run_id))

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"json"}, deps=[trained_model])
    def selected_checkpoint(context: dg.AssetExecutionContext, model_stores: ModelStoreResource) -> dg.MaterializeResult:
        """The best checkpoint of the latest trained_model run by the validation metric
        `training.selection_metric` (ties go to the later checkpoint), written as the candidate record
        `<root>/<model>/candidates/<candidate_id>.json` for evaluation. The id names the run and the
        checkpoint, so a retry writes nothing new."""
        from data_engine.training import ModelStoreError, SelectionError, candidate_record, select_checkpoint

        model = context.partition_key
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=trained_model.key, asset_partitions=[model]), limit=1
        ).records
        if not records:
            raise dg.Failure(f"trained_model has no materialization for model {model!r}; train it first")
        run_id = records[0].asset_materialization.metadata["run_id"].value
        metric = fleet.models[model].training.selection_metric
        store = model_stores.open(model)
        try:
            checkpoints = store.checkpoints(model, run_id) or []
            best = select_checkpoint(checkpoints, metric)
            record = candidate_record(model, run_id, store.request(model, run_id), best, metric, f"dagster run {context.run.run_id}")
            written = store.write_candidate(model, record)
        except (ModelStoreError, SelectionError) as error:
            raise dg.Failure(description=str(error)) from error
        candidate_id = record["candidate_id"]
        context.log.info(f"selected {best['name']} of run {run_id} ({metric} {best['metrics'][metric]})")
        return dg.MaterializeResult(
            metadata={
                "candidate_id": candidate_id,
                "path": store.describe_candidate(model, candidate_id),
                "written_now": written,
                "run_id": run_id,
                "label_version": record["label_version"],
                "checkpoint": best["name"],
                "checkpoint_uri": best["uri"],
                "selection_metric": metric,
                "selected_value": best["metrics"][metric],
                "checkpoints": _checkpoint_rows(checkpoints, selected=best["name"]),
            },
            data_version=dg.DataVersion(candidate_id),
        )

    training_job = dg.define_asset_job(
        TRAINING_JOB,
        selection=dg.AssetSelection.assets(trained_model, selected_checkpoint),
        # Every run of the job (launchpad, backfill, automation) carries data_engine/training=<model>.
        config=dg.PartitionedConfig(
            partitions_def=partitions,
            run_config_for_partition_key_fn=lambda _key: {},
            tags_for_partition_key_fn=training_tags,
        ),
        description="Train one model on its latest (or a named) label version and select the best checkpoint."
        " One training per model at a time.",
    )
    return dg.Definitions(assets=[trained_model, selected_checkpoint], jobs=[training_job])
