"""The commands a person types, run as subprocesses on the local profile: demo data, a single-partition
materialization and a job backfill through the `dagster` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from data_engine_tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, request) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    # Runs launched by the backfill start at once (no daemon to dequeue them in a test).
    (dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_ENGINE_", "DAGSTER_"))}
    env |= {"DATA_ENGINE_HOME": str(root / "home"), "DAGSTER_HOME": str(dagster_home), "DATA_ENGINE_PROFILE": "local"}
    run(["data-engine", "demo-data", "--end-date", "2026-11-24", "--days", "2", "--frames-per-camera", "8"], env)
    return env


def run(command: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def outputs(env: dict[str, str], asset: str) -> list[str]:
    root = Path(env["DATA_ENGINE_HOME"]) / "objects" / "assets" / asset
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_demo_data_writes_the_warehouse_and_frame_images(cli_env):
    home = Path(cli_env["DATA_ENGINE_HOME"])
    assert (home / "warehouse.duckdb").is_file()
    images = list((home / "objects" / "demo-frames").rglob("*.png"))
    assert len(images) > 100


def test_asset_materialize_one_partition(cli_env):
    run(
        ["dagster", "asset", "materialize", "-m", "data_engine.definitions",
         "--select", "predictions,empty_frames,review_candidates", "--partition", "2026-11-24|municipals"],
        cli_env,
    )
    assert outputs(cli_env, "review_candidates") == ["municipals/2026-11-24.parquet"]


def test_job_backfill_over_two_partitions(cli_env):
    run(
        ["dagster", "job", "backfill", "-m", "data_engine.definitions", "-j", "selection_job",
         "--partitions", "2026-11-23|CnD,2026-11-24|CnD", "--noprompt"],
        cli_env,
    )
    assert {"CnD/2026-11-23.parquet", "CnD/2026-11-24.parquet"} <= set(outputs(cli_env, "review_candidates"))
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs(dg.RunsFilter(job_name="selection_job"))
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["2026-11-23|CnD", "2026-11-24|CnD"]
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}

def test_definitions_validate_and_import_no_heavy_client(cli_env):
    run(["dagster", "definitions", "validate", "-m", "data_engine.definitions"], cli_env)
    probe = (
        "import sys, data_engine.definitions\n"
        "heavy = [m for m in ('google.cloud.bigquery', 'boto3', 'cvat_sdk', 'duckdb', 'pandas', 'pyarrow', 'sqlglot', 'pyodi')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", probe], env=cli_env, cwd=REPO_ROOT, check=True, timeout=120)
