"""The commands a person types, run as subprocesses on the local profile: demo data, `data-engine dev`
(the UI and daemon on a persistent instance), a single-partition materialization and a job backfill
through the `dagster` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from data_engine_tests.conftest import REPO_ROOT
from data_engine_tests.servers.ports import free_port

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory, request) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATA_ENGINE_", "DAGSTER_"))}
    # The CLI commands use the instance `data-engine dev` keeps, as README says to.
    env |= {"DATA_ENGINE_HOME": str(root / "home"), "DAGSTER_HOME": str(root / "home" / "dagster"), "DATA_ENGINE_PROFILE": "local"}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True)  # made by `data-engine dev`, which may start after the first command
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


def test_demo_frames_have_a_hidden_ground_truth_that_the_images_show(cli_env):
    from PIL import Image

    from data_engine.demo import DEMO_BUCKET, read_ground_truth

    home = Path(cli_env["DATA_ENGINE_HOME"])
    images = sorted((home / "objects" / DEMO_BUCKET / "municipals").rglob("*.png"))
    uris = [f"s3://{DEMO_BUCKET}/{path.relative_to(home / 'objects' / DEMO_BUCKET)}" for path in images]
    truth = read_ground_truth(home / "warehouse.duckdb", "municipals", [*uris, "s3://elsewhere/x.png"])
    assert set(truth) == set(uris), "every demo frame has a truth entry, other URIs none"
    assert any(truth.values()) and not all(truth.values()), "some frames have objects, some are empty"
    path, boxes = next((p, truth[u]) for p, u in zip(images, uris) if truth[u])
    with Image.open(path) as image:
        background = image.getpixel((0, 0)) if all(b["x_min"] > 0 or b["y_min"] > 0 for b in boxes) else None
        box = boxes[-1]  # drawn last, so nothing covers its centre
        centre = image.getpixel((int((box["x_min"] + box["x_max"]) / 2), int((box["y_min"] + box["y_max"]) / 2)))
    assert centre != background, f"the true box {box} is drawn in {path}"


def test_asset_materialize_one_partition(cli_env):
    run(
        ["dagster", "asset", "materialize", "-m", "data_engine.definitions",
         "--select", "predictions,empty_frames,review_candidates", "--partition", "2026-11-24|municipals"],
        cli_env,
    )
    assert outputs(cli_env, "review_candidates") == ["municipals/2026-11-24.parquet"]


@contextmanager
def running_dev(env: dict[str, str], log: Path) -> Iterator[int]:
    """`data-engine dev` as README starts it (without DAGSTER_HOME), until the UI answers on the port it
    yields; then Ctrl-C."""
    port = free_port()
    dev_env = {k: v for k, v in env.items() if k != "DAGSTER_HOME"}
    # A shell's background jobs (`nohup ... &`, how CI may start the tests) ignore SIGINT, and children
    # inherit that: dev would then ignore Ctrl-C. A terminal's dev does not; a handler (unlike "ignore")
    # is reset at exec, so dev starts with Ctrl-C working whatever this process was started with.
    ignoring = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(log, "w") as output:
            process = subprocess.Popen(
                [str(BIN / "data-engine"), "dev", "--port", str(port)],
                env=dev_env, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
    finally:
        signal.signal(signal.SIGINT, ignoring)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while not _answers(f"{url}/server_info"):
            assert process.poll() is None, f"data-engine dev exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the UI did not answer:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield port
    finally:
        _stop_with_ctrl_c(process, log)


def _stop_with_ctrl_c(process: subprocess.Popen, log: Path) -> None:
    """Ctrl-C, as a person stops it; still running 90 s later is a failure, which lists its processes."""
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        alive = subprocess.run(["ps", "-ww", "-o", "pid,ppid,stat,etime,args", "-g", str(process.pid)], capture_output=True, text=True).stdout
        alive += _signal_masks(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"data-engine dev did not stop on Ctrl-C; its processes were:\n{alive}\n{log.read_text()[-3000:]}") from None


def _signal_masks(group: int) -> str:
    """Each process's blocked, ignored and caught signals (hex masks, /proc/<pid>/status): a Ctrl-C nobody
    acts on is either ignored or blocked, perhaps inherited from the test process (shown first)."""
    pids = ["self", *subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True).stdout.split()]
    lines = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        masks = " ".join(line.replace("\t", "") for line in status if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
        lines.append(f"{'pytest' if pid == 'self' else pid}: {masks}")
    return "signal masks (SIGINT is 0x2):\n" + "\n".join(lines)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_for_runs(dagster_home: str, job: str, count: int, timeout_s: float = 400) -> list[dg.DagsterRun]:
    deadline = time.monotonic() + timeout_s
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        while True:
            runs = instance.get_runs(dg.RunsFilter(job_name=job))
            if len(runs) == count and all(r.is_finished for r in runs):
                return runs
            assert time.monotonic() < deadline, f"runs not finished: {[(r.run_id, r.status) for r in runs]}"
            time.sleep(2)


def test_dev_keeps_its_instance_in_data_engine_home_and_its_daemon_runs_backfills_and_graphql_launches(cli_env, tmp_path):
    """README's way to start and to backfill: `data-engine dev` in one shell; in another, the CLI with
    DAGSTER_HOME=$DATA_ENGINE_HOME/dagster queues one run per partition, and the daemon starts them.
    A launch through DagsterGraphQLClient with only the `dagster/partition` tag runs its partition too."""
    from dagster_graphql import DagsterGraphQLClient

    dagster_home = Path(cli_env["DAGSTER_HOME"])
    log = tmp_path / "dev.log"
    with running_dev(cli_env, log) as port:
        assert (dagster_home / "dagster.yaml").read_text() == (REPO_ROOT / "dagster.yaml").read_text()
        run(
            ["dagster", "job", "backfill", "-m", "data_engine.definitions", "-j", "selection_job",
             "--partitions", "2026-11-23|CnD,2026-11-24|CnD", "--noprompt"],
            cli_env,
        )
        DagsterGraphQLClient("127.0.0.1", port_number=port).submit_job_execution(
            "selection_job", tags={"dagster/partition": "2026-11-23|municipals"}
        )
        runs = _wait_for_runs(str(dagster_home), "selection_job", 3)
    assert sorted(r.tags["dagster/partition"] for r in runs) == ["2026-11-23|CnD", "2026-11-23|municipals", "2026-11-24|CnD"]
    assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    assert {"CnD/2026-11-23.parquet", "CnD/2026-11-24.parquet", "municipals/2026-11-23.parquet"} <= set(
        outputs(cli_env, "review_candidates")
    )
    output = log.read_text()
    for noise in ("temporary directory", "will not be used", "SupersessionWarning"):
        assert noise not in output
    # Stopped, the instance keeps the history for the next start.
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert len(instance.get_runs(dg.RunsFilter(job_name="selection_job"))) == 3


def test_definitions_validate_and_import_no_heavy_client(cli_env):
    run(["dagster", "definitions", "validate", "-m", "data_engine.definitions"], cli_env)
    probe = (
        "import sys, data_engine.definitions\n"
        "heavy = [m for m in ('google.cloud.bigquery', 'boto3', 'cvat_sdk', 'duckdb', 'pandas', 'pyarrow', 'sqlglot', 'pyodi')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", probe], env=cli_env, cwd=REPO_ROOT, check=True, timeout=120)
