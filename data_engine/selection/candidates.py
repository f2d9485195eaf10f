"""Plain-Python steps around the warehouse queries: split checked rows, attach predictions, count.

The warehouse does the filtering; these functions only reshape its (small) Arrow results.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

BOX_FIELDS = ["class_name", "score", "x_min", "y_min", "x_max", "y_max"]
CANDIDATE_COLUMNS = ["frame_uri", "client", "camera_id", "model_version", "captured_at", "image_width", "image_height"]
DROP_STATUSES = ("already_selected", "over_filter_budget", "no_frame_row", "over_camera_budget", "over_day_budget")


def split_checked(checked: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """Rows without a drop_reason (the column removed), and how many rows each reason dropped."""
    is_valid = pc.is_null(checked["drop_reason"])
    dropped = Counter(checked.filter(pc.invert(is_valid))["drop_reason"].to_pylist())
    return checked.filter(is_valid).drop_columns(["drop_reason"]), dict(sorted(dropped.items()))


def reasons_of(filter_mask: int, filter_names: list[str]) -> list[str]:
    """The names of the filters whose bit is set in a frame's `filter_mask` (bit i: the i-th filter)."""
    return [name for bit, name in enumerate(filter_names) if filter_mask >> bit & 1]


def selected_candidates(flagged: pa.Table, predictions: pa.Table, filter_names: list[str]) -> pa.Table:
    """The selected frames in priority order, with their reasons as a list and their predictions attached."""
    selected = flagged.filter(pc.equal(flagged["status"], "selected")).sort_by(
        [("best_filter_rank", "ascending"), ("reason_count", "descending"), ("tiebreak", "ascending")]
    )
    # Only the selected frames' detections are reshaped, not the whole day's.
    predictions = predictions.filter(pc.is_in(predictions["frame_uri"], value_set=selected["frame_uri"].combine_chunks()))
    # pyarrow cannot aggregate structs into lists, so group row numbers and take the boxes by them.
    boxes = pa.StructArray.from_arrays([predictions[name].combine_chunks() for name in BOX_FIELDS], names=BOX_FIELDS)
    rows_per_frame = (
        pa.table({"frame_uri": predictions["frame_uri"], "row": pa.array(range(predictions.num_rows), pa.int64())})
        .group_by("frame_uri", use_threads=False)
        .aggregate([("row", "list")])
    )
    row_lists = rows_per_frame["row_list"].combine_chunks()
    boxes_per_frame = pa.ListArray.from_arrays(row_lists.offsets, boxes.take(row_lists.flatten()))
    # Acero joins cannot carry list columns: look each selected frame up instead.
    positions = pc.index_in(selected["frame_uri"], value_set=rows_per_frame["frame_uri"].combine_chunks())
    attached = boxes_per_frame.take(positions)
    no_boxes = pa.array([[]] * selected.num_rows, boxes_per_frame.type)
    reasons = [reasons_of(mask, filter_names) for mask in selected["filter_mask"].to_pylist()]
    return selected.select(CANDIDATE_COLUMNS).append_column(
        "reasons", pa.array(reasons, pa.list_(pa.string()))
    ).append_column(
        "predictions", pc.if_else(pc.is_null(attached), no_boxes, attached)
    ).append_column("priority", pa.array(range(1, selected.num_rows + 1), pa.int64()))


def value_counts(table: pa.Table, column: str) -> dict[str, int]:
    """How many rows hold each value of `column`."""
    return {row["values"]: row["counts"] for row in pc.value_counts(table[column]).to_pylist()}


def selection_counts(flagged: pa.Table, candidates: pa.Table, filter_names: list[str]) -> dict[str, dict[str, int]]:
    """The numbers a reviewer checks: flagged and selected per filter, selected per camera and class, drops."""
    masks = flagged["filter_mask"]
    flagged_per_filter = {
        name: count
        for bit, name in enumerate(filter_names)
        if (count := pc.sum(pc.not_equal(pc.bit_wise_and(masks, 1 << bit), 0)).as_py() or 0)
    }
    selected_per_filter = Counter(r for reasons in candidates["reasons"].to_pylist() for r in reasons)
    statuses = value_counts(flagged, "status")
    return {
        "flagged_per_filter": flagged_per_filter,
        "selected_per_filter": {name: selected_per_filter.get(name, 0) for name in flagged_per_filter},
        "selected_per_camera": value_counts(candidates, "camera_id"),
        "predictions_per_class": dict(
            Counter(box["class_name"] for boxes in candidates["predictions"].to_pylist() for box in boxes)
        ),
        "dropped_frames": {status: statuses.get(status, 0) for status in DROP_STATUSES},
    }


def ledger_rows(model: str, day: dt.date, candidates: pa.Table, run_id: str, now: dt.datetime) -> pa.Table:
    """Rows for the review-selection ledger: this run's selection for the model-day."""
    count = candidates.num_rows
    return pa.table(
        {
            "model": pa.array([model] * count, pa.string()),
            "selected_date": pa.array([day] * count, pa.date32()),
            "frame_uri": candidates["frame_uri"],
            "selected_at": pa.array([now] * count, pa.timestamp("us", tz="UTC")),
            "run_id": pa.array([run_id] * count, pa.string()),
        }
    )
