"""`data-engine labels`: importing a base label set (checked like a merge), rollback rules, and clear messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import uuid

import boto3
import yaml

from data_engine.cli import main
from data_engine.labels import LabelStore, import_label_set, merge_reviewed_tasks
from data_engine_tests.conftest import REPO_ROOT, TEST_FLEET
from data_engine_tests.labels_fixtures import CLASSES, frame, task


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "data-engine"), *args],
        env=dict(os.environ), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )


def _coco(file_names: list[str]) -> dict:
    return {
        "images": [{"id": i + 1, "file_name": name, "width": 320, "height": 240} for i, name in enumerate(file_names)],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0}
            for i in range(len(file_names))
        ],
        "categories": [{"id": 7, "name": "Glass"}],
    }


def test_import_makes_a_base_version_and_refuses_duplicate_frames(local_env, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_coco(["s3://frames/ens/a.png", "s3://frames/ens/b.png"])))
    imported = _cli("labels", "import", "--model", "ENS", "--coco", str(base))
    assert imported.returncode == 0, imported.stderr
    store = LabelStore.local(local_env / "labels")
    version = store.latest("ENS").version
    assert f"imported {base} as label version {version}" in imported.stdout
    manifest = store.manifest("ENS", version)
    assert manifest["source"] == "import" and manifest["counts"]["images"] == 2
    label_set = store.label_set("ENS", version)
    assert [c["name"] for c in label_set["categories"]] == ["Glass", "Metal Can", "PET", "HDPE", "Tetra Pak"]
    assert {a["category_id"] for a in label_set["annotations"]} == {c["id"] for c in label_set["categories"] if c["name"] == "Glass"}

    listing = _cli("labels", "versions", "--model", "ENS")
    assert f"* {version}  import" in listing.stdout

    duplicated = tmp_path / "duplicated.json"
    duplicated.write_text(json.dumps(_coco(["s3://frames/ens/a.png", "s3://frames/ens/a.png"])))
    refused = _cli("labels", "import", "--model", "ENS", "--coco", str(duplicated))
    assert refused.returncode == 1 and "s3://frames/ens/a.png" in refused.stderr
    assert store.latest("ENS").version == version  # nothing half-written moved the pointer


def test_import_refuses_a_base_that_fails_the_checks(local_env, tmp_path):
    """NaN, negative boxes and zero-size images would become latest and block every merge and export."""
    text = json.dumps(_coco(["s3://frames/ens/a.png", "s3://frames/ens/b.png"]))
    broken = {
        "nan.json": text.replace('"bbox": [10, 10, 40, 30]', '"bbox": [10, NaN, 40, 30]', 1),
        "negative.json": text.replace('"bbox": [10, 10, 40, 30]', '"bbox": [10, 10, -40, 30]', 1),
        "zero_size.json": text.replace('"width": 320', '"width": 0', 1),
    }
    expected = {
        "nan.json": "annotation 1 needs a 'bbox' of 4 finite numbers [x, y, width, height] (has [10, nan, 40, 30])",
        "negative.json": "boxes_inside_images: annotation 1 has an empty box [10, 10, -40, 30]",
        "zero_size.json": "image 1 (s3://frames/ens/a.png) needs a positive, finite 'width' and 'height' (has 0 x 240)",
    }
    for name, content in broken.items():
        path = tmp_path / name
        path.write_text(content)
        refused = _cli("labels", "import", "--model", "ENS", "--coco", str(path))
        assert refused.returncode == 1 and f"cannot import {path} as the labels of 'ENS'" in refused.stderr
        assert expected[name] in refused.stderr and "Traceback" not in refused.stderr
    store = LabelStore.local(local_env / "labels")
    assert store.latest("ENS") is None and store.objects.list("") == []


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """The console script's `main`, in this process (the environment of the test)."""
    try:
        code = main(list(args))
    except SystemExit as exit:  # argparse's usage errors and --help
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_model_help_lists_the_models_and_an_unknown_model_is_refused(local_env, capsys):
    code, out, _ = run_cli(capsys, "labels", "versions", "--help")
    assert code == 0 and "a model of the fleet config: municipals, ENS" in out
    code, _, err = run_cli(capsys, "labels", "rollback", "--model", "Nope", "--version", "x")
    assert code == 2 and "argument --model: invalid choice: 'Nope' (choose from 'municipals', 'ENS')" in err


def test_rollback_takes_only_versions_of_that_model_and_says_when_nothing_changes(local_env, capsys):
    store = LabelStore.local(local_env / "labels")
    first = merge_reviewed_tasks(store, "municipals", [task(1, {frame(index=0): []})], CLASSES).version
    second = merge_reviewed_tasks(store, "municipals", [task(2, {frame(index=1): []})], CLASSES).version
    theirs = import_label_set(store, "ENS", _coco(["s3://frames/ens/a.png"]), ["Glass"])
    pointer = store.objects.get("municipals/latest.json")
    for hostile in (f"../../ENS/versions/{theirs}", theirs, f"{first}/../../../ENS/versions/{theirs}"):
        code, out, err = run_cli(capsys, "labels", "rollback", "--model", "municipals", "--version", hostile)
        assert code == 1 and out == "" and "data-engine labels versions --model municipals" in err
    assert store.objects.get("municipals/latest.json") == pointer  # municipals never serves ENS's labels

    code, out, _ = run_cli(capsys, "labels", "rollback", "--model", "municipals", "--version", second)
    assert code == 0 and out == f"municipals: {second} is already the latest label version; nothing changed\n"
    assert store.objects.get("municipals/latest.json") == pointer
    code, out, _ = run_cli(capsys, "labels", "rollback", "--model", "municipals", "--version", first)
    assert code == 0 and f"latest label version is now {first} (was {second})" in out


def test_a_closed_pipe_ends_the_listing_quietly(local_env):
    store = LabelStore.local(local_env / "labels")
    for task_id in range(3):
        merge_reviewed_tasks(store, "municipals", [task(task_id, {frame(index=task_id): []})], CLASSES)
    listing = subprocess.Popen(
        [str(Path(sys.executable).parent / "data-engine"), "labels", "versions", "--model", "municipals"],
        env=dict(os.environ), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    listing.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    errors = listing.stderr.read().decode()
    assert listing.wait(timeout=120) == 141 and errors == ""


def test_s3_errors_and_a_corrupt_pointer_give_one_message(local_env, s3_server, monkeypatch, capsys):
    """Prod profile, the label bucket on SeaweedFS: wrong secret, missing bucket, corrupt latest.json."""
    fleet = {**TEST_FLEET, "storage": {"s3_bucket": f"de-{uuid.uuid4().hex[:12]}", "s3_prefix": "runs"}}
    Path(os.environ["DATA_ENGINE_CONFIG"]).write_text(yaml.safe_dump(fleet, sort_keys=False))
    bucket = fleet["storage"]["s3_bucket"]
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATA_ENGINE_PROFILE", "prod")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "unused")
    latest = f"s3://{bucket}/labels/municipals/latest.json"

    code, _, err = run_cli(capsys, "labels", "versions", "--model", "municipals")
    assert code == 1 and "NoSuchBucket" in err and f"create the bucket {bucket!r}" in err

    s3_server.client().create_bucket(Bucket=bucket)
    s3_server.client().put_object(Bucket=bucket, Key="labels/municipals/latest.json", Body=b"\x00\x01 not json")
    code, out, err = run_cli(capsys, "labels", "versions", "--model", "municipals")
    assert code == 1 and err.startswith(f"{latest} is corrupt")
    assert "data-engine labels rollback --model municipals --version <id>" in err

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a new process: boto3 caches the credentials it read
    code, out, err = run_cli(capsys, "labels", "rollback", "--model", "municipals", "--version", "20261125T101500123456Z-1a2b3c4d")
    assert code == 1 and err.startswith(f"s3://{bucket}/labels/municipals/versions/: S3 request failed")
    assert "AWS_SECRET_ACCESS_KEY" in err and "not-the-secret" not in err


def test_the_old_annotation_bound_key_says_what_replaced_it(local_env, capsys):
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"]["ENS"]["labels"] = {"max_annotation_change_fraction": 0.5}
    Path(os.environ["DATA_ENGINE_CONFIG"]).write_text(yaml.safe_dump(fleet, sort_keys=False))
    code, _, err = run_cli(capsys, "labels", "versions", "--model", "ENS")
    assert code == 2 and "models.ENS.labels" in err
    assert "max_annotation_change_fraction was replaced by max_changed_annotation_fraction" in err and "rename the key" in err
