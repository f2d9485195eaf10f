"""Choosing one checkpoint of a training run: the best by the configured validation metric, ties to
the later checkpoint (it has seen more data for the same validation score). Selection reads only the
validation split's metrics, never the test split, which the promotion gate keeps for itself."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


class SelectionError(ValueError):
    """The run's checkpoints cannot be ranked by the metric (none, or the metric is missing)."""


def select_checkpoint(checkpoints: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The checkpoint with the highest `metrics[metric]`; among equals, the last one in training order."""
    if not checkpoints:
        raise SelectionError("the run has no checkpoints to select from")
    missing = [entry["name"] for entry in checkpoints if metric not in entry["metrics"]]
    if missing:
        available = sorted(checkpoints[0]["metrics"])
        raise SelectionError(
            f"checkpoints {missing} have no validation metric {metric!r} (they have {available});"
            " set training.selection_metric to one of those"
        )

    def rank(position: int) -> tuple[float, int]:
        value = float(checkpoints[position]["metrics"][metric])
        return (-math.inf if math.isnan(value) else value, position)

    return checkpoints[max(range(len(checkpoints)), key=rank)]


def candidate_record(
    model: str, run_id: str, request: dict[str, Any], checkpoint: dict[str, Any], metric: str, selected_by: str
) -> dict[str, Any]:
    """The candidate file's content; its id names the run and checkpoint, so a retry finds the same one."""
    stem = checkpoint["name"].rsplit(".", 1)[0] if "." in checkpoint["name"] else checkpoint["name"]
    return {
        "candidate_id": f"{run_id}--{stem}",
        "model": model,
        "run_id": run_id,
        "label_version": request["label_version"],
        "checkpoint": {key: checkpoint[key] for key in ("name", "uri", "epoch", "step")},
        "metrics": checkpoint["metrics"],
        "selection_metric": metric,
        "selected_value": checkpoint["metrics"][metric],
        "selected_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "selected_by": selected_by,
    }
