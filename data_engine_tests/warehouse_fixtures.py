"""One set of fixture data loaded into both warehouses: a DuckDB file and the BigQuery emulator."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

from google.cloud import bigquery

from data_engine.config import FleetConfig
from data_engine.demo import write_demo_warehouse
from data_engine.warehouse.bigquery_engine import BigQueryWarehouse
from data_engine.warehouse.duckdb_engine import DuckDBWarehouse

FRAME_FIELDS = [
    ("frame_uri", "STRING"),
    ("client", "STRING"),
    ("camera_id", "STRING"),
    ("model", "STRING"),
    ("model_version", "STRING"),
    ("captured_at", "TIMESTAMP"),
    ("image_width", "INT64"),
    ("image_height", "INT64"),
]
BOX_FIELDS = [("class_name", "STRING"), ("score", "FLOAT64"), ("x_min", "FLOAT64"), ("y_min", "FLOAT64"),
              ("x_max", "FLOAT64"), ("y_max", "FLOAT64")]


def write_duckdb_fixture(config: FleetConfig, path: Path, end_date: dt.date, days: int = 2) -> DuckDBWarehouse:
    # 36 frames a camera: enough that the test fleet's camera budget still drops frames on the day once the
    # ledger took some of them.
    write_demo_warehouse(config, path, path.parent / "objects", end_date=end_date, days=days,
                         frames_per_camera_per_day=36, write_images=False)
    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_selection_ledger()
    with warehouse.connect() as connection:
        # A frames table that lags behind the predictions: every fifth frame with detections on cam-01
        # has no frames row, so selection must drop it (`no_frame_row`) rather than guess its fields.
        connection.execute(
            "DELETE FROM frames WHERE frame_uri IN (SELECT frame_uri FROM (SELECT DISTINCT frame_uri FROM predictions"
            " WHERE camera_id = 'cam-01') WHERE hash(frame_uri) % 5 = 0)"
        )
    return warehouse


def copy_to_bigquery(duck: DuckDBWarehouse, client: bigquery.Client, config: FleetConfig) -> BigQueryWarehouse:
    """Create the config's tables in the emulator (day-partitioned on captured_at) with the DuckDB rows."""
    tables = {
        "predictions": config.warehouse.predictions_table,
        "frames": config.warehouse.frames_table,
        "review_selections": config.warehouse.selections_table,
    }
    for table_id in tables.values():
        client.create_dataset(table_id.rsplit(".", 1)[0], exists_ok=True)
    for logical, fields in (("predictions", FRAME_FIELDS + BOX_FIELDS), ("frames", FRAME_FIELDS)):
        table = bigquery.Table(tables[logical], schema=[bigquery.SchemaField(n, t) for n, t in fields])
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY, field="captured_at")
        client.delete_table(tables[logical], not_found_ok=True)
        client.create_table(table)
        with duck.connect() as connection:
            rows = connection.sql(f"SELECT * FROM {logical}").to_arrow_table().to_pylist()
        for start in range(0, len(rows), 5000):
            errors = client.insert_rows_json(tables[logical], [_json_row(r) for r in rows[start : start + 5000]])
            assert not errors, errors
    client.delete_table(tables["review_selections"], not_found_ok=True)
    warehouse = BigQueryWarehouse(client, tables, config.warehouse.max_bytes_billed)
    warehouse.ensure_selection_ledger()
    return warehouse


def _json_row(row: dict) -> dict:
    out = {}
    for key, value in row.items():
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, float) and math.isnan(value):
            value = "NaN"
        out[key] = value
    return out
