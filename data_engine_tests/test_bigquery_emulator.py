"""The BigQuery emulator (bqemulator, in its own tool venv) starts, and the official
google-cloud-bigquery client in the main venv works against it the way our selection code uses it.

Install the emulator first:  uv sync --frozen --project data_engine_tests/servers/bqemulator
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math

import pyarrow as pa
import pytest
from google.api_core import exceptions
from google.cloud import bigquery


UTC = dt.timezone.utc
DATASET = "emu_test"

ROWS = [
    # id, camera, score, captured_at, label
    {"id": 1, "camera": "cam_a", "score": 0.9, "captured_at": "2024-03-10T12:00:00Z", "label": "car"},
    {"id": 2, "camera": "cam_b", "score": 0.4, "captured_at": "2024-03-10T23:59:59Z", "label": "car"},
    {"id": 3, "camera": "cam_c", "score": 0.95, "captured_at": "2024-03-10T08:00:00Z", "label": "person"},
    {"id": 4, "camera": "cam_a", "score": 0.8, "captured_at": "2024-03-11T00:00:00Z", "label": "person"},
    {"id": 5, "camera": "cam_b", "score": None, "captured_at": "2024-03-10T09:30:00Z", "label": "bike"},
]


@pytest.fixture(scope="module")
def client(bq_emulator) -> bigquery.Client:
    return bq_emulator.client()


@pytest.fixture(scope="module")
def frames_table(client, bq_emulator) -> str:
    """A DAY-partitioned (on a TIMESTAMP column) table filled with ROWS via insert_rows_json."""
    dataset = client.create_dataset(DATASET)
    assert dataset.dataset_id == DATASET
    table_id = f"{bq_emulator.project}.{DATASET}.frames"
    table = bigquery.Table(
        table_id,
        schema=[
            bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
            bigquery.SchemaField("camera", "STRING"),
            bigquery.SchemaField("score", "FLOAT64"),
            bigquery.SchemaField("captured_at", "TIMESTAMP"),
            bigquery.SchemaField("label", "STRING"),
        ],
    )
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="captured_at"
    )
    client.create_table(table)
    assert client.insert_rows_json(table_id, ROWS) == []
    return table_id


def test_emulator_endpoint(bq_emulator):
    host, port = bq_emulator.host_port.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert bq_emulator.rest_url == f"http://{bq_emulator.host_port}"
    assert bq_emulator.process.poll() is None
    assert bq_emulator.log_path.exists()


def test_dataset_and_partitioned_table_round_trip(client, frames_table):
    assert DATASET in [d.dataset_id for d in client.list_datasets()]
    table = client.get_table(frames_table)
    # BigQuery answers with the legacy names (INTEGER, FLOAT); bqemulator echoes what was sent.
    legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT"}
    assert [(f.name, legacy.get(f.field_type, f.field_type), f.mode) for f in table.schema] == [
        ("id", "INTEGER", "REQUIRED"),
        ("camera", "STRING", "NULLABLE"),
        ("score", "FLOAT", "NULLABLE"),
        ("captured_at", "TIMESTAMP", "NULLABLE"),
        ("label", "STRING", "NULLABLE"),
    ]
    assert table.time_partitioning is not None
    assert table.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
    assert table.time_partitioning.field == "captured_at"
    assert table.num_rows == len(ROWS)


def test_query_with_scalar_and_array_parameters_to_arrow(client, frames_table):
    sql = f"""
        SELECT id, camera, score, captured_at, DATE(captured_at) AS day
        FROM `{frames_table}`
        WHERE captured_at >= @start AND captured_at < @end
          AND DATE(captured_at) = @day
          AND score >= @min_score
          AND camera IN UNNEST(@cameras)
          AND label != @excluded_label
        ORDER BY id
    """
    job_config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", dt.datetime(2024, 3, 10, tzinfo=UTC)),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", dt.datetime(2024, 3, 11, tzinfo=UTC)),
            bigquery.ScalarQueryParameter("day", "DATE", dt.date(2024, 3, 10)),
            bigquery.ScalarQueryParameter("min_score", "FLOAT64", 0.5),
            bigquery.ScalarQueryParameter("excluded_label", "STRING", "bike"),
            bigquery.ArrayQueryParameter("cameras", "STRING", ["cam_a", "cam_b"]),
        ]
    )
    table = client.query_and_wait(sql, job_config=job_config).to_arrow(create_bqstorage_client=False)

    # id 2 fails min_score, 3 is cam_c, 4 is on the next day (end is exclusive), 5 has NULL score.
    assert table.column("id").to_pylist() == [1]
    assert table.column("camera").to_pylist() == ["cam_a"]
    assert table.column("score").to_pylist() == [0.9]
    assert table.column("captured_at").to_pylist() == [dt.datetime(2024, 3, 10, 12, tzinfo=UTC)]
    assert table.column("day").to_pylist() == [dt.date(2024, 3, 10)]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("captured_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("day").type == pa.date32()


def test_empty_array_parameter(client, frames_table):
    job_config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("cameras", "STRING", [])]
    )
    rows = list(
        client.query_and_wait(
            f"""SELECT ARRAY_LENGTH(@cameras) AS n,
                       COUNTIF(camera IN UNNEST(@cameras)) AS hits,
                       COUNTIF(camera NOT IN UNNEST(@cameras)) AS misses
                FROM `{frames_table}`""",
            job_config=job_config,
        )
    )
    assert [tuple(r.values()) for r in rows] == [(0, 0, len(ROWS))]


def test_job_labels_accepted(client, frames_table):
    labels = {"asset": "selection", "dagster_run_id": "run-123"}
    job = client.query(
        f"SELECT COUNT(*) AS n FROM `{frames_table}`",
        job_config=bigquery.QueryJobConfig(labels=labels),
    )
    assert [r["n"] for r in job.result()] == [len(ROWS)]
    assert job.labels == labels
    # query_and_wait takes the same job_config.
    rows = client.query_and_wait("SELECT 1 AS one", job_config=bigquery.QueryJobConfig(labels=labels))
    assert [r["one"] for r in rows] == [1]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "SELECT TO_HEX(MD5('frame-1'))",
            hashlib.md5(b"frame-1").hexdigest(),
            id="to_hex_md5",
        ),
        pytest.param(
            "SELECT STRING_AGG(camera, ',' ORDER BY score DESC, id) FROM `{t}` WHERE score IS NOT NULL",
            "cam_c,cam_a,cam_a,cam_b",
            id="string_agg_order_by",
        ),
        pytest.param(
            "SELECT ARRAY_AGG(id ORDER BY id) FROM (SELECT id FROM `{t}` WHERE TRUE "
            "QUALIFY ROW_NUMBER() OVER (PARTITION BY camera ORDER BY score DESC, id) = 1)",
            [1, 2, 3],
            id="qualify_row_number",
        ),
        pytest.param("SELECT IS_NAN(IEEE_DIVIDE(0, 0))", True, id="ieee_divide_nan"),
        pytest.param("SELECT GREATEST(1, NULL)", None, id="greatest_null"),
        pytest.param("SELECT SAFE_CAST('abc' AS INT64)", None, id="safe_cast"),
        pytest.param(
            "SELECT TIMESTAMP_ADD(TIMESTAMP '2024-03-10 12:00:00+00', INTERVAL 1 DAY)",
            dt.datetime(2024, 3, 11, 12, tzinfo=UTC),
            id="timestamp_add",
        ),
    ],
)
def test_bigquery_semantics(client, frames_table, sql, expected):
    rows = list(client.query_and_wait(sql.format(t=frames_table)))
    assert len(rows) == 1
    assert rows[0][0] == expected


def test_nan_and_null_floats_round_trip(client, bq_emulator, frames_table):
    table_id = f"{bq_emulator.project}.{DATASET}.floats"
    schema = [bigquery.SchemaField("id", "INT64"), bigquery.SchemaField("x", "FLOAT64")]
    client.create_table(bigquery.Table(table_id, schema=schema))
    # BigQuery's insertAll accepts the strings "NaN" / "Infinity" for FLOAT64.
    rows_in = [{"id": 1, "x": "NaN"}, {"id": 2, "x": None}, {"id": 3, "x": 1.5}]
    assert client.insert_rows_json(table_id, rows_in) == []
    sql = f"SELECT id, x, IS_NAN(x) FROM `{table_id}` ORDER BY id"
    rows = [tuple(r.values()) for r in client.query_and_wait(sql)]
    assert rows[0][0] == 1 and math.isnan(rows[0][1]) and rows[0][2] is True
    assert rows[1] == (2, None, None)
    assert rows[2] == (3, 1.5, False)


def test_dml_with_parameters(client, bq_emulator, frames_table):
    table_id = f"{bq_emulator.project}.{DATASET}.selected"
    ddl = f"CREATE TABLE IF NOT EXISTS `{table_id}` (id INT64, camera STRING, captured_at TIMESTAMP)"
    client.query_and_wait(ddl)
    client.query_and_wait(ddl)  # idempotent
    job = client.query(
        f"INSERT INTO `{table_id}` (id, camera, captured_at) "
        f"SELECT id, camera, captured_at FROM `{frames_table}` WHERE camera = @camera",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("camera", "STRING", "cam_a")]
        ),
    )
    job.result()
    assert job.num_dml_affected_rows == 2
    client.query_and_wait(
        f"INSERT INTO `{table_id}` (id, camera, captured_at) VALUES (@id, @camera, @ts)",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("id", "INT64", 100),
                bigquery.ScalarQueryParameter("camera", "STRING", "cam_z"),
                bigquery.ScalarQueryParameter("ts", "TIMESTAMP", dt.datetime(2024, 1, 1, tzinfo=UTC)),
            ]
        ),
    )
    sql = f"SELECT id, camera FROM `{table_id}` ORDER BY id"
    rows = [tuple(r.values()) for r in client.query_and_wait(sql)]
    assert rows == [(1, "cam_a"), (4, "cam_a"), (100, "cam_z")]


def test_failed_query_raises(client, bq_emulator, frames_table):
    """bqemulator answers a failed jobs.query with HTTP 200 + `errors`; our client raises like BigQuery."""
    with pytest.raises(exceptions.BadRequest, match="division by zero"):
        client.query_and_wait("SELECT 1 / 0")
    with pytest.raises(exceptions.NotFound):
        client.query_and_wait(f"SELECT * FROM `{bq_emulator.project}.{DATASET}.no_such_table`")
    # The same failures through jobs.insert (client.query) raise without the workaround.
    with pytest.raises(exceptions.BadRequest):
        client.query("SELECT 1 / 0").result()
    # Documents the emulator quirk the workaround exists for: if this starts failing, bqemulator
    # fixed it and EmulatorBigQueryClient can go.
    plain = bq_emulator.client(raise_on_query_errors=False)
    assert list(plain.query_and_wait("SELECT 1 / 0")) == []


def test_dry_run_validates_but_reports_zero_bytes(client, bq_emulator, frames_table):
    job = client.query(
        f"SELECT * FROM `{frames_table}`",
        job_config=bigquery.QueryJobConfig(dry_run=True, use_query_cache=False),
    )
    assert [f.name for f in job.schema] == ["id", "camera", "score", "captured_at", "label"]
    # Known gap: real BigQuery reports the scanned bytes; bqemulator always says 0, so byte
    # budgets / partition pruning can't be asserted against the emulator.
    assert job.total_bytes_processed == 0
    with pytest.raises(exceptions.NotFound):
        client.query(
            f"SELECT * FROM `{bq_emulator.project}.{DATASET}.no_such_table`",
            job_config=bigquery.QueryJobConfig(dry_run=True),
        )
