"""The annotation backend on CVAT, through cvat-sdk (2.80, for CVAT servers 2.80 and 2.81).

Only this module imports cvat_sdk, and only resource methods import this module, so loading the code
location stays cheap. Every HTTP call goes through `_call`: a socket timeout, backoff with jitter on
429 / 5xx / connection errors (`retry.with_retries`), and an error that names the task and the request.
Background requests (task data) are polled here with an outer deadline, never with the SDK's
unbounded `wait_for_completion`.

Idempotency: task names are the keys. `ensure_task` looks the task up by name before creating it,
uploads data only to a task that has none (or waits for the upload already running), assigns only
jobs without an assignee, and sends shapes only for frames without `auto` shapes. Shapes of one frame
always travel in one PATCH, so "frames with auto shapes" is exactly what earlier requests delivered.

CVAT may apply a write after the client's timeout. Before resending a timed-out write, the client waits
`late_write_settle_s` and looks again; an original that lands even later can only leave extra copies
of our own auto shapes (same frame, label, points and score as planned), which every run removes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from cvat_sdk import Client, Config, models
from cvat_sdk.api_client.exceptions import ApiException
from cvat_sdk.core.client import AccessTokenCredentials
from cvat_sdk.core.helpers import make_request_headers
from cvat_sdk.core.uploading import DataUploader

from data_engine.annotation.backend import (
    AnnotationBackend,
    AnnotationError,
    Box,
    ProjectInfo,
    RequestTimeout,
    TaskFrame,
    TaskOutcome,
    TaskPage,
    TaskPlan,
    TaskPosition,
    TaskSnapshot,
    oldest_project,
    rectangle,
)
from data_engine.annotation.cvat_export import read_export
from data_engine.annotation.naming import is_prediction_label, prediction_label
from data_engine.annotation.retry import (
    Deadline,
    RetriesExhausted,
    RetryPolicy,
    Transient,
    settle_then_recheck,
    with_retries,
)
from data_engine.annotation.tasks import cloud_key, frame_path
from data_engine.config.models import AnnotationConfig, CvatSettings

T = TypeVar("T")
SUPPORTED_SERVER_MINORS = ("2.80", "2.81")
PAGE_SIZE = 500
MAX_PAGES = 200
EXPORT_FORMAT = "COCO 1.0"


# CVAT cloud storage provider -> the frame URIs' scheme.
CLOUD_SCHEMES = {"AWS_S3_BUCKET": "s3", "GOOGLE_CLOUD_STORAGE": "gs"}


def classify(error: BaseException) -> Transient | None:
    """Transient: HTTP 429 and 5xx (with the server's Retry-After), dropped connections, timeouts."""
    if isinstance(error, ApiException):
        status = error.status or 0
        if status == 429 or status >= 500:
            retry_after = None
            raw = (error.headers or {}).get("Retry-After") if error.headers is not None else None
            try:
                retry_after = float(raw) if raw is not None else None
            except ValueError:
                retry_after = None
            return Transient(f"HTTP {status} {error.reason or ''}".strip(), retry_after)
        return None
    if isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return Transient(f"{type(error).__name__}: {error}")
    return None


def timed_out(error: BaseException) -> bool:
    """The request may still be running on the server (its answer, not the request, was lost)."""
    return isinstance(error, (urllib3.exceptions.TimeoutError, TimeoutError))


def shape_key(frame: int, label_id: int, points: list[float], score: float) -> tuple:
    """What makes an auto shape one of ours: a copy with the same key is a duplicate."""
    return frame, label_id, tuple(round(float(p), 3) for p in points), round(float(score), 4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CvatProject(ProjectInfo):
    """A model's CVAT project, with what its tasks need: label ids and the model's `annotation.cvat` settings."""

    label_ids: dict[str, int]
    settings: CvatSettings
    cloud_storage_id: int | None  # None: frames are uploaded from the local object root
    jobs_per_task: int  # jobs of a full task, so each day task's round robin of assignees goes on from the last


def shape_batches(
    frames: Sequence[TaskFrame], pending: Iterable[int], label_ids: dict[str, int], batch_size: int
) -> Iterable[tuple[list[int], list[dict]]]:
    """Shapes (CVAT LabeledShapeRequest fields, source=auto with the score) of the `pending` frame
    indices, in batches of whole frames holding at most `batch_size` shapes (one frame with more
    shapes makes a batch of its own). A frame's shapes are never split across two requests, so
    "frames with auto shapes" tells exactly which batches landed."""
    batch_frames: list[int] = []
    batch: list[dict] = []
    for index in sorted(pending):
        frame = frames[index]
        shapes = [
            {
                "type": "rectangle",
                "frame": index,
                "label_id": label_ids[box.class_name],
                "points": rectangle(box, frame),
                "source": "auto",
                "score": box.score,
            }
            for box in frame.boxes
            if box.class_name in label_ids
        ]
        if not shapes:
            continue
        if batch and len(batch) + len(shapes) > batch_size:
            yield batch_frames, batch
            batch_frames, batch = [], []
        batch_frames.append(index)
        batch.extend(shapes)
    if batch:
        yield batch_frames, batch


def local_files(objects_root: Path, frames: Sequence[TaskFrame], staging: Path) -> list[Path]:
    """Hard links (copies across file systems) named like the task's frames to the local images
    (frame_path), for upload; cvat-sdk follows symlinks to the target's name, so no symlinks."""
    paths = []
    for frame in frames:
        source = frame_path(objects_root, frame.uri)
        if not source.is_file():
            raise FileNotFoundError(f"frame {frame.uri}: no local image at {source}")
        link = staging / frame.name
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)
        paths.append(link)
    return paths


def iso(value: dt.datetime) -> str:
    """CVAT's timestamp format (UTC, microseconds), for `updated_date` filters."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _detail(error: BaseException) -> str:
    """A short reason: status and the server's `detail` (never request headers, so never the token)."""
    if isinstance(error, ApiException):
        body = error.body.decode(errors="replace") if isinstance(error.body, bytes) else str(error.body or "")
        try:
            body = json.loads(body).get("detail", body)
        except (ValueError, AttributeError):
            pass
        return f"HTTP {error.status}: {str(body)[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


class CvatBackend(AnnotationBackend):
    def __init__(
        self,
        url: str,
        access_token: str,
        *,
        org: str | None = None,
        objects_root: Path | None = None,
        request_timeout_s: float = 60.0,
        poll_period_s: float = 2.0,
        request_deadline_s: float = 900.0,
        late_write_settle_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        logger: logging.Logger | None = None,
        check_version: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.objects_root = objects_root
        self.request_timeout_s = request_timeout_s
        self.poll_period_s = poll_period_s
        self.request_deadline_s = request_deadline_s
        self.late_write_settle_s = late_write_settle_s
        self.retry = retry
        self.log = logger or logging.getLogger(__name__)
        self.client = Client(self.url, config=Config(status_check_period=poll_period_s), check_server_version=False)
        self.client.login(AccessTokenCredentials(access_token))
        if org:
            self.client.organization_slug = org
        self.api = self.client.api_client
        self._users: dict[str, int] = {}
        self._storages: dict[int, Any] = {}
        self.server_version = None
        if not check_version:
            return
        self.server_version = str(self._call("GET /api/server/about", self.api.server_api.retrieve_about).version)
        if not self.server_version.startswith(tuple(m + "." for m in SUPPORTED_SERVER_MINORS)):
            self.log.warning(
                f"CVAT server {self.url} runs {self.server_version}; this cvat-sdk supports {', '.join(SUPPORTED_SERVER_MINORS)}"
            )

    def close(self) -> None:
        self.client.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args, before_retry=None, write: bool = False, **kwargs) -> Any:
        """One API call (cvat-sdk low-level, returning (data, response)) with timeout and retries.

        A `write` that timed out may still be applied by the server: the retry first waits
        `late_write_settle_s` so that the re-check (`before_retry`, or `fn` looking before it writes)
        sees it."""

        def attempt():
            result = fn(*args, _request_timeout=self.request_timeout_s, **kwargs)
            return result[0] if isinstance(result, tuple) else result

        settle = settle_then_recheck(
            what, write=write, timed_out=timed_out, settle_s=self.late_write_settle_s, log=self.log, recheck=before_retry
        )
        try:
            return with_retries(attempt, what=what, classify=classify, policy=self.retry, before_retry=settle)
        except RetriesExhausted as error:
            raise AnnotationError(f"CVAT {self.url}: {error}") from error.__cause__
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            raise AnnotationError(f"CVAT {self.url}: {what} failed: {_detail(error)}") from error

    def _all(self, what: str, fn: Callable[..., Any], **filters) -> list[Any]:
        results: list[Any] = []
        for page in range(1, MAX_PAGES + 1):
            data = self._call(f"{what} (page {page})", fn, page=page, page_size=PAGE_SIZE, **filters)
            results.extend(data.results)
            if not data.next:
                return results
        raise AnnotationError(f"CVAT {self.url}: {what} returned more than {MAX_PAGES * PAGE_SIZE} items")

    def wait_for_request(self, rq_id: str, what: str) -> Any:
        """Poll GET /api/requests/{rq_id} until finished, failed, or the outer deadline."""
        deadline = Deadline(self.request_deadline_s)
        pause = self.poll_period_s
        while True:
            request = self._call(f"{what}: GET /api/requests/{rq_id}", self.api.requests_api.retrieve, rq_id)
            status = str(request.status)
            if status == "finished":
                return request
            if status == "failed":
                raise AnnotationError(f"{what}: CVAT request {rq_id!r} failed: {request.message}")
            if deadline.remaining() < pause:
                raise RequestTimeout(
                    f"{what}: CVAT request {rq_id!r} is still {status} after {self.request_deadline_s:.0f}s"
                    " (request_deadline_s); check the CVAT workers, then re-run: the task is resumed, not duplicated"
                )
            time.sleep(pause)
            pause = min(pause * 1.5, 30.0)

    # --- projects -----------------------------------------------------------------------------

    def ensure_project(self, model: str, classes: list[str], config: AnnotationConfig) -> CvatProject:
        """The model's project, after checking its `annotation.cvat` settings (a cloud storage unless frames
        are uploaded; assignees that are users of this CVAT), so a bad setting makes nothing."""
        name = config.project_name_for(model)
        settings = config.cvat
        cloud_storage_id = None if self.objects_root is not None else settings.cloud_storage_id
        if self.objects_root is None and cloud_storage_id is None:
            raise AnnotationError(
                f"models.{model}.annotation.cvat.cloud_storage_id is not set: frames in S3/GCS are attached through a CVAT"
                " cloud storage; register the bucket in CVAT (Cloud Storages) and put its id in the fleet config"
            )
        for username in settings.assignees:
            self._user_id(username, f"models.{model}.annotation.cvat.assignees")
        projects_api = self.api.projects_api

        def named() -> list[int]:
            return sorted(p.id for p in self._call(f"project {name!r}: GET /api/projects", projects_api.list, name=name).results if p.name == name)

        made = None
        if not named():
            spec = models.ProjectWriteRequest(
                name=name, labels=[models.PatchedLabelRequest(name=c, type="rectangle") for c in classes]
            )
            # A POST that failed on the way back may have created the project: look again before retrying.
            project = self._call(
                f"project {name!r}: POST /api/projects", lambda **kw: None if named() else projects_api.create(spec, **kw), write=True
            )
            made = project.id if project is not None else None
        ids = named()
        if made is not None and made != min(ids):
            # Another run made the project at the same moment (a backfill of several days of one model): all
            # settle on the oldest, and the maker of a newer one deletes it, still empty.
            self._call(f"project {name!r}: DELETE /api/projects/{made} (a copy)", projects_api.destroy, made)
            ids.remove(made)
        project_id = oldest_project(f"CVAT {self.url}", name, ids, self.log)
        created = project_id == made
        labels, added = self._with_labels(project_id, name, classes)
        extra = tuple(sorted(label.name for label in labels if label.name not in classes and not is_prediction_label(label.name)))
        if extra:
            self.log.warning(f"CVAT project {name!r} (id {project_id}) has labels not in the config, kept: {list(extra)}")
        return CvatProject(
            id=project_id,
            name=name,
            url=f"{self.url}/projects/{project_id}",
            labels=tuple(label.name for label in labels),
            labels_added=tuple(added) if not created else (),
            labels_not_in_config=extra,
            created=created,
            label_ids={label.name: label.id for label in labels},
            settings=settings,
            cloud_storage_id=cloud_storage_id,
            jobs_per_task=-(-config.max_frames_per_task // settings.segment_size),
        )

    def _with_labels(self, project_id: int, name: str, wanted: list[str]) -> tuple[list[Any], list[str]]:
        """The project's labels once those of `wanted` it lacks are added (as rectangles), and the ones added."""
        labels = self._all(f"project {name!r}: GET /api/labels", self.api.labels_api.list, project_id=project_id)
        existing = {label.name for label in labels}
        added = [c for c in wanted if c not in existing]
        if added:
            self._call(
                f"project {name!r} (id {project_id}): PATCH /api/projects/{project_id} (add labels {added})",
                self.api.projects_api.partial_update,
                project_id,
                patched_project_write_request=models.PatchedProjectWriteRequest(
                    labels=[models.PatchedLabelRequest(name=c, type="rectangle") for c in added]
                ),
            )
            labels = self._all(f"project {name!r}: GET /api/labels", self.api.labels_api.list, project_id=project_id)
        return labels, added

    # --- tasks --------------------------------------------------------------------------------

    def ensure_task(self, project: ProjectInfo, plan: TaskPlan) -> TaskOutcome:
        if not isinstance(project, CvatProject):
            raise TypeError(f"task {plan.name!r}: pass the project CvatBackend.ensure_project returned, not a {type(project).__name__}")
        tasks_api = self.api.tasks_api
        steps: list[str] = []
        where = f"task {plan.name!r}"

        def find():
            found = [
                t
                for t in self._call(f"{where}: GET /api/tasks?name=", tasks_api.list, name=plan.name, project_id=project.id).results
                if t.name == plan.name
            ]
            if len(found) > 1:
                keep = min(found, key=lambda t: (not t.size, t.id))  # the oldest task with data
                extra = sorted(t.id for t in found if t is not keep)
                raise AnnotationError(
                    f"CVAT {self.url}: {len(found)} tasks are named {plan.name!r} in project {project.name!r}"
                    f" (e.g. a creation CVAT applied after the client's timeout): delete task(s) {extra} and keep"
                    f" task {keep.id} ({'the oldest with data' if keep.size else 'the oldest'}), then re-run"
                )
            return found[0] if found else None

        task = find()
        if task is None:
            spec = models.TaskWriteRequest(name=plan.name, project_id=project.id, segment_size=project.settings.segment_size)
            task = self._call(f"{where}: POST /api/tasks", lambda **kw: find() or tasks_api.create(spec, **kw), write=True)
            steps.append("created")
        where = f"task {plan.name!r} (id {task.id})"
        if not task.size:
            self._attach_data(task.id, where, plan, project)
            task = self._call(f"{where}: GET /api/tasks/{task.id}", tasks_api.retrieve, task.id)
            steps.append("data")
        self._check_frames(task.id, where, plan)
        jobs = sorted(
            self._all(f"{where}: GET /api/jobs", self.api.jobs_api.list, task_id=task.id, type="annotation"),
            key=lambda job: job.start_frame,
        )
        if self._assign(jobs, where, plan, project):
            steps.append("assignees")
        project, plan = self._with_prediction_group(project, plan)
        uploaded, total, removed = self._upload_shapes(task.id, where, plan, project)
        if uploaded:
            steps.append("shapes")
        if removed:
            steps.append(f"{removed} duplicates removed")
        return TaskOutcome(
            task_id=task.id,
            name=plan.name,
            url=f"{self.url}/tasks/{task.id}",
            frames=int(task.size),
            shapes_uploaded=uploaded,
            shapes_total=total,
            steps=steps,
        )

    def _with_prediction_group(self, project: CvatProject, plan: TaskPlan) -> tuple[CvatProject, TaskPlan]:
        """The plan's prediction group as auto shapes of the labels `prediction:<class>`, which the project
        gets when it lacks them: the reviewer sees (and can hide) the model's boxes beside the editable class
        shapes, and the merge drops them from the export. A frame's shapes of both groups travel together."""
        if not any(frame.predictions for frame in plan.frames):
            return project, plan

        def shown(box: Box) -> Box:
            return dataclasses.replace(box, class_name=prediction_label(box.class_name))

        frames = tuple(
            dataclasses.replace(frame, boxes=frame.boxes + tuple(map(shown, frame.predictions)), predictions=())
            for frame in plan.frames
        )
        needed = sorted({box.class_name for frame in frames for box in frame.boxes if is_prediction_label(box.class_name)})
        if set(needed) - set(project.label_ids):
            labels, _ = self._with_labels(project.id, project.name, needed)
            project = dataclasses.replace(
                project, labels=tuple(label.name for label in labels), label_ids={label.name: label.id for label in labels}
            )
        return project, dataclasses.replace(plan, frames=frames)

    def _pending_data_request(self, task_id: int, where: str) -> str | None:
        requests = self._call(
            f"{where}: GET /api/requests", self.api.requests_api.list, task_id=task_id, action="create", target="task"
        ).results
        running = [r for r in requests if str(r.status) in ("queued", "started")]
        return running[0].id if running else None

    def _attach_data(self, task_id: int, where: str, plan: TaskPlan, project: CvatProject) -> None:
        """Attach the frames, or wait for the upload an earlier (crashed) run already started."""
        rq_id = self._pending_data_request(task_id, where)
        if rq_id is None:
            settings, storage_id = project.settings, project.cloud_storage_id
            data: dict[str, Any] = {"image_quality": settings.image_quality, "sorting_method": "predefined"}
            if storage_id is not None:
                self._check_storage(storage_id, where, plan)
                keys = [frame.name for frame in plan.frames]
                if settings.manifest and len(keys) >= settings.manifest_min_frames:
                    keys.append(settings.manifest)
                request = models.DataRequest(server_files=keys, cloud_storage_id=storage_id, use_cache=True, **data)
                what = f"{where}: POST /api/tasks/{task_id}/data (cloud storage {storage_id})"
                post = lambda: self.api.tasks_api.create_data(  # noqa: E731
                    task_id, data_request=request, _request_timeout=self.request_timeout_s
                )[0].rq_id
            else:
                what = f"{where}: POST /api/tasks/{task_id}/data (upload of {len(plan.frames)} files)"
                post = lambda: self._upload_files(task_id, plan, data)  # noqa: E731
            tries = [0]

            def start(**_kw) -> str | None:
                # After a failed try, the server may have taken the data anyway: look before resending.
                if tries[0]:
                    if self.api.tasks_api.retrieve(task_id, _request_timeout=self.request_timeout_s)[0].size:
                        return None
                    pending = self._pending_data_request(task_id, where)
                    if pending is not None:
                        return pending
                tries[0] += 1
                return post()

            rq_id = self._call(what, start, write=True)
        if rq_id is not None:
            self.wait_for_request(rq_id, f"{where}: data")

    def _upload_files(self, task_id: int, plan: TaskPlan, data: dict[str, Any]) -> str:
        """Upload from the object root (a project without a cloud storage has one: ensure_project)."""
        assert self.objects_root is not None
        url = self.client.api_map.make_endpoint_url(self.api.tasks_api.create_data_endpoint.path, kwsub={"id": task_id})
        with tempfile.TemporaryDirectory(prefix="cvat-upload-") as staging:
            paths = local_files(self.objects_root, plan.frames, Path(staging))
            response = DataUploader(self.client).upload_files(url, paths, **data)
            return json.loads(response.data)["rq_id"]

    def _storage(self, storage_id: int, where: str) -> Any:
        if storage_id not in self._storages:
            self._storages[storage_id] = self._call(
                f"{where}: GET /api/cloudstorages/{storage_id}", self.api.cloudstorages_api.retrieve, storage_id
            )
        return self._storages[storage_id]

    def _check_storage(self, storage_id: int, where: str, plan: TaskPlan) -> None:
        storage = self._storage(storage_id, where)
        buckets = {cloud_key(frame.uri)[0] for frame in plan.frames}
        if buckets != {storage.resource}:
            raise AnnotationError(
                f"{where}: the frames are in bucket(s) {sorted(buckets)} but CVAT cloud storage {storage_id}"
                f" ({storage.display_name!r}) is bucket {storage.resource!r}; fix the model's annotation.cvat.cloud_storage_id"
            )

    def _check_frames(self, task_id: int, where: str, plan: TaskPlan) -> None:
        meta = self._call(f"{where}: GET /api/tasks/{task_id}/data/meta", self.api.tasks_api.retrieve_data_meta, task_id)
        names = [frame.name for frame in meta.frames]
        expected = [frame.name for frame in plan.frames]
        if names != expected:
            first = next((i for i, (a, b) in enumerate(zip(names, expected, strict=False)) if a != b), min(len(names), len(expected)))
            raise AnnotationError(
                f"{where} holds {len(names)} frames that differ from the {len(expected)} planned for it (first difference"
                f" at frame {first}); the candidates changed after the task was made. Delete the task in CVAT and re-run"
            )

    def _user_id(self, username: str, where: str) -> int:
        if username not in self._users:
            found = [u for u in self._call(f"{where}: GET /api/users", self.api.users_api.list, username=username).results if u.username == username]
            if not found:
                raise AnnotationError(
                    f"{where}: assignee {username!r} is not a user of CVAT {self.url}; add the user in CVAT or remove"
                    " the name from annotation.cvat.assignees, then re-run"
                )
            self._users[username] = found[0].id
        return self._users[username]

    def _assign(self, jobs: list[Any], where: str, plan: TaskPlan, project: CvatProject) -> bool:
        """Round robin over the configured usernames, going on across the day's tasks (each earlier one is
        full: plan_tasks); a job someone already assigned is left alone."""
        assignees = project.settings.assignees
        first_job = plan.day_index * project.jobs_per_task
        changed = False
        for position, job in enumerate(jobs):
            if not assignees or job.assignee is not None:
                continue
            username = assignees[(first_job + position) % len(assignees)]
            self._call(
                f"{where}: PATCH /api/jobs/{job.id} (assignee {username})",
                self.api.jobs_api.partial_update,
                job.id,
                patched_job_write_request=models.PatchedJobWriteRequest(assignee=self._user_id(username, where)),
            )
            changed = True
        return changed

    def _auto_shapes(self, task_id: int, where: str) -> list[Any]:
        data = self._call(f"{where}: GET /api/tasks/{task_id}/annotations", self.api.tasks_api.retrieve_annotations, task_id)
        return [shape for shape in data.shapes if str(shape.source) == "auto"]

    def _upload_shapes(self, task_id: int, where: str, plan: TaskPlan, project: CvatProject) -> tuple[int, int, int]:
        """(shapes uploaded, auto shapes on the task now, duplicate auto shapes removed)."""
        label_ids = project.label_ids
        missing = {box.class_name for frame in plan.frames for box in frame.boxes} - set(label_ids)
        if missing:
            raise AnnotationError(f"{where}: classes {sorted(missing)} have no label in the project")
        planned = Counter(
            shape_key(shape["frame"], shape["label_id"], shape["points"], shape["score"])
            for _, shapes in shape_batches(plan.frames, range(len(plan.frames)), label_ids, 1)
            for shape in shapes
        )
        auto, removed = self._remove_duplicates(task_id, where, self._auto_shapes(task_id, where), planned)
        done = {shape.frame for shape in auto}
        pending = [i for i in range(len(plan.frames)) if i not in done]
        uploaded, late = 0, [False]
        for number, (frames, shapes) in enumerate(
            shape_batches(plan.frames, pending, label_ids, project.settings.annotation_batch_size), start=1
        ):
            what = f"{where}: shapes batch {number} (frames {frames[0]}-{frames[-1]})"
            uploaded += self._patch_shapes(task_id, what, shapes, late)
        if not late[0]:
            return uploaded, len(auto) + uploaded, removed
        # An upload that timed out may have landed after its resend: look once more.
        time.sleep(self.late_write_settle_s)
        auto, removed_now = self._remove_duplicates(task_id, where, self._auto_shapes(task_id, where), planned)
        return uploaded, len(auto), removed + removed_now

    def _patch_shapes(self, task_id: int, what: str, shapes: list[dict], late: list[bool]) -> int:
        """PATCH ?action=create, retried safely: before resending, frames that got their shapes after
        all (a request applied by the server whose answer was lost, or applied late) are dropped from
        the batch. `late[0]` is set when a try timed out, since it may still land after the resend."""
        batch = {"shapes": shapes}

        def recheck(error: BaseException) -> None:
            late[0] = late[0] or timed_out(error)
            done = {shape.frame for shape in self._auto_shapes(task_id, what)}
            batch["shapes"] = [shape for shape in batch["shapes"] if shape["frame"] not in done]

        def send(**kw):
            if not batch["shapes"]:
                return 0
            request = models.PatchedLabeledDataRequest(
                shapes=[models.LabeledShapeRequest(**shape) for shape in batch["shapes"]]
            )
            self.api.tasks_api.partial_update_annotations("create", task_id, patched_labeled_data_request=request, **kw)
            return len(batch["shapes"])

        return self._call(
            f"{what}: PATCH /api/tasks/{task_id}/annotations?action=create", send, before_retry=recheck, write=True
        )

    def _remove_duplicates(self, task_id: int, where: str, auto: list[Any], planned: Counter) -> tuple[list[Any], int]:
        """Delete the copies of our planned auto shapes beyond the planned number (the newest ones), left by
        an upload CVAT applied after its resend; return the auto shapes left and how many were deleted.
        Other shapes (a reviewer's, other sources, auto shapes we did not plan) are not touched."""
        seen: Counter = Counter()
        extra = []
        for shape in sorted(auto, key=lambda s: s.id):
            key = shape_key(shape.frame, shape.label_id, shape.points, shape.score)
            seen[key] += 1
            if key in planned and seen[key] > planned[key]:
                extra.append(shape)
        if not extra:
            return auto, 0
        ids = {shape.id for shape in extra}

        def still_there(_error: BaseException) -> None:
            ids.intersection_update(shape.id for shape in self._auto_shapes(task_id, where))

        def delete(**kw) -> None:
            shapes = [
                models.LabeledShapeRequest(
                    id=shape.id, type=shape.type, frame=shape.frame, label_id=shape.label_id, points=shape.points
                )
                for shape in extra
                if shape.id in ids
            ]
            if shapes:
                self.api.tasks_api.partial_update_annotations(
                    "delete", task_id, patched_labeled_data_request=models.PatchedLabeledDataRequest(shapes=shapes), **kw
                )

        self._call(
            f"{where}: PATCH /api/tasks/{task_id}/annotations?action=delete ({len(extra)} duplicate auto shapes)",
            delete,
            before_retry=still_there,
            write=True,
        )
        self.log.warning(f"{where}: removed {len(extra)} duplicate auto shape(s) left by a request CVAT applied late")
        removed = {shape.id for shape in extra}
        return [shape for shape in auto if shape.id not in removed], len(extra)

    # --- export ---------------------------------------------------------------------------------

    def cloud_frame_uris(self, task_id: int) -> dict[str, str] | None:
        """A cloud-storage task's frames are named by their keys in the storage's bucket: s3://bucket/key
        (gs:// for Google Cloud Storage). None for uploaded frames or another provider (Azure)."""
        where = f"task {task_id}"
        task = self._call(f"{where}: GET /api/tasks/{task_id}", self.api.tasks_api.retrieve, task_id)
        storage_id = getattr(task, "data_cloud_storage_id", None)
        if storage_id is None:
            return None
        storage = self._storage(storage_id, where)
        scheme = CLOUD_SCHEMES.get(str(storage.provider_type))
        if scheme is None:
            return None
        meta = self._call(f"{where}: GET /api/tasks/{task_id}/data/meta", self.api.tasks_api.retrieve_data_meta, task_id)
        return {frame.name: f"{scheme}://{storage.resource}/{frame.name}" for frame in meta.frames}

    def export_task_coco(self, task_id: int) -> dict[str, Any]:
        """POST /api/tasks/{id}/dataset/export (COCO 1.0, save_images=false), poll the request with the
        outer deadline, download its result_url through the SDK's REST client (auth headers, retries), and
        read the COCO out of the zip (ExportError for a broken one).

        CVAT reuses an identical export still running, so a retried POST does not queue a second one.
        """
        where = f"task {task_id}"
        started = self._call(
            f"{where}: POST /api/tasks/{task_id}/dataset/export (COCO 1.0, without images)",
            self.api.tasks_api.create_dataset_export,
            format=EXPORT_FORMAT,
            id=task_id,
            save_images=False,
        )
        rq_id = started.rq_id
        request = self.wait_for_request(rq_id, f"{where}: export")
        url = getattr(request, "result_url", None)
        if not url:
            raise AnnotationError(
                f"{where}: CVAT request {rq_id!r} finished without a result_url (was the export sent to a cloud"
                " storage? this pipeline exports to location=local)"
            )

        def download(**kw) -> bytes:
            response = self.api.rest_client.GET(url, headers=make_request_headers(self.api), _parse_response=True, **kw)
            return response.data

        data = self._call(f"{where}: download of the export of CVAT request {rq_id!r}", download)
        self.log.info(f"{where}: exported {len(data)} bytes ({EXPORT_FORMAT}, request {rq_id!r})")
        return read_export(data, task_id)

    # --- listing for the review sensor ----------------------------------------------------------

    @staticmethod
    def _snapshot(task: Any) -> TaskSnapshot:
        return TaskSnapshot(
            id=task.id,
            name=task.name,
            updated_date=task.updated_date,
            project_id=task.project_id,
            frame_count=int(task.size or 0),
            # every job in stage acceptance with state completed: CVAT derives a job's status `completed`
            # from exactly that pair, and TaskRead.jobs counts the completed jobs
            accepted=int(task.jobs.count) > 0 and int(task.jobs.completed) == int(task.jobs.count),
        )

    def tasks_updated_after(self, position: TaskPosition | None, limit: int) -> TaskPage:
        filters: dict[str, Any] = {}
        if position is not None:
            at = iso(position.updated_date)
            filters["filter"] = json.dumps(
                {
                    "or": [
                        {">": [{"var": "updated_date"}, at]},
                        {"and": [{"==": [{"var": "updated_date"}, at]}, {">": [{"var": "id"}, position.task_id]}]},
                    ]
                }
            )
        page = self._call(
            "GET /api/tasks (updated since the sensor cursor)",
            self.api.tasks_api.list,
            sort="updated_date,id",
            page_size=limit,
            page=1,
            **filters,
        )
        return TaskPage(tasks=[self._snapshot(task) for task in page.results], more=bool(page.next))

    def tasks_by_id(self, task_ids: list[int]) -> list[TaskSnapshot]:
        if not task_ids:
            return []
        page = self._call(
            f"GET /api/tasks (ids {task_ids})",
            self.api.tasks_api.list,
            filter=json.dumps({"in": [{"var": "id"}, list(task_ids)]}),
            sort="updated_date,id",
            page_size=len(task_ids),
            page=1,
        )
        return [self._snapshot(task) for task in page.results]
