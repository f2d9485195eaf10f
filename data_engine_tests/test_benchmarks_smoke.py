"""The selection benchmark at a tiny size: its pandas baseline must agree with the product's DuckDB path.

No timing here (benchmarks are run on their own, see data_engine_tests/benchmarks/README.md); this keeps
the baseline a faithful twin of `sql/review_candidates.sql`, so the benchmark compares like with like.
"""

from __future__ import annotations

from data_engine_tests.benchmarks import selection, selection_data


def test_pandas_baseline_selects_like_the_duckdb_path(tmp_path):
    path = tmp_path / "warehouse.duckdb"
    counts = selection_data.generate(path, detections=20_000, frames=4_000)
    assert counts["predictions"] > 15_000 and counts["review_selections"] > 0

    product = selection.keys(selection.run_duckdb(path))
    baseline = selection.keys(selection.run_pandas(path))

    assert selection.compare(product, baseline) == []
    # The comparison is only worth something if every outcome and filter shows up at this size.
    assert set(product["status"]) == {
        "selected", "already_selected", "over_filter_budget", "no_frame_row", "over_camera_budget", "over_day_budget"
    }
    filter_bits = {bit for mask in product["filter_mask"] for bit in range(mask.bit_length()) if mask >> bit & 1}
    assert filter_bits == set(range(len(selection_data.model_config().selection.filters)))
    assert (product["filter_mask"] & (product["filter_mask"] - 1) != 0).any()  # some frame has several reasons


def test_hand_written_query_selects_like_the_selection_job(tmp_path):
    """The selection-job benchmark's baseline query returns what the job's `review_candidates` holds."""
    import dagster as dg

    from data_engine.defs.io_manager import ArrowParquetIOManager
    from data_engine.defs.resources import DuckDBWarehouseResource, LocalObjectStoreResource
    from data_engine.defs.selection import build_selection_defs
    from data_engine_tests.benchmarks import selection_job

    path = tmp_path / "warehouse.duckdb"
    selection_data.generate(path, detections=20_000, frames=4_000)
    objects = tmp_path / "objects"
    result = dg.materialize(
        build_selection_defs(selection_data.fleet_config()).assets,
        partition_key=f"{selection_data.DAY}|{selection_data.MODEL}",
        resources={
            "warehouse": DuckDBWarehouseResource(path=str(path), objects_root=str(objects)),
            "io_manager": ArrowParquetIOManager(store=LocalObjectStoreResource(root=str(objects))),
        },
    )
    assert result.success
    job_output = objects / "assets" / "review_candidates" / selection_data.MODEL / f"{selection_data.DAY}.parquet"
    for sql in selection_job.write_queries(tmp_path):
        selection_job.run_query(path, sql, sql.with_suffix(".parquet"))
        assert selection_job.compare(job_output, sql.with_suffix(".parquet")) == []
    import pyarrow.parquet as pq

    selected = pq.read_table(job_output)
    assert selected.num_rows > 100 and any(selected["predictions"].to_pylist())
