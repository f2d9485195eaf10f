"""How selection runs are launched: the daily schedule, and launches that carry only the
`dagster/partition` tag (what GraphQL and DagsterGraphQLClient send)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
import pytest

from data_engine.config import load_fleet_config
from data_engine.definitions import build_definitions
from data_engine_tests.warehouse_fixtures import write_duckdb_fixture

DAY = dt.date(2026, 11, 24)


def _launch_with_partition_tag(partition: str) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def("selection_job")
    with dg.instance_for_test() as instance:
        return job.execute_in_process(tags={"dagster/partition": partition}, instance=instance, raise_on_error=False)


def test_a_launch_with_only_the_partition_tag_runs_the_partition(local_env: Path):
    write_duckdb_fixture(load_fleet_config(), local_env / "warehouse.duckdb", end_date=DAY)
    result = _launch_with_partition_tag(f"{DAY}|municipals")
    assert result.success
    outputs = local_env / "objects" / "assets"
    for asset in ("predictions", "empty_frames", "review_candidates"):
        assert (outputs / asset / "municipals" / f"{DAY}.parquet").is_file()
    [selected] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey("review_candidates")]
    assert selected.materialization.metadata["frames_selected"].value > 0


@pytest.mark.parametrize("partition", ["municipals", f"{DAY}|nobody", "2026-13-45|municipals", f"{DAY}|municipals|x"])
def test_a_launch_with_a_bad_partition_tag_fails_saying_what_a_key_looks_like(local_env: Path, partition: str):
    result = _launch_with_partition_tag(partition)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    message = failures[0].step_failure_data.error.message
    assert f"partition {partition!r} is not one of this asset's partitions" in message
    assert "`2026-11-24|municipals`" in message
    assert not (local_env / "objects" / "assets").exists()
