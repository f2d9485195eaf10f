"""Builds the warehouse queries of one model-day from the fleet config, and the by-frame query of a re-review.

Each filter kind is a fragment in `sql/filters/<kind>.sql` that reads `detections` (or `empty_frames`) and
returns the frame URIs it flags. A filter's scope (clients, cameras) narrows what the fragment reads; its
parameters get a per-filter prefix; the fragments are unioned into the `flagged` CTE of
`sql/review_candidates.sql`, and the filters' `max_frames` budgets fill its `filter_budgets` CTE. All
filtering therefore runs in the warehouse.
"""

from __future__ import annotations

import datetime as dt

import sqlglot
from sqlglot import exp

from data_engine.config import ModelConfig
from data_engine.config.models import (
    ClassOverlapFilter,
    ConfidenceBandFilter,
    EmptyFramesFilter,
    SelectionFilter,
    SizeClassFilter,
)
from data_engine.warehouse import sql
from data_engine.warehouse.sql import Query


# The day window of checked_predictions opened to every timestamp BigQuery can hold (any day).
ALL_TIME = {
    "day_start": dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc),
    "day_end": dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
}


def day_window(day: dt.date) -> dict[str, object]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)
    return {"day": day, "day_start": start, "day_end": start + dt.timedelta(days=1)}


def _day_params(model_name: str, model: ModelConfig, day: dt.date) -> dict[str, object]:
    return {"model": model_name, "classes": list(model.classes), "cameras": model.cameras, **day_window(day)}


def checked_query(statement: str, model_name: str, model: ModelConfig, day: dt.date) -> Query:
    """A statement over one model-day's checked rows: a `checked_*` one (every row with its drop_reason,
    NULL when valid) or a summary of them (`prediction_summary`, `empty_frame_summary`)."""
    expression = sql.load(statement)
    return Query(statement, expression, _pick(expression, _day_params(model_name, model, day)))


def review_candidates_query(
    model_name: str, model: ModelConfig, day: dt.date, statement: str = "review_candidates"
) -> Query:
    """`sql/review_candidates.sql` (every flagged frame with its status) with the model's filters and
    budgets, or a `statement` that reads it (`selected_candidates`: the selected frames with predictions)."""
    expression = sql.load(statement)
    filters = model.selection.filters
    budgeted = [rank for rank, selection_filter in enumerate(filters) if selection_filter.max_frames is not None]
    params = _day_params(model_name, model, day) | {
        "max_frames_per_day": model.selection.max_frames_per_day,
        "max_frames_per_camera_per_day": model.selection.max_frames_per_camera_per_day,
        # The filters without a budget, as bits of a frame's filter_mask.
        "unbudgeted_filters": sum(1 << rank for rank in range(len(filters)) if rank not in budgeted),
        "largest_filter_budget": max((filters[rank].max_frames for rank in budgeted), default=0),
    }
    branches: list[exp.Expression] = []
    for rank, selection_filter in enumerate(filters):
        branch, filter_params = _compile_filter(selection_filter, rank, model)
        branches.append(branch)
        params |= filter_params
    budgets = [
        sqlglot.parse_one(f"SELECT {rank} AS filter_rank, @f{rank}_max_frames AS filter_budget", read="bigquery")
        for rank in budgeted
    ]
    _fill_placeholder(expression, "flagged", branches)
    _fill_placeholder(expression, "filter_budgets", budgets)
    return Query(statement, expression, _pick(expression, params))


def selection_query(model_name: str, model: ModelConfig, day: dt.date, statements: list[str]) -> Query:
    """The statements a selection step needs for one model-day (`prediction_summary`, `empty_frame_summary`,
    `selected_candidates`, in any subset) as one statement: one warehouse job, and the day's frame rows
    and empty frames checked once for all (`sql.combine`); each row names its `statement`."""
    parts = {
        statement: review_candidates_query(model_name, model, day, statement)
        if statement == "selected_candidates"
        else checked_query(statement, model_name, model, day)
        for statement in statements
    }
    params: dict[str, object] = {}
    for part in parts.values():
        params |= part.params  # the same values: every part has the same model and day
    return Query("selection", sql.combine({name: part.expression for name, part in parts.items()}), params)


def latest_frame_predictions_query(model_name: str, model: ModelConfig, frame_uris: list[str]) -> Query:
    """`sql/latest_frame_predictions.sql`: the valid predictions of the latest inference of each of `frame_uris`,
    whatever its day (the prediction group of a label-error re-review). The URIs travel as a parameter."""
    expression = sql.load("latest_frame_predictions")
    params = {"model": model_name, "classes": list(model.classes), "cameras": model.cameras, "frame_uris": list(frame_uris)}
    return Query("latest_frame_predictions", expression, _pick(expression, params | ALL_TIME))


def _fill_placeholder(expression: exp.Expression, cte_name: str, selects: list[exp.Expression]) -> None:
    """Replace the placeholder CTE `cte_name` by the UNION ALL of `selects` (left as is, empty, when none)."""
    if not selects:
        return
    union = selects[0]
    for select in selects[1:]:
        union = exp.union(union, select, distinct=False)
    next(cte for cte in expression.find_all(exp.CTE) if cte.alias == cte_name).set("this", union)


def _compile_filter(selection_filter: SelectionFilter, rank: int, model: ModelConfig) -> tuple[exp.Expression, dict]:
    """One branch of `flagged`: the filter's fragment, scoped, with prefixed parameters."""
    prefix = f"f{rank}_"
    source = "empty_frames" if isinstance(selection_filter, EmptyFramesFilter) else "detections"
    fragment = sql.load(f"filters/{_fragment_name(selection_filter)}")
    params = _filter_params(selection_filter, model)
    scope = []
    if selection_filter.clients:
        scope.append("client IN UNNEST(@clients)")
        params["clients"] = list(selection_filter.clients)
    if selection_filter.cameras:
        scope.append("camera_id IN UNNEST(@cameras)")
        params["cameras"] = list(selection_filter.cameras)
    if scope:
        scoped = sqlglot.parse_one(f"SELECT * FROM {source} WHERE {' AND '.join(scope)}", read="bigquery")
        sql.replace_table(fragment, source, scoped)
    sql.prefix_parameters(fragment, prefix)
    params["max_frames"] = selection_filter.max_frames
    branch = sqlglot.parse_one(f"SELECT frame_uri, {rank} AS filter_rank FROM flagged_by_filter", read="bigquery")
    sql.replace_table(branch, "flagged_by_filter", fragment)
    return branch, {prefix + name: value for name, value in params.items() if value is not None}


def _fragment_name(selection_filter: SelectionFilter) -> str:
    """The file in `sql/filters/` for a filter: its kind, or the any-classes variant of class_overlap."""
    if isinstance(selection_filter, ClassOverlapFilter) and not selection_filter.class_pairs:
        return "class_overlap_any_classes"
    return selection_filter.kind


def _filter_params(selection_filter: SelectionFilter, model: ModelConfig) -> dict[str, object]:
    if isinstance(selection_filter, SizeClassFilter):
        return {
            "classes": list(selection_filter.classes),
            "min_area_fraction": selection_filter.min_area_fraction,
            "max_area_fraction": selection_filter.max_area_fraction,
        }
    if isinstance(selection_filter, ClassOverlapFilter):
        pairs = ["|".join(sorted(pair)) for pair in selection_filter.class_pairs or []]
        return {"min_iou": selection_filter.min_iou, "class_pairs": pairs}
    if isinstance(selection_filter, ConfidenceBandFilter):
        return {
            "classes": list(selection_filter.classes or model.classes),
            "min_score": selection_filter.min_score,
            "max_score": selection_filter.max_score,
        }
    if isinstance(selection_filter, EmptyFramesFilter):
        return {}
    raise TypeError(f"no SQL for filter kind {selection_filter.kind!r}")


def _pick(expression: exp.Expression, params: dict[str, object]) -> dict[str, object]:
    """Only the parameters the statement uses (BigQuery rejects unused ones in some clients)."""
    used = sql.parameter_names(expression)
    return {name: value for name, value in params.items() if name in used}
