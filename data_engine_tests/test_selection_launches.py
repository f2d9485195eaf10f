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
    # predictions and empty_frames stay in the warehouse (their materializations are summaries).
    assert (local_env / "objects" / "assets" / "review_candidates" / "municipals" / f"{DAY}.parquet").is_file()
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"predictions", "empty_frames", "review_candidates"}
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


def _tick(when: dt.datetime) -> dg.ScheduleExecutionData:
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("daily_selection_schedule")
    context = dg.build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context)


def test_schedule_skips_when_every_model_starts_later_naming_the_keys(local_env, fleet_file):
    import yaml

    fleet = yaml.safe_load(fleet_file.read_text())
    for model in fleet["models"].values():
        model["selection"]["start_date"] = "2027-03-01"
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    tick = _tick(dt.datetime(2026, 11, 25, 4, tzinfo=dt.timezone.utc))
    assert not tick.run_requests
    assert tick.skip_message == (
        "no selection of 2026-11-24 for municipals (models.municipals.selection.start_date is 2027-03-01),"
        " ENS (models.ENS.selection.start_date is 2027-03-01)"
    )


def test_schedule_requests_only_the_models_whose_selection_has_started(local_env):
    # ENS starts on 2026-11-20, municipals on 2026-01-01.
    tick = _tick(dt.datetime(2026, 11, 20, 4, tzinfo=dt.timezone.utc))
    assert [r.partition_key for r in tick.run_requests] == ["2026-11-19|municipals"]
    tick = _tick(dt.datetime(2026, 11, 21, 4, tzinfo=dt.timezone.utc))
    assert sorted(r.partition_key for r in tick.run_requests) == ["2026-11-20|ENS", "2026-11-20|municipals"]


def test_schedule_skips_a_day_that_has_not_ended(local_env):
    tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    tick = _tick(tomorrow)
    assert not tick.run_requests
    assert "municipals (the day has not ended yet, so it is not a partition)" in tick.skip_message
