"""Plain records the fake CVAT keeps in memory.

They hold only what CVAT stores; everything CVAT derives (job and task status, summaries, URLs)
is computed by `state.py` / `serializers.py`, so tests can change a record and see the derived
values follow, as they would on a real server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JOB_STAGES = ("annotation", "validation", "acceptance")
JOB_STATES = ("new", "in progress", "completed", "rejected")
SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")


@dataclass
class User:
    id: int
    username: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    is_superuser: bool = False
    date_joined: datetime | None = None


@dataclass
class Label:
    id: int
    name: str
    color: str
    type: str = "any"
    attributes: list[dict[str, Any]] = field(default_factory=list)
    project_id: int | None = None
    task_id: int | None = None


@dataclass
class Project:
    id: int
    name: str
    owner_id: int | None
    created_date: datetime
    updated_date: datetime
    assignee_id: int | None = None
    bug_tracker: str = ""


@dataclass
class Frame:
    name: str
    width: int
    height: int


@dataclass
class CloudStorage:
    """A registered bucket. `image_sizes` stands in for the bucket's objects: key -> (w, h)."""

    id: int
    provider_type: str
    resource: str
    display_name: str
    credentials_type: str
    owner_id: int | None
    created_date: datetime
    updated_date: datetime
    specific_attributes: str = ""
    description: str = ""
    manifests: list[str] = field(default_factory=list)
    image_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    default_size: tuple[int, int] = (1920, 1080)


@dataclass
class Job:
    id: int
    task_id: int
    start_frame: int
    stop_frame: int
    created_date: datetime
    updated_date: datetime
    stage: str = "annotation"
    state: str = "new"
    assignee_id: int | None = None
    assignee_updated_date: datetime | None = None
    type: str = "annotation"

    @property
    def status(self) -> str:
        """CVAT's rule (JobWriteSerializer.update): only acceptance+completed is `completed`."""
        if self.stage == "annotation":
            return "annotation"
        if self.stage == "acceptance" and self.state == "completed":
            return "completed"
        return "validation"

    @property
    def frame_count(self) -> int:
        return self.stop_frame - self.start_frame + 1


@dataclass
class Task:
    id: int
    name: str
    owner_id: int | None
    created_date: datetime
    updated_date: datetime
    project_id: int | None = None
    assignee_id: int | None = None
    bug_tracker: str = ""
    subset: str = ""
    segment_size: int = 0
    overlap: int | None = None
    # data (set once the data request completes)
    data_id: int | None = None
    frames: list[Frame] = field(default_factory=list)
    image_quality: int = 70
    chunk_size: int | None = None
    cloud_storage_id: int | None = None
    sorting_method: str = "lexicographical"
    use_cache: bool = False
    job_ids: list[int] = field(default_factory=list)
    deleted_frames: set[int] = field(default_factory=set)  # frame indices a reviewer deleted
    # annotations (LabeledData)
    annotations_version: int = 0
    shapes: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    tracks: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.frames)


@dataclass
class BackgroundRequest:
    """An RQ job as `/api/requests` shows it. `result` holds the export archive bytes."""

    id: str
    action: str  # create | export | import
    target: str  # task | project | job
    task_id: int | None
    created_date: datetime
    owner_id: int | None
    subresource: str | None = None  # dataset | annotations | backup
    format: str | None = None
    status: str = "queued"  # queued | started | finished | failed
    message: str = ""
    progress: float | None = None
    started_date: datetime | None = None
    finished_date: datetime | None = None
    expiry_date: datetime | None = None
    result_url: str | None = None
    result_id: int | None = None
    result: bytes | None = None
    # what the worker will do, kept until it runs
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def operation_type(self) -> str:
        return f"{self.action}:{self.subresource or self.target}"


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int | None = None
    received_at: float = field(default_factory=time.monotonic)  # when the request arrived (monotonic clock)
