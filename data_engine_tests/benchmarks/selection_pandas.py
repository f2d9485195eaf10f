"""The baseline: the review-candidate selection of `sql/review_candidates.sql`, written in plain pandas.

This is the straightforward way a data scientist would do it: load the model-day's rows into DataFrames
(one partition's worth, like reading that day's files), then boolean masks per filter, a self-merge on
frame_uri within frames for class overlaps, groupby/cumcount for the budgets. It must return exactly the
product's (frame_uri, status, filter_mask); `data_engine_tests/test_benchmarks_smoke.py` keeps it that way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from data_engine.config import ModelConfig
from data_engine.config.models import ClassOverlapFilter, ConfidenceBandFilter, EmptyFramesFilter, SizeClassFilter

FRAME_FIELDS = ["frame_uri", "client", "camera_id", "model_version", "captured_at", "image_width", "image_height"]
# The fields checked_predictions.sql requires (model_version may be NULL).
REQUIRED_FIELDS = ["frame_uri", "client", "camera_id", "captured_at", "image_width", "image_height"]
BOX_FIELDS = ["class_name", "score", "x_min", "y_min", "x_max", "y_max"]


def load_day(path: Path, model_name: str, day: dt.date) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The model-day's predictions and frames, and the model's ledger, as DataFrames (read from DuckDB).

    Only the columns the selection uses are read, as the DuckDB path's column scans do.
    """
    import duckdb

    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    window = [model_name, start, start + dt.timedelta(days=1)]
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        day_rows = "WHERE model = ? AND captured_at >= ? AND captured_at < ?"
        columns = ", ".join(REQUIRED_FIELDS + BOX_FIELDS)
        predictions = con.execute(f"SELECT {columns} FROM predictions {day_rows}", window).df()
        frames = con.execute(f"SELECT {', '.join(FRAME_FIELDS)} FROM frames {day_rows}", window).df()
        ledger = con.execute(
            "SELECT frame_uri, selected_date, selected_at FROM review_selections WHERE model = ?", [model_name]
        ).df()
    return predictions, frames, ledger


def select_candidates(
    predictions: pd.DataFrame, frames: pd.DataFrame, ledger: pd.DataFrame, model: ModelConfig, day: dt.date
) -> pd.DataFrame:
    """Every flagged frame with `filter_mask`, `status` and the frame's fields, like the product's query."""
    classes, cameras = list(model.classes), model.cameras
    selection = model.selection

    # Valid detections (checked_predictions with drop_reason NULL); isna() covers NULL and NaN alike.
    p = predictions
    valid = (
        p[REQUIRED_FIELDS + BOX_FIELDS].notna().all(axis=1)
        & p["score"].between(0, 1)
        & (p["image_width"] > 0)
        & (p["image_height"] > 0)
        & (p["x_min"] < p["x_max"])
        & (p["y_min"] < p["y_max"])
        & (p["x_min"] >= 0)
        & (p["y_min"] >= 0)
        & (p["x_max"] <= p["image_width"])
        & (p["y_max"] <= p["image_height"])
        & p["class_name"].isin(classes)
        & p["camera_id"].isin(cameras)
    )
    detections = p[valid.fillna(False).astype(bool)]

    # Valid frames (checked_frames with drop_reason NULL), and among them the frames with no prediction row
    # at all that day (malformed rows count as predictions). An anti-join by merge: Series.isin() with
    # millions of values is slow on pandas' Arrow strings.
    frames_valid = (
        frames[REQUIRED_FIELDS].notna().all(axis=1)
        & (frames["image_width"] > 0)
        & (frames["image_height"] > 0)
        & frames["camera_id"].isin(cameras)
    )
    day_frames = frames[frames_valid.fillna(False).astype(bool)]
    seen = day_frames[["frame_uri"]].merge(
        predictions[["frame_uri"]].drop_duplicates(), on="frame_uri", how="left", indicator=True
    )["_merge"].to_numpy() == "both"
    empty_frames = day_frames[~seen]

    # Each filter flags frame URIs.
    hits = []
    for rank, selection_filter in enumerate(selection.filters):
        source = empty_frames if isinstance(selection_filter, EmptyFramesFilter) else detections
        if selection_filter.clients:
            source = source[source["client"].isin(selection_filter.clients)]
        if selection_filter.cameras:
            source = source[source["camera_id"].isin(selection_filter.cameras)]
        uris = _flag(selection_filter, source, classes)
        hits.append(
            pd.DataFrame(
                {
                    "frame_uri": uris,
                    "filter_rank": rank,
                    "filter_budget": np.nan if selection_filter.max_frames is None else selection_filter.max_frames,
                }
            )
        )
    columns = ["frame_uri", "filter_rank", "filter_budget"]
    hits = pd.concat(hits, ignore_index=True) if hits else pd.DataFrame(columns=columns)

    # Frames selected on an earlier day: the latest run of each earlier date counts.
    earlier = ledger[pd.to_datetime(ledger["selected_date"]) < pd.Timestamp(day)]
    latest = earlier.groupby("selected_date")["selected_at"].transform("max")
    previously_selected = earlier.loc[earlier["selected_at"] == latest, "frame_uri"].unique()
    hits["already_selected"] = hits["frame_uri"].isin(previously_selected)

    # A stable pseudo-random order: the MD5 hex of the URI, computed once per flagged frame.
    unique_uris = hits["frame_uri"].unique()
    tiebreak = pd.Series([hashlib.md5(uri.encode()).hexdigest() for uri in unique_uris], index=unique_uris)
    hits["tiebreak"] = hits["frame_uri"].map(tiebreak)

    # Per-filter budgets, counted among frames not already selected (and separately among those that are).
    hits = hits.sort_values(["filter_rank", "already_selected", "tiebreak"])
    hits["rank_in_filter"] = hits.groupby(["filter_rank", "already_selected"]).cumcount() + 1
    hits["within_filter_budget"] = hits["filter_budget"].isna() | (hits["rank_in_filter"] <= hits["filter_budget"])

    # One row per frame, with the bit mask of its filters' ranks. Summing the bits is an OR because a
    # filter flags a frame once (frame_uri is unique per frame, DESIGN.md).
    hits["filter_bit"] = np.left_shift(1, hits["filter_rank"].to_numpy(dtype=np.int64))
    flagged = hits.groupby("frame_uri").agg(
        filter_mask=("filter_bit", "sum"),
        best_filter_rank=("filter_rank", "min"),
        reason_count=("filter_rank", "size"),
        tiebreak=("tiebreak", "min"),
        already_selected=("already_selected", "any"),
        within_filter_budget=("within_filter_budget", "any"),
    )

    # The frame's own fields come from its row in the frames table; a frame without a valid one is dropped.
    candidates = flagged.join(day_frames.set_index("frame_uri")[FRAME_FIELDS[1:]], how="left").reset_index()

    # Camera then day budgets, in priority order: first filter, more reasons, tiebreak.
    candidates = candidates.sort_values(
        ["best_filter_rank", "reason_count", "tiebreak"], ascending=[True, False, True], ignore_index=True
    )
    has_frame_row = candidates["camera_id"].notna()
    eligible = ~candidates["already_selected"] & candidates["within_filter_budget"] & has_frame_row
    rank_in_camera = candidates[eligible].groupby("camera_id").cumcount() + 1
    within_camera = rank_in_camera[rank_in_camera <= selection.max_frames_per_camera_per_day]
    rank_in_day = pd.Series(np.arange(1, len(within_camera) + 1), index=within_camera.index)
    candidates["rank_in_camera"] = rank_in_camera
    candidates["rank_in_day"] = rank_in_day
    candidates["status"] = np.select(
        [
            candidates["already_selected"],
            ~candidates["within_filter_budget"],
            ~has_frame_row,
            candidates["rank_in_camera"] > selection.max_frames_per_camera_per_day,
            candidates["rank_in_day"] > selection.max_frames_per_day,
        ],
        ["already_selected", "over_filter_budget", "no_frame_row", "over_camera_budget", "over_day_budget"],
        default="selected",
    )
    return candidates


def _flag(selection_filter, source: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The distinct frame URIs one filter flags in `source` (detections, or empty frames)."""
    if isinstance(selection_filter, EmptyFramesFilter):
        return source["frame_uri"].to_numpy()
    if isinstance(selection_filter, SizeClassFilter):
        area = (source["x_max"] - source["x_min"]) * (source["y_max"] - source["y_min"])
        mask = (
            source["class_name"].isin(selection_filter.classes)
            & (area >= selection_filter.min_area_fraction * source["image_width"] * source["image_height"])
            & (area <= selection_filter.max_area_fraction * source["image_width"] * source["image_height"])
        )
        return source.loc[mask, "frame_uri"].unique()
    if isinstance(selection_filter, ConfidenceBandFilter):
        mask = (
            source["class_name"].isin(selection_filter.classes or classes)
            & (source["score"] >= selection_filter.min_score)
            & (source["score"] <= selection_filter.max_score)
        )
        return source.loc[mask, "frame_uri"].unique()
    if isinstance(selection_filter, ClassOverlapFilter):
        return _overlapping_frames(selection_filter, source)
    raise TypeError(f"no pandas baseline for filter kind {selection_filter.kind!r}")


def _overlapping_frames(selection_filter: ClassOverlapFilter, source: pd.DataFrame) -> np.ndarray:
    """Frames with two detections of different classes whose IoU is at least min_iou: a merge on the frame.

    The merge key is the frame's integer code and classes are ordered categorical codes, so the merged
    pairs (tens of millions of rows at full size) hold numbers, not strings.
    """
    pairs = {tuple(sorted(pair)) for pair in selection_filter.class_pairs or []}
    boxes = source[["frame_uri", "class_name", "x_min", "y_min", "x_max", "y_max"]]
    if pairs:
        boxes = boxes[boxes["class_name"].isin({name for pair in pairs for name in pair})]
    frame_codes, frame_uris = pd.factorize(boxes["frame_uri"])
    class_order = sorted(boxes["class_name"].unique())  # codes compare like the names (SQL a.class_name < b.class_name)
    boxes = pd.DataFrame(
        {
            "frame": frame_codes,
            "cls": pd.Categorical(boxes["class_name"], categories=class_order).codes,
            **{name: boxes[name].to_numpy() for name in ["x_min", "y_min", "x_max", "y_max"]},
        }
    )
    # Only frames with at least two classes can hold a pair.
    boxes = boxes[boxes.groupby("frame")["cls"].transform("nunique") > 1]
    m = boxes.merge(boxes, on="frame", suffixes=("_a", "_b"))
    m = m[m["cls_a"] < m["cls_b"]]
    if pairs:
        code = {name: index for index, name in enumerate(class_order)}
        wanted = {code[first] * len(class_order) + code[second] for first, second in pairs}
        m = m[(m["cls_a"].astype(np.int64) * len(class_order) + m["cls_b"]).isin(wanted)]
    touching = (
        (m["x_min_a"] < m["x_max_b"]) & (m["x_min_b"] < m["x_max_a"]) & (m["y_min_a"] < m["y_max_b"]) & (m["y_min_b"] < m["y_max_a"])
    )
    m = m[touching]
    # The same arithmetic as the SQL (intersection >= min_iou * union), so float rounding agrees.
    intersection = (np.minimum(m["x_max_a"], m["x_max_b"]) - np.maximum(m["x_min_a"], m["x_min_b"])) * (
        np.minimum(m["y_max_a"], m["y_max_b"]) - np.maximum(m["y_min_a"], m["y_min_b"])
    )
    union = (
        (m["x_max_a"] - m["x_min_a"]) * (m["y_max_a"] - m["y_min_a"])
        + (m["x_max_b"] - m["x_min_b"]) * (m["y_max_b"] - m["y_min_b"])
        - intersection
    )
    frames = m.loc[intersection >= selection_filter.min_iou * union, "frame"].unique()
    return np.asarray(frame_uris.take(frames), dtype=object)
