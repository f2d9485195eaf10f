"""Stage 1 and 2 of the loop for one model-day: summarize predictions and empty frames, select candidates.

The assets are thin: the queries come from `data_engine.selection.queries`, the reshaping from
`data_engine.selection.candidates`; this module adds partitions, metadata, the job and the schedule.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.metadata import counts_table, markdown_table, query_cost
from data_engine.defs.partitions import daily_model_partitions, model_and_day
from data_engine.defs.resources import WarehouseResource

if TYPE_CHECKING:
    import pyarrow as pa

    from data_engine.warehouse import Warehouse

# Asset signatures carry no pyarrow annotations: Dagster resolves them at load, and pyarrow is imported
# only inside runs to keep the code location cheap to load.

GROUP = "selection"
# Each asset of the step and the `sql/` statement that computes what it records or returns.
STATEMENTS = {
    "predictions": "prediction_summary",
    "empty_frames": "empty_frame_summary",
    "review_candidates": "selected_candidates",
}


def _labels(context: dg.AssetExecutionContext, model: str, asset: str) -> dict[str, str]:
    """BigQuery job labels, so each query's cost is attributed to its model, partition, run and asset."""
    return {"model": model, "partition": context.partition_key, "dagster_run_id": context.run.run_id, "asset": asset}


def build_selection_defs(config: FleetConfig) -> dg.Definitions:
    partitions = daily_model_partitions(config)

    predictions_key, empty_frames_key = dg.AssetKey("predictions"), dg.AssetKey("empty_frames")

    @dg.multi_asset(
        name="selection",
        partitions_def=partitions,
        group_name=GROUP,
        can_subset=True,
        outs={
            "predictions": dg.AssetOut(
                dagster_type=dg.Nothing,
                is_required=False,
                kinds={"sql"},
                description="The model's production detections of the day, kept in the warehouse; the"
                " materialization records their counts per class and camera. Malformed rows (NULL or NaN"
                " fields, inverted or out-of-image boxes, scores outside [0, 1], image sizes outside 1 to"
                " 100000 px, classes or cameras unknown to the model) are dropped and counted by reason.",
            ),
            "empty_frames": dg.AssetOut(
                dagster_type=dg.Nothing,
                is_required=False,
                kinds={"sql"},
                description="Frames of the day on which the model detected nothing at all (missed objects"
                " hide there), kept in the warehouse; the materialization records their counts, and those"
                " of the day's frame rows (duplicates and unusable rows by reason).",
            ),
            "review_candidates": dg.AssetOut(
                is_required=False,
                kinds={"sql", "parquet"},
                description="Frames worth a human review, one row per frame, with the `reasons` (filter"
                " names) that selected it and its predictions for pre-annotation. Filtering, budgets and"
                " the predictions of the selected frames come from the warehouse in one query; a frame"
                " selected on an earlier day is never selected again (the review-selection ledger).",
            ),
        },
        internal_asset_deps={
            "predictions": set(),
            "empty_frames": set(),
            "review_candidates": {predictions_key, empty_frames_key},
        },
        check_specs=[
            dg.AssetCheckSpec(
                "has_predictions_for_the_day",
                asset=predictions_key,
                description="The warehouse holds prediction rows of the model for the day. None at all is"
                " how an inference outage looks: the day then selects nothing (a warning, not a failure).",
            )
        ],
    )
    def selection(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """One step for the three assets: their data stays in the warehouse, and one process (one
        import of the code location) runs one warehouse statement for the assets selected."""
        from data_engine.selection.candidates import statement_rows
        from data_engine.selection.queries import selection_query

        model, day = model_and_day(context)
        store = warehouse.open()
        assets = [asset for asset in STATEMENTS if asset in context.op_execution_context.selected_output_names]
        if "review_candidates" in assets:
            store.ensure_selection_ledger()  # the selection reads it
        query = selection_query(model, config.models[model], day, [STATEMENTS[asset] for asset in assets])
        result = store.run(query, _labels(context, model, "-".join(assets)))
        # Bytes are the whole statement's, shared by the assets it computed (not to be summed over them).
        cost = query_cost(result) | {"warehouse_query_for": ", ".join(assets)}
        rows = {asset: statement_rows(result.table, STATEMENTS[asset]) for asset in assets}
        if "predictions" in assets:
            yield from _predictions(context, rows["predictions"], cost, model, day)
        if "empty_frames" in assets:
            yield _empty_frames(rows["empty_frames"], cost)
        if "review_candidates" in assets:
            yield _review_candidates(context, store, rows["review_candidates"], cost, model, day)

    def _predictions(context: dg.AssetExecutionContext, rows: "pa.Table", cost: dict, model: str, day: dt.date):
        from data_engine.selection.candidates import prediction_summary

        summary = prediction_summary(rows)
        if summary.rows_of_the_day == 0:
            context.log.warning(
                f"no prediction rows of {model} on {day} in the warehouse: an inference outage, or a day"
                " before the data starts (locally: `data-engine demo-data --end-date ...` writes other days)"
            )
        yield dg.Output(
            None,
            output_name="predictions",
            metadata={
                "detections": summary.detections,
                "frames": summary.frames,
                "prediction_rows_in_warehouse": summary.rows_of_the_day,
                "detections_per_class": counts_table(summary.per_class, "class", "detections"),
                "detections_per_camera": counts_table(summary.per_camera, "camera", "detections"),
                "rows_dropped": sum(summary.dropped.values()),
                "rows_dropped_by_reason": counts_table(summary.dropped, "reason", "rows"),
                "rows_read_from_warehouse": rows.num_rows,
                **cost,
            },
        )
        if dg.AssetCheckKey(predictions_key, "has_predictions_for_the_day") in context.selected_asset_check_keys:
            yield dg.AssetCheckResult(
                asset_key=predictions_key,
                check_name="has_predictions_for_the_day",
                passed=summary.rows_of_the_day > 0,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"prediction_rows_in_warehouse": summary.rows_of_the_day},
                description=None if summary.rows_of_the_day else f"no prediction rows of {model} on {day}",
            )

    def _empty_frames(rows: "pa.Table", cost: dict) -> dg.Output:
        from data_engine.selection.candidates import frame_summary

        summary = frame_summary(rows)
        return dg.Output(
            None,
            output_name="empty_frames",
            metadata={
                "frames": summary.empty_frames,
                "frames_per_camera": counts_table(summary.empty_per_camera, "camera", "frames"),
                "rows_dropped": sum(summary.empty_dropped.values()),
                "rows_dropped_by_reason": counts_table(summary.empty_dropped, "reason", "rows"),
                "frame_rows_in_warehouse": summary.frame_rows,
                "duplicate_frame_rows": summary.frame_rows_dropped.get("duplicate_frame_row", 0),
                "frame_rows_dropped_by_reason": counts_table(summary.frame_rows_dropped, "reason", "rows"),
                "rows_read_from_warehouse": rows.num_rows,
                **cost,
            },
        )

    def _review_candidates(
        context: dg.AssetExecutionContext, store: "Warehouse", rows: "pa.Table", cost: dict, model: str, day: dt.date
    ) -> dg.Output:
        from data_engine.selection.candidates import ledger_rows, selected_candidates, selection_counts

        model_config = config.models[model]
        rows_read = rows.num_rows
        if day < model_config.selection.start_date:
            context.log.info(f"{day} is before {model}'s selection start_date {model_config.selection.start_date}")
            rows = rows.slice(0, 0)
        filter_names = [selection_filter.reason for selection_filter in model_config.selection.filters]
        candidates = selected_candidates(rows, filter_names)
        now = dt.datetime.now(dt.timezone.utc)
        store.append("review_selections", ledger_rows(model, day, candidates, context.run.run_id, now))
        counts = selection_counts(rows, candidates, filter_names)
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
            output_name="review_candidates",
            metadata={
                "frames_selected": candidates.num_rows,
                "frames_flagged": candidates.num_rows + sum(counts["dropped_frames"].values()),
                "frames_dropped": sum(counts["dropped_frames"].values()),
                "frames_dropped_by_reason": counts_table(counts["dropped_frames"], "reason", "frames"),
                "flagged_per_filter": counts_table(counts["flagged_per_filter"], "filter", "frames"),
                "selected_per_filter": counts_table(counts["selected_per_filter"], "filter", "frames"),
                "selected_per_camera": counts_table(counts["selected_per_camera"], "camera", "frames"),
                "predictions_per_class": counts_table(counts["predictions_per_class"], "class", "predictions"),
                "duplicate_predictions_dropped": sum(rows["duplicate_predictions"].to_pylist()),
                "preview": markdown_table(preview),
                "rows_read_from_warehouse": rows_read,
                **cost,
            },
        )

    selection_job = dg.define_asset_job(
        "selection_job",
        selection=dg.AssetSelection.assets(selection),
        description="Summarize one model-day of predictions and empty frames in the warehouse, and select the"
        " frames to review.",
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
        assets=[selection],
        jobs=[selection_job],
        schedules=[daily_selection_schedule],
    )
