"""What the pipeline needs from an annotation tool, in its own terms (no cvat-sdk types)."""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from data_engine.config.models import AnnotationConfig


class AnnotationError(RuntimeError):
    """A call to the annotation tool failed; the message names the task / request and what to do."""


class RequestTimeout(AnnotationError):
    """A background request (task creation, export) did not finish before its deadline."""


@dataclass(frozen=True)
class Box:
    class_name: str
    score: float
    x_min: float
    y_min: float
    x_max: float
    y_max: float


@dataclass(frozen=True)
class TaskFrame:
    """One frame of a task: its URI, the name it gets in the task, its size and pre-annotations."""

    uri: str
    name: str  # cloud storage key (server file), or the uploaded file's name
    width: int
    height: int
    boxes: tuple[Box, ...] = ()
    camera_id: str | None = None  # what the splits group by, kept in the batch's record
    captured_at: dt.datetime | None = None
    # The model's predictions shown beside `boxes` as a group of their own (a label-error re-review): for
    # the reviewer to compare, never merged as labels.
    predictions: tuple[Box, ...] = ()


@dataclass(frozen=True)
class TaskPlan:
    """A review batch to make: its name and frames. `day_index` is its place among its day's batches (0 for
    the first, and for a batch of no day), for tools that share a day's work out in turn."""

    name: str
    frames: tuple[TaskFrame, ...]
    day_index: int = 0


def rectangle(box: Box, frame: TaskFrame) -> list[float]:
    """The box's corners [x1, y1, x2, y2] in pixels, clamped to the frame."""
    return [
        min(max(box.x_min, 0.0), frame.width),
        min(max(box.y_min, 0.0), frame.height),
        min(max(box.x_max, 0.0), frame.width),
        min(max(box.y_max, 0.0), frame.height),
    ]


@dataclass(frozen=True)
class ProjectInfo:
    """A model's project as `ensure_project` returns it. A backend may return a subclass carrying what its
    tasks need (label ids, the model's settings for that tool); `ensure_task` takes it back."""

    id: int
    name: str
    url: str
    labels: tuple[str, ...]  # the project's box labels
    labels_added: tuple[str, ...] = ()
    labels_not_in_config: tuple[str, ...] = ()
    created: bool = False


def oldest_project(tool: str, name: str, named: list[int], log: logging.Logger) -> int:
    """The model's project among `named`, the projects called `name`: the oldest. Copies someone made are
    kept, with a warning; review batches keep going to the oldest."""
    ids = sorted(named)
    if len(ids) > 1:
        log.warning(
            f"{tool}: {len(ids)} projects are named {name!r} (ids {ids}); review batches go to the oldest, {ids[0]}."
            " Delete or rename the others, or set the model's annotation.project_name"
        )
    return ids[0]


@dataclass
class TaskOutcome:
    task_id: int
    name: str
    url: str
    frames: int
    shapes_uploaded: int
    shapes_total: int  # pre-annotation boxes on the task after this run
    steps: list[str] = field(default_factory=list)  # what this run did, in the tool's words


@dataclass(frozen=True)
class TaskSnapshot:
    """A task as a listing shows it; enough for the review sensor without further requests."""

    id: int
    name: str
    updated_date: dt.datetime
    project_id: int | None
    frame_count: int
    accepted: bool  # reviewed and accepted, as the backend's tool defines it


@dataclass(frozen=True)
class TaskPosition:
    """A keyset position in the (updated_date, id) order of tasks: the review sensor's cursor."""

    updated_date: dt.datetime
    task_id: int


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TaskSnapshot]
    more: bool  # further tasks are past this page
    # Where the next page starts, for backends whose listing is finer than tasks (Label Studio lists changed
    # frames, then their batches); None: after the page's last task.
    next_position: TaskPosition | None = None


class AnnotationBackend(ABC):
    """An annotation tool: projects per model, tasks per batch of frames, and their review state."""

    @abstractmethod
    def ensure_project(self, model: str, classes: list[str], config: AnnotationConfig) -> ProjectInfo:
        """Find the model's project (config.project_name_for) or create it, so that every class is a box
        label. Runs making it at once settle on one; of copies, the oldest (`oldest_project`). `config` is
        the model's `annotation:` section: the backend reads and checks only its own block there, before
        anything is made, and keeps what its tasks need in the project it returns."""

    @abstractmethod
    def ensure_task(self, project: ProjectInfo, plan: TaskPlan) -> TaskOutcome:
        """Create the batch's task in the project (as `ensure_project` returned it) or resume it: frames and
        pre-annotations, never twice."""

    @abstractmethod
    def tasks_updated_after(self, position: TaskPosition | None, limit: int) -> TaskPage:
        """At most `limit` tasks past `position` in (updated_date, id) order, in that order."""

    @abstractmethod
    def tasks_by_id(self, task_ids: list[int]) -> list[TaskSnapshot]:
        """The current state of some tasks (deleted ones are left out)."""

    @abstractmethod
    def export_task_coco(self, task_id: int) -> dict[str, Any]:
        """The task's reviewed annotations as a COCO dict (images named by the tool's frame names; frames a
        reviewer deleted are left out), for `data_engine.labels` to check and merge. Waits for an export with
        an outer deadline (RequestTimeout); a failed export raises AnnotationError naming the task and the
        tool's request."""

    def cloud_frame_uris(self, task_id: int) -> dict[str, str] | None:
        """Frame name -> frame URI of a task whose frames the tool reads from a bucket (their names are the
        bucket's keys), as the tool itself says; None for a task of uploaded frames. Lets a task made by hand,
        which has no batch record, map back."""
        return None

    def close(self) -> None:  # noqa: B027 - optional
        pass

    def __enter__(self) -> AnnotationBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
