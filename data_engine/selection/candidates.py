"""Plain-Python steps around the warehouse queries: read their summaries and shape the selected frames.

The warehouse filters, counts and attaches predictions; what comes back is small (a few hundred count
rows, the selected frames) and these functions only reshape it.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

CANDIDATE_COLUMNS = ["frame_uri", "client", "camera_id", "model_version", "captured_at", "image_width", "image_height"]
DROP_STATUSES = ("already_selected", "over_filter_budget", "no_frame_row", "over_camera_budget", "over_day_budget")


def statement_rows(table: pa.Table, statement: str) -> pa.Table:
    """One statement's rows of `queries.selection_query`'s result (the rows it tags with `statement`)."""
    return table.filter(pc.equal(table["statement"], statement))


def _sum_by(rows: list[dict], key: str, count: str = "row_count") -> dict[str, int]:
    totals: Counter = Counter()
    for row in rows:
        totals[row[key]] += row[count]
    return dict(sorted(totals.items()))


@dataclass(frozen=True)
class PredictionSummary:
    """The `predictions` asset's numbers, from `sql/prediction_summary.sql`."""

    detections: int
    frames: int
    per_class: dict[str, int]
    per_camera: dict[str, int]
    dropped: dict[str, int]

    @property
    def rows_of_the_day(self) -> int:
        """Prediction rows captured on the day, valid or not (rows without a capture time are of no day)."""
        return self.detections + sum(count for reason, count in self.dropped.items() if reason != "no_capture_time")


def prediction_summary(table: pa.Table) -> PredictionSummary:
    rows = table.to_pylist()
    counted = [row for row in rows if row["row_count"] is not None]
    valid = [row for row in counted if row["drop_reason"] is None]
    return PredictionSummary(
        detections=sum(row["row_count"] for row in valid),
        frames=sum(row["frames"] for row in rows if row["frames"] is not None),
        per_class=_sum_by(valid, "class_name"),
        per_camera=_sum_by(valid, "camera_id"),
        dropped=_sum_by([row for row in counted if row["drop_reason"] is not None], "drop_reason"),
    )


@dataclass(frozen=True)
class FrameSummary:
    """The `empty_frames` asset's numbers, from `sql/empty_frame_summary.sql`."""

    empty_frames: int
    empty_per_camera: dict[str, int]
    empty_dropped: dict[str, int]
    frame_rows: int
    frame_rows_dropped: dict[str, int]


def frame_summary(table: pa.Table) -> FrameSummary:
    rows = table.to_pylist()
    empty = [row for row in rows if row["rows_of"] == "empty_frames"]
    frames_table = [row for row in rows if row["rows_of"] == "frames_table"]
    valid_empty = [row for row in empty if row["drop_reason"] is None]
    return FrameSummary(
        empty_frames=sum(row["row_count"] for row in valid_empty),
        empty_per_camera=_sum_by(valid_empty, "camera_id"),
        empty_dropped=_sum_by([row for row in empty if row["drop_reason"] is not None], "drop_reason"),
        frame_rows=sum(row["row_count"] for row in frames_table),
        frame_rows_dropped=_sum_by([row for row in frames_table if row["drop_reason"] is not None], "drop_reason"),
    )


def reasons_of(filter_mask: int, filter_names: list[str]) -> list[str]:
    """The names of the filters whose bit is set in a frame's `filter_mask` (bit i: the i-th filter)."""
    return [name for bit, name in enumerate(filter_names) if filter_mask >> bit & 1]


def selected_candidates(result: pa.Table, filter_names: list[str]) -> pa.Table:
    """The selected frames of `sql/selected_candidates.sql`'s result in priority order, with their reasons
    as a list and their predictions (an empty list for a frame without detections)."""
    selected = result.filter(pc.equal(result["status"], "selected")).sort_by(
        [("best_filter_rank", "ascending"), ("reason_count", "descending"), ("tiebreak", "ascending")]
    )
    predictions = selected["predictions"]
    no_boxes = pa.array([[]] * selected.num_rows, predictions.type)
    reasons = [reasons_of(mask, filter_names) for mask in selected["filter_mask"].to_pylist()]
    return selected.select(CANDIDATE_COLUMNS).append_column(
        "reasons", pa.array(reasons, pa.list_(pa.string()))
    ).append_column(
        "predictions", pc.if_else(pc.is_null(predictions), no_boxes, predictions)
    ).append_column("priority", pa.array(range(1, selected.num_rows + 1), pa.int64()))


def value_counts(table: pa.Table, column: str) -> dict[str, int]:
    """How many rows hold each value of `column`."""
    return {row["values"]: row["counts"] for row in pc.value_counts(table[column]).to_pylist()}


def selection_counts(result: pa.Table, candidates: pa.Table, filter_names: list[str]) -> dict[str, dict[str, int]]:
    """The numbers a reviewer checks: flagged and selected per filter, selected per camera and class, drops.

    `result` is `sql/selected_candidates.sql`'s: a row per selected frame and a count row per status and
    filter_mask of the others.
    """
    flagged_per_filter: Counter = Counter()
    statuses: Counter = Counter()
    for row in result.select(["filter_mask", "status", "frames"]).to_pylist():
        statuses[row["status"]] += row["frames"]
        for name in reasons_of(row["filter_mask"], filter_names):
            flagged_per_filter[name] += row["frames"]
    selected_per_filter = Counter(r for reasons in candidates["reasons"].to_pylist() for r in reasons)
    flagged_filters = [name for name in filter_names if flagged_per_filter[name]]
    return {
        "flagged_per_filter": {name: flagged_per_filter[name] for name in flagged_filters},
        "selected_per_filter": {name: selected_per_filter.get(name, 0) for name in flagged_filters},
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
