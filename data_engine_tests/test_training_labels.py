"""Reviewed CVAT tasks into versioned training labels, through Dagster's public surfaces: review tasks made
by `review_tasks` on the fake CVAT (real cvat-sdk over HTTP), accepted there, noticed by the sensor, and
merged by the requested `label_merge_job` run into the label store on SeaweedFS (prod profile, Postgres
instance) or a local folder; faults, checks, the YOLO export and the rollback CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import pyarrow.parquet as pq
import pytest
import yaml

from data_engine.config import load_fleet_config
from data_engine.config.models import FleetConfig
from data_engine.defs.labels import MERGE_TAG, build_label_defs
from data_engine.defs.profiles import resources_for
from data_engine.defs.resources import LabelStoreResource
from data_engine.defs.review import build_review_defs
from data_engine.defs.selection import build_selection_defs
from data_engine.demo import IMAGE_SIZE
from data_engine.labels import LabelStore
from data_engine.settings import current_settings
from data_engine_tests.conftest import PROD_DAGSTER_YAML, REPO_ROOT, TEST_FLEET
from data_engine_tests.test_cvat_review import DAY, NAMES, PARTITION, candidates, fast_cvat, our_tasks

MODEL = "municipals"
CLASSES = TEST_FLEET["models"][MODEL]["classes"]


def all_defs(config: FleetConfig, resources: dict) -> dg.Definitions:
    return dg.Definitions.merge(
        build_selection_defs(config), build_review_defs(config), build_label_defs(config), dg.Definitions(resources=resources)
    )


def make_review_tasks(defs: dg.Definitions, instance) -> None:
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        assets, selection=["review_tasks"], partition_key=PARTITION, resources=defs.resources, instance=instance
    )
    assert result.success


def tick(defs: dg.Definitions, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def("cvat_review_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, definitions=defs) as context:
        return sensor.evaluate_tick(context)


def run_request(defs, instance, request: dg.RunRequest, raise_on_error: bool = True):
    job = defs.resolve_job_def("label_merge_job")
    return job.execute_in_process(
        run_config=request.run_config,
        partition_key=request.partition_key,
        tags=request.tags,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def accept(server, task_ids, drop_shapes: int = 0) -> None:
    """Reviewers accept the tasks; `drop_shapes` deletes that many shapes of each first (a correction)."""
    state = server.state
    for task_id in task_ids:
        task = state.tasks[task_id]
        with state.lock:
            for shape_id in sorted(task.shapes)[:drop_shapes]:
                del task.shapes[shape_id]
        state.complete_task(task_id)


def reopen(server, task_id) -> None:
    server.state.update_job(server.state.jobs_of(task_id)[0].id, stage="annotation")


def metadata_of(result, node: str) -> dict:
    [materialization] = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in materialization.metadata.items()}


def checks_of(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def merge_first_task(defs, instance, server):
    """The day's review tasks made, the first accepted and merged by the sensor's run: (its id, the tick)."""
    make_review_tasks(defs, instance)
    first = our_tasks(server.state)[0].id
    cursor = tick(defs, instance, None).cursor
    accept(server, [first])
    result = tick(defs, instance, cursor)
    assert run_request(defs, instance, result.run_requests[0]).success
    return first, result


def failure_message(result) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.get_step_failure_events())


def shapes_of(server, task_ids) -> int:
    return sum(len(server.state.tasks[t].shapes) for t in task_ids)


def frame_uris_of(home: Path, task_ids) -> set[str]:
    rows = pq.read_table(home / "objects/assets/review_tasks" / MODEL / f"{DAY}.parquet").to_pylist()
    return {r["frame_uri"] for r in rows if r["task_id"] in task_ids}


# --- the whole flow, prod-like: S3 (SeaweedFS) label store, CVAT cloud storage, Postgres instance ------------


@pytest.fixture
def prod_env(prepared_home, fleet_file, s3_server, server, monkeypatch, tmp_path):
    """The prod profile: asset outputs and labels in a fresh SeaweedFS bucket, CVAT at the fake."""
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["storage"]["s3_bucket"] = f"de-{uuid.uuid4().hex[:12]}"
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    client = s3_server.client()
    client.create_bucket(Bucket=fleet["storage"]["s3_bucket"])
    candidates = prepared_home / "objects/assets/review_candidates" / MODEL / f"{DAY}.parquet"
    key = f"{fleet['storage']['s3_prefix']}/assets/review_candidates/{MODEL}/{DAY}.parquet"
    client.put_object(Bucket=fleet["storage"]["s3_bucket"], Key=key, Body=candidates.read_bytes())
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATA_ENGINE_PROFILE", "prod")
    monkeypatch.setenv("DATA_ENGINE_CONFIG", str(fleet_file))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "unused")
    monkeypatch.setenv("CVAT_URL", server.url)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", server.token)
    server.state.add_cloud_storage("demo-frames", id=7, default_size=IMAGE_SIZE)
    return fleet, client


def test_a_reviewed_task_flows_through_the_sensor_into_a_label_version_on_s3(prod_env, prod_instance, server):
    from data_engine.definitions import build_definitions

    fleet, client = prod_env
    bucket = fleet["storage"]["s3_bucket"]
    defs = build_definitions()  # the code location itself, on the prod profile
    store = LabelStore.s3(bucket, "labels", client=client)
    make_review_tasks(defs, prod_instance)
    tasks = our_tasks(server.state)
    assert [t.name for t in tasks] == NAMES and tasks[0].cloud_storage_id == 7
    first, second, third = (t.id for t in tasks)
    made_with = frame_uris_of_s3(client, bucket, fleet, [first, second])
    # each batch recorded its frames beside the label versions: name -> URI, camera, capture time
    record = json.loads(client.get_object(Bucket=bucket, Key=f"labels/{MODEL}/review_batches/{NAMES[0]}.json")["Body"].read())
    assert {f["uri"] for f in record["frames"]} == frame_uris_of_s3(client, bucket, fleet, [first])
    assert all(f["camera_id"] and f["captured_at"] for f in record["frames"])
    # exports map back through those records alone: the day's asset files are never read
    for asset in ("review_tasks", "review_candidates"):
        client.delete_object(Bucket=bucket, Key=f"{fleet['storage']['s3_prefix']}/assets/{asset}/{MODEL}/{DAY}.parquet")

    cursor = tick(defs, prod_instance, None).cursor
    accept(server, [first, second])
    result = tick(defs, prod_instance, cursor)
    (request,) = result.run_requests
    assert request.partition_key == MODEL and request.tags[MERGE_TAG] == MODEL
    run = run_request(defs, prod_instance, request)
    assert run.success
    assert prod_instance.get_run_by_id(run.run_id).tags[MERGE_TAG] == MODEL

    # a new version on S3, with its manifest, its counts and the pointer
    (version,) = store.versions(MODEL)
    assert store.latest(MODEL).version == version
    manifest = store.manifest(MODEL, version)
    assert manifest["parent"] is None
    assert sorted(t["task_id"] for t in manifest["merged_tasks"]) == sorted([str(first), str(second)])
    coco = store.label_set(MODEL, version)
    assert {i["file_name"] for i in coco["images"]} == made_with
    assert manifest["counts"]["images"] == 16 == manifest["counts"]["images_added"]
    assert manifest["counts"]["annotations"] == shapes_of(server, [first, second]) == len(coco["annotations"]) > 0
    assert all(i.get("camera_id") and i.get("captured_at") for i in coco["images"])  # from the batch records
    assert [c["name"] for c in coco["categories"]] == CLASSES

    # what the UI shows: metadata and one passed evaluation per check, for the partition
    metadata = metadata_of(run, "training_labels")
    assert metadata["label_version"] == version and metadata["location"] == f"s3://{bucket}/labels/{MODEL}/versions/{version}"
    assert metadata["tasks_merged"] == 2 and metadata["images"] == 16 and metadata["images_added"] == 16
    assert str(first) in metadata["merged_tasks"] and metadata["merged_now"] is True
    checks = checks_of(run)
    assert set(checks) == {"valid_coco", "boxes_inside_images", "no_duplicate_images", "categories_match_classes", "counts_within_bounds"}
    assert all(c.passed and c.partition == MODEL for c in checks.values())
    stored = prod_instance.get_latest_materialization_event(dg.AssetKey("training_labels"))
    assert stored.asset_materialization.partition == MODEL

    # the trainer-ready export, next to the version
    yolo = metadata_of(run, "yolo_dataset")
    assert yolo["path"] == f"s3://{bucket}/labels/{MODEL}/versions/{version}/yolo.zip" and yolo["written_now"] is True
    assert yolo["train_images"] + yolo["val_images"] + yolo["test_images"] == 16
    archive = zipfile.ZipFile(io.BytesIO(store.version_file(MODEL, version, "yolo.zip")))
    data_yaml = yaml.safe_load(archive.read("data.yaml"))
    assert data_yaml["names"] == dict(enumerate(CLASSES)) and "frames.csv" in archive.namelist()

    # the same run again: nothing pending, nothing written
    again = run_request(defs, prod_instance, request)
    assert again.success and store.versions(MODEL) == [version]
    assert metadata_of(again, "training_labels")["merged_now"] is False
    assert metadata_of(again, "yolo_dataset")["written_now"] is False
    assert all(c.passed for c in checks_of(again).values())

    # a task reopened, corrected (two boxes deleted) and accepted again: its frames are replaced, not duplicated
    reopen(server, first)
    cursor = tick(defs, prod_instance, result.cursor).cursor
    accept(server, [first], drop_shapes=2)
    result = tick(defs, prod_instance, cursor)
    (request,) = result.run_requests
    assert run_request(defs, prod_instance, request).success
    newer = store.latest(MODEL).version
    assert store.versions(MODEL) == [version, newer]
    counts = store.manifest(MODEL, newer)["counts"]
    assert store.manifest(MODEL, newer)["parent"] == version
    assert counts["images"] == 16 and counts["images_added"] == 0 and counts["images_replaced"] == 8
    assert counts["annotations"] == manifest["counts"]["annotations"] - 2 == shapes_of(server, [first, second])
    assert len({i["file_name"] for i in store.label_set(MODEL, newer)["images"]}) == 16
    assert third not in {int(t) for t in store.manifest(MODEL, newer)["tasks"]}

    # a task a person made by hand in CVAT (through the API, as the UI does) from cloud-storage frames,
    # named to match the model's task_name_pattern: it has no batch record, its frame names are the bucket's keys
    keys = ["site-9/cam-42/20261130T101500.jpg", "site-9/cam-42/20261130T101600.jpg"]
    hand_made = make_task_by_hand(server, f"data-engine-{MODEL}-2026-11-30-901", keys, box_class=CLASSES[0])
    (request,) = tick(defs, prod_instance, result.cursor).run_requests
    assert run_request(defs, prod_instance, request).success
    latest = store.latest(MODEL).version
    assert str(hand_made) in store.manifest(MODEL, latest)["tasks"]
    images = {i["file_name"]: i["id"] for i in store.label_set(MODEL, latest)["images"]}
    assert {f"s3://demo-frames/{key}" for key in keys} <= set(images) and len(images) == 18
    boxed = {a["image_id"] for a in store.label_set(MODEL, latest)["annotations"]}
    assert images[f"s3://demo-frames/{keys[0]}"] in boxed


def make_task_by_hand(server, name: str, keys: list[str], box_class: str) -> int:
    """What a person does in CVAT: a task in the model's project with frames from cloud storage 7, one box
    drawn on the first frame, then reviewed and accepted."""
    from cvat_sdk import make_client
    from cvat_sdk.api_client import models

    project = next(iter(server.state.projects.values()))
    with make_client(server.url, access_token=server.token) as client:
        task, _ = client.api_client.tasks_api.create(models.TaskWriteRequest(name=name, project_id=project.id, segment_size=10))
        started, _ = client.api_client.tasks_api.create_data(
            task.id, data_request=models.DataRequest(image_quality=70, server_files=keys, cloud_storage_id=7, sorting_method="predefined")
        )
        client.wait_for_completion(started.rq_id, status_check_period=0.01)
        labels, _ = client.api_client.labels_api.list(project_id=project.id)
        label_id = next(label.id for label in labels.results if label.name == box_class)
        box = models.LabeledShapeRequest(type="rectangle", frame=0, label_id=label_id, points=[10.0, 10.0, 60.0, 50.0])
        client.api_client.tasks_api.partial_update_annotations(
            "create", task.id, patched_labeled_data_request=models.PatchedLabeledDataRequest(shapes=[box])
        )
    server.state.complete_task(task.id)
    return task.id


def frame_uris_of_s3(client, bucket, fleet, task_ids) -> set[str]:
    key = f"{fleet['storage']['s3_prefix']}/assets/review_tasks/{MODEL}/{DAY}.parquet"
    rows = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read())).to_pylist()
    return {r["frame_uri"] for r in rows if r["task_id"] in task_ids}


# --- faults: nothing is written, and the message says what failed ------------------------------------------


def local_defs(server, home: Path, config: FleetConfig | None = None, label_stores: LabelStoreResource | None = None, **cvat):
    config = config or load_fleet_config()
    resources = {**resources_for(current_settings(), config), "annotation": fast_cvat(server, home, **cvat)}
    if label_stores is not None:
        resources["label_stores"] = label_stores
    return all_defs(config, resources)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_failed_broken_or_hanging_exports_write_nothing_and_say_why(review_env, server, where, request, monkeypatch):
    home = review_env
    if where == "local":
        store, stores = LabelStore.local(home / "labels"), None
    else:
        s3 = request.getfixturevalue("s3_server")
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        bucket = f"labels-{uuid.uuid4().hex[:12]}"
        s3.client().create_bucket(Bucket=bucket)
        store = LabelStore.s3(bucket, "labels", client=s3.client())
        stores = LabelStoreResource(locations={m: f"s3://{bucket}/labels" for m in TEST_FLEET["models"]})
    defs = local_defs(server, home, label_stores=stores, request_deadline_s=0.3)
    with dg.instance_for_test() as instance:
        make_review_tasks(defs, instance)
        records = store.objects.list("")  # the batches' frame records, written by review_tasks
        assert records == [f"{MODEL}/review_batches/{name}.json" for name in NAMES]
        first = our_tasks(server.state)[0].id
        cursor = tick(defs, instance, None).cursor
        accept(server, [first])
        merge_tick = tick(defs, instance, cursor)
        (merge,) = merge_tick.run_requests

        faults = [
            (lambda: server.faults.fail_requests("export", message="export worker died"), ["export worker died", "action=export"]),
            (lambda: server.faults.corrupt_exports("truncated"), ["not a readable zip", "truncated"]),
            (lambda: server.faults.corrupt_exports("invalid_json"), ["not valid JSON"]),
            (lambda: server.faults.hang_requests("export"), ["still started", "request_deadline_s"]),
        ]
        for arm, words in faults:
            arm()
            failed = run_request(defs, instance, merge, raise_on_error=False)
            assert not failed.success
            message = failure_message(failed)
            assert f"task {first}" in message and all(w in message for w in words), message
            assert store.latest(MODEL) is None and store.objects.list("") == records, "a failed merge wrote something"
            assert failed.asset_materializations_for_node("yolo_dataset") == []
        with server.state.lock:  # the hung export's worker is killed; CVAT would otherwise reuse the request
            for hung in server.state.requests.values():
                if hung.status == "started":
                    hung.status = "failed"

        # transient HTTP errors on the export request and on the download are retried
        server.faults.fail_next("POST", r"/dataset/export$", status=502, times=1)
        server.faults.fail_next("GET", r"/dataset/download$", status=503, times=2)
        server.state.clear_log()
        fixed = run_request(defs, instance, merge)  # the faults are gone: the same run now merges
        assert server.state.count_requests("GET", r"/dataset/download$") == 3
        assert fixed.success and len(store.versions(MODEL)) == 1
        assert store.manifest(MODEL, store.latest(MODEL).version)["counts"]["images"] == 8

        # a task with no batch record (made before records existed, or by hand) and uploaded frames cannot
        # have its frames mapped back: the run says how to recover
        project = next(iter(server.state.projects.values()))
        stray = server.state.create_task(f"data-engine-{MODEL}-2026-11-23-001", project_id=project.id, frames=["a.jpg"], segment_size=2)
        server.state.complete_task(stray.id)
        (late,) = tick(defs, instance, merge_tick.cursor).run_requests
        failed = run_request(defs, instance, late, raise_on_error=False)
        message = failure_message(failed)
        assert f"task {stray.id}" in message and "no batch record at" in message and "materialize" in message
        assert len(store.versions(MODEL)) == 1


# --- checks block the export, and a rollback through the CLI --------------------------------------------------


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_ENGINE_", "DAGSTER_"))}
    env |= {"DATA_ENGINE_HOME": str(home), "DATA_ENGINE_PROFILE": "local", "DATA_ENGINE_CONFIG": os.environ["DATA_ENGINE_CONFIG"]}
    return subprocess.run(
        [str(Path(sys.executable).parent / "data-engine"), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_a_version_failing_its_checks_is_never_published_and_a_rollback_restores_an_earlier_one(review_env, server):
    home = review_env
    store = LabelStore.local(home / "labels")
    defs = local_defs(server, home)
    with dg.instance_for_test() as instance:
        make_review_tasks(defs, instance)
        first = our_tasks(server.state)[0].id
        cursor = tick(defs, instance, None).cursor
        versions = []
        for drop in (0, 1):  # accepted, then corrected (one box deleted) and accepted again: two published versions
            if drop:
                reopen(server, first)
                cursor = tick(defs, instance, cursor).cursor
            accept(server, [first], drop_shapes=drop)
            result = tick(defs, instance, cursor)
            cursor = result.cursor
            assert run_request(defs, instance, result.run_requests[0]).success
            versions.append(store.latest(MODEL).version)
        earlier, good = versions

        # a re-review deletes every box: more than max_changed_annotation_fraction (25 %) of the labels are lost
        reopen(server, first)
        cursor = tick(defs, instance, cursor).cursor
        accept(server, [first], drop_shapes=10_000)
        result = tick(defs, instance, cursor)
        cursor = result.cursor
        blocked = run_request(defs, instance, result.run_requests[0], raise_on_error=False)
        assert not blocked.success
        bad = metadata_of(blocked, "training_labels")["label_version"]
        assert bad not in versions and metadata_of(blocked, "training_labels")["published"] is False
        assert store.latest(MODEL).version == good  # trainers reading latest.json never see the bad version
        checks = checks_of(blocked)
        assert not checks["counts_within_bounds"].passed and checks["counts_within_bounds"].partition == MODEL
        assert "more than the allowed labels.max_changed_annotation_fraction 25.00%; most in s3://" in checks["counts_within_bounds"].description
        assert all(checks[name].passed for name in checks if name != "counts_within_bounds")
        assert "blocking asset check" in failure_message(blocked)
        assert blocked.asset_materializations_for_node("yolo_dataset") == []  # the export (and training) waits
        assert store.version_file(MODEL, bad, "yolo.zip") is None

        # the same run again, nothing fixed: the refused version is gated again, no copy of it is written
        written = store.objects.list("")
        again = run_request(defs, instance, result.run_requests[0], raise_on_error=False)
        assert not again.success and store.objects.list("") == written
        assert metadata_of(again, "training_labels")["label_version"] == bad
        assert metadata_of(again, "training_labels")["reused_refused_version"] is True
        assert "again (the same merge as a run before: nothing new written)" in metadata_of(again, "training_labels")["note"]

        # the person on call lists the versions and rolls back to the earlier one, through the CLI
        listing = cli(home, "labels", "versions", "--model", MODEL)
        assert listing.returncode == 0, listing.stderr
        assert f"* {good}" in listing.stdout and f"  {earlier}" in listing.stdout and f"  {bad}" in listing.stdout
        rolled = cli(home, "labels", "rollback", "--model", MODEL, "--version", earlier, "--reason", "the correction was wrong")
        assert rolled.returncode == 0, rolled.stderr
        assert f"latest label version is now {earlier} (was {good})" in rolled.stdout
        pointer = store.latest(MODEL)
        assert pointer.version == earlier and pointer.record["reason"] == "rollback: the correction was wrong"
        assert pointer.record["previous"] == good
        missing = cli(home, "labels", "rollback", "--model", MODEL, "--version", "no-such-version")
        assert missing.returncode == 1 and "no-such-version" in missing.stderr

        # the task is still recorded as reviewed; reopened in CVAT, the next merge skips it (it waits for its
        # next acceptance) and the rolled-back version stays latest, its checks passing
        reopen(server, first)
        after = defs.resolve_job_def("label_merge_job").execute_in_process(partition_key=MODEL, instance=instance)
        assert after.success and store.latest(MODEL).version == earlier
        metadata = metadata_of(after, "training_labels")
        assert metadata["merged_now"] is False and "no longer accepted" in metadata["tasks_skipped"]
        assert all(c.passed for c in checks_of(after).values())
        assert metadata_of(after, "yolo_dataset")["label_version"] == earlier

    # the model's classes change in the config: the label set no longer matches, the export is blocked
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"][MODEL]["classes"].append("Glass")
    changed = local_defs(server, home, config=FleetConfig.model_validate(fleet))
    with dg.instance_for_test() as instance:
        blocked = changed.resolve_job_def("label_merge_job").execute_in_process(
            partition_key=MODEL, instance=instance, raise_on_error=False
        )
    checks = checks_of(blocked)
    assert not blocked.success and not checks["categories_match_classes"].passed
    assert "Glass" in checks["categories_match_classes"].description
    assert blocked.asset_materializations_for_node("yolo_dataset") == []
    assert blocked.dagster_run.tags[MERGE_TAG] == MODEL  # launchpad / backfill runs carry the tag too


def test_newly_reviewed_frames_grow_the_labels_past_the_old_change_bound(review_env, server):
    """Tasks 2 and 3 merged onto task 1's labels nearly triple the annotations: growth, not change."""
    home = review_env
    store = LabelStore.local(home / "labels")
    defs = local_defs(server, home)
    with dg.instance_for_test() as instance:
        make_review_tasks(defs, instance)
        first, second, third = (t.id for t in our_tasks(server.state))
        cursor = tick(defs, instance, None).cursor
        for batch in ([first], [second, third]):
            accept(server, batch)
            result = tick(defs, instance, cursor)
            cursor = result.cursor
            run = run_request(defs, instance, result.run_requests[0], raise_on_error=False)
            assert run.success, failure_message(run)
        counts = store.manifest(MODEL, store.latest(MODEL).version)["counts"]
        assert counts["annotations"] > 1.25 * counts["parent_annotations"] > 0  # beyond the old 25 % "change"
        assert counts["images_added"] == 12 and counts["annotations_changed"] == 0
        assert metadata_of(run, "training_labels")["annotations_changed"] == 0
        assert checks_of(run)["counts_within_bounds"].passed and len(store.versions(MODEL)) == 2


def test_export_without_any_label_version_says_why(review_env, server):
    """Nothing reviewed, nothing imported: training_labels says nothing to merge, yolo_dataset says what to do."""
    defs = local_defs(server, review_env)
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("label_merge_job").execute_in_process(partition_key=MODEL, instance=instance, raise_on_error=False)
    assert "nothing to merge" in metadata_of(run, "training_labels")["note"]
    message = failure_message(run)
    assert "has no label version yet" in message and "materialize training_labels first" not in message
    assert f"data-engine labels import --model {MODEL}" in message and "accept review tasks in CVAT" in message


def test_s3_faults_fail_the_merge_with_one_message(review_env, server, s3_server, monkeypatch):
    """A corrupt latest.json and a wrong AWS secret: the run fails naming the object and the fix."""
    bucket = f"labels-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key=f"labels/{MODEL}/latest.json", Body=b'{"version": "../../CnD/x"}')
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    stores = LabelStoreResource(locations={m: f"s3://{bucket}/labels" for m in TEST_FLEET["models"]})
    defs = local_defs(server, review_env, label_stores=stores)
    latest = f"s3://{bucket}/labels/{MODEL}/latest.json"
    wrong = "not-the-secret-7f3a"
    for secret, expected in ((s3_server.env()["AWS_SECRET_ACCESS_KEY"], f"{latest} is corrupt"), (wrong, f"{latest}: S3 request failed")):
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # as in a new run process: boto3 caches what it read
        with dg.instance_for_test() as instance:
            run = defs.resolve_job_def("label_merge_job").execute_in_process(
                partition_key=MODEL, instance=instance, raise_on_error=False
            )
        [failure] = [e for e in run.get_step_failure_events() if e.step_key == "training_labels"]
        message = failure.event_specific_data.error.message
        assert expected in message and wrong not in message
    assert "SignatureDoesNotMatch" in message and "check the AWS credentials" in message


def test_merges_of_one_model_queue_behind_each_other(local_env):
    """The job tags every run with the model; the production instance limits that tag to one run per value."""
    instance_config = yaml.safe_load(PROD_DAGSTER_YAML.read_text())
    limits = instance_config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": MERGE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert instance_config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    config = load_fleet_config()
    job = all_defs(config, resources_for(current_settings(), config)).resolve_job_def("label_merge_job")
    for model in config.models:
        assert job.get_tags_for_partition_key(model, None)[MERGE_TAG] == model
    assert sorted(job.partitions_def.get_partition_keys()) == sorted(config.models)


def test_frames_a_reviewer_deletes_leave_the_label_set_and_count_against_the_bound(review_env, server, fleet_file):
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"][MODEL].setdefault("labels", {})["max_removed_image_fraction"] = 0.2
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    home = review_env
    store = LabelStore.local(home / "labels")
    defs = local_defs(server, home)
    with dg.instance_for_test() as instance:
        first, result = merge_first_task(defs, instance, server)
        before = {i["file_name"] for i in store.label_set(MODEL)["images"]}
        assert len(before) == 8

        # re-review: the reviewer deletes a frame (a bad image) and accepts the task again
        reopen(server, first)
        cursor = tick(defs, instance, result.cursor).cursor
        deleted = server.state.tasks[first].frames[2].name
        server.state.delete_frames(first, [2])
        accept(server, [first])
        result = tick(defs, instance, cursor)
        merged = run_request(defs, instance, result.run_requests[0])
        assert merged.success
        after = {i["file_name"] for i in store.label_set(MODEL)["images"]}
        rows = pq.read_table(home / "objects/assets/review_tasks" / MODEL / f"{DAY}.parquet").to_pylist()
        (deleted_uri,) = [r["frame_uri"] for r in rows if r["task_id"] == first and r["frame_name"] == deleted]
        assert after == before - {deleted_uri}
        assert metadata_of(merged, "training_labels")["images_removed"] == 1  # 1 of 8 = 12.5 %, within the 20 % bound


def test_a_task_that_cannot_be_merged_is_reported_and_never_blocks_the_others(review_env, server):
    home = review_env
    store = LabelStore.local(home / "labels")
    defs = local_defs(server, home)
    with dg.instance_for_test() as instance:
        make_review_tasks(defs, instance)
        first = our_tasks(server.state)[0].id
        project = next(iter(server.state.projects.values()))
        # made by hand from uploaded files: no batch record, no cloud storage, so no way back to frame URIs
        stray = server.state.create_task(f"data-engine-{MODEL}-2026-11-23-001", project_id=project.id, frames=["a.jpg"], segment_size=2)
        cursor = tick(defs, instance, None).cursor
        accept(server, [first, stray.id])
        (request,) = tick(defs, instance, cursor).run_requests
        merged = run_request(defs, instance, request)
        assert merged.success
        manifest = store.manifest(MODEL, store.latest(MODEL).version)
        assert set(manifest["tasks"]) == {str(first)} and manifest["counts"]["images"] == 8
        skipped = metadata_of(merged, "training_labels")["tasks_skipped"]
        assert f"| {stray.id} |" in skipped and "cannot be merged" in skipped and "no batch record at" in skipped


# --- label-error re-review: frames of a label version sent back for review ------------------------------------


def test_frames_sent_back_for_review_get_their_labels_replaced_by_the_accepted_review(review_env, server):
    store = LabelStore.local(review_env / "labels")
    defs = local_defs(server, review_env)
    job = defs.resolve_job_def("label_rereview_job")

    def rereview(**config):
        return job.execute_in_process(run_config={"ops": {"rereview_batch": {"config": config}}}, instance=instance, raise_on_error=False)

    with dg.instance_for_test() as instance:
        _, result = merge_first_task(defs, instance, server)
        version = store.latest(MODEL).version
        coco = store.label_set(MODEL, version)
        boxes = {i["file_name"]: sum(a["image_id"] == i["id"] for a in coco["annotations"]) for i in coco["images"]}
        chosen = [uri for uri, count in boxes.items() if count][:2]
        made_before = len(server.state.tasks)

        # launchpad config is checked before anything is made, with one message naming each bad entry
        bad = rereview(model=MODEL, label="check-1", frame_uris=[chosen[0], "s3://nowhere/x.jpg", chosen[0]])
        message = failure_message(bad)
        assert not bad.success and "s3://nowhere/x.jpg" in message and "listed twice" in message and version in message
        unknown_model = rereview(model="nope", label="check-1", frame_uris=chosen)
        assert not unknown_model.success and "model 'nope' is not in the fleet config" in failure_message(unknown_model)
        escaped = rereview(model=MODEL, label="../escape", frame_uris=chosen)  # the label becomes an object key
        (cause,) = [str(e.event_specific_data.error.cause) for e in escaped.get_step_failure_events()]
        assert not escaped.success and "RereviewConfig\nlabel\n  String should match pattern" in cause
        assert len(server.state.tasks) == made_before

        # one batch, pre-annotated with the frames' current labels; the same run again makes nothing twice
        for _ in range(2):
            made = rereview(model=MODEL, label="check-1", frame_uris=chosen)
            assert made.success
        (task,) = [t for t in server.state.tasks.values() if t.name == f"data-engine-{MODEL}-rereview-check-1"]
        assert task.size == 2 and len(task.shapes) == boxes[chosen[0]] + boxes[chosen[1]]
        assert json.loads(store.objects.get(f"{MODEL}/review_batches/{task.name}.json"))["frames"][0]["uri"] == chosen[0]

        # the reviewer deletes one box and accepts: the sensor and the merge replace those frames' labels
        accept(server, [task.id], drop_shapes=1)
        (request,) = tick(defs, instance, result.cursor).run_requests
        assert run_request(defs, instance, request).success
        newer = store.latest(MODEL).version
        counts = store.manifest(MODEL, newer)["counts"]
        assert newer != version and str(task.id) in store.manifest(MODEL, newer)["tasks"]
        assert counts["images"] == len(boxes) and counts["images_replaced"] == 2 and counts["images_added"] == 0
        assert counts["annotations"] == sum(boxes.values()) - 1
        rereview_with_predictions_then_merge(defs, instance, server, store, job, review_env)


def rereview_with_predictions_then_merge(defs, instance, server, store: LabelStore, job, home: Path) -> None:
    """Three frames sent back with the model's predictions (continuing the test above, to spare a second
    setup): the current labels are auto shapes of the class labels, the predictions auto shapes of the labels
    `prediction:<class>`; accepted with both left in place, the new version holds only the class labels."""

    def rereview(**config):
        run_config = {"ops": {"rereview_batch": {"config": {"model": MODEL, "label": "with-predictions", **config}}}}
        return job.execute_in_process(run_config=run_config, instance=instance)

    version = store.latest(MODEL).version
    before = store.label_set(MODEL, version)
    chosen = [image["file_name"] for image in before["images"]][:3]
    with pytest.raises(dg.DagsterInvalidConfigError, match="include_predictions"):
        rereview(frame_uris=chosen, include_predictions="yes")
    # the warehouse cannot answer: the run fails naming the batch, and nothing is made in CVAT
    with duckdb.connect(str(home / "warehouse.duckdb")) as warehouse:
        warehouse.execute("ALTER TABLE predictions RENAME TO predictions_away")
    try:
        with pytest.raises(dg.Failure, match=r"rereview-with-predictions: the frames' predictions could not be read, nothing was made: .*predictions"):
            rereview(frame_uris=chosen, include_predictions=True)
    finally:
        with duckdb.connect(str(home / "warehouse.duckdb")) as warehouse:
            warehouse.execute("ALTER TABLE predictions_away RENAME TO predictions")
    assert not [t for t in server.state.tasks.values() if t.name.endswith("rereview-with-predictions")]
    assert not [key for key in store.objects.list(f"{MODEL}/review_batches/") if "rereview-with-predictions" in key]
    predicted = {row["frame_uri"]: sorted(p["class_name"] for p in row["predictions"] or []) for row in candidates(home)}
    expected = {uri: [f"prediction:{name}" for name in predicted[uri]] for uri in chosen}
    assert any(expected.values())
    for _ in range(2):  # the same run again makes nothing twice
        made = rereview(frame_uris=chosen, include_predictions=True)
    (task,) = [t for t in server.state.tasks.values() if t.name == f"data-engine-{MODEL}-rereview-with-predictions"]
    labels = {label.id: label.name for label in server.state.labels_of(task_id=task.id)}
    shown: dict[int, list[str]] = {}
    for shape in task.shapes.values():
        assert shape["source"] == "auto"
        shown.setdefault(shape["frame"], []).append(labels[shape["label_id"]])
    names = {category["id"]: category["name"] for category in before["categories"]}
    by_image = {image["file_name"]: image["id"] for image in before["images"]}
    for index, uri in enumerate(chosen):
        current = [names[a["category_id"]] for a in before["annotations"] if a["image_id"] == by_image[uri]]
        assert sorted(shown.get(index, [])) == sorted(current + expected[uri])
    (output,) = [event for event in made.all_node_events if event.is_successful_output]
    metadata = {key: value.value for key, value in output.step_output_data.metadata.items()}
    assert metadata["prediction_boxes"] == sum(map(len, expected.values())) and metadata["prediction_model_versions"] != "-"

    cursor = tick(defs, instance, None).cursor  # past every task so far: only the new acceptance is requested
    accept(server, [task.id])
    (request,) = tick(defs, instance, cursor).run_requests
    assert run_request(defs, instance, request).success
    newer = store.latest(MODEL).version
    counts = store.manifest(MODEL, newer)["counts"]
    assert newer != version and counts["images_replaced"] == 3 and counts["annotations_changed"] == 0
    assert counts["annotations"] == len(before["annotations"])

