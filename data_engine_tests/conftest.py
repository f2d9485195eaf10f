"""Shared fixtures: real servers started once per session, and an isolated data-engine environment."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from data_engine.config import load_fleet_config
from data_engine.defs.profiles import resources_for
from data_engine.demo import write_demo_warehouse
from data_engine.defs.selection import build_selection_defs
from data_engine.settings import current_settings
from data_engine_tests.cvat_server import running_cvat_server
from data_engine_tests.servers.bigquery_emulator import running_bqemulator
from data_engine_tests.servers.label_studio import delete_all_projects, running_test_label_studio
from data_engine_tests.servers.moto import running_moto
from data_engine_tests.servers.postgres import running_postgres
from data_engine_tests.servers.seaweedfs import running_seaweedfs

REPO_ROOT = Path(__file__).resolve().parents[1]
PROD_DAGSTER_YAML = REPO_ROOT / "docker" / "dagster.yaml"
# The model-day the CVAT and label tests review (the demo data of `prepared_home` covers it).
REVIEW_PARTITION = dg.MultiPartitionKey({"date": "2026-11-24", "model": "municipals"})

# A small fleet: two models with every filter kind, scoped filters and tight budgets so that every
# drop status shows up on little data.
TEST_FLEET = {
    "warehouse": {
        "predictions_table": "test-project.inference.predictions",
        "frames_table": "test-project.inference.frames",
        "selections_table": "test-project.data_engine.review_selections",
        "max_bytes_billed": 10_000_000_000,
    },
    "storage": {"s3_bucket": "data-engine-test", "s3_prefix": "runs"},
    "models": {
        "municipals": {
            "classes": ["PET", "Other PET", "HDPE", "Cardboard", "Film", "Metal Can"],
            "clients": {"acme_recycling": {"cameras": ["cam-01", "cam-02"]}, "city_mrf": {"cameras": ["cam-11"]}},
            "selection": {
                "start_date": "2026-01-01",
                "max_frames_per_day": 20,
                "max_frames_per_camera_per_day": 8,
                "filters": [
                    {"kind": "size_class", "classes": ["Other PET"], "min_area_fraction": 0.05},
                    {"kind": "class_overlap", "min_iou": 0.5, "class_pairs": [["PET", "Other PET"]]},
                    {"kind": "confidence_band", "min_score": 0.3, "max_score": 0.6, "max_frames": 15},
                    {"kind": "confidence_band", "name": "low_film_cam_11", "min_score": 0.05, "max_score": 0.7,
                     "classes": ["Film"], "cameras": ["cam-11"]},
                    {"kind": "empty_frames", "max_frames": 4, "clients": ["acme_recycling"]},
                ],
            },
            # Small tasks, jobs and annotation batches, so one model-day makes several of each.
            "annotation": {"max_frames_per_task": 8, "cvat": {"cloud_storage_id": 7, "segment_size": 3,
                           "assignees": ["alice", "bob"], "annotation_batch_size": 10}},
        },
        "ENS": {
            "classes": ["Glass", "Metal Can", "PET", "HDPE", "Tetra Pak"],
            "clients": {"ens_line_1": {"cameras": ["ens-01", "ens-02"]}},
            "selection": {
                "start_date": "2026-11-20",
                "max_frames_per_day": 500,
                "max_frames_per_camera_per_day": 100,
                "filters": [
                    {"kind": "class_overlap", "min_iou": 0.4},
                    {"kind": "empty_frames", "max_frames": 5},
                ],
            },
            "annotation": {"task_name_prefix": "ens-review", "project_name": "ENS review", "max_frames_per_task": 50},
        },
    },
}


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(TEST_FLEET, sort_keys=False))
    return path


@pytest.fixture
def local_env(tmp_path: Path, fleet_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local profile on the test fleet, with its own DATA_ENGINE_HOME and DAGSTER_HOME."""
    home = tmp_path / "home"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    monkeypatch.setenv("DATA_ENGINE_PROFILE", "local")
    monkeypatch.setenv("DATA_ENGINE_HOME", str(home))
    monkeypatch.setenv("DATA_ENGINE_CONFIG", str(fleet_file))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return home


@pytest.fixture(scope="session")
def bq_emulator(tmp_path_factory):
    with running_bqemulator(tmp_path_factory.mktemp("bqemulator")) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def label_studio_server(tmp_path_factory):
    """The real Label Studio, serving frames under the session's temporary root (every test's home)."""
    with running_test_label_studio(tmp_path_factory.getbasetemp()) as credentials:
        yield credentials


@pytest.fixture
def label_studio(label_studio_server):
    """The session's Label Studio, without the projects of earlier tests."""
    delete_all_projects(label_studio_server)
    return label_studio_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def moto_server():
    with running_moto() as server:
        yield server


@pytest.fixture
def prod_instance(pg_server, tmp_path, monkeypatch):
    """The production dagster.yaml (docker/), unchanged, in a fresh DAGSTER_HOME, pointed at the test server."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROD_DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", pg_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused")  # trust auth
    monkeypatch.setenv("DAGSTER_PG_HOST", pg_server.host)
    monkeypatch.setenv("DAGSTER_PG_DB", pg_server.db)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(pg_server.port))
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture(scope="module")
def prepared_home(tmp_path_factory) -> Path:
    """A DATA_ENGINE_HOME where municipals' review_candidates of DAY are materialized (20 frames)."""
    root = tmp_path_factory.mktemp("review")
    fleet = root / "fleet.yaml"
    fleet.write_text(yaml.safe_dump(TEST_FLEET, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_ENGINE_PROFILE", "local")
        mp.setenv("DATA_ENGINE_HOME", str(root / "home"))
        mp.setenv("DATA_ENGINE_CONFIG", str(fleet))
        mp.delenv("CVAT_URL", raising=False)
        config = load_fleet_config()
        # The review day's demo data, written explicitly: the on-first-use demo data ends yesterday.
        day = dt.date.fromisoformat(REVIEW_PARTITION.keys_by_dimension["date"])
        write_demo_warehouse(config, root / "home" / "warehouse.duckdb", root / "home" / "objects", end_date=day, days=1)
        selection = build_selection_defs(config)
        result = dg.materialize(
            list(selection.assets), partition_key=REVIEW_PARTITION, resources=resources_for(current_settings(), config)
        )
        assert result.success
    return root / "home"


@pytest.fixture
def server():
    with running_cvat_server() as srv:
        srv.state.add_user("alice")
        srv.state.add_user("bob")
        yield srv


@pytest.fixture
def review_env(local_env, prepared_home, server, monkeypatch) -> Path:
    """The local profile with the prepared review day, pointed at the fake CVAT server."""
    shutil.copytree(prepared_home, local_env)
    monkeypatch.setenv("CVAT_URL", server.url)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", server.token)
    return local_env
