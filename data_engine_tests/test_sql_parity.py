"""Every `sql/` statement returns the same rows on BigQuery (the emulator, through the official client)
and on DuckDB (the same file transpiled by sqlglot), on the same fixture data."""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data_engine.config import load_fleet_config
from data_engine.selection import queries
from data_engine.selection.candidates import ledger_rows, reasons_of, selected_candidates
from data_engine.warehouse import sql
from data_engine.warehouse.sql import Query
from data_engine_tests.warehouse_fixtures import copy_to_bigquery, write_duckdb_fixture

DAY = dt.date(2026, 11, 24)


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory, bq_emulator):
    from data_engine_tests.conftest import TEST_FLEET
    import yaml

    path = tmp_path_factory.mktemp("parity") / "fleet.yaml"
    path.write_text(yaml.safe_dump(TEST_FLEET))
    config = load_fleet_config(path)
    duck = write_duckdb_fixture(config, path.parent / "warehouse.duckdb", end_date=DAY)
    bq = copy_to_bigquery(duck, bq_emulator.client(), config)
    # Frames of DAY that an earlier selection run already took, written to both ledgers: the selection
    # query must exclude them and count them as already selected.
    model = config.models["municipals"]
    selection = duck.run(queries.review_candidates_query("municipals", model, DAY, "selected_candidates")).table
    filter_names = [f.reason for f in model.selection.filters]
    earlier = selected_candidates(selection, filter_names).slice(0, 6)
    for warehouse in (duck, bq):
        for run, moment in (("old-run", dt.datetime(2026, 11, 23, 5, tzinfo=dt.timezone.utc)),
                            ("new-run", dt.datetime(2026, 11, 23, 6, tzinfo=dt.timezone.utc))):
            rows = earlier.slice(0, 3) if run == "old-run" else earlier
            warehouse.append("review_selections", ledger_rows("municipals", DAY - dt.timedelta(days=1), rows, run, moment))
    return config, duck, bq


def split_checked(checked: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Rows without a drop_reason (the column removed), and how many rows each reason dropped."""
    is_valid = pc.is_null(checked["drop_reason"])
    dropped = Counter(checked.filter(pc.invert(is_valid))["drop_reason"].to_pylist())
    return checked.filter(is_valid).drop_columns(["drop_reason"]), dict(sorted(dropped.items()))


def _normalized(table: pa.Table) -> list[tuple]:
    def value(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else round(v, 6)
        if isinstance(v, dt.datetime):
            return v.astimezone(dt.timezone.utc).isoformat()
        return v

    # BigQuery returns a NULL array as an empty one; DuckDB keeps NULL (callers read both as empty).
    lists = {field.name for field in table.schema if pa.types.is_list(field.type)}
    return sorted(
        (tuple([] if v is None and k in lists else value(v) for k, v in row.items()) for row in table.to_pylist()),
        key=repr,
    )


def _statements(config):
    for model_name, model in config.models.items():
        for statement in ("checked_predictions", "checked_frames", "detected_frames", "prediction_summary",
                          "empty_frame_summary"):
            yield f"{statement}/{model_name}", queries.checked_query(statement, model_name, model, DAY)
        for statement in ("review_candidates", "selected_candidates"):
            yield f"{statement}/{model_name}", queries.review_candidates_query(model_name, model, DAY, statement)
    # The selection step's one statement: the three above combined, their shared CTEs computed once (one
    # model: each part is compared for every model above, and the emulator runs it slowly).
    yield "selection/municipals", queries.selection_query(
        "municipals", config.models["municipals"], DAY, ["prediction_summary", "empty_frame_summary", "selected_candidates"]
    )


def test_every_sql_file_is_covered():
    """A new file in sql/ must be added to the parity check below."""
    files = {p.relative_to(sql.sql_dir()).with_suffix("").as_posix() for p in sql.sql_dir().rglob("*.sql")}
    covered = {"checked_predictions", "checked_frames", "review_candidates",
               "review_selections_table", "filters/size_class", "filters/class_overlap",
               "filters/class_overlap_any_classes", "frames_with_overlapping_boxes", "filters/confidence_band",
               "filters/empty_frames", "prediction_summary", "empty_frame_summary", "selected_candidates", "detected_frames",
               "task_models", "latest_frame_predictions"}
    assert files == covered


def test_bigquery_and_duckdb_return_the_same_rows(warehouses):
    config, duck, bq = warehouses
    checked = 0
    for name, query in _statements(config):
        on_duckdb = duck.run(query).table
        on_bigquery = bq.run(query, labels={"test": name}).table
        assert on_duckdb.num_rows > 0, name
        assert on_duckdb.column_names == on_bigquery.column_names, name
        assert _normalized(on_duckdb) == _normalized(on_bigquery), name
        checked += 1
    assert checked == 15


def test_fixture_exercises_every_filter_and_drop(warehouses):
    """The parity check is only as good as its data: every filter, status and drop reason occurs."""
    config, duck, _ = warehouses
    model = config.models["municipals"]
    flagged = duck.run(queries.review_candidates_query("municipals", model, DAY)).table
    statuses = set(flagged["status"].to_pylist())
    assert statuses == {"selected", "already_selected", "over_filter_budget", "no_frame_row", "over_camera_budget",
                        "over_day_budget"}
    filter_names = [f.reason for f in model.selection.filters]
    reasons = {r for mask in flagged["filter_mask"].to_pylist() for r in reasons_of(mask, filter_names)}
    assert reasons == set(filter_names)
    _, dropped = split_checked(duck.run(queries.checked_query("checked_predictions", "municipals", model, DAY)).table)
    assert set(dropped) == {"null_field", "nan_value", "inverted_box", "box_outside_image", "score_out_of_range",
                            "unknown_class", "bad_image_size", "no_capture_time"}
    _, frame_rows_dropped = split_checked(duck.run(queries.checked_query("checked_frames", "municipals", model, DAY)).table)
    assert set(frame_rows_dropped) == {"duplicate_frame_row", "bad_image_size", "no_capture_time"}
    selection = duck.run(queries.review_candidates_query("municipals", model, DAY, "selected_candidates")).table
    assert set(selection["status"].to_pylist()) == statuses  # a count row for each status not selected


def test_ddl_is_idempotent_on_both(warehouses):
    _, duck, bq = warehouses
    for warehouse in (duck, bq):
        warehouse.ensure_selection_ledger()
        ledger = warehouse.run(Query("ledger", sql.inline_files(sql.sqlglot.parse_one(
            "SELECT COUNT(*) AS n FROM review_selections", read="bigquery")))).table
        assert ledger["n"].to_pylist() == [9]


def test_task_models_is_the_same_on_bigquery_and_duckdb(warehouses, bq_emulator):
    """The review sensor's task -> model mapping (run on an in-memory DuckDB over the listed tasks)."""
    from google.cloud import bigquery

    from data_engine.annotation.backend import TaskSnapshot
    from data_engine.annotation.review_scan import task_models
    from data_engine.warehouse.bigquery_engine import BigQueryWarehouse

    config, _, bq = warehouses
    at = dt.datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=dt.timezone.utc)
    tasks = [
        TaskSnapshot(1, "data-engine-municipals-2026-11-24-001", at, 3, 8, True),  # reviewed
        TaskSnapshot(2, "data-engine-municipals-2026-11-24-002", at, 3, 8, False),  # not accepted
        TaskSnapshot(3, "ens-review-ENS-2026-11-24-001", at + dt.timedelta(microseconds=1), None, 50, True),
        TaskSnapshot(4, "someone-else", at, 9, 1, True),  # no model
        TaskSnapshot(5, "data-engine-municipals-2026-11-24-003", at, 3, 0, False),  # no data yet
        TaskSnapshot(6, "hand-made-1", at, 3, 4, True),  # two models
        TaskSnapshot(7, "data-engine-municipals-2026-11-24-1", at, 3, 4, True),  # not the naming scheme
    ]
    patterns = {m: c.annotation.task_name_pattern_for(m) for m, c in config.models.items()}
    patterns_both = {**patterns, "hand": "^hand-made-", "made": "made-[0-9]$"}
    on_duckdb = task_models(tasks, patterns_both)

    dataset = "test-project.cvat_parity"
    bq_emulator.client().create_dataset(dataset, exists_ok=True)
    client = bq.client
    task_fields = [("task_id", "INT64"), ("task_name", "STRING"), ("updated_date", "TIMESTAMP"), ("project_id", "INT64"),
                   ("frame_count", "INT64"), ("accepted", "BOOL")]
    for name, fields, rows in (
        ("listed_tasks", task_fields, [
            {"task_id": t.id, "task_name": t.name, "updated_date": t.updated_date.isoformat(), "project_id": t.project_id,
             "frame_count": t.frame_count, "accepted": t.accepted} for t in tasks]),
        ("task_patterns", [("model", "STRING"), ("pattern", "STRING")],
         [{"model": m, "pattern": p} for m, p in patterns_both.items()]),
    ):
        client.delete_table(f"{dataset}.{name}", not_found_ok=True)
        client.create_table(bigquery.Table(f"{dataset}.{name}", schema=[bigquery.SchemaField(n, t) for n, t in fields]))
        assert not client.insert_rows_json(f"{dataset}.{name}", rows)
    tables = {**bq.tables, "listed_tasks": f"{dataset}.listed_tasks", "task_patterns": f"{dataset}.task_patterns"}
    on_bigquery = BigQueryWarehouse(client, tables, config.warehouse.max_bytes_billed).run(
        Query("task_models", sql.load("task_models"))).table

    assert on_duckdb.column_names == on_bigquery.column_names
    assert _normalized(on_duckdb) == _normalized(on_bigquery)
    by_task = {}
    for row in on_duckdb.to_pylist():
        by_task.setdefault(row["task_id"], []).append((row["model"], row["models_matched"], row["reviewed"]))
    assert by_task == {
        1: [("municipals", 1, True)], 2: [("municipals", 1, False)], 3: [("ENS", 1, True)], 4: [(None, 0, True)],
        5: [("municipals", 1, False)], 6: [("hand", 2, True), ("made", 2, True)], 7: [(None, 0, True)],
    }


def test_latest_frame_predictions_are_the_same_on_both_any_day_and_only_the_latest_inference(warehouses):
    """A re-review's prediction group, by frame URI: frame A was inferred again two days later (its new rows
    streamed twice), frame B has an older inference of a greater model_version, frame C has no detection."""
    config, duck, bq = warehouses
    model = config.models["municipals"]
    valid, _ = split_checked(duck.run(queries.checked_query("checked_predictions", "municipals", model, DAY)).table)
    a, b = sorted(set(valid["frame_uri"].to_pylist()))[:2]
    with duck.connect() as connection:
        (c,) = connection.execute("SELECT MIN(frame_uri) FROM frames WHERE model = 'municipals' AND frame_uri NOT IN"
                              " (SELECT frame_uri FROM predictions)").fetchone()
    assert c is not None
    rows_of = {uri: [row | {"model": "municipals"} for row in valid.to_pylist() if row["frame_uri"] == uri] for uri in (a, b)}
    later = [row | {"model_version": "reinferred", "captured_at": row["captured_at"] + dt.timedelta(days=2),
                    "x_min": row["x_min"] / 2, "x_max": row["x_max"] / 2} for row in rows_of[a]]
    older = [row | {"model_version": "zzz-older", "captured_at": row["captured_at"] - dt.timedelta(days=3),
                    "class_name": model.classes[0]} for row in rows_of[b]]
    for warehouse in (duck, bq):
        warehouse.append("predictions", pa.Table.from_pylist(later + later + older))

    query = queries.latest_frame_predictions_query("municipals", model, [a, b, c, "s3://nowhere/unknown.jpg"])
    on_duckdb, on_bigquery = duck.run(query).table, bq.run(query, labels={"test": "latest_frame_predictions"}).table
    assert on_duckdb.column_names == on_bigquery.column_names
    assert _normalized(on_duckdb) == _normalized(on_bigquery)
    boxes = lambda rows: sorted((r["model_version"], r["class_name"], r["score"], r["x_min"], r["x_max"]) for r in rows)  # noqa: E731
    found = on_duckdb.to_pylist()
    assert {row["frame_uri"] for row in found} == {a, b}  # C and the unknown URI: no rows
    assert boxes(r for r in found if r["frame_uri"] == a) == boxes(later)  # the later inference, each box once
    assert boxes(r for r in found if r["frame_uri"] == b) == boxes(rows_of[b])  # the later day beats a greater version


def test_valid_rows_filter_keeps_exactly_the_rows_without_a_drop_reason(warehouses):
    """`... WHERE drop_reason IS NULL` over a checked statement is rendered as the negated checks inside it;
    on both engines it must keep exactly the rows the checked statement labels valid."""
    config, duck, bq = warehouses
    model = config.models["municipals"]
    checked = queries.checked_query("checked_predictions", "municipals", model, DAY)
    valid_only = Query("valid_predictions", sql.inline_files(sql.sqlglot.parse_one(
        "SELECT * FROM checked_predictions WHERE drop_reason IS NULL", read="bigquery")), checked.params)
    rendered = valid_only.render("duckdb", {"predictions": "predictions"})
    assert "drop_reason IS NULL" not in rendered and "NOT COALESCE(" in rendered
    for warehouse in (duck, bq):
        labelled = warehouse.run(checked).table
        expected, dropped = split_checked(labelled)
        assert sum(dropped.values()) > 0
        kept = warehouse.run(valid_only).table.drop_columns(["drop_reason"])
        assert _normalized(kept) == _normalized(expected)


def test_a_combined_statement_computes_a_shared_cte_once_and_refuses_two_of_one_name(fleet_file):
    def statement(text: str):
        return sql.sqlglot.parse_one(text, read="bigquery")

    combined = sql.combine({
        "a": statement("WITH shared AS (SELECT 1 AS x) SELECT x FROM shared"),
        "b": statement("WITH shared AS (SELECT 1 AS x) SELECT x + 1 AS y FROM shared"),
    })
    assert [cte.alias for cte in combined.find_all(sql.exp.CTE)] == ["shared"]
    rows = Query("combined", combined).render("duckdb", {})
    import duckdb

    assert duckdb.sql(rows).fetchall() == [("a", 1, None), ("b", None, 2)]
    with pytest.raises(ValueError, match="'shared'"):
        sql.combine({"a": statement("WITH shared AS (SELECT 1 AS x) SELECT x FROM shared"),
                     "b": statement("WITH shared AS (SELECT 2 AS x) SELECT x FROM shared")})
    # The selection step's statement: the day's frame rows and empty frames are one CTE each.
    config = load_fleet_config(fleet_file)
    selection = queries.selection_query(
        "municipals", config.models["municipals"], DAY, ["prediction_summary", "empty_frame_summary", "selected_candidates"]
    )
    ctes = [cte for cte in selection.expression.find_all(sql.exp.CTE)]
    names = [cte.alias for cte in ctes]
    assert names.count("frame_rows") == 1 and names.count("empty_frame_rows") == 1
    reads = {cte.alias: {table.name for table in cte.find_all(sql.exp.Table)} for cte in ctes}
    assert "frame_rows" in reads["day_frames"] and "empty_frame_rows" in reads["empty_frames"]
