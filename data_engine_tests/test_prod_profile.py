"""The prod profile end to end on real servers: BigQuery (the emulator) as warehouse, S3 (SeaweedFS) as
object store, and the production dagster.yaml (docker/) on PostgreSQL as the Dagster instance."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow.parquet as pq
import pytest

from data_engine.config import load_fleet_config
from data_engine.definitions import build_definitions
from data_engine_tests.warehouse_fixtures import copy_to_bigquery, write_duckdb_fixture

DAY = dt.date(2026, 11, 24)


@pytest.fixture
def prod_env(fleet_file, tmp_path, bq_emulator, s3_server, monkeypatch):
    config = load_fleet_config(fleet_file)
    duck = write_duckdb_fixture(config, tmp_path / "fixture.duckdb", end_date=DAY)
    copy_to_bigquery(duck, bq_emulator.client(), config)
    s3_server.client().create_bucket(Bucket=config.storage.s3_bucket)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATA_ENGINE_PROFILE", "prod")
    monkeypatch.setenv("DATA_ENGINE_CONFIG", str(fleet_file))
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator.rest_url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", bq_emulator.project)
    return config, duck


def test_selection_job_on_bigquery_s3_and_postgres(prod_env, prod_instance, s3_server, bq_emulator):
    config, duck = prod_env
    result = build_definitions().resolve_job_def("selection_job").execute_in_process(
        partition_key=f"{DAY}|municipals", instance=prod_instance
    )
    assert result.success
    key = f"{config.storage.s3_prefix}/assets/review_candidates/municipals/{DAY}.parquet"
    body = s3_server.client().get_object(Bucket=config.storage.s3_bucket, Key=key)["Body"].read()
    candidates = pq.read_table(io.BytesIO(body))
    assert candidates.num_rows > 0

    # The same selection as the DuckDB engine computes on the same data.
    from data_engine.selection.queries import review_candidates_query

    expected = duck.run(review_candidates_query("municipals", config.models["municipals"], DAY)).table
    selected = [r["frame_uri"] for r in expected.to_pylist() if r["status"] == "selected"]
    assert sorted(candidates["frame_uri"].to_pylist()) == sorted(selected)

    # The ledger in BigQuery records the run; the run itself is in Postgres with its cost metadata.
    ledger = bq_emulator.client().query(
        f"SELECT COUNT(*) AS n, ANY_VALUE(run_id) AS run_id FROM `{config.warehouse.selections_table}`"
    ).result().to_arrow(create_bqstorage_client=False).to_pylist()[0]
    assert ledger == {"n": candidates.num_rows, "run_id": result.run_id}
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["review_candidates"]]
    assert "bytes_estimated" in event.materialization.metadata
    stored = prod_instance.get_run_by_id(result.run_id)
    assert stored is not None and stored.is_success
    assert type(prod_instance.run_storage).__name__ == "PostgresRunStorage"
