"""The annotation backend on Label Studio (1.23, community edition), through its REST API.

Label Studio's unit of work is one image, so a review batch (what the pipeline calls a task: a named
chunk of a model-day) is the set of Label Studio tasks of the model's project whose data carry the
batch's name in `review_batch`. Each Label Studio task holds one frame: its image (served by Label
Studio from the local object root), its frame URI and name, and the model's boxes as a prediction
(pre-annotations). The batch's id is derived from its name (`batch_id`), so it never changes while
frames come and go.

Label Studio has no review stage: a batch is reviewed when every frame has a submitted annotation (a
draft is not one; a skipped frame is not one either). Idempotency: the batch name is the key; a
re-run imports only the frames the batch lacks, and removes extra copies of a frame that an import
applied after the client's timeout left behind (copies nobody has annotated).

The review sensor's cursor is a keyset position over Label Studio tasks (updated_at, id), merged over
the projects (one request each), so each tick reads a bounded page of changed frames and then the
batches they belong to.

Projects are found by title, and Label Studio lets two share one: our runs make a model's project one at
a time (a lock file), and delete the copy Label Studio itself leaves when it re-runs a POST that met its
SQLite database locked.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from data_engine.annotation.backend import (
    AnnotationBackend,
    AnnotationError,
    ProjectInfo,
    TaskOutcome,
    TaskPage,
    TaskPlan,
    TaskPosition,
    TaskSnapshot,
    oldest_project,
    rectangle,
)
from data_engine.annotation.naming import PREDICTION_GROUP, prediction_label
from data_engine.annotation.retry import RetriesExhausted, RetryPolicy, Transient, settle_then_recheck, with_retries
from data_engine.annotation.tasks import frame_path
from data_engine.config.models import AnnotationConfig

PAGE_SIZE = 500
MAX_PAGES = 200
CONTROL = "label"  # the RectangleLabels control of our projects' labeling config
PREDICTION_CONTROL = PREDICTION_GROUP  # a second one, for a re-review's prediction group (never labels)
IMAGE = "image"


def batch_id(name: str) -> int:
    """A review batch's id: stable for its name (52 bits, so it survives JSON and JavaScript)."""
    return int(hashlib.sha256(name.encode()).hexdigest()[:13], 16)


def labeling_config(classes: Iterable[str], predicted: Iterable[str] = ()) -> str:
    """Label Studio's labeling config: the image and one rectangle label per class; with `predicted`
    classes, a second control under a header, for the model's predictions a re-review shows."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=IMAGE, value=f"${IMAGE}", zoom="true")
    control = ET.SubElement(view, "RectangleLabels", name=CONTROL, toName=IMAGE)
    for name in classes:
        ET.SubElement(control, "Label", value=name)
    predicted = list(predicted)
    if predicted:
        ET.SubElement(view, "Header", value="Model predictions, to compare: never saved as labels")
        group = ET.SubElement(view, "RectangleLabels", name=PREDICTION_CONTROL, toName=IMAGE)
        for name in predicted:
            ET.SubElement(group, "Label", value=name)
    return ET.tostring(view, encoding="unicode")


def config_labels(config: str, project: str, control_name: str = CONTROL) -> list[str]:
    """The rectangle labels of a control of a project's labeling config (the class labels by default), in
    order; [] for a prediction group the project does not have yet."""
    try:
        root = ET.fromstring(config)
    except ET.ParseError as error:
        raise AnnotationError(f"Label Studio project {project!r}: its labeling config is not XML ({error})") from None
    control = root.find(f".//RectangleLabels[@name='{control_name}']")
    if control is None and control_name == PREDICTION_CONTROL:
        return []
    if control is None:
        raise AnnotationError(
            f"Label Studio project {project!r} has no <RectangleLabels name={CONTROL!r}> in its labeling config;"
            " it was not made by data-engine: rename it or set the model's project_name"
        )
    return [label.get("value", "") for label in control.findall("Label")]


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def classify(error: BaseException) -> Transient | None:
    """Transient: HTTP 429 and 5xx (with the server's Retry-After), dropped connections, timeouts."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 429 or status >= 500:
            try:
                retry_after = float(error.response.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = None
            return Transient(f"HTTP {status}", retry_after)
        return None
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return Transient(f"{type(error).__name__}: {str(error)[:200]}")
    return None


def _detail(error: BaseException) -> str:
    """Status and the server's message (never the request, so never the token)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code}: {error.response.text[:300]}"
    return f"{type(error).__name__}: {str(error)[:300]}"


def _submitted(task: dict) -> bool:
    """A frame is reviewed once it has a submitted annotation (drafts and skips are not counted)."""
    return int(task.get("total_annotations") or 0) > 0


class LabelStudioBackend(AnnotationBackend):
    def __init__(
        self,
        url: str,
        token: str,
        *,
        objects_root: Path,
        document_root: Path | None = None,
        request_timeout_s: float = 60.0,
        late_write_settle_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        logger: logging.Logger | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.objects_root = objects_root.resolve()
        # Label Studio serves files under its document root ($DATA_ENGINE_HOME for `data-engine annotation-server`).
        self.document_root = (document_root or self.objects_root.parent).resolve()
        self.request_timeout_s = request_timeout_s
        self.late_write_settle_s = late_write_settle_s
        self.retry = retry
        self.log = logger or logging.getLogger(__name__)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self._project_titles: dict[int, str] | None = None

    def close(self) -> None:
        self.session.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs) -> Any:
        response = self.session.request(method, f"{self.url}{path}", timeout=self.request_timeout_s, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None

    def _retrying(self, what: str, attempt, *, write: bool = False, before_retry=None) -> Any:
        """`attempt` with retries; a `write` that timed out may still land, so the retry first waits
        `late_write_settle_s` and `before_retry` (or `attempt` itself) looks again."""

        settle = settle_then_recheck(
            what,
            write=write,
            timed_out=lambda error: isinstance(error, requests.Timeout),
            settle_s=self.late_write_settle_s,
            log=self.log,
            recheck=before_retry,
        )
        try:
            return with_retries(attempt, what=what, classify=classify, policy=self.retry, before_retry=settle)
        except RetriesExhausted as error:
            raise AnnotationError(f"Label Studio {self.url}: {error}") from error.__cause__
        except requests.RequestException as error:
            raise AnnotationError(f"Label Studio {self.url}: {what} failed: {_detail(error)}") from error

    def _request(self, method: str, path: str, what: str, *, write: bool = False, before_retry=None, **kwargs) -> Any:
        """One call with a timeout and retries."""
        return self._retrying(what, lambda: self._send(method, path, **kwargs), write=write, before_retry=before_retry)

    def _pages(self, path: str, what: str, key: str, params: dict[str, Any]) -> list[dict]:
        results: list[dict] = []
        for page in range(1, MAX_PAGES + 1):
            data = self._request("GET", path, f"{what} (page {page})", params={**params, "page": page, "page_size": PAGE_SIZE})
            items = data[key] if isinstance(data, dict) else data
            results.extend(items)
            total = data.get("total", data.get("count")) if isinstance(data, dict) else len(items)
            if len(items) < PAGE_SIZE or total is None or len(results) >= int(total):
                return results
        raise AnnotationError(f"Label Studio {self.url}: {what} returned more than {MAX_PAGES * PAGE_SIZE} items")

    def _tasks(self, project_id: int, what: str, filters: list[dict], *, fields: str = "task_only", **params) -> list[dict]:
        """Tasks of a project matching Data Manager filters, oldest update first."""
        query = {"filters": {"conjunction": "and", "items": filters}, "ordering": ["tasks:updated_at"]}
        return self._pages(
            "/api/tasks", what, "tasks", {"project": project_id, "fields": fields, "query": json.dumps(query), **params}
        )

    @staticmethod
    def _data_equals(field: str, value: str) -> dict:
        return {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String", "value": value}

    @contextmanager
    def _creating_projects(self) -> Iterator[None]:
        """Our runs find or make projects one at a time, as Label Studio has no make-if-absent. It runs on this
        machine (it serves the frames under its document root), so a lock file there spans all our runs."""
        with open(self.document_root / ".data-engine-projects.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _project_ids(self, name: str) -> list[int]:
        """The projects called `name`, listed afresh."""
        self._project_titles = None
        return sorted(pid for pid, title in self._projects().items() if title == name)

    def _projects(self) -> dict[int, str]:
        if self._project_titles is None:
            projects = self._pages("/api/projects", "GET /api/projects", "results", {})
            self._project_titles = {int(p["id"]): p["title"] for p in projects}
        return self._project_titles

    # --- projects -----------------------------------------------------------------------------

    def ensure_project(self, model: str, classes: list[str], config: AnnotationConfig) -> ProjectInfo:
        """The model's project; Label Studio has no settings of its own in the model's config."""
        name = config.project_name_for(model)
        with self._creating_projects():
            made = None
            if not self._project_ids(name):
                spec = {"title": name, "label_config": labeling_config(classes), "maximum_annotations": 1}
                # A POST that failed on the way back may have made the project: look again before resending.
                made = self._retrying(
                    f"project {name!r}: POST /api/projects",
                    lambda: None if self._project_ids(name) else int(self._send("POST", "/api/projects", json=spec)["id"]),
                    write=True,
                )
            named = self._project_ids(name)
            if made is not None:
                # Label Studio on SQLite re-runs a request that met a locked database, and a project the failed
                # attempt saved stays: a copy older than ours, made while our POST ran (our other runs wait).
                for copy in [project_id for project_id in named if project_id < made]:
                    self._request("DELETE", f"/api/projects/{copy}", f"project {name!r}: DELETE /api/projects/{copy} (a copy)")
                named = [project_id for project_id in named if project_id >= made]
            project_id = oldest_project(f"Label Studio {self.url}", name, named, self.log)
        project = self._request("GET", f"/api/projects/{project_id}", f"project {name!r}: GET")
        created = project_id == made
        labels = config_labels(project["label_config"], name)
        added = [c for c in classes if c not in labels]
        if added:
            labels = labels + added
            self._request(
                "PATCH",
                f"/api/projects/{project['id']}",
                f"project {name!r}: PATCH labeling config (add labels {added})",
                json={"label_config": labeling_config(labels, config_labels(project["label_config"], name, PREDICTION_CONTROL))},
            )
        extra = tuple(label for label in labels if label not in classes)
        if extra:
            self.log.warning(f"Label Studio project {name!r} (id {project['id']}) has labels not in the config, kept: {list(extra)}")
        self._ensure_frame_storage(project["id"], name)
        return ProjectInfo(
            id=int(project["id"]),
            name=name,
            url=f"{self.url}/projects/{project['id']}/data",
            labels=tuple(labels),
            labels_added=tuple(added) if not created else (),
            labels_not_in_config=extra,
            created=created,
        )

    def _ensure_frame_storage(self, project_id: int, name: str) -> None:
        """Label Studio serves a local file only to projects with a local storage above it."""
        storages = self._request("GET", "/api/storages/localfiles", f"project {name!r}: GET storages", params={"project": project_id})
        if any(Path(s["path"]) == self.objects_root for s in storages):
            return
        self._request(
            "POST",
            "/api/storages/localfiles",
            f"project {name!r}: POST /api/storages/localfiles",
            json={"project": project_id, "path": str(self.objects_root), "title": "data-engine frames", "use_blob_urls": False},
        )

    # --- review batches -----------------------------------------------------------------------

    def _batch(self, project_id: int, name: str, *, fields: str = "task_only") -> list[dict]:
        return self._tasks(project_id, f"batch {name!r}: GET /api/tasks", [self._data_equals("review_batch", name)], fields=fields)

    def _frame_task(self, plan: TaskPlan, index: int, project: ProjectInfo) -> dict:
        frame = plan.frames[index]
        path = frame_path(self.objects_root, frame.uri)
        if not path.is_file():
            raise FileNotFoundError(f"frame {frame.uri}: no local image at {path}")
        groups = ((CONTROL, [b for b in frame.boxes if b.class_name in project.labels]), (PREDICTION_CONTROL, frame.predictions))
        result = [
            region(box.class_name, rectangle(box, frame), frame.width, frame.height, control) | {"score": box.score}
            for control, boxes in groups
            for box in boxes
        ]
        task: dict[str, Any] = {
            "data": {
                IMAGE: f"/data/local-files/?d={path.relative_to(self.document_root).as_posix()}",
                "frame_uri": frame.uri,
                "frame_name": frame.name,
                "width": frame.width,
                "height": frame.height,
                "review_batch": plan.name,
                "review_batch_id": str(batch_id(plan.name)),
                "position": index,
            }
        }
        if result:
            task["predictions"] = [{"model_version": "data-engine", "score": min(b["score"] for b in result), "result": result}]
        return task

    def ensure_task(self, project: ProjectInfo, plan: TaskPlan) -> TaskOutcome:
        where = f"batch {plan.name!r}"
        planned = {frame.uri: index for index, frame in enumerate(plan.frames)}
        steps: list[str] = []
        existing = self._batch(project.id, plan.name)
        unknown = sorted({t["data"].get("frame_uri") for t in existing} - set(planned))
        if unknown:
            raise AnnotationError(
                f"Label Studio {self.url}: {where} has {len(unknown)} frame(s) that are not this partition's candidates"
                f" (e.g. {unknown[:3]}; were the candidates re-selected?): delete the batch's tasks in project"
                f" {project.name!r} (Data Manager, filter review_batch = {plan.name}) and re-run"
            )
        removed = self._remove_copies(existing, where)
        if removed:
            steps.append(f"{removed} duplicates removed")
        present = {t["data"]["frame_uri"] for t in existing}
        missing = [planned[uri] for uri in planned if uri not in present]
        uploaded = 0
        if missing:
            self._ensure_prediction_group(project, plan)
            payload = [self._frame_task(plan, index, project) for index in missing]

            def look_again(error: BaseException) -> None:
                """An import that failed on the way back may have landed: send only what is still missing."""
                landed = {t["data"]["frame_uri"] for t in self._batch(project.id, plan.name)}
                payload[:] = [task for task in payload if task["data"]["frame_uri"] not in landed]

            self._retrying(
                f"{where}: POST /api/projects/{project.id}/import ({len(missing)} frames)",
                lambda: self._send("POST", f"/api/projects/{project.id}/import", json=payload) if payload else None,
                write=True,
                before_retry=look_again,
            )
            uploaded = sum(len(t.get("predictions", [{}])[0].get("result", [])) for t in payload)
            steps.append("created" if not existing else "frames added")
            existing = self._batch(project.id, plan.name)
            removed = self._remove_copies(existing, where)
            if removed:
                steps.append(f"{removed} duplicates removed")
        return TaskOutcome(
            task_id=batch_id(plan.name),
            name=plan.name,
            url=project.url,
            frames=len({t["data"]["frame_uri"] for t in existing}),
            shapes_uploaded=uploaded,
            shapes_total=sum(int(t.get("total_predictions") or 0) for t in existing),
            steps=steps,
        )

    def _ensure_prediction_group(self, project: ProjectInfo, plan: TaskPlan) -> None:
        """Give the project the prediction control, with a label for each class the plan's predictions name,
        before they are imported (Label Studio checks predictions against the labeling config)."""
        needed = sorted({box.class_name for frame in plan.frames for box in frame.predictions})
        if not needed:
            return
        where = f"project {project.name!r} (id {project.id})"
        config = self._request("GET", f"/api/projects/{project.id}", f"{where}: GET")["label_config"]
        predicted = config_labels(config, project.name, PREDICTION_CONTROL)
        added = [name for name in needed if name not in predicted]
        if added:
            self._request(
                "PATCH",
                f"/api/projects/{project.id}",
                f"{where}: PATCH labeling config (prediction group {added})",
                json={"label_config": labeling_config(config_labels(config, project.name), predicted + added)},
            )

    def _remove_copies(self, tasks: list[dict], where: str) -> int:
        """Delete extra copies of a frame (a late-applied import), keeping the oldest and any annotated one.
        `tasks` is updated in place."""
        by_uri: dict[str, list[dict]] = defaultdict(list)
        for task in tasks:
            by_uri[task["data"]["frame_uri"]].append(task)
        removed = 0
        for copies in by_uri.values():
            keep = min(copies, key=lambda t: (not _submitted(t), t["id"]))
            for task in copies:
                if task is keep or _submitted(task) or int(task.get("cancelled_annotations") or 0):
                    continue
                self._request("DELETE", f"/api/tasks/{task['id']}", f"{where}: DELETE /api/tasks/{task['id']} (a copy)")
                tasks.remove(task)
                removed += 1
        return removed

    def _snapshot(self, project_id: int, name: str, frames: list[dict]) -> TaskSnapshot:
        return TaskSnapshot(
            id=batch_id(name),
            name=name,
            updated_date=max(parse_time(t["updated_at"]) for t in frames),
            project_id=project_id,
            frame_count=len(frames),
            accepted=bool(frames) and all(_submitted(t) for t in frames),  # every frame submitted
        )

    def tasks_updated_after(self, position: TaskPosition | None, limit: int) -> TaskPage:
        """The batches of the first `limit` frames changed past `position` (over all projects), and the
        position of the last of those frames."""
        after = (position.updated_date, position.task_id) if position else None
        filters = []
        if position is not None:
            filters = [{"filter": "filter:tasks:updated_at", "operator": "greater_or_equal", "type": "Datetime", "value": iso(position.updated_date)}]
        changed: list[tuple[dt.datetime, int, int, dict]] = []
        cut = None  # a project with more changes than one page: nothing past its last frame is certain
        for project_id in sorted(self._projects()):
            query = {"filters": {"conjunction": "and", "items": filters}, "ordering": ["tasks:updated_at"]}
            data = self._request(
                "GET",
                "/api/tasks",
                f"GET /api/tasks (project {project_id}, changed frames)",
                params={"project": project_id, "fields": "task_only", "query": json.dumps(query), "page": 1, "page_size": limit + 1},
            )
            rows = [(parse_time(t["updated_at"]), int(t["id"]), project_id, t) for t in data["tasks"]]
            rows = [row for row in rows if after is None or row[:2] > after]
            changed.extend(rows)
            if len(data["tasks"]) > limit and rows:
                last = max(row[:2] for row in rows)
                cut = last if cut is None else min(cut, last)
        changed.sort(key=lambda row: row[:2])
        if cut is not None:
            changed = [row for row in changed if row[:2] <= cut]
        more = cut is not None or len(changed) > limit
        changed = changed[:limit]
        next_position = TaskPosition(changed[-1][0], changed[-1][1]) if changed else position
        batches = {(project_id, t["data"]["review_batch"]) for _, _, project_id, t in changed if t["data"].get("review_batch")}
        snapshots = []
        for project_id, name in sorted(batches):
            frames = self._batch(project_id, name)
            # A batch is reported by the page holding its latest change, so each of its states is seen once.
            if frames and max((parse_time(t["updated_at"]), int(t["id"])) for t in frames) <= changed[-1][:2]:
                snapshots.append(self._snapshot(project_id, name, frames))
        snapshots.sort(key=lambda s: (s.updated_date, s.id))
        return TaskPage(tasks=snapshots, more=more, next_position=next_position)

    def _find_batches(self, task_ids: list[int]) -> dict[int, tuple[int, str, list[dict]]]:
        """batch id -> (project id, name, its Label Studio tasks) for the batches that exist."""
        found: dict[int, tuple[int, str, list[dict]]] = {}
        for task_id in task_ids:
            for project_id in sorted(self._projects()):
                frames = self._tasks(
                    project_id, f"batch {task_id}: GET /api/tasks", [self._data_equals("review_batch_id", str(task_id))], fields="all"
                )
                if frames:
                    found[task_id] = (project_id, frames[0]["data"]["review_batch"], frames)
                    break
        return found

    def tasks_by_id(self, task_ids: list[int]) -> list[TaskSnapshot]:
        return [self._snapshot(pid, name, frames) for pid, name, frames in self._find_batches(task_ids).values()]

    def export_task_coco(self, task_id: int) -> dict[str, Any]:
        """The batch's submitted annotations as COCO, images named by their frame name."""
        found = self._find_batches([task_id]).get(task_id)
        if found is None:
            raise AnnotationError(f"Label Studio {self.url}: batch {task_id} has no tasks (deleted?)")
        project_id, name, frames = found
        project = self._request("GET", f"/api/projects/{project_id}", f"batch {name!r}: GET project {project_id}")
        categories = {label: index for index, label in enumerate(config_labels(project["label_config"], project["title"]), start=1)}
        return coco_of_frames(frames, categories, f"batch {name!r}")

    # --- acting as a person in the UI (the simulated reviewer) ----------------------------------

    def open_frames(self, project_name: str) -> list[dict]:
        """The project's frames nobody has submitted yet (skipped ones included), with their predictions,
        oldest update first; [] when the project does not exist."""
        frames = []
        for project_id in self._project_ids(project_name):
            no_annotation = {"filter": "filter:tasks:total_annotations", "operator": "equal", "type": "Number", "value": 0}
            frames += self._tasks(project_id, f"project {project_name!r}: GET open frames", [no_annotation], fields="all")
        return [frame for frame in frames if not _submitted(frame)]

    def submit_frame(self, task: dict, regions: list[dict], *, skipped: bool = False, lead_time_s: float = 1.0) -> None:
        """Submit a frame's annotation (`regions` from `region`), or skip it (a cancelled annotation), as the
        UI's Submit and Skip buttons do; `task` as `open_frames` lists it. A POST whose answer was lost is
        not sent twice."""

        def annotations() -> int:
            found = self._send("GET", f"/api/tasks/{task['id']}")
            return int(found.get("total_annotations") or 0) + int(found.get("cancelled_annotations") or 0)

        before = int(task.get("total_annotations") or 0) + int(task.get("cancelled_annotations") or 0)
        sent: list[bool] = []

        def attempt() -> Any:
            if sent and annotations() > before:
                return None  # the earlier POST landed after all
            sent.append(True)
            body = {"result": regions, "was_cancelled": skipped, "lead_time": lead_time_s}
            return self._send("POST", f"/api/tasks/{task['id']}/annotations", json=body)

        self._retrying(f"frame task {task['id']}: POST annotation", attempt, write=True)

    def delete_frame(self, task_id: int) -> None:
        """Remove a frame from its review batch (a reviewer rejecting an unusable frame)."""
        self._request("DELETE", f"/api/tasks/{task_id}", f"frame task {task_id}: DELETE")


def frame_boxes(task: dict) -> list[tuple[str, float, float, float, float]]:
    """A frame task's first prediction as (label, x_min, y_min, x_max, y_max) in pixels (its class labels,
    not a prediction group)."""
    width, height = int(task["data"]["width"]), int(task["data"]["height"])
    boxes = []
    for prediction in (task.get("predictions") or [])[:1]:
        for item in prediction.get("result") or []:
            if item.get("from_name", CONTROL) != CONTROL:
                continue
            value = item["value"]
            x, y = value["x"] * width / 100, value["y"] * height / 100
            boxes.append((value["rectanglelabels"][0], x, y, x + value["width"] * width / 100, y + value["height"] * height / 100))
    return boxes


def region(label: str, corners: Sequence[float], width: int, height: int, control: str = CONTROL) -> dict:
    """One rectangle of an annotation's (or a prediction's) result, from pixel corners."""
    return {
        "from_name": control,
        "to_name": IMAGE,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": _percent_box(list(corners), width, height) | {"rectanglelabels": [label]},
    }


def _percent_box(points: list[float], width: int, height: int) -> dict[str, float]:
    x1, y1, x2, y2 = points
    return {"x": 100 * x1 / width, "y": 100 * y1 / height, "width": 100 * (x2 - x1) / width, "height": 100 * (y2 - y1) / height, "rotation": 0}


def coco_of_frames(frames: list[dict], categories: dict[str, int], where: str) -> dict:
    """COCO of the frames' latest submitted annotations (pixel boxes); frames without one are left out."""
    coco: dict[str, Any] = {
        "categories": [{"id": i, "name": label, "supercategory": ""} for label, i in categories.items()],
        "images": [],
        "annotations": [],
    }
    for frame in sorted(frames, key=lambda t: int(t["data"].get("position", 0))):
        submitted = [a for a in frame.get("annotations") or [] if not a.get("was_cancelled")]
        if not submitted:
            continue
        annotation = max(submitted, key=lambda a: (a.get("updated_at") or "", a["id"]))
        width, height = int(frame["data"]["width"]), int(frame["data"]["height"])
        image_id = len(coco["images"]) + 1
        coco["images"].append({"id": image_id, "file_name": frame["data"]["frame_name"], "width": width, "height": height})
        for region in annotation.get("result") or []:
            if region.get("type") != "rectanglelabels":
                continue
            value = region["value"]
            if value.get("rotation"):
                raise AnnotationError(
                    f"{where}: frame {frame['data']['frame_uri']} has a rotated box; training labels are axis-aligned:"
                    " straighten it in Label Studio and submit again"
                )
            label = (value.get("rectanglelabels") or [None])[0]
            if region.get("from_name") == PREDICTION_CONTROL:
                label = prediction_label(label)  # a prediction group's box the reviewer left: the merge drops it
            if label not in categories:
                categories[label] = len(categories) + 1
                coco["categories"].append({"id": categories[label], "name": label, "supercategory": ""})
            box = [value["x"] * width / 100, value["y"] * height / 100, value["width"] * width / 100, value["height"] * height / 100]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": categories[label],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    return coco
