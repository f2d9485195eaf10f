"""The fake CVAT server, driven by the real cvat-sdk over loopback HTTP."""

from __future__ import annotations

import json
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import urllib3
from cvat_sdk import make_client, models
from cvat_sdk.api_client import exceptions
from cvat_sdk.core.exceptions import BackgroundRequestException
from cvat_sdk.core.filters import F, all_, any_
from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
from cvat_sdk.core.proxies.tasks import ResourceType
from cvat_sdk.core.uploading import DataUploader
from PIL import Image

from data_engine_tests.cvat_server import running_cvat_server


@pytest.fixture
def server():
    with running_cvat_server() as srv:
        yield srv


@pytest.fixture
def client(server):
    with server.make_client(status_check_period=0.01) as c:
        yield c


@pytest.fixture
def project(client):
    return client.projects.create(
        models.ProjectWriteRequest(
            name="municipals",
            labels=[models.PatchedLabelRequest(name="car"), models.PatchedLabelRequest(name="person")],
        )
    )


def cloud_task(client, server, project, keys, *, name="batch-1", segment_size=2, sorting="predefined", storage_id=3):
    storage = server.state.cloud_storages.get(storage_id) or server.state.add_cloud_storage(
        "frames-bucket", id=storage_id
    )
    return client.tasks.create_from_data(
        models.TaskWriteRequest(name=name, project_id=project.id, segment_size=segment_size),
        resources=keys,
        resource_type=ResourceType.SHARE,
        data_params={"cloud_storage_id": storage.id, "use_cache": True, "sorting_method": sorting},
    )


def png(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, "white").save(path)
    return path


def rectangle(label_id, frame, points, **kw):
    return models.LabeledShapeRequest(type="rectangle", frame=frame, label_id=label_id, points=points, **kw)


# --- server basics ------------------------------------------------------------------------------


def test_about_is_public_and_everything_else_needs_the_token(server):
    http = urllib3.PoolManager(retries=False)
    about = http.request("GET", f"{server.url}/api/server/about")
    assert about.status == 200 and json.loads(about.data)["version"] == "2.80.0"
    assert http.request("GET", f"{server.url}/api/tasks").status == 401
    wrong = http.request("GET", f"{server.url}/api/tasks", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    legacy = http.request("GET", f"{server.url}/api/tasks", headers={"Authorization": f"Token {server.token}"})
    assert legacy.status == 200
    missing = http.request("GET", f"{server.url}/api/nothing", headers={"Authorization": f"Token {server.token}"})
    assert missing.status == 404 and "detail" in json.loads(missing.data)

    with make_client(server.url, access_token="wrong") as bad_client:
        with pytest.raises(exceptions.UnauthorizedException):
            bad_client.tasks.list()


def test_sdk_sees_a_supported_server_version(server, caplog):
    with make_client(server.url, access_token=server.token) as c:
        assert str(c.get_server_version()) == "2.80.0"
    assert "not compatible" not in caplog.text


def test_projects_labels_and_users(server, client, project):
    assert [lb.name for lb in project.get_labels()] == ["car", "person"]
    project.update(models.PatchedProjectWriteRequest(labels=[models.PatchedLabelRequest(name="truck")]))
    assert [lb.name for lb in project.get_labels()] == ["car", "person", "truck"]
    with pytest.raises(exceptions.ApiException) as dup:
        project.update(models.PatchedProjectWriteRequest(labels=[models.PatchedLabelRequest(name="car")]))
    assert dup.value.status == 400

    client.projects.create(models.ProjectWriteRequest(name="other"))
    assert [p.id for p in client.projects.list(name="municipals")] == [project.id]
    assert client.projects.retrieve(project.id).name == "municipals"

    reviewer = server.state.add_user("reviewer")
    assert client.users.retrieve_current_user().username == "admin"
    assert {u.username for u in client.users.list()} == {"admin", "reviewer"}
    assert client.users.list(username="reviewer")[0].id == reviewer.id


# --- task creation ------------------------------------------------------------------------------


def test_create_task_from_cloud_storage_keeps_predefined_order_and_cuts_jobs(server, client, project):
    server.state.add_cloud_storage("frames-bucket", id=3, image_sizes={"cam1/b.jpg": (640, 480)})
    server.state.clear_log()
    keys = ["cam1/c.jpg", "cam1/b.jpg", "cam1/a.jpg", "cam1/manifest.jsonl"]
    task = cloud_task(client, server, project, keys, segment_size=2)

    trace = [(e.method, e.path) for e in server.state.http_log]
    assert trace[:3] == [
        ("POST", "/api/tasks"),
        ("POST", "/api/tasks/1/data"),
        ("GET", "/api/requests/action=create&target=task&target_id=1"),
    ]
    assert task.size == 3 and task.status == "annotation" and task.data_cloud_storage_id == 3
    frames = task.get_meta().frames
    assert [(f.name, f.width, f.height) for f in frames] == [
        ("cam1/c.jpg", 1920, 1080),
        ("cam1/b.jpg", 640, 480),
        ("cam1/a.jpg", 1920, 1080),
    ]
    assert task.jobs.count == 2 and task.jobs.completed == 0 and task.jobs.validation == 0
    jobs = task.get_jobs()  # newest first, like CVAT
    assert [(j.start_frame, j.stop_frame) for j in jobs] == [(2, 2), (0, 1)]
    assert all(j.stage == "annotation" and j.state == "new" and j.status == "annotation" for j in jobs)
    assert [lb.name for lb in task.get_labels()] == ["car", "person"]  # inherited from the project

    sorted_task = cloud_task(
        client, server, project, ["b.jpg", "a10.jpg", "a2.jpg"], name="b2", sorting="lexicographical"
    )
    assert [f.name for f in sorted_task.get_meta().frames] == ["a10.jpg", "a2.jpg", "b.jpg"]


def test_create_task_from_local_files(client, tmp_path):
    files = [png(tmp_path / "z.png", (30, 20)), png(tmp_path / "a.png", (40, 10))]
    spec = models.TaskWriteRequest(name="local", labels=[models.PatchedLabelRequest(name="car")])
    by_name = client.tasks.create_from_data(spec, resources=files)
    assert [(f.name, f.width, f.height) for f in by_name.get_meta().frames] == [("a.png", 40, 10), ("z.png", 30, 20)]
    kept = client.tasks.create_from_data(spec, resources=files, data_params={"sorting_method": "predefined"})
    assert [f.name for f in kept.get_meta().frames] == ["z.png", "a.png"]

    with pytest.raises(exceptions.ApiException) as again:
        kept.upload_data(files)
    assert again.value.status == 400


def test_tus_upload_of_large_files(server, client, tmp_path):
    files = [png(tmp_path / "one.png", (12, 8)), png(tmp_path / "two.png", (5, 6))]
    task = client.tasks.create(models.TaskWriteRequest(name="tus", labels=[models.PatchedLabelRequest(name="car")]))
    url = client.api_map.make_endpoint_url(task.api.create_data_endpoint.path, kwsub={"id": task.id})
    response = DataUploader(client, max_request_size=1).upload_files(url, files, image_quality=70)
    client.wait_for_completion(json.loads(response.data)["rq_id"], status_check_period=0.01)
    assert [(f.name, f.width) for f in task.get_meta().frames] == [("one.png", 12), ("two.png", 5)]
    assert server.state.count_requests("PATCH", r"/api/tasks/\d+/data/\w+") == 2


# --- annotations, jobs --------------------------------------------------------------------------


def test_annotations_crud_bumps_updated_date(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg", "b.jpg"])
    car, person = (lb.id for lb in task.get_labels())
    before = task.updated_date

    task.update_annotations(
        models.PatchedLabeledDataRequest(
            shapes=[
                rectangle(car, 0, [1, 2, 11, 22], source="auto", score=0.9),
                rectangle(person, 1, [0, 0, 5, 5], source="auto", score=0.4),
            ]
        ),
        action=AnnotationUpdateAction.CREATE,
    )
    shapes = task.get_annotations().shapes
    assert [(s.id, s.frame, s.label_id, s.source, s.score) for s in shapes] == [
        (1, 0, car, "auto", 0.9),
        (2, 1, person, "auto", 0.4),
    ]
    assert task.fetch().updated_date > before

    moved = models.LabeledShapeRequest(**{**shapes[0].to_dict(), "points": [5.0, 5.0, 9.0, 9.0]})
    task.update_annotations(models.PatchedLabeledDataRequest(shapes=[moved]), action=AnnotationUpdateAction.UPDATE)
    task.remove_annotations(ids=[2])
    assert [(s.id, s.points) for s in task.get_annotations().shapes] == [(1, [5.0, 5.0, 9.0, 9.0])]

    task.set_annotations(models.LabeledDataRequest(shapes=[rectangle(person, 0, [0, 0, 1, 1])]))
    assert [s.id for s in task.get_annotations().shapes] == [3]
    task.remove_annotations()
    assert task.get_annotations().shapes == []

    with pytest.raises(exceptions.ApiException) as bad_label:
        task.update_annotations(
            models.PatchedLabeledDataRequest(shapes=[rectangle(999, 0, [0, 0, 1, 1])]),
            action=AnnotationUpdateAction.CREATE,
        )
    assert bad_label.value.status == 400


def test_job_stage_state_and_derived_statuses(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg", "b.jpg", "c.jpg"], segment_size=2)
    newer, older = task.get_jobs()
    annotator = server.state.add_user("annotator")

    older.update(models.PatchedJobWriteRequest(assignee=annotator.id, state="in progress"))
    assert (older.stage, older.state, older.status, older.assignee.username) == (
        "annotation",
        "in progress",
        "annotation",
        "annotator",
    )
    older.update(models.PatchedJobWriteRequest(stage="validation"))  # stage without state -> state resets
    assert (older.stage, older.state, older.status) == ("validation", "new", "validation")
    older.update(models.PatchedJobWriteRequest(stage="acceptance", state="completed"))
    assert older.status == "completed"
    task.fetch()
    assert (task.status, task.jobs.completed, task.jobs.validation) == ("annotation", 1, 0)

    newer.update(models.PatchedJobWriteRequest(stage="acceptance", state="rejected"))
    task.fetch()
    assert (task.status, task.jobs.completed, task.jobs.validation) == ("validation", 1, 1)
    newer.update(models.PatchedJobWriteRequest(state="completed"))
    assert task.fetch().status == "completed"

    accepted = client.jobs.list(filter=all_(F.task_id == task.id, F.stage == "acceptance", F.state == "completed"))
    assert sorted(j.id for j in accepted) == sorted([newer.id, older.id])
    bad = client.api_client.rest_client.PATCH(
        f"{server.url}/api/jobs/{newer.id}",
        body={"stage": "done"},
        headers={"Authorization": f"Bearer {server.token}"},
        _check_status=False,
    )
    assert bad.status == 400


def test_state_helpers_move_jobs_without_http(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg", "b.jpg"], segment_size=1)
    server.state.complete_task(task.id)
    assert task.fetch().status == "completed" and task.jobs.completed == 2
    first = server.state.jobs_of(task.id)[0]
    server.state.update_job(first.id, stage="validation")
    assert task.fetch().status == "validation" and task.jobs.validation == 1


# --- listing --------------------------------------------------------------------------------------


def test_task_list_filters_sort_and_pages(server, client, project):
    st = server.state
    tasks = [st.create_task(f"t{i}", project_id=project.id if i % 2 else None, frames=["f.jpg"]) for i in range(5)]
    st.complete_task(tasks[3].id)  # now the most recently updated
    cursor = tasks[1].updated_date

    since = client.tasks.list(updated_date__gt=cursor.isoformat(), sort="updated_date", page_size=2)
    assert [t.name for t in since] == ["t2", "t4", "t3"]
    assert [t.id for t in client.tasks.list(project_id=project.id)] == [tasks[3].id, tasks[1].id]
    assert [t.name for t in client.tasks.list(name="t2")] == ["t2"]
    done = client.tasks.list(filter=all_(F.status == "completed", F.updated_date >= cursor.isoformat()))
    assert [t.name for t in done] == ["t3"]
    either = client.tasks.list(filter=any_(F.name == "t0", F.id.one_of([tasks[4].id])), sort="id")
    assert [t.name for t in either] == ["t0", "t4"]
    assert len(client.tasks.list(filter=F.project_id != project.id)) == 3
    assert [t.name for t in client.tasks.list(sort="project_id,-id")][:2] == ["t3", "t1"]

    page, _ = client.api_client.tasks_api.list(page=2, page_size=2, sort="id")
    assert page.count == 5 and [t.name for t in page.results] == ["t2", "t3"]
    assert "page=3" in page.next and "page=" not in page.previous
    with pytest.raises(exceptions.ApiException) as bad_field:
        client.tasks.list(filter=F.nonexistent == 1)
    assert bad_field.value.status == 400
    with pytest.raises(exceptions.NotFoundException):
        client.api_client.tasks_api.list(page=9)


def test_listing_10000_tasks_is_fast(server, client, project):
    server.state.bulk_create_tasks(10_000, project_id=project.id)
    cursor = server.state.tasks[9_950].updated_date
    server.state.clear_log()
    started = time.perf_counter()
    changed = client.tasks.list(
        project_id=project.id, updated_date__gt=cursor.isoformat(), sort="updated_date", page_size=100
    )
    elapsed = time.perf_counter() - started
    assert [t.id for t in changed] == list(range(9_951, 10_001))
    assert server.state.count_requests("GET", r"^/api/tasks$") == 1
    assert elapsed < 2.0


# --- export and requests -----------------------------------------------------------------------


def test_export_coco_and_requests_api(server, client, project, tmp_path):
    server.state.add_cloud_storage("frames-bucket", id=3, image_sizes={"cam/1.jpg": (100, 50)})
    task = cloud_task(client, server, project, ["cam/1.jpg", "cam/2.jpg"])
    person = task.get_labels()[1].id
    task.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rectangle(person, 0, [10, 5, 30, 45])]),
        action=AnnotationUpdateAction.CREATE,
    )

    path = task.export_dataset("COCO 1.0", tmp_path / "out.zip", include_images=False)
    coco = json.loads(zipfile.ZipFile(path).read("annotations/instances_default.json"))
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "cam/1.jpg", 100, 50),
        (2, "cam/2.jpg", 1920, 1080),
    ]
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "car"), (2, "person")]
    (ann,) = coco["annotations"]
    assert (ann["image_id"], ann["category_id"], ann["bbox"], ann["area"], ann["iscrowd"], ann["segmentation"]) == (
        1,
        2,
        [10.0, 5.0, 20.0, 40.0],
        800.0,
        0,
        [],
    )

    assert task.export_dataset("COCO 1.0", tmp_path, include_images=False).suffix == ".zip"  # server-chosen name
    exports, _ = client.api_client.requests_api.list(action="export", task_id=task.id)
    (export,) = exports.results
    assert "&" in export.id and "=" in export.id and export.operation.type == "export:dataset"
    again, _ = client.api_client.requests_api.retrieve(export.id)  # the SDK URL-quotes the id
    assert again.status.value == "finished" and again.result_url


def test_background_requests_can_be_slow():
    with running_cvat_server(request_delay=0.3) as slow:
        with slow.make_client(status_check_period=0.05) as c:
            task = c.tasks.create(models.TaskWriteRequest(name="slow", labels=[models.PatchedLabelRequest(name="x")]))
            rq_id, _ = task.api.create_data(
                task.id, data_request=models.DataRequest(server_files=["a.jpg"], image_quality=70)
            )
            assert c.api_client.requests_api.retrieve(rq_id.rq_id)[0].status.value == "queued"
            c.wait_for_completion(rq_id.rq_id, status_check_period=0.05)
            assert task.fetch().size == 1


def test_responses_deserialize_with_sdk_models(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg"])
    task.update_annotations(
        models.PatchedLabeledDataRequest(shapes=[rectangle(task.get_labels()[0].id, 0, [0, 0, 2, 2])]),
        action=AnnotationUpdateAction.CREATE,
    )
    rq_id = json.loads(
        client.api_client.tasks_api.create_dataset_export(
            id=task.id, format="COCO 1.0", save_images=False, _parse_response=False
        )[1].data
    )["rq_id"]
    job_id = task.get_jobs()[0].id
    storage_id = next(iter(server.state.cloud_storages))
    from urllib.parse import quote

    endpoints = {
        "/api/server/about": models.About,
        "/api/server/annotation/formats": models.DatasetFormats,
        "/api/users/self": models.MetaUser,
        "/api/users": models.PaginatedMetaUserList,
        "/api/projects": models.PaginatedProjectReadList,
        f"/api/projects/{project.id}": models.ProjectRead,
        f"/api/labels?project_id={project.id}": models.PaginatedLabelList,
        "/api/tasks": models.PaginatedTaskReadList,
        f"/api/tasks/{task.id}": models.TaskRead,
        f"/api/tasks/{task.id}/data/meta": models.DataMetaRead,
        f"/api/tasks/{task.id}/annotations/": models.LabeledData,
        "/api/jobs": models.PaginatedJobReadList,
        f"/api/jobs/{job_id}": models.JobRead,
        "/api/cloudstorages": models.PaginatedCloudStorageReadList,
        f"/api/cloudstorages/{storage_id}": models.CloudStorageRead,
        "/api/requests": models.PaginatedRequestList,
        f"/api/requests/{quote(rq_id, safe='')}": models.Request,
    }
    headers = {"Authorization": f"Bearer {server.token}"}
    for path, model in endpoints.items():
        response = client.api_client.rest_client.GET(server.url + path, headers=headers)
        parsed = client.api_client.deserialize(response, (model,), _check_type=True)
        assert isinstance(parsed, model), path
    empty = client.tasks.create(models.TaskWriteRequest(name="no-data"))  # TaskRead before any data
    assert empty.size == 0 and empty.media_type == ""


# --- faults --------------------------------------------------------------------------------------


def test_429_is_retried_on_get_but_not_on_patch(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg"])
    server.faults.fail_next("GET", r"^/api/tasks/\d+$", status=429)
    server.state.clear_log()
    assert task.fetch().id == task.id
    assert server.state.count_requests("GET", r"^/api/tasks/\d+$") == 2

    server.faults.fail_next("PATCH", r"/api/tasks/\d+/annotations", status=429, retry_after=1)
    with pytest.raises(exceptions.ApiException) as throttled:
        task.update_annotations(models.PatchedLabeledDataRequest(shapes=[]), action=AnnotationUpdateAction.CREATE)
    assert throttled.value.status == 429 and throttled.value.headers["Retry-After"] == "1"


def test_5xx_on_get_retried_three_times_then_max_retry_error(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg"])
    server.faults.fail_next("GET", r"^/api/tasks/\d+$", status=503, times=1)
    assert task.fetch().id == task.id  # one retry (no backoff for the first)
    server.faults.fail_next("GET", r"^/api/tasks/\d+$", status=502, times=4)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        task.fetch()

    server.faults.fail_next("PATCH", r"/api/tasks/\d+/annotations", status=503, times=1)
    with pytest.raises(exceptions.ServiceException):  # never retried
        task.update_annotations(models.PatchedLabeledDataRequest(shapes=[]), action=AnnotationUpdateAction.CREATE)


def test_slow_responses(server, client):
    server.faults.slow("GET", r"^/api/tasks$", seconds=0.3, times=1)
    started = time.perf_counter()
    client.tasks.list()
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    client.tasks.list()
    assert time.perf_counter() - started < 0.3


def test_failed_and_hanging_exports(server, client, project, tmp_path):
    task = cloud_task(client, server, project, ["a.jpg"])
    server.faults.fail_requests("export", message="Work-horse was terminated unexpectedly")
    with pytest.raises(BackgroundRequestException, match="Work-horse"):
        task.export_dataset("COCO 1.0", tmp_path / "a.zip", include_images=False)

    server.faults.hang_requests("export")
    rq, _ = client.api_client.tasks_api.create_dataset_export(id=task.id, format="COCO 1.0", save_images=False)
    time.sleep(0.05)
    request, _ = client.api_client.requests_api.retrieve(rq.rq_id)
    assert request.status.value == "started" and request.result_url is None
    assert server.state.requests[rq.rq_id].status == "started"

    server.faults.fail_requests("create", message="Cloud storage is unavailable")
    with pytest.raises(BackgroundRequestException, match="unavailable"):
        cloud_task(client, server, project, ["b.jpg"], name="broken")


def test_corrupt_export_archives(server, client, project, tmp_path):
    task = cloud_task(client, server, project, ["a.jpg"])
    server.faults.corrupt_exports("truncated")
    broken = task.export_dataset("COCO 1.0", tmp_path / "t.zip", include_images=False)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(broken)
    server.faults.corrupt_exports("invalid_json")
    bad_json = task.export_dataset("COCO 1.0", tmp_path / "j.zip", include_images=False)
    with pytest.raises(json.JSONDecodeError):
        json.loads(zipfile.ZipFile(bad_json).read("annotations/instances_default.json"))


def test_cloud_storages_and_task_update_and_delete(server, client, project):
    api = client.api_client.cloudstorages_api
    created, _ = api.create(
        models.CloudStorageWriteRequest(
            provider_type="GOOGLE_CLOUD_STORAGE",
            resource="gcs-frames",
            display_name="gcs-frames",
            credentials_type="ANONYMOUS_ACCESS",
        )
    )
    assert api.retrieve(created.id)[0].resource == "gcs-frames"
    assert [s.id for s in api.list()[0].results] == [created.id]
    server.state.cloud_storages[created.id].image_sizes["k.jpg"] = (10, 20)

    task = cloud_task(client, server, project, ["k.jpg"], storage_id=created.id)
    assert [(f.width, f.height) for f in task.get_meta().frames] == [(10, 20)]
    before = task.updated_date
    task.update(models.PatchedTaskWriteRequest(name="renamed"))
    assert task.name == "renamed" and task.updated_date > before
    task.remove()
    with pytest.raises(exceptions.NotFoundException):
        client.tasks.retrieve(task.id)


def test_task_deleted_mid_run(server, client, project):
    task = cloud_task(client, server, project, ["a.jpg"])
    server.state.delete_task(task.id)
    with pytest.raises(exceptions.NotFoundException):
        task.fetch()
    with pytest.raises(exceptions.NotFoundException):
        task.get_annotations()
    assert client.jobs.list(task_id=task.id) == []
    assert server.state.count_requests(path=r"^/api/tasks/\d+$") >= 1


def test_updated_date_is_monotonic_with_microseconds(server, client):
    frozen = datetime.now(UTC) + timedelta(days=1)
    server.state.clock = lambda: frozen
    a = server.state.create_task("a", frames=["x.jpg"])
    b = server.state.create_task("b", frames=["x.jpg"])
    assert a.updated_date < b.updated_date < frozen + timedelta(seconds=1)
    raw = client.api_client.tasks_api.retrieve(a.id, _parse_response=False)[1]
    assert json.loads(raw.data)["updated_date"].endswith("Z") and "." in json.loads(raw.data)["updated_date"]
