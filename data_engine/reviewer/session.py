"""The simulated reviewer at work: it goes through a model's open frames in Label Studio as a person
would (reject an unusable frame, skip one for later, or correct the pre-annotations toward the hidden
truth and submit), and journals its own mistakes before submitting them.

Deterministic per frame: each frame's decisions come from a generator seeded by (seed, frame URI,
visit), so a run that crashed and is run again redoes the same review, and the journal, keyed the same
way, records each mistake once. A skipped frame is visited again by a later run and then reviewed:
a batch is reviewed only when all its frames are submitted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_engine.annotation.label_studio import LabelStudioBackend, frame_boxes, region
from data_engine.reviewer.correction import PixelBox, review_frame


class ReviewerUnavailable(RuntimeError):
    """The simulated reviewer cannot work here (no Label Studio, no demo truth); the message says why."""


TruthOf = Callable[[list[str]], dict[str, list[dict]]]  # frame URIs -> true boxes (as demo.read_ground_truth)


@dataclass(frozen=True)
class ReviewerSettings:
    error_rate: float = 0.05  # per object: the chance of a mistake (correction.py lists the kinds)
    skip_rate: float = 0.05  # per frame, first visit: skipped for a later run
    reject_rate: float = 0.01  # per frame, first visit: removed from its batch as unusable
    seed: int = 0
    max_frames: int | None = None  # frames acted on per run; None: every open frame

    def __post_init__(self) -> None:
        for name in ("error_rate", "skip_rate", "reject_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name.replace('_', '-')} is {value}; a rate lies in [0, 1]")
        if self.skip_rate + self.reject_rate > 1:
            raise ValueError(f"skip-rate + reject-rate is {self.skip_rate + self.reject_rate:g}; together they are at most 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max-frames is {self.max_frames}; it is at least 1 (leave it out for every open frame)")


@dataclass
class ReviewSummary:
    submitted: int = 0
    skipped: int = 0
    rejected: int = 0
    mistakes: int = 0
    without_truth: list[str] = field(default_factory=list)  # open frames the truth does not know: left alone
    open_left: int = 0  # open frames past max_frames

    def line(self, model: str) -> str:
        text = f"{model}: {self.submitted} frames submitted ({self.mistakes} reviewer mistakes), {self.skipped} skipped, {self.rejected} rejected"
        if self.open_left:
            text += f", {self.open_left} open frames left for the next run"
        if self.without_truth:
            text += f", {len(self.without_truth)} frames without ground truth left alone (e.g. {self.without_truth[0]})"
        return text


def mistakes_path(home: Path, model: str) -> Path:
    return home / "reviewer" / model / "mistakes.jsonl"


def read_mistakes(home: Path, model: str) -> list[dict]:
    """The reviewer's journaled mistakes of a model: frame_uri, kind, details (true and submitted box), batch."""
    path = mistakes_path(home, model)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _journal(path: Path, entries: list[dict]) -> None:
    """Append entries not journaled yet (by id), durably; a line cut short by a crash is dropped first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else ""
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        path.write_text(text)
    known = {json.loads(line)["id"] for line in text.splitlines() if line.strip()}
    new = [entry for entry in entries if entry["id"] not in known]
    if not new:
        return
    with path.open("a") as journal:
        journal.write("".join(json.dumps(entry, sort_keys=True) + "\n" for entry in new))
        journal.flush()
        os.fsync(journal.fileno())


def review_open_frames(
    backend: LabelStudioBackend,
    project_name: str,
    model: str,
    classes: list[str],
    truth_of: TruthOf,
    settings: ReviewerSettings,
    home: Path,
) -> ReviewSummary:
    """One pass over the model's open frames in Label Studio (at most settings.max_frames)."""
    summary = ReviewSummary()
    frames = backend.open_frames(project_name)
    if not frames:
        return summary
    truth = truth_of([frame["data"]["frame_uri"] for frame in frames])
    summary.without_truth = [frame["data"]["frame_uri"] for frame in frames if frame["data"]["frame_uri"] not in truth]
    frames = [frame for frame in frames if frame["data"]["frame_uri"] in truth]
    if settings.max_frames is not None:
        summary.open_left = max(0, len(frames) - settings.max_frames)
        frames = frames[: settings.max_frames]
    for frame in frames:
        data = frame["data"]
        uri, width, height = data["frame_uri"], int(data["width"]), int(data["height"])
        visit = int(frame.get("cancelled_annotations") or 0)
        rng = random.Random(f"{settings.seed}:{uri}:{visit}")
        if visit == 0:
            draw = rng.random()
            if draw < settings.reject_rate:
                backend.delete_frame(frame["id"])
                summary.rejected += 1
                continue
            if draw < settings.reject_rate + settings.skip_rate:
                backend.submit_frame(frame, [], skipped=True)
                summary.skipped += 1
                continue
        predicted = [PixelBox(*box) for box in frame_boxes(frame)]
        true_boxes = [PixelBox(t["class_name"], t["x_min"], t["y_min"], t["x_max"], t["y_max"]) for t in truth[uri]]
        boxes, mistakes = review_frame(predicted, true_boxes, classes, settings.error_rate, rng, (width, height))
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        _journal(
            mistakes_path(home, model),
            [
                {"id": f"{uri}#{visit}#{index}", "frame_uri": uri, "kind": m.kind, "details": m.details(), "batch": data.get("review_batch"), "recorded_at": now}
                for index, m in enumerate(mistakes)
            ],
        )
        backend.submit_frame(frame, [region(b.class_name, (b.x_min, b.y_min, b.x_max, b.y_max), width, height) for b in boxes])
        summary.submitted += 1
        summary.mistakes += len(mistakes)
    return summary


def review_demo_model(backend: LabelStudioBackend, config: Any, model: str, settings: ReviewerSettings, home: Path, warehouse_path: Path) -> ReviewSummary:
    """`review_open_frames` for a model of the fleet config, toward the demo warehouse's ground truth."""
    import duckdb

    from data_engine.demo import read_ground_truth

    def truth_of(uris: list[str]) -> dict[str, list[dict]]:
        try:
            return read_ground_truth(warehouse_path, model, uris)
        except duckdb.IOException as error:  # a selection run holds the warehouse's write lock
            raise ReviewerUnavailable(f"the demo warehouse {warehouse_path} is busy ({str(error)[:200]}); the next pass tries again") from error

    if not warehouse_path.exists():
        raise ReviewerUnavailable(f"no demo warehouse at {warehouse_path}: the reviewer corrects toward its ground truth; run `data-engine demo-data`")
    model_config = config.models[model]
    return review_open_frames(
        backend,
        model_config.annotation.project_name_for(model),
        model,
        list(model_config.classes),
        truth_of,
        settings,
        home,
    )
