"""The selection step on BigQuery (the emulator, through the official client): what crosses from the
warehouse into Python for a model-day is the selected frames and a few count rows, never the day."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from data_engine.config import load_fleet_config
from data_engine.defs.io_manager import ArrowParquetIOManager
from data_engine.defs.resources import BigQueryWarehouseResource, LocalObjectStoreResource
from data_engine.defs.selection import build_selection_defs
from data_engine.selection.queries import review_candidates_query
from data_engine_tests.warehouse_fixtures import copy_to_bigquery, write_duckdb_fixture

DAY = dt.date(2026, 11, 24)


def test_only_the_candidates_and_counts_leave_bigquery(fleet_file, tmp_path, bq_emulator, monkeypatch):
    config = load_fleet_config(fleet_file)
    duck = write_duckdb_fixture(config, tmp_path / "fixture.duckdb", end_date=DAY)
    copy_to_bigquery(duck, bq_emulator.client(), config)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    warehouse = BigQueryWarehouseResource(
        project=bq_emulator.project,
        predictions_table=config.warehouse.predictions_table,
        frames_table=config.warehouse.frames_table,
        selections_table=config.warehouse.selections_table,
        max_bytes_billed=config.warehouse.max_bytes_billed,
    )
    store = LocalObjectStoreResource(root=str(tmp_path / "objects"))
    result = dg.materialize(
        build_selection_defs(config).assets,
        partition_key=f"{DAY}|municipals",
        resources={"warehouse": warehouse, "io_manager": ArrowParquetIOManager(store=store)},
    )
    assert result.success
    metadata = {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }
    predictions, empty_frames, candidates = (metadata[a] for a in ("predictions", "empty_frames", "review_candidates"))

    with duck.connect() as connection:
        [(detections, frames)] = connection.sql(
            "SELECT COUNT(*), COUNT(DISTINCT frame_uri) FROM predictions WHERE model = 'municipals'"
            " AND captured_at >= '2026-11-24' AND captured_at < '2026-11-25'"
        ).fetchall()
    # The day is hundreds of detections; what came back are count rows and the selected frames.
    assert predictions["detections"] > 200 and predictions["rows_read_from_warehouse"] < 40
    assert empty_frames["rows_read_from_warehouse"] < 15
    flagged = duck.run(review_candidates_query("municipals", config.models["municipals"], DAY)).table.to_pylist()
    selected = [row for row in flagged if row["status"] == "selected"]
    count_rows = {(row["status"], row["filter_mask"]) for row in flagged if row["status"] != "selected"}
    assert candidates["frames_selected"] == len(selected) > 0
    assert candidates["rows_read_from_warehouse"] == len(selected) + len(count_rows) < len(flagged) < frames < detections
    # The cost guard ran for each query (the emulator estimates 0 bytes), and its figures are recorded.
    for asset in (predictions, empty_frames, candidates):
        assert asset["bytes_estimated"] == 0 and "bytes_billed" in asset
