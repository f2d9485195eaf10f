"""The COCO shapes every module shares: a reviewed task's export, and checks of its structure and ids.

An export that cannot be merged (malformed structure, dangling ids, frames without a URI) raises
ExportError naming the task and what is wrong, before anything is written anywhere.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine.labels.validation import id_problems, structure_problems

Coco = dict[str, Any]


class ExportError(ValueError):
    """A reviewed task's export cannot be merged; the message names the task and what is wrong."""


@dataclass(frozen=True)
class TaskExport:
    """One reviewed task's COCO export, and how its frame names become frame URIs.

    `frame_uris` maps the export's `file_name` (the CVAT frame name) to the frame URI the label set
    is keyed by; None keeps file_name as it is (tasks whose frames are named by their URI).
    `frame_fields` adds fields to images by frame URI (`camera_id`, `captured_at`), which the splits
    use. `removed_frames` are frame URIs the reviewer dropped: they leave the label set.
    """

    task_id: int | str
    updated_date: str  # the task's `updated_date` in CVAT (ISO 8601): a newer one is merged again
    coco: Coco
    frame_uris: Mapping[str, str] | Callable[[str], str] | None = None
    frame_fields: Mapping[str, Mapping[str, Any]] | None = None
    removed_frames: Sequence[str] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"task {self.task_id}"

    def frame_uri(self, file_name: str) -> str:
        if self.frame_uris is None:
            return file_name
        if callable(self.frame_uris):
            return self.frame_uris(file_name)
        try:
            return self.frame_uris[file_name]
        except KeyError:
            raise ExportError(f"{self.name}: frame {file_name!r} has no frame URI in the mapping given for the task") from None


def check_coco(coco: Any, where: str) -> None:
    """Raise ExportError when `coco` is not a well-formed COCO dict with resolvable ids."""
    problems = structure_problems(coco)
    if not problems:
        problems = id_problems(coco)
    if problems:
        raise ExportError(f"{where}: the COCO annotations are malformed: " + "; ".join(problems))


def categories_for(classes: Sequence[str]) -> list[dict[str, Any]]:
    """The model's categories as every label version stores them: ids 1..n in config order."""
    return [{"id": index, "name": name, "supercategory": ""} for index, name in enumerate(classes, start=1)]


def empty_label_set(classes: Sequence[str]) -> Coco:
    """The base of a model's first merge when no label set was imported."""
    return {"info": {"description": "data-engine training labels"}, "categories": categories_for(classes), "images": [], "annotations": []}


def dumps(coco: Coco) -> bytes:
    """Compact, standard JSON (the C encoder; json.dump to a file would use the slow pure-Python one).

    NaN and infinity raise ValueError: they are not JSON, and the checks refuse them before this.
    """
    return json.dumps(coco, separators=(",", ":"), allow_nan=False).encode()


def write_coco(path: Path, coco: Coco, batch: int = 100_000) -> None:
    """Write `coco` as compact JSON in batches: C-encoder speed without a second full copy in memory."""
    encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
    with open(path, "w", encoding="ascii") as out:
        out.write("{")
        first = True
        for key, value in coco.items():
            out.write(("" if first else ",") + encode(key) + ":")
            first = False
            if not isinstance(value, list) or len(value) <= batch:
                out.write(encode(value))
                continue
            out.write("[")
            for start in range(0, len(value), batch):
                out.write(("," if start else "") + encode(value[start : start + batch])[1:-1])
            out.write("]")
        out.write("}")


def parse_updated_date(value: str, where: str) -> dt.datetime:
    """A CVAT updated_date as an aware datetime (naive ones are UTC), for comparing reviews."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ExportError(f"{where}: updated_date {value!r} is not an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
