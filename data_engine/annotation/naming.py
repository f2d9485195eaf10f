"""The names of review batches (the tool's tasks) and of the models' projects, in one place.

A batch's name is the idempotency key of its creation (re-runs find it by name) and, through the
model's task-name pattern, how the review sensor tells which model a task belongs to; `batch_name_pattern`
matches exactly the names made here. Patterns are RE2 (matched by sql/task_models.sql), escaped the
same way for Python, RE2 (BigQuery) and DuckDB.
"""

from __future__ import annotations

import datetime as dt

REREVIEW = "rereview"
# A re-review can show the model's predictions beside the current labels, as boxes of their own labels
# `prediction:<class>` (CVAT) or regions named so in exports (Label Studio): never training labels.
PREDICTION_GROUP = "prediction"


def day_batch_name(prefix: str, model: str, day: dt.date, sequence: int) -> str:
    """`<prefix>-<model>-<YYYY-MM-DD>-<NNN>`: the sequence-th batch of a model-day's review candidates."""
    return f"{prefix}-{model}-{day.isoformat()}-{sequence:03d}"


def rereview_batch_name(prefix: str, model: str, label: str) -> str:
    """`<prefix>-<model>-rereview-<label>`: frames of a label version sent back for review."""
    return f"{prefix}-{model}-{REREVIEW}-{label}"


def batch_name_pattern(prefix: str, model: str) -> str:
    """The RE2 pattern of every batch name made for the model (day batches and re-review batches)."""
    return rf"^{re2_escape(prefix)}-{re2_escape(model)}-([0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}-[0-9]{{3,}}|{REREVIEW}-[A-Za-z0-9_.-]+)$"


def prediction_label(class_name: str) -> str:
    """The label of a class's boxes in a re-review's prediction group."""
    return f"{PREDICTION_GROUP}:{class_name}"


def is_prediction_label(label: str) -> bool:
    return label.startswith(f"{PREDICTION_GROUP}:")


def project_name(prefix: str, model: str) -> str:
    return f"{prefix} {model}"


def re2_escape(text: str) -> str:
    """Escape regex metacharacters the same way for Python, RE2 (BigQuery) and DuckDB."""
    return "".join("\\" + c if c in r".^$*+?()[]{}|\/" else c for c in text)
