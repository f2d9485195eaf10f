"""The deployment's moving parts for real: one `dagster-daemon run` and one `dagster-webserver` process on the
production instance (docker/dagster.yaml, unchanged) on a real PostgreSQL, loading the code location on the
local profile with the CVAT fake. Queued runs, backfills, the review sensor, the daily schedule, the per-model
merge limit and a daemon restart are all driven the way production drives them: the CLI, GraphQL, the daemon.

One daemon for the whole module (starting one costs seconds), so the tests share its instance and run in file
order; each test waits for what it started with a bound, and never on wall-clock time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_graphql import DagsterGraphQLClient

from data_engine.defs.labels import LABEL_MERGE_JOB, MERGE_TAG
from data_engine.labels import LabelStore
from data_engine_tests.conftest import PROD_DAGSTER_YAML, REPO_ROOT, REVIEW_PARTITION, TEST_FLEET
from data_engine_tests.cvat_server import running_cvat_server
from data_engine_tests.servers.ports import free_port
from data_engine_tests.test_cvat_review import our_tasks
from data_engine_tests.test_training_labels import accept, local_defs, make_review_tasks, reopen

LOCATION = "data_engine.definitions"
DAY = REVIEW_PARTITION.keys_by_dimension["date"]
WAIT_S = 300  # every wait below is bounded; a run takes 10-30 s on an idle machine, minutes on a loaded one
BIN = Path(sys.executable).parent  # the dagster CLIs of this environment


@dataclass
class Deployment:
    """The processes and stores of the module's deployment."""

    root: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    cvat: object  # the fake CVAT server (data_engine_tests.cvat_server)
    webserver_port: int
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> None:
        with open(self.root / f"{name}.log", "ab") as log:  # the process keeps its own copy of the handle
            self.processes[name] = subprocess.Popen(
                [str(BIN / args[0]), *args[1:]], env=self.env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str) -> None:
        """SIGTERM, as `docker stop` sends; the daemon and webserver shut down cleanly on it."""
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"{name} did not stop within 60 s of SIGTERM; see {self.root / name}.log") from None

    def start_daemon(self) -> float:
        started = time.time()
        self.start("daemon", "dagster-daemon", "run", "-m", LOCATION)
        # Every daemon the instance enables (queue, schedules, sensors, backfills, run monitoring, retries)
        # reports a heartbeat to Postgres once it runs.
        wait_for(
            lambda: all(h.timestamp > started for h in self.instance.get_daemon_heartbeats().values())
            and self.instance.get_daemon_statuses().keys() <= self.instance.get_daemon_heartbeats().keys(),
            "every daemon's first heartbeat",
            self,
        )
        return started

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / args[0]), *args[1:]], env=self.env, cwd=self.root, capture_output=True, text=True, timeout=WAIT_S
        )
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def graphql(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.webserver_port)

    def graphql_query(self, query: str, variables: dict) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.webserver_port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
        assert "errors" not in body, body
        return body["data"]

    def runs(self, **tags: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(tags=tags)))

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} (tail)\n" + path.read_text(errors="replace")[-3000:] for path in sorted(self.root.glob("*.log"))
        )


def wait_for(condition, what: str, deployment: Deployment, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{deployment.logs()}")


def wait_until_finished(deployment: Deployment, runs: list[dg.DagsterRun]) -> list[dg.DagsterRun]:
    def finished():
        now = [deployment.instance.get_run_by_id(run.run_id) for run in runs]
        return now if all(run.is_finished for run in now) else None

    return wait_for(finished, f"runs {[r.run_id for r in runs]} to finish", deployment)


def failures(deployment: Deployment, runs: list[dg.DagsterRun]) -> str:
    return "\n".join(
        f"{run.run_id} {run.job_name}: {entry.message}"
        for run in runs
        for entry in deployment.instance.all_logs(run.run_id)
        if entry.is_dagster_event and entry.dagster_event.is_failure
    )


@pytest.fixture(scope="module")
def deployment(pg_server, prepared_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    database = f"daemon_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(pg_server.url())
    conn.autocommit = True  # CREATE DATABASE refuses to run in a transaction
    conn.cursor().execute(f"CREATE DATABASE {database}")
    conn.close()
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(PROD_DAGSTER_YAML, home / "dagster.yaml")
    shutil.copytree(prepared_home, root / "data_engine_home")
    (root / "fleet.yaml").write_text(yaml.safe_dump(TEST_FLEET, sort_keys=False))

    with ExitStack() as stack:
        cvat = stack.enter_context(running_cvat_server())
        cvat.state.add_user("alice")
        cvat.state.add_user("bob")
        env = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_USERNAME": pg_server.user,
            "DAGSTER_PG_PASSWORD": "unused",  # trust auth
            "DAGSTER_PG_HOST": pg_server.host,
            "DAGSTER_PG_PORT": str(pg_server.port),
            "DAGSTER_PG_DB": database,
            "DATA_ENGINE_PROFILE": "local",
            "DATA_ENGINE_HOME": str(root / "data_engine_home"),
            "DATA_ENGINE_CONFIG": str(root / "fleet.yaml"),
            "CVAT_URL": cvat.url,
            "CVAT_ACCESS_TOKEN": cvat.token,
        }
        monkeypatch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("DAGSTER_COMPUTE_LOGS_BUCKET", raising=False)
        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))
        deployment = Deployment(root, dict(os.environ), instance, cvat, free_port())
        # municipals' review tasks of DAY, made and accepted before the daemon starts: its first sensor tick
        # finds them reviewed.
        make_review_tasks(local_defs(cvat, root / "data_engine_home"), instance)
        accept(cvat, [task.id for task in our_tasks(cvat.state)])

        deployment.start("webserver", "dagster-webserver", "-h", "127.0.0.1", "-p", str(deployment.webserver_port), "-m", LOCATION)
        deployment.start_daemon()
        wait_for(lambda: _answers(f"http://127.0.0.1:{deployment.webserver_port}/server_info"), "the webserver", deployment)
        # The review sensor is off by default; operators turn it on in the UI, which sends this mutation.
        started = deployment.graphql_query(
            """mutation($selector: SensorSelector!) {
                 startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
               }""",
            {"selector": {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": "cvat_review_sensor"}},
        )
        assert started["startSensor"]["__typename"] == "Sensor", started
        try:
            yield deployment
        finally:
            in_flight = [r for r in instance.get_runs() if not r.is_finished]
            try:
                if in_flight:
                    wait_until_finished(deployment, in_flight)
            finally:
                for name in list(deployment.processes):
                    deployment.stop(name)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_the_review_sensor_ticks_under_the_daemon_and_its_merge_run_completes(deployment):
    reviewed = [task.id for task in our_tasks(deployment.cvat.state)]
    (run,) = wait_for(lambda: deployment.runs(**{"dagster/sensor_name": "cvat_review_sensor"}), "the sensor's merge run", deployment)
    assert run.job_name == LABEL_MERGE_JOB and run.tags["dagster/partition"] == "municipals" and run.tags[MERGE_TAG] == "municipals"
    assert sorted(t["task_id"] for t in run.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]) == sorted(reviewed)
    (finished,) = wait_until_finished(deployment, [run])
    assert finished.status == dg.DagsterRunStatus.SUCCESS, failures(deployment, [finished])
    assert LabelStore.local(deployment.root / "data_engine_home/labels").latest("municipals") is not None


def test_a_cli_backfill_is_launched_and_completed_by_the_daemon(deployment):
    keys = [f"{DAY}|municipals", f"{DAY}|ENS"]
    deployment.cli("dagster", "job", "backfill", "-m", LOCATION, "-j", "selection_job", "--partitions", ",".join(keys), "--noprompt")
    (backfill,) = deployment.instance.get_backfills()
    runs = wait_for(lambda: len(r := deployment.runs(**{"dagster/backfill": backfill.backfill_id})) == 2 and r,
                    "the backfill's two runs", deployment)
    finished = wait_until_finished(deployment, runs)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in finished), failures(deployment, finished)
    assert sorted(run.tags["dagster/partition"] for run in finished) == sorted(keys)
    # the selection really ran: each model-day's review candidates are in the local profile's object store
    for key in keys:
        model = key.split("|")[1]
        assert (deployment.root / "data_engine_home/objects/assets/review_candidates" / model / f"{DAY}.parquet").exists()


def test_merges_of_one_model_wait_for_each_other_while_another_model_merges(deployment):
    """Launched through the webserver's GraphQL API with the Python client (README "Launching from outside")."""
    client = deployment.graphql()

    def launch(model: str) -> str:
        return client.submit_job_execution(
            LABEL_MERGE_JOB,
            # only the record step: the merge itself needs reviewed CVAT data (test_training_labels.py)
            asset_selection=["reviewed_tasks"],
            run_config={"ops": {"reviewed_tasks": {"config": {"tasks": []}}}},
            tags={"dagster/partition": model, MERGE_TAG: model},
        )

    first, second, other = launch("municipals"), launch("municipals"), launch("ENS")
    runs = [deployment.instance.get_run_by_id(run_id) for run_id in (first, second, other)]
    finished = wait_until_finished(deployment, runs)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in finished), failures(deployment, finished)
    assert [client.get_run_status(run_id) for run_id in (first, second, other)] == [dg.DagsterRunStatus.SUCCESS] * 3

    end = {r.dagster_run.run_id: r.end_time for r in deployment.instance.get_run_records(dg.RunsFilter(run_ids=[first, second, other]))}

    def event_time(run_id: str, event_type: dg.DagsterEventType) -> float:
        return deployment.instance.all_logs(run_id, of_type=event_type)[0].timestamp

    enqueued = {run_id: event_time(run_id, dg.DagsterEventType.RUN_ENQUEUED) for run_id in (first, second, other)}
    # the queue daemon reports RUN_STARTING when it takes a run off the queue and launches it
    dequeued = {run_id: event_time(run_id, dg.DagsterEventType.RUN_STARTING) for run_id in (first, second, other)}
    earlier, later = sorted((first, second), key=dequeued.get)
    assert max(enqueued.values()) < end[earlier], "the first merge ended before the others were queued: nothing to hold"
    assert dequeued[later] >= end[earlier], "the second merge of municipals left the queue before the first ended"
    # ENS's merge, queued after municipals' second, passed it: the limit holds only the same model.
    assert dequeued[other] < dequeued[later], "ENS's merge waited behind municipals' merges"


def test_a_daemon_down_over_the_daily_tick_catches_up_and_keeps_history_and_the_sensor_cursor(deployment):
    instance = deployment.instance
    before = {run.run_id for run in instance.get_runs()}
    deployment.stop("daemon")
    # What a daemon that went down 25 hours ago leaves behind: the schedule (RUNNING by default, its state
    # stored by the daemon) last evaluated then, so yesterday's 04:00 UTC tick was missed.
    (schedule,) = [s for s in instance.all_instigator_state() if s.name == "daily_selection_schedule"]
    down_since = time.time() - 25 * 3600
    instance.update_instigator_state(
        schedule.with_data(schedule.instigator_data._replace(start_timestamp=down_since, last_iteration_timestamp=down_since))
    )
    # A reviewer reopened one task and accepted it again meanwhile.
    again = our_tasks(deployment.cvat.state)[0].id
    reopen(deployment.cvat, again)
    accept(deployment.cvat, [again])

    deployment.start_daemon()
    assert before <= {run.run_id for run in instance.get_runs()}  # run history is in Postgres

    # The schedule catches up on the missed tick: yesterday's selection of the day before, for every model.
    scheduled = wait_for(lambda: len(r := deployment.runs(**{"dagster/schedule_name": "daily_selection_schedule"})) == 2 and r,
                         "the schedule's catch-up runs", deployment)
    tick_day = dt.datetime.fromtimestamp(time.time() - 4 * 3600, dt.timezone.utc).date() - dt.timedelta(days=1)
    assert sorted(run.tags["dagster/partition"] for run in scheduled) == [f"{tick_day}|ENS", f"{tick_day}|municipals"]
    assert all(run.job_name == "selection_job" for run in scheduled)

    # The sensor's next tick (a minute after its last: its interval) starts from the stored cursor, so it
    # requests only the task accepted again; from a lost cursor it would list every accepted task.
    sensor_runs = lambda: [r for r in deployment.runs(**{"dagster/sensor_name": "cvat_review_sensor"}) if r.run_id not in before]
    (run,) = wait_for(sensor_runs, "the sensor's tick after the restart", deployment, timeout=WAIT_S + 60)
    assert [t["task_id"] for t in run.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]] == [again]
    finished = wait_until_finished(deployment, [*scheduled, run])
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in finished), failures(deployment, finished)
