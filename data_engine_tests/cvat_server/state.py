"""The fake CVAT's database and its rules, usable directly from tests (no HTTP needed).

Every public method takes `self.lock` (re-entrant), so tests may call them while the server
thread serves requests; wrap several reads in `with state.lock:` for a consistent view.
Rules kept from CVAT: job status from stage/state, task status from its jobs, jobs cut by
segment_size, `updated_date` bumped (monotonic, microseconds) by any change to a task, its jobs
or its annotations, data/export as background requests polled through `/api/requests/{id}`.
"""

from __future__ import annotations

import io
import random
import re
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from PIL import Image

from . import coco
from .faults import Faults
from .records import (
    JOB_STAGES,
    JOB_STATES,
    SHAPE_TYPES,
    BackgroundRequest,
    CloudStorage,
    Frame,
    Job,
    Label,
    LoggedRequest,
    Project,
    Task,
    User,
)

LABEL_COLORS = ("#fa3253", "#33ddff", "#ff6037", "#34d1b7", "#b83df5", "#ddff33", "#8c78f0", "#ff007c")
MANIFEST_SUFFIX = ".jsonl"


class ApiError(Exception):
    """An error the HTTP layer renders as `status` with JSON `{"detail": ...}`."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def not_found(kind: str) -> ApiError:
    return ApiError(404, f"No {kind} matches the given query.")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class FakeCvatState:
    def __init__(
        self,
        *,
        faults: Faults | None = None,
        request_delay: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.faults = faults or Faults()
        self.request_delay = request_delay
        """Seconds a background request stays `queued` before it runs (0 = done on creation)."""
        self.clock = clock or (lambda: datetime.now(UTC))
        self.base_url = ""
        self._last_time = datetime.min.replace(tzinfo=UTC)
        self._ids: dict[str, int] = defaultdict(int)

        self.users: dict[int, User] = {}
        self.projects: dict[int, Project] = {}
        self.labels: dict[int, Label] = {}
        self.tasks: dict[int, Task] = {}
        self.jobs: dict[int, Job] = {}
        self.cloud_storages: dict[int, CloudStorage] = {}
        self.requests: dict[str, BackgroundRequest] = {}
        self.http_log: list[LoggedRequest] = []
        self.uploads: dict[int, dict[str, bytes]] = {}  # task id -> files received so far
        self.tus_uploads: dict[str, dict[str, Any]] = {}

        self.admin = self.add_user("admin", is_superuser=True)
        self.token = secrets.token_urlsafe(24)

    # --- clock and ids ------------------------------------------------------------------------

    def now(self) -> datetime:
        """Strictly increasing timestamps, so `updated_date` cursors never see ties."""
        with self.lock:
            t = self.clock()
            if t.tzinfo is None:
                t = t.replace(tzinfo=UTC)
            if t <= self._last_time:
                t = self._last_time + timedelta(microseconds=1)
            self._last_time = t
            return t

    def _next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _reserve_id(self, kind: str, wanted: int | None) -> int:
        if wanted is None:
            return self._next_id(kind)
        self._ids[kind] = max(self._ids[kind], wanted)
        return wanted

    # --- request log ----------------------------------------------------------------------------

    def log_request(self, method: str, path: str, query: dict[str, list[str]]) -> LoggedRequest:
        entry = LoggedRequest(method, path, query)
        with self.lock:
            self.http_log.append(entry)
        return entry

    def count_requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many HTTP requests matched METHOD and a `re.search` path pattern."""
        with self.lock:
            return sum(
                1
                for e in self.http_log
                if (method is None or e.method == method.upper()) and (path is None or re.search(path, e.path))
            )

    def clear_log(self) -> None:
        with self.lock:
            self.http_log.clear()

    # --- users ----------------------------------------------------------------------------------

    def add_user(self, username: str, *, first_name: str = "", last_name: str = "", is_superuser: bool = False) -> User:
        with self.lock:
            user = User(
                id=self._next_id("user"),
                username=username,
                first_name=first_name,
                last_name=last_name,
                email=f"{username}@example.com",
                is_superuser=is_superuser,
                date_joined=self.now(),
            )
            self.users[user.id] = user
            return user

    def _check_user(self, user_id: int | None) -> None:
        if user_id is not None and user_id not in self.users:
            raise ApiError(400, f"Invalid user id: {user_id}")

    # --- labels ---------------------------------------------------------------------------------

    def _make_labels(self, specs: Iterable[dict[str, Any]], *, project_id=None, task_id=None) -> None:
        owner_labels = self.labels_of(project_id=project_id, task_id=task_id)
        for spec in specs:
            if spec.get("id") is not None:
                label = self.labels.get(spec["id"])
                if label is None or label not in owner_labels:
                    raise ApiError(400, f"Label {spec['id']} does not belong to this resource")
                if spec.get("deleted"):
                    del self.labels[label.id]
                    continue
                label.name = spec.get("name", label.name)
                label.color = spec.get("color", label.color)
                continue
            if not spec.get("name"):
                raise ApiError(400, "Label name is required")
            if any(other.name == spec["name"] for other in self.labels_of(project_id=project_id, task_id=task_id)):
                raise ApiError(400, f"Label '{spec['name']}' already exists")
            label_id = self._next_id("label")
            attributes = [
                {
                    "id": self._next_id("attribute"),
                    "name": a["name"],
                    "mutable": a.get("mutable", False),
                    "input_type": a.get("input_type", "text"),
                    "default_value": a.get("default_value", ""),
                    "values": list(a.get("values", [])),
                }
                for a in spec.get("attributes", [])
            ]
            self.labels[label_id] = Label(
                id=label_id,
                name=spec["name"],
                color=spec.get("color") or LABEL_COLORS[(label_id - 1) % len(LABEL_COLORS)],
                type=spec.get("type", "any"),
                attributes=attributes,
                project_id=project_id,
                task_id=task_id,
            )

    def labels_of(self, *, project_id: int | None = None, task_id: int | None = None) -> list[Label]:
        """A task in a project uses the project's labels, as in CVAT."""
        with self.lock:
            if task_id is not None:
                task = self.get_task(task_id)
                if task.project_id is not None:
                    project_id, task_id = task.project_id, None
            if project_id is not None:
                return [lb for lb in self.labels.values() if lb.project_id == project_id]
            return [lb for lb in self.labels.values() if lb.task_id == task_id and task_id is not None]

    # --- projects -------------------------------------------------------------------------------

    def create_project(
        self, name: str, labels: Sequence[dict[str, Any]] = (), *, owner_id: int | None = None, **fields
    ) -> Project:
        with self.lock:
            now = self.now()
            project = Project(
                id=self._next_id("project"),
                name=name,
                owner_id=owner_id or self.admin.id,
                created_date=now,
                updated_date=now,
                assignee_id=fields.get("assignee_id"),
                bug_tracker=fields.get("bug_tracker", ""),
            )
            self._check_user(project.assignee_id)
            self.projects[project.id] = project
            self._make_labels(labels, project_id=project.id)
            return project

    def lookup(self, records: dict, record_id: Any, kind: str) -> Any:
        """The record with this id, or the 404 CVAT answers for a missing one of this kind."""
        with self.lock:
            if record_id not in records:
                raise not_found(kind)
            return records[record_id]

    def get_project(self, project_id: int) -> Project:
        return self.lookup(self.projects, project_id, "Project")

    def update_project(self, project_id: int, changes: dict[str, Any]) -> Project:
        with self.lock:
            project = self.get_project(project_id)
            for key in ("name", "bug_tracker", "assignee_id", "owner_id"):
                if key in changes:
                    setattr(project, key, changes[key])
            self._make_labels(changes.get("labels", []), project_id=project_id)
            project.updated_date = self.now()
            return project

    def delete_project(self, project_id: int) -> None:
        with self.lock:
            self.get_project(project_id)
            for task in [t for t in self.tasks.values() if t.project_id == project_id]:
                self.delete_task(task.id)
            for label in self.labels_of(project_id=project_id):
                del self.labels[label.id]
            del self.projects[project_id]

    # --- cloud storages -------------------------------------------------------------------------

    def add_cloud_storage(
        self,
        resource: str = "bucket",
        *,
        id: int | None = None,
        provider_type: str = "AWS_S3_BUCKET",
        credentials_type: str = "ANONYMOUS_ACCESS",
        display_name: str | None = None,
        image_sizes: dict[str, tuple[int, int]] | None = None,
        default_size: tuple[int, int] = (1920, 1080),
        **fields,
    ) -> CloudStorage:
        """Register a bucket; `image_sizes` gives (w, h) per key, others get `default_size`."""
        with self.lock:
            now = self.now()
            storage = CloudStorage(
                id=self._reserve_id("cloudstorage", id),
                provider_type=provider_type,
                resource=resource,
                display_name=display_name or resource,
                credentials_type=credentials_type,
                owner_id=fields.pop("owner_id", None) or self.admin.id,
                created_date=now,
                updated_date=now,
                image_sizes=dict(image_sizes or {}),
                default_size=default_size,
                **fields,
            )
            self.cloud_storages[storage.id] = storage
            return storage

    def get_cloud_storage(self, storage_id: int) -> CloudStorage:
        return self.lookup(self.cloud_storages, storage_id, "CloudStorage")

    # --- tasks ----------------------------------------------------------------------------------

    def create_task(
        self,
        name: str,
        *,
        project_id: int | None = None,
        labels: Sequence[dict[str, Any]] = (),
        segment_size: int = 0,
        overlap: int | None = None,
        owner_id: int | None = None,
        frames: Sequence[str | Frame] | None = None,
        frame_size: tuple[int, int] = (1920, 1080),
        **fields,
    ) -> Task:
        """Create a task; with `frames` (names or Frame) its data and jobs exist at once (no request)."""
        with self.lock:
            if project_id is not None:
                self.get_project(project_id)
                if labels:
                    raise ApiError(400, "Labels can't be set on a task inside a project; it uses the project's labels")
            now = self.now()
            task = Task(
                id=self._next_id("task"),
                name=name,
                owner_id=owner_id or self.admin.id,
                created_date=now,
                updated_date=now,
                project_id=project_id,
                segment_size=segment_size or 0,
                overlap=overlap,
                assignee_id=fields.get("assignee_id"),
                bug_tracker=fields.get("bug_tracker", ""),
                subset=fields.get("subset", ""),
            )
            self._check_user(task.assignee_id)
            self.tasks[task.id] = task
            self._make_labels(labels, task_id=task.id)
            if frames is not None:
                width, height = frame_size
                frame_list = [f if isinstance(f, Frame) else Frame(f, width, height) for f in frames]
                self._attach_data(task, frame_list, sorting_method="predefined")
            return task

    def bulk_create_tasks(
        self, count: int, *, name: str = "task-{i}", frames: Sequence[str] = ("frame_000000.jpg",), **kwargs
    ) -> list[Task]:
        """Many tasks with data and jobs, without HTTP (e.g. 10,000 for listing tests)."""
        with self.lock:
            return [self.create_task(name.format(i=i), frames=frames, **kwargs) for i in range(count)]

    def get_task(self, task_id: int) -> Task:
        return self.lookup(self.tasks, task_id, "Task")

    def touch_task(self, task: Task) -> None:
        task.updated_date = self.now()

    def update_task(self, task_id: int, changes: dict[str, Any]) -> Task:
        with self.lock:
            task = self.get_task(task_id)
            if "project_id" in changes and changes["project_id"] is not None:
                self.get_project(changes["project_id"])
            for key in ("name", "project_id", "assignee_id", "owner_id", "bug_tracker", "subset"):
                if key in changes:
                    setattr(task, key, changes[key])
            if changes.get("labels"):
                if task.project_id is not None:
                    raise ApiError(400, "Labels of a task inside a project are the project's labels")
                self._make_labels(changes["labels"], task_id=task.id)
            self.touch_task(task)
            return task

    def delete_task(self, task_id: int) -> None:
        """Also what a test calls to simulate a task deleted mid-run: later calls get 404."""
        with self.lock:
            task = self.get_task(task_id)
            for job_id in task.job_ids:
                self.jobs.pop(job_id, None)
            for label in [lb for lb in self.labels.values() if lb.task_id == task_id]:
                del self.labels[label.id]
            self.uploads.pop(task_id, None)
            del self.tasks[task_id]

    def task_status(self, task: Task) -> str:
        """CVAT's `update_task_status`: any annotation job -> annotation, any validation -> validation."""
        statuses = {self.jobs[j].status for j in task.job_ids}
        if not statuses or "annotation" in statuses:
            return "annotation"
        return "validation" if "validation" in statuses else "completed"

    # --- jobs -----------------------------------------------------------------------------------

    def get_job(self, job_id: int) -> Job:
        return self.lookup(self.jobs, job_id, "Job")

    def jobs_of(self, task_id: int) -> list[Job]:
        with self.lock:
            return [self.jobs[j] for j in self.get_task(task_id).job_ids]

    def update_job(
        self, job_id: int, *, stage: str | None = None, state: str | None = None, assignee: Any = ...
    ) -> Job:
        """PATCH /api/jobs/{id}: a new stage without a state resets the state to `new`."""
        with self.lock:
            job = self.get_job(job_id)
            if stage is not None and stage not in JOB_STAGES:
                raise ApiError(400, f"Invalid stage: {stage!r}")
            if state is not None and state not in JOB_STATES:
                raise ApiError(400, f"Invalid state: {state!r}")
            now = self.now()
            if stage is not None and stage != job.stage:
                job.stage = stage
                job.state = "new"
            if state is not None:
                job.state = state
            if assignee is not ...:
                self._check_user(assignee)
                job.assignee_id = assignee
                job.assignee_updated_date = now
            job.updated_date = now
            self.touch_task(self.tasks[job.task_id])
            return job

    def delete_frames(self, task_id: int, frames: list[int]) -> Task:
        """A reviewer deletes frames of a task (CVAT's PATCH /api/tasks/{id}/data/meta deleted_frames)."""
        with self.lock:
            task = self.get_task(task_id)
            task.deleted_frames |= set(frames)
            self.touch_task(task)
            return task

    def complete_task(self, task_id: int, *, stage: str = "acceptance", state: str = "completed") -> Task:
        """Move every job of a task to `stage`/`state` (default: reviewed and accepted)."""
        with self.lock:
            for job in self.jobs_of(task_id):
                self.update_job(job.id, stage=stage, state=state)
            return self.get_task(task_id)

    # --- task data ------------------------------------------------------------------------------

    def _attach_data(
        self,
        task: Task,
        frames: list[Frame],
        *,
        sorting_method: str,
        job_file_mapping: list[list[str]] | None = None,
        **data_fields,
    ) -> None:
        if task.data_id is not None:
            raise ApiError(400, "Adding more data is not supported")
        if job_file_mapping:
            by_name = {f.name: f for f in frames}
            try:
                frames = [by_name[name] for group in job_file_mapping for name in group]
            except KeyError as e:
                raise ApiError(400, f"job_file_mapping refers to an unknown file: {e}") from None
            segments, start = [], 0
            for group in job_file_mapping:
                segments.append((start, start + len(group) - 1))
                start += len(group)
        else:
            size = task.segment_size or len(frames)
            overlap = task.overlap or 0
            step = max(1, size - overlap)
            segments = [(s, min(s + size, len(frames)) - 1) for s in range(0, len(frames), step)]
            segments = [seg for i, seg in enumerate(segments) if i == 0 or seg[1] > segments[i - 1][1]]
        if not frames:
            raise ApiError(400, "No media data found")
        task.frames = frames
        task.data_id = self._next_id("data")
        task.sorting_method = sorting_method
        for key, value in data_fields.items():
            setattr(task, key, value)
        now = self.now()
        for start, stop in segments:
            job = Job(
                id=self._next_id("job"),
                task_id=task.id,
                start_frame=start,
                stop_frame=stop,
                created_date=now,
                updated_date=now,
            )
            self.jobs[job.id] = job
            task.job_ids.append(job.id)
        if not task.segment_size:
            task.segment_size = len(frames) if not job_file_mapping else 0
        self.touch_task(task)

    def _order(self, names: list[str], sorting_method: str, upload_order: list[str] | None) -> list[str]:
        if sorting_method == "predefined":
            if upload_order:
                position = {name: i for i, name in enumerate(upload_order)}
                return sorted(names, key=lambda n: position.get(n, len(position)))
            return names
        if sorting_method == "natural":
            return sorted(names, key=_natural_key)
        if sorting_method == "random":
            shuffled = list(names)
            random.Random(0).shuffle(shuffled)
            return shuffled
        return sorted(names)

    def _frames_from_payload(self, task: Task, payload: dict[str, Any]) -> list[Frame]:
        sorting_method = payload.get("sorting_method") or "lexicographical"
        if payload.get("client_files"):
            files: dict[str, bytes] = payload["client_files"]
            frames = []
            for name in self._order(list(files), sorting_method, payload.get("upload_file_order")):
                try:
                    width, height = Image.open(io.BytesIO(files[name])).size
                except Exception as e:  # noqa: BLE001 - CVAT reports any unreadable media the same way
                    raise ApiError(400, f"Unsupported media file {name!r}: {e}") from None
                frames.append(Frame(name, width, height))
            return frames
        names = [n for n in payload.get("server_files", []) if not n.endswith(MANIFEST_SUFFIX)]
        storage = None
        if payload.get("cloud_storage_id") is not None:
            storage = self.get_cloud_storage(payload["cloud_storage_id"])
        frames = []
        for name in self._order(names, sorting_method, None):
            size = storage.image_sizes.get(name, storage.default_size) if storage else (1920, 1080)
            frames.append(Frame(name, *size))
        return frames

    # --- background requests -------------------------------------------------------------------

    def get_request(self, rq_id: str) -> BackgroundRequest:
        return self.lookup(self.requests, rq_id, "Request")

    def start_task_data(self, task_id: int, payload: dict[str, Any]) -> BackgroundRequest:
        """POST /api/tasks/{id}/data/: queue the `create:task` request that adds frames and jobs."""
        with self.lock:
            task = self.get_task(task_id)
            if task.data_id is not None:
                raise ApiError(400, "Adding more data is not supported")
            if payload.get("cloud_storage_id") is not None:
                self.get_cloud_storage(payload["cloud_storage_id"])
            rq_id = f"action=create&target=task&target_id={task_id}"
            return self._queue(
                BackgroundRequest(
                    id=rq_id,
                    action="create",
                    target="task",
                    task_id=task_id,
                    created_date=self.now(),
                    owner_id=self.admin.id,
                    payload=payload,
                )
            )

    def start_export(self, task_id: int, fmt: str, *, save_images: bool, base_url: str) -> BackgroundRequest:
        """POST /api/tasks/{id}/dataset/export: an identical running export is reused, as in CVAT."""
        with self.lock:
            self.get_task(task_id)
            rq_id = (
                f"action=export&target=task&target_id={task_id}&subresource=dataset"
                f"&format={fmt}&user_id={self.admin.id}"
            )
            existing = self.requests.get(rq_id)
            if existing is not None and existing.status in ("queued", "started"):
                return existing
            return self._queue(
                BackgroundRequest(
                    id=rq_id,
                    action="export",
                    target="task",
                    task_id=task_id,
                    subresource="dataset",
                    format=fmt,
                    created_date=self.now(),
                    owner_id=self.admin.id,
                    payload={"save_images": save_images, "base_url": base_url},
                )
            )

    def _queue(self, request: BackgroundRequest) -> BackgroundRequest:
        self.requests[request.id] = request
        fault = self.faults.take_request_fault(request.action)
        if fault is not None:
            request.payload["fault"] = fault
        if fault is not None and fault.kind == "hang":
            request.status, request.started_date, request.progress = "started", self.now(), 0.0
        elif self.request_delay > 0:
            timer = threading.Timer(self.request_delay, self.run_request, args=(request.id,))
            timer.daemon = True
            timer.start()
        else:
            self.run_request(request.id)
        return request

    def run_request(self, rq_id: str) -> None:
        """The worker: run a queued request now (tests may call it to skip a delay)."""
        with self.lock:
            request = self.requests.get(rq_id)
            if request is None or request.status != "queued":
                return
            request.status, request.started_date = "started", self.now()
            fault = request.payload.pop("fault", None)
            try:
                if fault is not None and fault.kind == "fail":
                    raise ApiError(500, fault.message)
                if request.action == "create":
                    self._run_create(request)
                elif request.action == "export":
                    self._run_export(request, corruption=fault.kind if fault else None)
            except ApiError as e:
                request.status, request.message = "failed", e.detail
            else:
                request.status, request.progress = "finished", 1.0
            request.finished_date = self.now()
            request.payload.pop("client_files", None)

    def _run_create(self, request: BackgroundRequest) -> None:
        task = self.get_task(request.task_id)
        payload = request.payload
        frames = self._frames_from_payload(task, payload)
        self._attach_data(
            task,
            frames,
            sorting_method=payload.get("sorting_method") or "lexicographical",
            job_file_mapping=payload.get("job_file_mapping"),
            image_quality=int(payload.get("image_quality", 70)),
            chunk_size=payload.get("chunk_size"),
            cloud_storage_id=payload.get("cloud_storage_id"),
            use_cache=bool(payload.get("use_cache", False)),
        )
        request.result_id = task.id

    def _run_export(self, request: BackgroundRequest, corruption: str | None) -> None:
        task = self.get_task(request.task_id)
        request.result = coco.export_zip(coco.build_coco(task, self.labels_of(task_id=task.id)), corruption)
        request.expiry_date = self.now() + timedelta(days=1)
        request.result_url = (
            f"{request.payload['base_url']}/api/tasks/{task.id}/dataset/download?rq_id={quote(request.id, safe='')}"
        )

    # --- annotations ----------------------------------------------------------------------------

    def get_annotations(self, task_id: int) -> dict[str, Any]:
        with self.lock:
            task = self.get_task(task_id)
            return {
                "version": task.annotations_version,
                "tags": list(task.tags.values()),
                "shapes": list(task.shapes.values()),
                "tracks": list(task.tracks.values()),
            }

    def _normalize_shape(self, task: Task, raw: dict[str, Any], label_ids: set[int]) -> dict[str, Any]:
        if raw.get("type") not in SHAPE_TYPES:
            raise ApiError(400, f"Invalid shape type: {raw.get('type')!r}")
        if raw.get("label_id") not in label_ids:
            raise ApiError(400, f"Label {raw.get('label_id')} is not a label of task {task.id}")
        if not isinstance(raw.get("frame"), int) or not 0 <= raw["frame"] < max(task.size, 1):
            raise ApiError(400, f"Frame {raw.get('frame')} is out of the task's frame range")
        return {
            "id": raw.get("id"),
            "type": raw["type"],
            "frame": raw["frame"],
            "label_id": raw["label_id"],
            "group": raw.get("group") or 0,
            "source": raw.get("source", "manual"),
            "occluded": bool(raw.get("occluded", False)),
            "outside": bool(raw.get("outside", False)),
            "z_order": int(raw.get("z_order", 0)),
            "rotation": float(raw.get("rotation", 0.0)),
            "points": [float(p) for p in raw.get("points", [])],
            "attributes": list(raw.get("attributes", [])),
            "score": float(raw.get("score", 1.0)),
            "elements": list(raw.get("elements", [])),
        }

    def _normalize_tag(self, task: Task, raw: dict[str, Any], label_ids: set[int]) -> dict[str, Any]:
        if raw.get("label_id") not in label_ids:
            raise ApiError(400, f"Label {raw.get('label_id')} is not a label of task {task.id}")
        return {
            "id": raw.get("id"),
            "frame": raw["frame"],
            "label_id": raw["label_id"],
            "group": raw.get("group") or 0,
            "source": raw.get("source", "manual"),
            "attributes": list(raw.get("attributes", [])),
        }

    def change_annotations(self, task_id: int, action: str, data: dict[str, Any]) -> dict[str, Any]:
        """PUT (action='put'), PATCH ?action=create|update|delete. Returns the affected items."""
        with self.lock:
            task = self.get_task(task_id)
            if action not in ("put", "create", "update", "delete"):
                raise ApiError(400, f"Unsupported action: {action!r}")
            if data.get("tracks"):
                raise ApiError(400, "Tracks are not supported by the fake CVAT server")
            label_ids = {lb.id for lb in self.labels_of(task_id=task_id)}
            shapes = [self._normalize_shape(task, s, label_ids) for s in data.get("shapes", [])]
            tags = [self._normalize_tag(task, t, label_ids) for t in data.get("tags", [])]
            if action == "put":
                task.shapes.clear()
                task.tags.clear()
            for items, store in ((shapes, task.shapes), (tags, task.tags)):
                for item in items:
                    if action in ("put", "create"):
                        item["id"] = self._next_id("annotation")
                        store[item["id"]] = item
                    elif item["id"] not in store:
                        raise ApiError(400, f"Annotation {item['id']} does not exist")
                    elif action == "update":
                        store[item["id"]] = item
                    else:
                        del store[item["id"]]
            task.annotations_version += 1
            self.touch_task(task)
            return {"version": task.annotations_version, "tags": tags, "shapes": shapes, "tracks": []}

    def delete_annotations(self, task_id: int) -> None:
        with self.lock:
            task = self.get_task(task_id)
            task.shapes.clear()
            task.tags.clear()
            task.tracks.clear()
            task.annotations_version += 1
            self.touch_task(task)
