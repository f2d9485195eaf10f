"""The review stage on Label Studio, the local profile's annotation server: the real Label Studio 1.23
(started once per session from its own tool environment) driven through Dagster's public surfaces, with
reviewers' work done through the same REST calls Label Studio's UI makes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
import requests
import yaml

from data_engine.annotation.backend import Box, TaskFrame, TaskPlan
from data_engine.annotation.label_studio import PREDICTION_CONTROL, batch_id, config_labels
from data_engine.annotation.label_studio_server import credentials_path, ready, server_dir, stop
from data_engine.config import load_fleet_config
from data_engine.defs.cvat_resource import LabelStudioResource
from data_engine.defs.profiles import resources_for
from data_engine.labels import LabelStore
from data_engine.settings import current_settings
from data_engine_tests.conftest import TEST_FLEET
from data_engine_tests.servers.label_studio import credentials_for_tests, template
from data_engine_tests.test_cvat_review import DAY, NAMES, candidates, materialize_review_tasks
from data_engine_tests.test_training_labels import all_defs, metadata_of, run_request, tick

MODEL = "municipals"
CLASSES = TEST_FLEET["models"][MODEL]["classes"]


class Reviewer:
    """What a person does in Label Studio's UI, as the REST calls the UI makes."""

    def __init__(self, credentials):
        self.url = credentials.url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {credentials.token}"

    def get(self, path: str, **params):
        response = self.session.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body):
        response = self.session.post(f"{self.url}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def project(self, title: str) -> dict:
        (project,) = [p for p in self.get("/api/projects", page_size=100)["results"] if p["title"] == title]
        return project

    def tasks(self, project_id: int) -> list[dict]:
        return self.get("/api/tasks", project=project_id, fields="all", page_size=1000)["tasks"]

    def submit(self, task: dict, *, keep_predictions: bool = True, extra: list[dict] = ()) -> None:
        """Submit the pre-annotations (as accepted in the UI), optionally with more boxes."""
        result = [dict(r) for p in task["predictions"][:1] for r in p["result"]] if keep_predictions else []
        self.post(f"/api/tasks/{task['id']}/annotations", {"result": result + list(extra), "lead_time": 1.0})

    def save_draft(self, task: dict) -> None:
        self.post(f"/api/tasks/{task['id']}/drafts", {"result": [], "lead_time": 1.0})


def box(label: str, x: float, y: float, w: float, h: float, width: int, height: int) -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
    }


@pytest.fixture
def ls_env(local_env, prepared_home, label_studio, monkeypatch, tmp_path_factory, fleet_file) -> Path:
    """The local profile with the prepared review day and no CVAT_URL: Label Studio is the backend, for a
    fleet config without CVAT's settings (the model's `annotation.cvat` block), which Label Studio never needs."""
    shutil.copytree(prepared_home, local_env)
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    del fleet["models"][MODEL]["annotation"]["cvat"]
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    monkeypatch.delenv("CVAT_URL", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    return local_env


def ls_resources(label_studio, home: Path, tmp_path_factory, **overrides) -> dict:
    """The profile's resources with Label Studio's document root at the session's root (where it runs)."""
    resources = resources_for(current_settings(), load_fleet_config())
    assert isinstance(resources["annotation"], LabelStudioResource)  # the local profile's default without CVAT_URL
    settings = dict(
        credentials_file=str(home / "label-studio/credentials.json"),
        url=label_studio.url,
        api_key=label_studio.token,
        objects_root=str(home / "objects"),
        document_root=str(tmp_path_factory.getbasetemp()),
        retry_base_delay_s=0.01,
        late_write_settle_s=0.05,
    )
    return {**resources, "annotation": LabelStudioResource(**(settings | overrides))}


def test_review_tasks_become_pre_annotated_label_studio_tasks_and_a_rerun_changes_nothing(ls_env, label_studio, tmp_path_factory):
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    result = materialize_review_tasks(resources)
    reviewer = Reviewer(label_studio)
    project = reviewer.project("data-engine municipals")
    assert [label for label in CLASSES if f'value="{label}"' in project["label_config"]] == CLASSES
    tasks = reviewer.tasks(project["id"])
    rows = candidates(ls_env)
    assert sorted(t["data"]["frame_uri"] for t in tasks) == sorted(r["frame_uri"] for r in rows)
    by_batch = {}
    for task in tasks:
        by_batch.setdefault(task["data"]["review_batch"], []).append(task)
    assert sorted(by_batch) == NAMES and [len(by_batch[n]) for n in NAMES] == [8, 8, 4]
    first = min(by_batch[NAMES[0]], key=lambda t: t["data"]["position"])
    assert first["data"]["frame_uri"] == rows[0]["frame_uri"]  # priority order, as in CVAT
    # each prediction of a candidate is one pre-annotated box, in percent of the image
    predicted = {t["data"]["frame_uri"]: sorted(r["value"]["rectanglelabels"][0] for p in t["predictions"] for r in p["result"]) for t in tasks}
    assert predicted == {r["frame_uri"]: sorted(p["class_name"] for p in r["predictions"]) for r in rows}
    # Label Studio serves the frame image itself, from the local object root
    image = reviewer.session.get(f"{label_studio.url}{first['data']['image']}", timeout=30)
    assert image.status_code == 200
    assert image.content == (ls_env / "objects").joinpath(*rows[0]["frame_uri"].split("://", 1)[1].split("/")).read_bytes()

    metadata = metadata_of(result, "review_tasks")
    assert metadata["task_ids"] == [batch_id(n) for n in NAMES] and metadata["frames"] == 20
    frames = pq.read_table(ls_env / "objects/assets/review_tasks/municipals" / f"{DAY}.parquet").to_pylist()
    assert [r["frame_uri"] for r in frames] == [r["frame_uri"] for r in rows]

    again = materialize_review_tasks(resources)
    assert len(reviewer.tasks(project["id"])) == 20
    assert metadata_of(again, "review_tasks")["shapes_uploaded"] == 0
    assert "created" not in metadata_of(again, "review_tasks")["tasks_table"]


def test_runs_that_make_the_project_at_once_share_one_and_a_copy_made_by_hand_gets_no_batches(ls_env, label_studio, tmp_path_factory):
    """Four runs of one model (a backfill) look for the project at the same moment and make it: they settle
    on one project. A copy someone makes later is left alone; review_tasks keeps filling the oldest."""
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    config = load_fleet_config().models[MODEL]
    start = threading.Barrier(4)

    def ensure() -> int:
        with resources["annotation"].open() as backend:
            start.wait()
            return backend.ensure_project(MODEL, list(config.classes), config.annotation).id

    with ThreadPoolExecutor(4) as pool:
        ids = {future.result() for future in [pool.submit(ensure) for _ in range(4)]}
    reviewer = Reviewer(label_studio)
    project = reviewer.project("data-engine municipals")
    assert ids == {project["id"]}

    copy = reviewer.post("/api/projects", {"title": "data-engine municipals", "label_config": project["label_config"]})
    materialize_review_tasks(resources)
    assert len(reviewer.tasks(project["id"])) == 20 and reviewer.tasks(copy["id"]) == []


class ProjectPostSentTwice(BaseHTTPRequestHandler):
    """Passes requests on to Label Studio, except that it sends the first POST /api/projects twice and answers
    with the second: what Label Studio on SQLite does when the first attempt met a locked database after
    saving the project (its DatabaseIsLockedRetryMiddleware re-runs the request)."""

    upstream = ""
    sent_twice = False

    def _pass_on(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        again = self.command == "POST" and self.path == "/api/projects" and not ProjectPostSentTwice.sent_twice
        for _ in range(2 if again else 1):
            answer = requests.request(self.command, self.upstream + self.path, data=body, headers=headers, timeout=60)
        ProjectPostSentTwice.sent_twice |= again
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = do_PATCH = do_DELETE = _pass_on

    def log_message(self, *args) -> None:
        pass


def test_the_copy_label_studio_leaves_when_it_re_runs_a_project_post_is_deleted(ls_env, label_studio, tmp_path_factory):
    ProjectPostSentTwice.upstream = label_studio.url
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), ProjectPostSentTwice)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        resources = ls_resources(label_studio, ls_env, tmp_path_factory, url=f"http://127.0.0.1:{proxy.server_port}")
        result = materialize_review_tasks(resources)
    finally:
        proxy.shutdown()
    assert ProjectPostSentTwice.sent_twice
    project = Reviewer(label_studio).project("data-engine municipals")  # one project of that name, not two
    assert metadata_of(result, "review_tasks")["project"].endswith(f"/projects/{project['id']}/data")


def test_a_batch_whose_frames_are_all_submitted_becomes_a_label_version_through_the_sensor(ls_env, label_studio, tmp_path_factory):
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    config = load_fleet_config()
    defs = all_defs(config, resources)
    reviewer = Reviewer(label_studio)
    with dg.instance_for_test() as instance:
        assert materialize_review_tasks(resources).success
        project = reviewer.project("data-engine municipals")
        batch = sorted(
            (t for t in reviewer.tasks(project["id"]) if t["data"]["review_batch"] == NAMES[0]), key=lambda t: t["data"]["position"]
        )
        first = tick(defs, instance, None)
        assert first.run_requests == []
        # all frames but one submitted, the last one only drafted: not reviewed yet (no review stage in LS)
        width, height = batch[0]["data"]["width"], batch[0]["data"]["height"]
        reviewer.submit(batch[0], keep_predictions=False, extra=[box("Film", 10, 20, 30, 40, width, height)])
        for task in batch[1:-1]:
            reviewer.submit(task)
        reviewer.save_draft(batch[-1])
        drafted = tick(defs, instance, first.cursor)
        assert drafted.run_requests == []
        reviewer.submit(batch[-1])
        reviewed = tick(defs, instance, drafted.cursor)
        (request,) = reviewed.run_requests
        assert request.partition_key == MODEL
        assert [t["task_id"] for t in request.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]] == [batch_id(NAMES[0])]
        assert tick(defs, instance, reviewed.cursor).run_requests == []  # nothing new: the cursor moved past it

        merged = run_request(defs, instance, request)
        assert merged.success
        assert metadata_of(merged, "training_labels")["images"] == 8
        labels = LabelStore.local(ls_env / "labels").label_set(MODEL)
        categories = {c["id"]: c["name"] for c in labels["categories"]}
        images = {image["file_name"]: image for image in labels["images"]}
        assert set(images) == {t["data"]["frame_uri"] for t in batch}  # frame names mapped back to frame URIs
        boxes = {}
        for annotation in labels["annotations"]:
            boxes.setdefault(annotation["image_id"], []).append((categories[annotation["category_id"]], annotation["bbox"]))
        # the first frame's pre-annotations were replaced by the reviewer's one box, in pixels
        assert boxes[images[batch[0]["data"]["frame_uri"]]["id"]] == [
            ("Film", pytest.approx([0.1 * width, 0.2 * height, 0.3 * width, 0.4 * height]))
        ]
        submitted = sum(len(t["predictions"][0]["result"]) for t in batch[1:] if t["predictions"])
        assert len(labels["annotations"]) == 1 + submitted
        rereview_with_predictions_then_merge(defs, instance, reviewer, ls_env, reviewed.cursor)


def rereview_with_predictions_then_merge(defs, instance, reviewer: Reviewer, home: Path, cursor: str) -> None:
    """Three frames of the label version sent back with the model's predictions (continuing the test above,
    to spare a second setup): the current labels come under the class control, the model's boxes under the
    prediction control; submitted as pre-filled, the new version holds only the class labels."""
    store = LabelStore.local(home / "labels")
    before = store.label_set(MODEL)
    chosen = [image["file_name"] for image in before["images"]][:3]
    run_config = {"model": MODEL, "label": "with-predictions", "frame_uris": chosen, "include_predictions": True}
    job = defs.resolve_job_def("label_rereview_job")
    assert job.execute_in_process(run_config={"ops": {"rereview_batch": {"config": run_config}}}, instance=instance).success
    predicted = {row["frame_uri"]: sorted(p["class_name"] for p in row["predictions"] or []) for row in candidates(home)}
    assert any(predicted[uri] for uri in chosen)
    project = reviewer.project("data-engine municipals")
    group_config = project["label_config"].split('<RectangleLabels name="prediction" toName="image">')[1]
    assert all(f'value="{name}"' in group_config for uri in chosen for name in predicted[uri])
    batch = [t for t in reviewer.tasks(project["id"]) if t["data"]["review_batch"] == f"data-engine-{MODEL}-rereview-with-predictions"]
    groups = {
        t["data"]["frame_uri"]: sorted((r["from_name"], r["value"]["rectanglelabels"][0]) for p in t["predictions"] for r in p["result"])
        for t in batch
    }
    names = {category["id"]: category["name"] for category in before["categories"]}
    by_image = {image["file_name"]: image["id"] for image in before["images"]}
    for uri in chosen:
        current = [("label", names[a["category_id"]]) for a in before["annotations"] if a["image_id"] == by_image[uri]]
        assert groups[uri] == sorted(current + [("prediction", name) for name in predicted[uri]])

    for task in batch:
        reviewer.submit(task)
    (request,) = tick(defs, instance, cursor).run_requests
    assert run_request(defs, instance, request).success
    counts = store.manifest(MODEL, store.latest(MODEL).version)["counts"]
    assert counts["images_replaced"] == 3 and counts["annotations_changed"] == 0
    assert len(store.label_set(MODEL)["annotations"]) == len(before["annotations"])


def test_a_prediction_label_added_later_keeps_the_earlier_ones_and_the_class_labels(ls_env, label_studio, tmp_path_factory):
    """Each batch with predictions adds the classes it shows to the prediction control: a later batch with
    another class adds that one beside the earlier ones, and leaves the class control as it was."""
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    model_config = load_fleet_config().models[MODEL]
    classes = list(model_config.classes)
    rows = candidates(ls_env)[:2]
    with resources["annotation"].open(logger=logging.getLogger(__name__)) as backend:
        project = backend.ensure_project(MODEL, classes, model_config.annotation)
        for row, predicted in zip(rows, classes[:2]):
            frame = TaskFrame(
                uri=row["frame_uri"], name=Path(row["frame_uri"]).name, width=row["image_width"], height=row["image_height"],
                predictions=(Box(predicted, 0.9, 1.0, 1.0, 20.0, 20.0),),
            )
            backend.ensure_task(project, TaskPlan(f"data-engine-{MODEL}-rereview-{predicted}", (frame,)))
    config = Reviewer(label_studio).project(project.name)["label_config"]
    assert config_labels(config, project.name, PREDICTION_CONTROL) == classes[:2]
    assert config_labels(config, project.name) == classes


def test_a_rerun_adds_missing_frames_and_removes_copies_an_import_applied_late_left(ls_env, label_studio, tmp_path_factory):
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    assert materialize_review_tasks(resources).success
    reviewer = Reviewer(label_studio)
    project = reviewer.project("data-engine municipals")
    tasks = reviewer.tasks(project["id"])
    second = [t for t in tasks if t["data"]["review_batch"] == NAMES[1]]
    # a crash before the third batch's import, and an import of the second applied after the client gave up
    for task in tasks:
        if task["data"]["review_batch"] == NAMES[2]:
            reviewer.session.delete(f"{label_studio.url}/api/tasks/{task['id']}", timeout=30).raise_for_status()
    reviewer.post(f"/api/projects/{project['id']}/import", [{"data": second[0]["data"]}, {"data": second[1]["data"]}])
    reviewer.submit(second[0])  # a reviewer already works on the original: it stays

    again = materialize_review_tasks(resources)
    after = reviewer.tasks(project["id"])
    assert sorted(t["data"]["frame_uri"] for t in after) == sorted(t["data"]["frame_uri"] for t in tasks)
    assert second[0]["id"] in {t["id"] for t in after}
    table = metadata_of(again, "review_tasks")["tasks_table"]
    assert "2 duplicates removed" in table and "created" in table


def test_the_sensor_reads_a_bounded_page_per_tick_and_sees_every_batch_once(ls_env, label_studio, tmp_path_factory):
    resources = ls_resources(label_studio, ls_env, tmp_path_factory, tasks_per_tick=5)
    defs = all_defs(load_fleet_config(), resources)
    reviewer = Reviewer(label_studio)
    assert materialize_review_tasks(resources).success
    for task in reviewer.tasks(reviewer.project("data-engine municipals")["id"]):
        reviewer.submit(task)
    requested, cursor, ticks = [], None, 0
    with dg.instance_for_test() as instance:
        while True:
            result = tick(defs, instance, cursor)
            ticks += 1
            requested += [t["task_id"] for r in result.run_requests for t in r.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]]
            if result.cursor == cursor:
                break
            cursor = result.cursor
            assert ticks < 20
    assert sorted(requested) == sorted(batch_id(n) for n in NAMES)
    assert ticks >= 20 // 5  # at most 5 changed frames per tick


# --- data-engine annotation-server ---------------------------------------------------------------


def test_annotation_server_starts_label_studio_on_loopback_and_says_where_to_log_in(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(template(), server_dir(home))  # a migrated database: the first start's minutes are not this test's
    credentials = credentials_for_tests()
    credentials.save(credentials_path(home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_ENGINE_", "LABEL_STUDIO_"))} | {"DATA_ENGINE_HOME": str(home)}
    command = [str(Path(sys.executable).parent / "data-engine"), "annotation-server"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        first_line = process.stdout.readline()
        assert f"Label Studio on {credentials.url}: log in as {credentials.email}, password in {credentials_path(home)}" in first_line
        for _ in range(240):
            if ready(credentials.url) or process.poll() is not None:
                break
            time.sleep(0.5)
        assert credentials.url.startswith("http://127.0.0.1:")
        response = requests.get(f"{credentials.url}/api/projects", headers={"Authorization": f"Token {credentials.token}"}, timeout=30)
        assert response.status_code == 200
        assert requests.get(f"{credentials.url}/api/projects", timeout=30).status_code == 401  # no token, no data

        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and "is in use" in busy.stderr
    finally:
        stop(process)


# --- the fleet config's annotation section --------------------------------------------------------


def test_a_config_with_the_old_cvat_section_still_loads_with_a_deprecation_warning():
    from data_engine.config.models import FleetConfig

    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    current = FleetConfig.model_validate(fleet).models[MODEL].annotation
    old = fleet["models"][MODEL].pop("annotation")
    fleet["models"][MODEL]["cvat"] = {k: v for k, v in old.items() if k != "cvat"} | old["cvat"]  # today's flat section
    with pytest.warns(FutureWarning, match=f"models.{MODEL}.cvat is deprecated: rename it to `annotation:`"):
        assert FleetConfig.model_validate(fleet).models[MODEL].annotation == current
    fleet["models"][MODEL]["annotation"] = old
    with pytest.raises(ValueError, match=f"models.{MODEL} has both `cvat:` and `annotation:`"):
        FleetConfig.model_validate(fleet)


def test_a_model_pinned_to_the_other_backend_gets_no_tasks_and_is_told_why(ls_env, label_studio, tmp_path_factory, fleet_file):
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"][MODEL]["annotation"]["backend"] = "cvat"
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    failed = materialize_review_tasks(ls_resources(label_studio, ls_env, tmp_path_factory), raise_on_error=False)
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "models.municipals.annotation.backend is 'cvat', but this profile's annotation server is 'label_studio'" in message
    assert Reviewer(label_studio).get("/api/projects")["results"] == []
