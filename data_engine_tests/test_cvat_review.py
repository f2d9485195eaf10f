"""CVAT review tasks and the review sensor, through Dagster's public surfaces, the real cvat-sdk and the
fake CVAT server (data_engine_tests.cvat_server) on loopback."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from data_engine.annotation.backend import AnnotationError, TaskPosition
from data_engine.annotation.cvat import CvatBackend
from data_engine.annotation.retry import RetryPolicy
from data_engine.annotation.review_scan import ReviewCursor
from data_engine.config import ConfigError, load_fleet_config
from data_engine.config.models import AnnotationConfig
from data_engine.defs.cvat_resource import CvatResource
from data_engine.defs.labels import build_label_defs
from data_engine.defs.profiles import resources_for
from data_engine.defs.review import build_review_defs
from data_engine.defs.selection import build_selection_defs
from data_engine.labels import LabelStore
from data_engine.settings import current_settings
from data_engine_tests.conftest import REVIEW_PARTITION, TEST_FLEET
from data_engine_tests.cvat_server import ApiError, FakeCvatState, running_cvat_server

PARTITION = REVIEW_PARTITION
DAY = PARTITION.keys_by_dimension["date"]
NAMES = [f"data-engine-municipals-{DAY}-00{i}" for i in (1, 2, 3)]
IN_A_BUCKET = AnnotationConfig.model_validate({"cvat": {"cloud_storage_id": 7}})  # a model whose frames CVAT reads from a bucket


def fast_cvat(server, home: Path | None, **overrides) -> CvatResource:
    """The CVAT resource with short backoff and polling, so fault tests stay fast."""
    settings = dict(
        url=server.url,
        access_token=server.token,
        objects_root=str(home / "objects") if home else "",
        retry_base_delay_s=0.01,
        poll_period_s=0.01,
        late_write_settle_s=0.05,
    )
    return CvatResource(**(settings | overrides))


def materialize_review_tasks(resources: dict, raise_on_error: bool = True, instance: dg.DagsterInstance | None = None):
    config = load_fleet_config()
    assets = list(build_selection_defs(config).assets) + list(build_review_defs(config).assets)
    return dg.materialize(
        assets, selection=["review_tasks"], partition_key=PARTITION, resources=resources, raise_on_error=raise_on_error, instance=instance
    )


def candidates(home: Path) -> list[dict]:
    table = pq.read_table(home / "objects/assets/review_candidates/municipals" / f"{DAY}.parquet")
    return sorted(table.to_pylist(), key=lambda r: (r["priority"], r["frame_uri"]))


def our_tasks(state):
    return sorted((t for t in state.tasks.values() if t.name.startswith("data-engine-")), key=lambda t: t.name)


def assert_complete_and_unique(server, home: Path):
    """Three tasks, one per name, each with its frames and exactly one auto shape per prediction."""
    state = server.state
    rows = candidates(home)
    tasks = our_tasks(state)
    assert [t.name for t in tasks] == NAMES
    assert [t.size for t in tasks] == [8, 8, 4]
    for task, chunk in zip(tasks, (rows[:8], rows[8:16], rows[16:]), strict=True):
        expected = sorted(
            (i, p["class_name"], round(p["score"], 4)) for i, row in enumerate(chunk) for p in row["predictions"]
        )
        labels = {lb.id: lb.name for lb in state.labels_of(task_id=task.id)}
        shapes = sorted(
            (s["frame"], labels[s["label_id"]], round(s["score"], 4))
            for s in task.shapes.values()
            if s["source"] == "auto"
        )
        assert shapes == expected, task.name


# --- review_tasks ----------------------------------------------------------------------------------


def test_review_tasks_creates_pre_annotated_tasks_and_a_rerun_changes_nothing(review_env, server):
    config = load_fleet_config()
    resources = resources_for(current_settings(), config)  # the local profile with CVAT_URL set
    assert isinstance(resources["annotation"], CvatResource)
    result = materialize_review_tasks(resources)

    state = server.state
    assert_complete_and_unique(server, review_env)
    project = next(p for p in state.projects.values())
    assert project.name == "data-engine municipals"
    assert sorted((lb.name, lb.type) for lb in state.labels_of(project_id=project.id)) == sorted(
        (c, "rectangle") for c in TEST_FLEET["models"]["municipals"]["classes"]
    )
    tasks = our_tasks(state)
    rows = candidates(review_env)
    # frame order = priority; uploaded files keep unique, ordered names
    assert [f.name.split("_", 1)[0] for f in tasks[0].frames] == [f"{i:06d}" for i in range(8)]
    assert tasks[0].frames[0].name.endswith(rows[0]["frame_uri"].split("/", 3)[3].replace("/", "__"))
    assert tasks[0].sorting_method == "predefined"
    # segment size 3: jobs of 3, 3, 2 frames; assignees round robin across the day's jobs
    jobs = [j for t in tasks for j in sorted(state.jobs_of(t.id), key=lambda j: j.start_frame)]
    assert [j.frame_count for j in jobs[:3]] == [3, 3, 2]
    users = {u.id: u.username for u in state.users.values()}
    assert [users[j.assignee_id] for j in jobs] == ["alice", "bob"] * 4
    # shapes went in batches of at most 10 through PATCH ?action=create
    patches = [e for e in state.http_log if e.method == "PATCH" and e.path.endswith("/annotations")]
    assert len(patches) > len(tasks) and all(e.query["action"] == ["create"] for e in patches)

    metadata = result.asset_materializations_for_node("review_tasks")[0].metadata
    assert metadata["task_ids"].value == [t.id for t in tasks]
    assert metadata["frames"].value == 20 and metadata["tasks"].value == 3
    assert f"/tasks/{tasks[0].id}" in metadata["tasks_table"].value
    frames = pq.read_table(review_env / "objects/assets/review_tasks/municipals" / f"{DAY}.parquet").to_pylist()
    assert [r["frame_uri"] for r in frames] == [r["frame_uri"] for r in rows]

    state.clear_log()
    again = materialize_review_tasks(resources)
    assert again.success
    assert state.count_requests("POST") == 0 and state.count_requests("PATCH") == 0
    assert_complete_and_unique(server, review_env)
    assert again.asset_materializations_for_node("review_tasks")[0].metadata["shapes_uploaded"].value == 0


def test_project_found_by_name_gets_missing_classes_and_reports_extra_labels(review_env, server):
    server.state.create_project("data-engine municipals", [{"name": "PET", "type": "rectangle"}, {"name": "Glass bottle"}])
    result = materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)})
    assert len(server.state.projects) == 1
    names = {lb.name for lb in server.state.labels_of(project_id=1)}
    assert names == set(TEST_FLEET["models"]["municipals"]["classes"]) | {"Glass bottle"}
    metadata = result.asset_materializations_for_node("review_tasks")[0].metadata
    assert metadata["project_labels_not_in_config"].value == ["Glass bottle"]
    assert "PET" not in metadata["project_labels_added"].value and "HDPE" in metadata["project_labels_added"].value


def test_two_runs_that_make_the_project_at_once_settle_on_one(review_env, server):
    """Two runs of one model (a backfill of two days) both find no project and both make it: each POST
    lands 0.5 s late, after the other run has looked. Both end up with the oldest project; the newer copy,
    still empty, is deleted, so the next run finds one project (before: two, and every later run failed)."""
    server.faults.slow("POST", r"^/api/projects$", seconds=0.5, times=2)
    config = load_fleet_config().models["municipals"]
    start = threading.Barrier(2)

    def ensure() -> int:
        with fast_cvat(server, review_env).open() as backend:
            start.wait()
            return backend.ensure_project("municipals", list(config.classes), config.annotation).id

    with ThreadPoolExecutor(2) as pool:
        ids = [future.result() for future in [pool.submit(ensure), pool.submit(ensure)]]
    assert [p.id for p in server.state.projects.values()] == [min(ids)] and ids == [min(ids)] * 2
    posts = [entry for entry in server.state.http_log if (entry.method, entry.path) == ("POST", "/api/projects")]
    assert len(posts) == 2  # the race did happen


def test_a_copy_of_the_project_made_by_hand_is_kept_and_batches_go_to_the_oldest(review_env, server):
    oldest = server.state.create_project("data-engine municipals")
    copy = server.state.create_project("data-engine municipals")
    instance = dg.DagsterInstance.ephemeral()
    resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}
    result = materialize_review_tasks(resources, instance=instance)
    assert {t.project_id for t in our_tasks(server.state)} == {oldest.id} and copy.id in server.state.projects
    assert result.asset_materializations_for_node("review_tasks")[0].metadata["project"].value.endswith(f"/projects/{oldest.id}")
    assert f"2 projects are named 'data-engine municipals' (ids {[oldest.id, copy.id]}); review batches go to the oldest" in "".join(
        entry.user_message for entry in instance.all_logs(result.run_id)
    )


def test_transient_429_and_5xx_are_retried(review_env, server):
    faults = server.faults
    faults.fail_next("POST", r"^/api/tasks$", status=503, times=2)
    faults.fail_next("PATCH", r"/annotations$", status=429, times=2)
    faults.fail_next("PATCH", r"^/api/jobs/", status=502, times=1)
    faults.fail_next("GET", r"^/api/requests/", status=500, times=1)
    materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)})
    assert_complete_and_unique(server, review_env)


def test_crash_before_task_creation_then_retry(review_env, server):
    resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}
    # the first task is made; creating the second fails until the retries give up
    original = server.state.create_task

    def create_only_first(name, **kw):
        if name != NAMES[0]:
            raise ApiError(500, "database is down")
        return original(name, **kw)

    server.state.create_task = create_only_first
    failed = materialize_review_tasks(resources, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert NAMES[1] in message and "POST /api/tasks" in message
    assert [t.name for t in our_tasks(server.state)] == NAMES[:1]
    # each batch's frame record is written before its task is made
    records = LabelStore.local(review_env / "labels").objects
    assert records.list("") == [f"municipals/review_batches/{name}.json" for name in NAMES[:2]]
    second = records.get(f"municipals/review_batches/{NAMES[1]}.json")

    server.state.create_task = original
    server.state.clear_log()
    materialize_review_tasks(resources)
    assert server.state.count_requests("POST", r"^/api/tasks$") == 2
    assert_complete_and_unique(server, review_env)
    assert records.list("") == [f"municipals/review_batches/{name}.json" for name in NAMES]
    assert records.get(f"municipals/review_batches/{NAMES[1]}.json") == second  # the retry wrote the same record


def test_a_stale_batch_record_is_replaced_once_the_task_holds_the_planned_frames(review_env, server):
    """A batch made earlier with other frames (candidates re-selected, the old task deleted as CVAT's message
    says): its old record stays until the new task holds the planned frames, then it is replaced."""
    records = LabelStore.local(review_env / "labels").objects
    key = f"municipals/review_batches/{NAMES[0]}.json"
    old = {"format": 1, "model": "municipals", "name": NAMES[0], "frames": [{"name": "gone.jpg", "uri": "s3://b/gone.jpg"}]}
    records.put(key, json.dumps(old).encode())
    materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)})
    rows = pq.read_table(review_env / "objects/assets/review_tasks/municipals" / f"{DAY}.parquet").to_pylist()
    record = json.loads(records.get(key))
    assert [(f["name"], f["uri"]) for f in record["frames"]] == [
        (r["frame_name"], r["frame_uri"]) for r in rows if r["task_name"] == NAMES[0]
    ]


def test_crash_after_creation_before_data_then_retry(review_env, server):
    resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}
    server.faults.fail_requests("create", message="chunk worker died", times=1)  # the first data upload fails
    failed = materialize_review_tasks(resources, raise_on_error=False)
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert NAMES[0] in message and "action=create&target=task" in message and "chunk worker died" in message
    assert [(t.name, t.size) for t in our_tasks(server.state)] == [(NAMES[0], 0)]

    materialize_review_tasks(resources)
    assert_complete_and_unique(server, review_env)


def test_a_data_request_that_never_finishes_hits_the_deadline(review_env, server):
    resources = {
        **resources_for(current_settings(), load_fleet_config()),
        "annotation": fast_cvat(server, review_env, request_deadline_s=0.3),
    }
    server.faults.hang_requests("create", times=1)
    failed = materialize_review_tasks(resources, raise_on_error=False)
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "still started" in message and NAMES[0] in message and "action=create&target=task" in message


class CrashingAnnotations(FakeCvatState):
    """PATCH /annotations: after `ok` successful calls, fail every call (`lost`: apply it, then fail)."""

    ok = 10**9
    lost = False

    def change_annotations(self, task_id, action, data):
        if self.ok <= 0:
            if self.lost:
                super().change_annotations(task_id, action, data)
                self.lost = False
                self.ok = 10**9
            raise ApiError(500, "annotation worker crashed")
        self.ok -= 1
        return super().change_annotations(task_id, action, data)


def test_crash_mid_pre_annotation_upload_then_retry(review_env):
    state = CrashingAnnotations()
    state.ok = 3  # task 1 gets some batches of shapes, then the upload crashes
    with running_cvat_server(state=state) as server:
        state.add_user("alice"), state.add_user("bob")
        resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}
        failed = materialize_review_tasks(resources, raise_on_error=False)
        assert not failed.success
        message = str(failed.get_step_failure_events()[0].event_specific_data.error)
        assert NAMES[0] in message and "shapes batch" in message and "annotations?action=create" in message
        first = our_tasks(state)[0]
        assert 0 < len(first.shapes) < sum(len(r["predictions"]) for r in candidates(review_env)[:8])

        state.ok = 10**9
        materialize_review_tasks(resources)
        assert_complete_and_unique(server, review_env)


def test_a_patch_applied_whose_answer_was_lost_is_not_sent_twice(review_env):
    state = CrashingAnnotations()
    state.ok, state.lost = 2, True
    with running_cvat_server(state=state) as server:
        state.add_user("alice"), state.add_user("bob")
        materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)})
        assert_complete_and_unique(server, review_env)


def test_frames_in_a_bucket_are_attached_through_the_cloud_storage(review_env, server):
    server.state.add_cloud_storage("demo-frames", id=7, default_size=(320, 240))
    materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, None)})
    tasks = our_tasks(server.state)
    rows = candidates(review_env)
    assert [f.name for f in tasks[0].frames] == [r["frame_uri"].split("/", 3)[3] for r in rows[:8]]
    assert tasks[0].cloud_storage_id == 7 and tasks[0].use_cache and tasks[0].sorting_method == "predefined"
    assert_complete_and_unique(server, review_env)


def test_a_cloud_storage_of_another_bucket_is_refused(review_env, server):
    server.state.add_cloud_storage("other-bucket", id=7)
    failed = materialize_review_tasks(
        {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, None)}, raise_on_error=False
    )
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert "demo-frames" in message and "other-bucket" in message and "cloud_storage_id" in message


def test_the_models_cvat_settings_are_checked_by_the_backend_before_anything_is_made(review_env, server, fleet_file):
    """The model's `annotation.cvat` block reaches the CVAT backend alone, which checks it when it finds the
    model's project: an assignee who is no CVAT user, or frames in a bucket without a cloud storage, fail the
    run naming the key, with no project, task or batch record made."""
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    settings = fleet["models"]["municipals"]["annotation"]["cvat"]
    records = LabelStore.local(review_env / "labels").objects

    def fails_with(home: Path | None) -> str:
        fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
        resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, home)}
        failed = materialize_review_tasks(resources, raise_on_error=False)
        assert server.state.projects == {} and our_tasks(server.state) == [] and records.list("") == []
        return str(failed.get_step_failure_events()[0].event_specific_data.error)

    settings["assignees"] = ["alice", "carol"]
    message = fails_with(review_env)
    assert "models.municipals.annotation.cvat.assignees" in message and "'carol' is not a user of CVAT" in message

    settings["assignees"] = ["alice"]
    del settings["cloud_storage_id"]
    assert "models.municipals.annotation.cvat.cloud_storage_id is not set" in fails_with(None)


def test_without_cvat_url_review_tasks_says_how_to_configure(local_env, prepared_home, monkeypatch):
    shutil.copytree(prepared_home, local_env)
    monkeypatch.delenv("CVAT_URL", raising=False)
    failed = materialize_review_tasks(resources_for(current_settings(), load_fleet_config()), raise_on_error=False)
    assert "CVAT_URL" in str(failed.get_step_failure_events()[0].event_specific_data.error)


def test_importing_the_code_location_does_not_import_cvat_sdk():
    code = "import sys, data_engine.definitions; assert 'cvat_sdk' not in sys.modules, 'cvat_sdk imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the review sensor and the reviewed_tasks record of its label_merge_job ------------------------------------------------------


def sensor_env(server, fleet: dict | None = None, **cvat_overrides):
    config = load_fleet_config()
    if fleet is not None:
        from data_engine.config.models import FleetConfig

        config = FleetConfig.model_validate(fleet)
    resources = {**resources_for(current_settings(), config), "annotation": fast_cvat(server, None, **cvat_overrides)}
    defs = dg.Definitions.merge(
        build_selection_defs(config), build_review_defs(config), build_label_defs(config), dg.Definitions(resources=resources)
    )
    return defs, resources


def tick(defs, resources, instance, cursor):
    sensor = defs.resolve_sensor_def("cvat_review_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def make_tasks(state, names, frames=4, segment_size=2):
    project = state.create_project("p")
    return [state.create_task(n, project_id=project.id, frames=[f"f{i}.jpg" for i in range(frames)], segment_size=segment_size) for n in names]


def test_sensor_requests_one_run_per_model_and_the_job_records_tasks(local_env, server):
    defs, resources = sensor_env(server)
    state = server.state
    m1, m2, e1, other = make_tasks(
        state, [NAMES[0], NAMES[1], f"ens-review-ENS-{DAY}-001", "someone-else-2026-11-24"]
    )
    with dg.instance_for_test() as instance:
        first = tick(defs, resources, instance, None)
        assert first.run_requests == [] and "4 task(s) changed, 0 newly reviewed" in first.skip_message
        for task in (m1, m2, e1, other):
            state.complete_task(task.id)
        # a job accepted and one rejected in validation: not reviewed, not merged
        m2_jobs = state.jobs_of(m2.id)
        state.update_job(m2_jobs[0].id, stage="acceptance", state="rejected")
        state.clear_log()
        second = tick(defs, resources, instance, first.cursor)
        requests = {r.partition_key: r for r in second.run_requests}
        assert set(requests) == {"municipals", "ENS"}
        assert [t["task_id"] for t in requests["municipals"].run_config["ops"]["reviewed_tasks"]["config"]["tasks"]] == [m1.id]
        assert state.count_requests() == 1  # one page of tasks

        idle = tick(defs, resources, instance, second.cursor)
        assert idle.run_requests == []

        # the sensor's job records the tasks, then merges them (test_training_labels.py); here only the record
        job = defs.resolve_job_def("label_merge_job")
        record = [dg.AssetKey("reviewed_tasks")]
        for request in second.run_requests:
            assert request.tags["data_engine/label_merge"] == request.partition_key
            assert job.execute_in_process(
                run_config=request.run_config, partition_key=request.partition_key, instance=instance, asset_selection=record
            ).success

        # reopened, then accepted again: a new run key; m2's rejected job accepted: m2 joins
        state.update_job(state.jobs_of(m1.id)[0].id, stage="annotation")
        reopened = tick(defs, resources, instance, idle.cursor)
        assert reopened.run_requests == []
        state.complete_task(m1.id)
        state.complete_task(m2.id)
        third = tick(defs, resources, instance, reopened.cursor)
        (again,) = third.run_requests
        assert again.run_key != requests["municipals"].run_key
        assert job.execute_in_process(
            run_config=again.run_config, partition_key="municipals", instance=instance, asset_selection=record
        ).success

        recorded = pq.read_table(local_env / "objects/assets/reviewed_tasks/municipals.parquet").to_pylist()
        assert [(r["task_id"], r["name"], r["frame_count"]) for r in recorded] == [(m1.id, NAMES[0], 4), (m2.id, NAMES[1], 4)]
        assert recorded[0]["updated_date"] == state.tasks[m1.id].updated_date
        ens = pq.read_table(local_env / "objects/assets/reviewed_tasks/ENS.parquet").to_pylist()
        assert [r["task_id"] for r in ens] == [e1.id]

        # a downstream asset (like training_labels) gets the record as an input: ReviewedTasks, oldest review first
        config = load_fleet_config()
        seen = {}

        @dg.asset(partitions_def=dg.StaticPartitionsDefinition(list(config.models)))
        def label_merge_stand_in(reviewed_tasks) -> dg.MaterializeResult:
            seen["ids"] = [task.task_id for task in reviewed_tasks]
            seen["dates"] = [task.updated_date for task in reviewed_tasks]
            return dg.MaterializeResult()

        dg.materialize(
            [*build_review_defs(config).assets, *build_selection_defs(config).assets, label_merge_stand_in],
            selection=["label_merge_stand_in"], partition_key="municipals", resources=resources,
        )
        assert seen["ids"] == [m1.id, m2.id] and seen["dates"] == sorted(seen["dates"])
        assert seen["dates"][0] == state.tasks[m1.id].updated_date
        # the token never reaches the event log (logs, metadata, run config)
        runs = instance.get_runs()
        assert runs
        for run in runs:
            assert server.token not in str(run.run_config)
            assert all(server.token not in str(entry) for entry in instance.all_logs(run.run_id))


def test_sensor_is_bounded_per_tick_and_handles_ties_in_updated_date(local_env, server):
    defs, resources = sensor_env(server, tasks_per_tick=2)
    state = server.state
    tasks = make_tasks(state, [f"data-engine-municipals-{DAY}-{i:03d}" for i in range(1, 6)])
    for task in tasks:
        state.complete_task(task.id)
    with state.lock:  # three tasks updated in the same microsecond
        for task in tasks[1:4]:
            task.updated_date = tasks[1].updated_date
    seen: list[int] = []
    cursor = None
    with dg.instance_for_test() as instance:
        for _ in range(4):
            result = tick(defs, resources, instance, cursor)
            cursor = result.cursor
            batch = [t["task_id"] for r in result.run_requests for t in r.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]]
            assert len(batch) <= 2
            seen.extend(batch)
    assert sorted(seen) == [t.id for t in tasks] and len(seen) == len(set(seen))


def test_a_failing_task_is_reported_and_the_others_go_on(local_env, server):
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"]["municipals"]["annotation"]["task_name_pattern"] = "^(data-engine-municipals-|hand-made-)"
    fleet["models"]["ENS"]["annotation"]["task_name_pattern"] = "^(ens-review-ENS-|hand-made-)"
    defs, resources = sensor_env(server, fleet)
    state = server.state
    good, bad = make_tasks(state, [NAMES[0], "hand-made-1"])
    state.complete_task(bad.id)
    state.complete_task(good.id)
    with dg.instance_for_test() as instance:
        result = tick(defs, resources, instance, None)
        assert [r.partition_key for r in result.run_requests] == ["municipals"]
        cursor = ReviewCursor.parse(result.cursor)
        assert cursor.position.task_id == good.id and cursor.retry == {bad.id: 1}
        for _ in range(2, 6):
            result = tick(defs, resources, instance, result.cursor)
            assert result.run_requests == []
        assert ReviewCursor.parse(result.cursor).retry == {}  # given up after 5 attempts, reported each time


def test_idle_tick_over_10000_tasks_makes_at_most_3_requests(local_env, server):
    defs, resources = sensor_env(server)
    state = server.state
    project = state.create_project("p")
    state.bulk_create_tasks(10_000, name="data-engine-municipals-2026-11-24-{i:05d}", project_id=project.id)
    last = max(state.tasks.values(), key=lambda t: (t.updated_date, t.id))
    cursor = ReviewCursor(TaskPosition(last.updated_date, last.id)).dumps()
    with dg.instance_for_test() as instance:
        state.clear_log()
        idle = tick(defs, resources, instance, cursor)
        assert idle.run_requests == [] and state.count_requests() <= 3
        for task_id in range(1, 51):
            state.complete_task(task_id)
        state.clear_log()
        busy = tick(defs, resources, instance, idle.cursor)
        (request,) = busy.run_requests
        assert len(request.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]) == 50
        assert state.count_requests() <= 3


def test_sensor_skips_without_cvat(local_env, monkeypatch):
    monkeypatch.delenv("CVAT_URL", raising=False)
    config = load_fleet_config()
    resources = resources_for(current_settings(), config)
    defs = dg.Definitions.merge(
        build_selection_defs(config), build_review_defs(config), build_label_defs(config), dg.Definitions(resources=resources)
    )
    with dg.instance_for_test() as instance:
        result = tick(defs, resources, instance, None)
    assert result.run_requests == [] and "CVAT_URL" in result.skip_message


@pytest.mark.parametrize("pattern", [r"^data-engine-(?!ENS)", r"^(data-engine)-\1-"])
def test_a_task_name_pattern_that_re2_cannot_run_fails_at_load(pattern, tmp_path):
    """Lookarounds and backreferences compile in Python but not in RE2 (DuckDB, BigQuery), where the
    sensor matches the patterns: the config loader refuses them, naming the file, the key and the fix."""
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"]["municipals"]["annotation"]["task_name_pattern"] = pattern
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    with pytest.raises(ConfigError) as raised:
        load_fleet_config(path)
    message = str(raised.value)
    assert str(path) in message and "models.municipals.annotation.task_name_pattern" in message
    assert "not an RE2 regular expression" in message and "rewrite the pattern" in message


def test_retry_after_is_honoured_in_full_up_to_the_retry_deadline(server):
    """A 429's Retry-After is waited in full even when it exceeds max_delay_s; one that would pass the
    retry deadline ends the call at once with a message saying so."""
    policy = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.05, deadline_s=5.0)
    with CvatBackend(server.url, server.token, retry=policy, check_version=False) as backend:
        server.faults.fail_next("POST", r"^/api/projects$", status=429, retry_after=1.5)
        backend.ensure_project("honoured", ["PET"], IN_A_BUCKET)
        first, second = (e for e in server.state.http_log if e.method == "POST" and e.path == "/api/projects")
        assert first.status == 429 and second.status == 201
        assert second.received_at - first.received_at >= 1.5

        server.faults.fail_next("POST", r"^/api/projects$", status=429, retry_after=60)
        with pytest.raises(AnnotationError) as raised:
            backend.ensure_project("past-the-deadline", ["PET"], IN_A_BUCKET)
        assert "after 60s" in str(raised.value) and "retry deadline 5s" in str(raised.value)


@pytest.mark.parametrize("key", ["../../outside.jpg", "/{home}/outside.jpg"])
def test_local_frames_outside_the_object_root_are_refused(review_env, server, key):
    """In the local profile a frame URI whose key is absolute or climbs out with `..` would upload another
    file to CVAT: the run fails naming the URI, before any task is made."""
    outside = review_env / "outside.jpg"
    outside.write_bytes((review_env / "objects").joinpath(*candidates(review_env)[0]["frame_uri"][5:].split("/")).read_bytes())
    path = review_env / "objects/assets/review_candidates/municipals" / f"{DAY}.parquet"
    table = pq.read_table(path)
    uris = table["frame_uri"].to_pylist()
    uris[0] = "s3://demo-frames/" + key.format(home=str(review_env).lstrip("/"))
    pq.write_table(table.set_column(table.schema.get_field_index("frame_uri"), "frame_uri", pa.array(uris)), path)
    failed = materialize_review_tasks(
        {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}, raise_on_error=False
    )
    assert not failed.success
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert repr(uris[0]) in message and "$DATA_ENGINE_HOME/objects" in message
    assert server.state.tasks == {} and server.state.count_requests("POST") == 0


# --- requests that CVAT applies after the client's timeout ------------------------------------------


def wait_for_late_requests(state) -> None:
    """Until every request the fake received has been handled (a late one applied)."""
    for _ in range(200):
        with state.lock:
            if all(entry.status is not None for entry in state.http_log):
                return
        time.sleep(0.05)
    raise AssertionError("a request to the fake CVAT is still being handled")


@pytest.mark.parametrize(("method", "path"), [("PATCH", r"/annotations$"), ("POST", r"^/api/tasks$")])
def test_a_write_applied_after_the_timeout_is_not_made_twice(review_env, server, method, path):
    """The first shape upload (or task creation) lands 1 s late, after the client's 0.3 s timeout: the
    client waits the settle delay and looks again before resending, so there is one task per name and
    one shape per prediction."""
    server.faults.slow(method, path, seconds=1.0, times=1)
    cvat = fast_cvat(server, review_env, request_timeout_s=0.3, late_write_settle_s=2.0)
    materialize_review_tasks({**resources_for(current_settings(), load_fleet_config()), "annotation": cvat})
    wait_for_late_requests(server.state)
    assert_complete_and_unique(server, review_env)


def test_duplicate_shapes_from_a_request_applied_after_the_run_are_removed_by_a_rerun(review_env, server):
    """Lands 2 s late, after the run gave up waiting (settle 0.2 s) and resent it: the re-run removes the
    extra copies of its own auto shapes (and only those)."""
    server.faults.slow("PATCH", r"/annotations$", seconds=2.0, times=1)
    cvat = fast_cvat(server, review_env, request_timeout_s=0.3, late_write_settle_s=0.2)
    resources = {**resources_for(current_settings(), load_fleet_config()), "annotation": cvat}
    materialize_review_tasks(resources)
    wait_for_late_requests(server.state)
    first = our_tasks(server.state)[0]
    label_id = next(iter(first.shapes.values()))["label_id"]
    server.state.change_annotations(first.id, "create", {"shapes": [
        {"type": "rectangle", "frame": 0, "label_id": label_id, "points": [1, 2, 3, 4], "source": "manual"},
    ]})
    assert len(first.shapes) > sum(len(r["predictions"]) for r in candidates(review_env)[:8]) + 1  # duplicates

    again = materialize_review_tasks(resources)
    manual = [s for s in first.shapes.values() if s["source"] == "manual"]
    assert [s["points"] for s in manual] == [[1.0, 2.0, 3.0, 4.0]]  # a reviewer's shape is kept
    assert_complete_and_unique(server, review_env)
    assert "duplicates removed" in again.asset_materializations_for_node("review_tasks")[0].metadata["tasks_table"].value


def test_two_tasks_of_one_name_stop_the_run_naming_the_ones_to_delete(review_env, server):
    project = server.state.create_project("data-engine municipals")
    empty = server.state.create_task(NAMES[0], project_id=project.id)
    with_data = server.state.create_task(NAMES[0], project_id=project.id, frames=["a.jpg"])
    failed = materialize_review_tasks(
        {**resources_for(current_settings(), load_fleet_config()), "annotation": fast_cvat(server, review_env)}, raise_on_error=False
    )
    message = str(failed.get_step_failure_events()[0].event_specific_data.error)
    assert f"delete task(s) {[empty.id]}" in message and f"keep task {with_data.id}" in message


# --- run config of reviewed_tasks: checked against CVAT before anything is recorded -------------------------


def record_tasks(defs, instance, ops_config: dict, model: str = "municipals"):
    return defs.resolve_job_def("label_merge_job").execute_in_process(
        run_config={"ops": {"reviewed_tasks": {"config": ops_config}}},
        partition_key=model,
        instance=instance,
        asset_selection=[dg.AssetKey("reviewed_tasks")],
        raise_on_error=False,
    )


def recorded(home: Path, model: str = "municipals") -> list[dict]:
    path = home / "objects/assets/reviewed_tasks" / f"{model}.parquet"
    return pq.read_table(path).to_pylist() if path.exists() else []


def failure(result) -> str:
    assert not result.success
    return str(result.get_step_failure_events()[0].event_specific_data.error)


def test_launchpad_tasks_are_checked_against_cvat_and_nothing_bad_is_recorded(local_env, server):
    defs, _ = sensor_env(server)
    state = server.state
    good, ens, reopened = make_tasks(state, [NAMES[0], f"ens-review-ENS-{DAY}-001", NAMES[1]])
    for task in (good, ens):
        state.complete_task(task.id)
    bad_entries = {
        "a wrong name": ({"task_id": good.id, "name": NAMES[2]}, f"tasks[0].name: task {good.id} is named {NAMES[0]!r} in CVAT"),
        "a wrong id": ({"task_id": 999, "name": NAMES[0]}, "tasks[0].task_id: CVAT has no task 999"),
        "another model's task": ({"task_id": ens.id, "name": ens.name}, f"is not a task of model 'municipals': it matches the task_name_pattern of ['ENS']"),
        "not a date": ({"task_id": good.id, "name": NAMES[0], "updated_date": "not a date"}, "tasks[0].updated_date: 'not a date' is not an ISO 8601 date-time"),
    }
    with dg.instance_for_test() as instance:
        for case, (entry, expected) in bad_entries.items():
            message = failure(record_tasks(defs, instance, {"tasks": [entry]}))
            assert "run config of reviewed_tasks (municipals)" in message and expected in message, case
            assert recorded(local_env) == [], case

        # a future updated_date is not believed: CVAT's is recorded, so the reviewer's next fix is merged
        result = record_tasks(defs, instance, {"tasks": [
            {"task_id": good.id, "name": NAMES[0], "updated_date": "2099-01-01T00:00:00+00:00"},
            {"task_id": reopened.id, "name": NAMES[1]},  # never accepted: skipped and reported
        ]})
        assert result.success
        assert [(r["task_id"], r["updated_date"]) for r in recorded(local_env)] == [(good.id, state.tasks[good.id].updated_date)]
        metadata = result.asset_materializations_for_node("reviewed_tasks")[0].metadata
        assert "not accepted in CVAT now" in metadata["tasks_skipped"].value and str(reopened.id) in metadata["tasks_skipped"].value


def test_forget_task_ids_removes_a_bad_record(local_env, server):
    """A record written before the run config was checked (here: a wrong name) blocks every merge of the
    model; `forget_task_ids` removes it, and listing the task again records it as CVAT has it."""
    from data_engine.annotation.reviewed_record import ReviewedTask
    from data_engine.annotation.reviewed_record import record_reviewed_tasks
    from data_engine.objectstore import LocalObjectStore

    defs, _ = sensor_env(server)
    (task,) = make_tasks(server.state, [NAMES[0]])
    server.state.complete_task(task.id)
    store = LocalObjectStore(local_env / "objects")
    key = "assets/reviewed_tasks/municipals.parquet"
    record_reviewed_tasks(store, key, [ReviewedTask(task.id, "typo", dt.datetime(2099, 1, 1, tzinfo=dt.timezone.utc), None, 4)], "old-run")
    with dg.instance_for_test() as instance:
        result = record_tasks(defs, instance, {"forget_task_ids": [task.id]})
        assert result.success and recorded(local_env) == []
        assert result.asset_materializations_for_node("reviewed_tasks")[0].metadata["tasks_forgotten"].value == [task.id]
        assert record_tasks(defs, instance, {"tasks": [{"task_id": task.id, "name": NAMES[0]}]}).success
        assert [(r["name"], r["updated_date"]) for r in recorded(local_env)] == [(NAMES[0], server.state.tasks[task.id].updated_date)]
        message = failure(record_tasks(defs, instance, {"tasks": [{"task_id": task.id, "name": NAMES[0]}], "forget_task_ids": [task.id]}))
        assert "listed in both tasks and forget_task_ids" in message
