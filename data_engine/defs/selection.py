"""Stage 1 and 2 of the loop for one model-day: pull predictions and empty frames, select candidates.

The assets are thin: the queries come from `data_engine.selection.queries`, the reshaping from
`data_engine.selection.candidates`; this module adds partitions, metadata, the job and the schedule.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.metadata import counts_table, markdown_table
from data_engine.defs.partitions import daily_model_partitions, model_and_day
from data_engine.defs.resources import WarehouseResource

if TYPE_CHECKING:
    import pyarrow as pa

    from data_engine.warehouse import QueryResult

# Asset signatures carry no pyarrow annotations: Dagster resolves them at load, and pyarrow is imported
# only inside runs to keep the code location cheap to load.

GROUP = "selection"


def _labels(context: dg.AssetExecutionContext, model: str) -> dict[str, str]:
    """BigQuery job labels, so each query's cost is attributed to its model, partition and run."""
    return {
        "model": model,
        "partition": context.partition_key,
        "dagster_run_id": context.run.run_id,
        "asset": context.asset_key.to_user_string(),
    }


def _cost_metadata(result: "QueryResult") -> dict[str, object]:
    if result.bytes_estimated is None:
        return {}
    return {"bytes_estimated": result.bytes_estimated, "bytes_billed": result.bytes_billed or 0}


def build_selection_defs(config: FleetConfig) -> dg.Definitions:
    partitions = daily_model_partitions(config)

    def pull_checked(context: dg.AssetExecutionContext, warehouse: WarehouseResource, statement: str):
        """Run a `checked_*` statement for the partition: its valid rows, and metadata on the dropped ones."""
        from data_engine.selection.candidates import split_checked
        from data_engine.selection.queries import checked_query

        model, day = model_and_day(context)
        result = warehouse.open().run(checked_query(statement, model, config.models[model], day), _labels(context, model))
        valid, dropped = split_checked(result.table)
        metadata = {
            "rows_dropped": sum(dropped.values()),
            "rows_dropped_by_reason": counts_table(dropped, "reason", "rows"),
            **_cost_metadata(result),
        }
        return valid, metadata

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"sql", "parquet"})
    def predictions(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.Output:
        """The model's production detections of the day. Malformed rows (NULL or NaN fields, inverted or
        out-of-image boxes, scores outside [0, 1], classes or cameras unknown to the model) are dropped and
        counted, never crashed on."""
        import pyarrow.compute as pc

        from data_engine.selection.candidates import value_counts

        valid, metadata = pull_checked(context, warehouse, "checked_predictions")
        return dg.Output(
            valid,
            metadata={
                "detections": valid.num_rows,
                "frames": pc.count_distinct(valid["frame_uri"]).as_py(),
                "detections_per_class": counts_table(value_counts(valid, "class_name"), "class", "detections"),
                "detections_per_camera": counts_table(value_counts(valid, "camera_id"), "camera", "detections"),
                **metadata,
            },
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"sql", "parquet"})
    def empty_frames(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.Output:
        """Frames of the day on which the model detected nothing at all; missed objects hide there."""
        from data_engine.selection.candidates import value_counts

        valid, metadata = pull_checked(context, warehouse, "checked_empty_frames")
        return dg.Output(
            valid,
            metadata={
                "frames": valid.num_rows,
                "frames_per_camera": counts_table(value_counts(valid, "camera_id"), "camera", "frames"),
                **metadata,
            },
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"sql", "parquet"}, deps=[empty_frames])
    def review_candidates(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, predictions
    ) -> dg.Output:
        """Frames worth a human review, one row per frame, with the `reasons` (filter names) that selected
        it and its predictions for pre-annotation. Filtering and budgets run in the warehouse; a frame
        selected on an earlier day is never selected again (the review-selection ledger)."""
        from data_engine.selection.candidates import ledger_rows, selected_candidates, selection_counts
        from data_engine.selection.queries import review_candidates_query

        model, day = model_and_day(context)
        model_config = config.models[model]
        store = warehouse.open()
        store.ensure_selection_ledger()
        result = store.run(review_candidates_query(model, model_config, day), _labels(context, model))
        flagged = result.table
        if day < model_config.selection.start_date:
            context.log.info(f"{day} is before {model}'s selection start_date {model_config.selection.start_date}")
            flagged = flagged.slice(0, 0)
        filter_names = [selection_filter.reason for selection_filter in model_config.selection.filters]
        candidates = selected_candidates(flagged, predictions, filter_names)
        now = dt.datetime.now(dt.timezone.utc)
        store.append("review_selections", ledger_rows(model, day, candidates, context.run.run_id, now))
        counts = selection_counts(flagged, candidates, filter_names)
        preview = [
            {
                "priority": row["priority"],
                "frame_uri": row["frame_uri"],
                "camera": row["camera_id"],
                "reasons": ", ".join(row["reasons"]),
                "predictions": len(row["predictions"]),
            }
            for row in candidates.slice(0, 20).to_pylist()
        ]
        return dg.Output(
            candidates,
            metadata={
                "frames_selected": candidates.num_rows,
                "frames_flagged": flagged.num_rows,
                "frames_dropped": sum(counts["dropped_frames"].values()),
                "frames_dropped_by_reason": counts_table(counts["dropped_frames"], "reason", "frames"),
                "flagged_per_filter": counts_table(counts["flagged_per_filter"], "filter", "frames"),
                "selected_per_filter": counts_table(counts["selected_per_filter"], "filter", "frames"),
                "selected_per_camera": counts_table(counts["selected_per_camera"], "camera", "frames"),
                "predictions_per_class": counts_table(counts["predictions_per_class"], "class", "predictions"),
                "preview": markdown_table(preview),
                **_cost_metadata(result),
            },
        )

    selection_job = dg.define_asset_job(
        "selection_job",
        selection=dg.AssetSelection.assets(predictions, empty_frames, review_candidates),
        description="Pull one model-day of predictions and empty frames, and select the frames to review.",
    )

    @dg.schedule(
        job=selection_job,
        cron_schedule="0 4 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )
    def daily_selection_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        """Every day, select yesterday's frames for every model of the fleet whose selection has started.
        A model whose day is before its start_date (or not a partition yet) is skipped, naming the key."""
        day = (context.scheduled_execution_time - dt.timedelta(days=1)).date()
        requests, skipped = [], []
        for model, model_config in config.models.items():
            key = dg.MultiPartitionKey({"date": day.isoformat(), "model": model})
            if day < model_config.selection.start_date:
                skipped.append(f"{model} (models.{model}.selection.start_date is {model_config.selection.start_date})")
            elif not partitions.has_partition_key(key):
                skipped.append(f"{model} (the day has not ended yet, so it is not a partition)")
            else:
                requests.append(dg.RunRequest(run_key=str(key), partition_key=key))
        if skipped:
            reason = f"no selection of {day} for " + ", ".join(skipped)
            if not requests:
                return dg.SkipReason(reason)
            context.log.info(reason)
        return requests

    return dg.Definitions(
        assets=[predictions, empty_frames, review_candidates],
        jobs=[selection_job],
        schedules=[daily_selection_schedule],
    )
