"""Importing a base label set through `data-engine labels import`, so the first merge builds on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from data_engine.labels import LabelStore
from data_engine_tests.conftest import REPO_ROOT


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
