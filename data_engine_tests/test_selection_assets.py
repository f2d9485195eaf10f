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
    # Predictions attached for pre-annotation are exactly the frame's valid detections in the warehouse, each
    # once (streaming inserts repeat rows; a re-ingested frame has the same boxes on the next day).
    with warehouse.connect() as connection:
        expected = connection.sql(
            "SELECT frame_uri, COUNT(DISTINCT (class_name, score, x_min, y_min, x_max, y_max)) AS n FROM predictions"
            " WHERE model = 'municipals' AND drop_ok GROUP BY 1".replace(
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
    assert predictions["rows_dropped"] == 8
    for reason in ("null_field", "nan_value", "inverted_box", "box_outside_image", "score_out_of_range", "unknown_class",
                   "bad_image_size", "no_capture_time"):
        assert f"| {reason} | 1 |" in predictions["rows_dropped_by_reason"]
    # The day's detections and empty frames stay in the warehouse: only their summaries are recorded.
    assert not (local_env / "objects" / "assets" / "predictions").exists()
    assert not (local_env / "objects" / "assets" / "empty_frames").exists()
    with warehouse.connect() as connection:
        [(empty,)] = connection.sql(
            "SELECT COUNT(*) FROM frames f WHERE model = 'municipals' AND captured_at::DATE = '2026-11-24'"
            " AND image_height < 100000 AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.frame_uri = f.frame_uri)"
        ).fetchall()
    assert _metadata(result, "empty_frames")["frames"] == empty
    frames_metadata = _metadata(result, "empty_frames")
    assert frames_metadata["duplicate_frame_rows"] == 1
    for reason in ("duplicate_frame_row", "bad_image_size", "no_capture_time"):
        assert f"| {reason} | 1 |" in frames_metadata["frame_rows_dropped_by_reason"]
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.check_name == "has_predictions_for_the_day"


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


def test_a_day_without_data_succeeds_with_zero_counts_and_warns(local_env, warehouse):
    quiet_day = dt.date(2026, 11, 21)  # after ENS starts, before the fixture data
    with dg.instance_for_test() as instance:
        result = _run(f"{quiet_day}|ENS", instance)
    assert result.success
    assert _output(local_env, "review_candidates", "ENS", quiet_day).num_rows == 0
    assert _metadata(result, "review_candidates")["frames_selected"] == 0
    assert _metadata(result, "predictions")["detections"] == 0
    assert _metadata(result, "predictions")["prediction_rows_in_warehouse"] == 0
    assert _metadata(result, "empty_frames")["frames"] == 0
    # An inference outage looks like this day: a warning (not a failure) on the predictions asset.
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed, check.severity) == (
        "has_predictions_for_the_day", False, dg.AssetCheckSeverity.WARN
    )
    assert check.asset_key == dg.AssetKey("predictions")


def test_repeated_warehouse_rows_select_each_frame_once_with_each_box_once(local_env, warehouse):
    """Streaming inserts write rows twice: a frame with two `frames` rows (one under another camera) and
    repeated detections must select the same frames, with the same boxes, as without the repeats."""
    with dg.instance_for_test() as instance:
        first = _run(f"{DAY}|municipals", instance)
        once = _output_after(first, local_env)
    with warehouse.connect() as connection:
        connection.execute("INSERT INTO predictions SELECT * FROM predictions")
        # Each frame row again, as it is, then a later row of each frame under another known camera: the
        # frame's first row in the fixed order (capture time, camera, ...) wins on both engines.
        connection.execute("INSERT INTO frames SELECT * FROM frames")
        connection.execute(
            "INSERT INTO frames SELECT * REPLACE (captured_at + INTERVAL 1 SECOND AS captured_at, 'cam-02' AS camera_id)"
            " FROM frames WHERE camera_id = 'cam-01' AND captured_at < '2026-11-24 23:59:00+00' "
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY frame_uri) = 1"
        )
    with dg.instance_for_test() as instance:
        result = _run(f"{DAY}|municipals", instance)
        twice = _output_after(result, local_env)
    assert result.success
    assert twice.to_pylist() == once.to_pylist()
    assert len(set(twice["frame_uri"].to_pylist())) == twice.num_rows
    metadata = _metadata(result, "empty_frames")
    with warehouse.connect() as connection:
        [(rows, frames)] = connection.sql(
            "SELECT COUNT(*), COUNT(DISTINCT frame_uri) FROM frames WHERE model = 'municipals'"
            " AND captured_at >= '2026-11-24' AND captured_at < '2026-11-25' AND image_height < 100000"
        ).fetchall()
    assert metadata["duplicate_frame_rows"] == rows - frames > frames
    # Every selected box now has twice its copies: one more dropped per distinct box, and each copy already
    # dropped before (the demo's own repeated rows) is dropped twice.
    repeated_before = _metadata(first, "review_candidates")["duplicate_predictions_dropped"]
    assert _metadata(result, "review_candidates")["duplicate_predictions_dropped"] == sum(
        len(row["predictions"]) for row in once.to_pylist()
    ) + 2 * repeated_before


def _output_after(result: dg.ExecuteInProcessResult, home: Path):
    assert result.success
    return _output(home, "review_candidates", "municipals", DAY)


def test_demo_data_written_on_first_use_covers_the_latest_partitions_and_the_coming_week(local_env):
    """No warehouse yet: the first run writes the demo data, and the latest partition the UI offers has
    predictions (no warning), as do the partitions of the following week."""
    defs = build_definitions()
    latest_day = defs.resolve_job_def("selection_job").partitions_def.get_partitions_def_for_dimension(
        "date"
    ).get_last_partition_key()
    with dg.instance_for_test() as instance:
        result = _run(f"{latest_day}|municipals", instance)
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and _metadata(result, "predictions")["detections"] > 0
    with DuckDBWarehouse(local_env / "warehouse.duckdb").connect() as connection:
        days = {day for (day,) in connection.sql("SELECT DISTINCT captured_at::DATE FROM frames").fetchall() if day}
    today = dt.datetime.now(dt.timezone.utc).date()
    assert {today + dt.timedelta(days=offset) for offset in range(-7, 7)} <= days


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
