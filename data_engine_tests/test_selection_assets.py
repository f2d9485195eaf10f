"""The selection assets through Dagster's own APIs on the local profile (DuckDB + local object store)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from data_engine.config import load_fleet_config
from data_engine.definitions import build_definitions
from data_engine.warehouse.duckdb_engine import DuckDBWarehouse
from data_engine_tests.warehouse_fixtures import write_duckdb_fixture

DAY = dt.date(2026, 11, 24)


@pytest.fixture
def warehouse(local_env: Path) -> DuckDBWarehouse:
    return write_duckdb_fixture(load_fleet_config(), local_env / "warehouse.duckdb", end_date=DAY)


def _run(partition: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions().resolve_job_def("selection_job")
    return job.execute_in_process(partition_key=partition, instance=instance)


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def _output(home: Path, asset: str, model: str, day: dt.date):
    return pq.read_table(io.BytesIO((home / "objects" / "assets" / asset / model / f"{day}.parquet").read_bytes()))


def test_selection_job_selects_within_budgets_with_reasons_and_predictions(local_env, warehouse):
    with dg.instance_for_test() as instance:
        result = _run(f"{DAY}|municipals", instance)
    assert result.success
    candidates = _output(local_env, "review_candidates", "municipals", DAY)
    metadata = _metadata(result, "review_candidates")
    config = load_fleet_config().models["municipals"]

    assert 0 < candidates.num_rows <= config.selection.max_frames_per_day
    assert metadata["frames_selected"] == candidates.num_rows
    cameras = candidates["camera_id"].to_pylist()
    assert max(cameras.count(c) for c in set(cameras)) <= config.selection.max_frames_per_camera_per_day
    assert candidates["priority"].to_pylist() == list(range(1, candidates.num_rows + 1))
    filter_names = {f.reason for f in config.selection.filters}
    assert all(reasons and set(reasons) <= filter_names for reasons in candidates["reasons"].to_pylist())
    # Predictions attached for pre-annotation are exactly the frame's valid detections in the warehouse.
    with warehouse.connect() as connection:
        expected = connection.sql(
            "SELECT frame_uri, COUNT(*) AS n FROM predictions WHERE model = 'municipals' AND drop_ok GROUP BY 1".replace(
                "drop_ok", "x_max IS NOT NULL AND NOT isnan(score) AND x_min < x_max AND x_max <= image_width"
                " AND score <= 1 AND class_name <> 'Banana Peel'"
            )
        ).fetchall()
    detections = dict(expected)
    for row in candidates.to_pylist():
        assert len(row["predictions"]) == detections.get(row["frame_uri"], 0)
        if "empty_frames" in row["reasons"]:
            assert row["predictions"] == []
    # The drops a person checks are in the metadata, and they add up.
    assert metadata["frames_flagged"] == metadata["frames_selected"] + metadata["frames_dropped"]
    assert "| over_camera_budget |" in metadata["frames_dropped_by_reason"]
    assert "| confidence_band |" in metadata["selected_per_filter"]
    # Every filter flags frames on the demo day; the counts come from each frame's filter bits.
    assert all(f"| {name} |" in metadata["flagged_per_filter"] for name in filter_names)
    assert "frame_uri" in metadata["preview"]

    predictions = _metadata(result, "predictions")
    assert predictions["rows_dropped"] == 6
    for reason in ("null_field", "nan_value", "inverted_box", "box_outside_image", "score_out_of_range", "unknown_class"):
        assert f"| {reason} | 1 |" in predictions["rows_dropped_by_reason"]
    assert _metadata(result, "empty_frames")["frames"] == _output(local_env, "empty_frames", "municipals", DAY).num_rows


def test_a_frame_selected_on_an_earlier_day_is_never_selected_again(local_env, warehouse):
    earlier = DAY - dt.timedelta(days=1)
    with dg.instance_for_test() as instance:
        assert _run(f"{earlier}|municipals", instance).success
        taken = _output(local_env, "review_candidates", "municipals", earlier)["frame_uri"].to_pylist()
        # The same frames show up again on DAY (re-ingested by the inference service).
        with warehouse.connect() as connection:
            connection.execute(
                "INSERT INTO predictions SELECT * REPLACE (captured_at + INTERVAL 1 DAY AS captured_at, LEAST(score, 0.45) AS score)"
                " FROM predictions WHERE frame_uri IN (SELECT UNNEST($uris))",
                {"uris": taken},
            )
        first = _run(f"{DAY}|municipals", instance)
        again = _run(f"{DAY}|municipals", instance)
    selected = _output(local_env, "review_candidates", "municipals", DAY)["frame_uri"].to_pylist()
    assert not set(selected) & set(taken)
    assert "| already_selected |" in _metadata(first, "review_candidates")["frames_dropped_by_reason"]
    assert _metadata(again, "review_candidates")["frames_selected"] == _metadata(first, "review_candidates")["frames_selected"]
    with warehouse.connect() as connection:
        runs = connection.sql(
            "SELECT selected_date, COUNT(DISTINCT run_id) FROM review_selections GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert runs == [(earlier, 1), (DAY, 2)]


def test_a_day_without_data_materializes_empty_tables_with_zero_counts(local_env, warehouse):
    quiet_day = dt.date(2026, 11, 21)  # after ENS starts, before the fixture data
    with dg.instance_for_test() as instance:
        result = _run(f"{quiet_day}|ENS", instance)
    assert result.success
    assert _output(local_env, "review_candidates", "ENS", quiet_day).num_rows == 0
    assert _metadata(result, "review_candidates")["frames_selected"] == 0
    assert _metadata(result, "predictions")["detections"] == 0
    assert _metadata(result, "empty_frames")["frames"] == 0


def test_schedule_requests_yesterday_for_every_model(local_env):
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("daily_selection_schedule")
    context = dg.build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 25, 4, tzinfo=dt.timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert sorted(r.partition_key for r in requests) == ["2026-11-24|ENS", "2026-11-24|municipals"]
    assert schedule.job_name == "selection_job"


def test_partitions_follow_the_config(local_env, fleet_file):
    import yaml

    fleet = yaml.safe_load(fleet_file.read_text())
    fleet["models"]["Glassworks"] = fleet["models"]["ENS"]
    fleet_file.write_text(yaml.safe_dump(fleet))
    partitions = build_definitions().resolve_assets_def("review_candidates").partitions_def
    models = partitions.get_partitions_def_for_dimension("model").get_partition_keys()
    assert sorted(models) == ["ENS", "Glassworks", "municipals"]
