"""Training on AWS Batch through Dagster Pipes (data_engine.defs.batch_launcher).

Wiring against a moto server (Batch with use_docker false, CloudWatch Logs, S3): job-definition
registration, the submitted job, Pipes context and messages over S3, log forwarding from the job's
stream, reattaching. moto's batch_simple jumps straight to SUCCEEDED, so the job's state machine
(capacity, misconfiguration, spot retries, failures, cancellation) runs against a scripted Batch
client, with S3 and CloudWatch Logs still on moto. Where a job "runs", a separate process plays the
container with dagster-pipes (data_engine_tests/batch_container.py) and the test writes its output into
the job's log stream, as the awslogs driver would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import boto3
import dagster as dg
import pytest
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster_pipes import encode_param

from data_engine.config import load_fleet_config
from data_engine.config.models import BatchTrainingConfig, TrainingConfig
from data_engine.defs.batch_launcher import BatchTrainerLauncher
from data_engine.defs.profiles import resources_for
from data_engine.defs.trainer_launcher import TrainerLauncherResource
from data_engine.settings import Settings
from data_engine.training.batch import SPEC_TAG, BatchJobs, job_definition_request, job_name

MODEL = "municipals"
BUCKET = "training-bucket"
QUEUE = "gpu-queue"
LOG_GROUP = "/aws/batch/job"


@pytest.fixture
def aws(moto_server, monkeypatch):
    """moto with the training bucket, the Batch log group and a job queue (an UNMANAGED compute
    environment: moto does not know p3 instance types)."""
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    # Dagster waits this long for a process's last messages after its session closes; the failing
    # jobs here never send any, so the tests wait 3 s instead of 10.
    monkeypatch.setattr("dagster._core.pipes.utils.WAIT_FOR_LOGS_AFTER_EXECUTION_INTERVAL", 3)
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    boto3.client("logs").create_log_group(logGroupName=LOG_GROUP)
    role = boto3.client("iam").create_role(RoleName="batch-service", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = boto3.client("batch")
    environment = batch.create_compute_environment(computeEnvironmentName="gpu-ce", type="UNMANAGED", state="ENABLED", serviceRole=role)
    batch.create_job_queue(
        jobQueueName=QUEUE, state="ENABLED", priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
    )
    yield
    moto_server.reset()


def batch_config(**overrides: Any) -> BatchTrainingConfig:
    fields: dict[str, Any] = {
        "job_queue": QUEUE, "job_definition": "detector-train", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trainer:1",
        "poll_interval_s": 0.01, "max_poll_interval_s": 0.05, "message_poll_interval_s": 0.1,
    }
    return BatchTrainingConfig(**{**fields, **overrides})


def launcher(config: BatchTrainingConfig, batch_client: Any) -> BatchTrainerLauncher:
    """The launcher with its Batch client replaced (moto playing the container, or a script)."""

    class TestBatchTrainerLauncher(BatchTrainerLauncher):
        def client(self, service: str) -> Any:
            return batch_client if service == "batch" else super().client(service)

    return TestBatchTrainerLauncher(training={MODEL: TrainingConfig(s3_bucket=BUCKET, batch=config).model_dump_json()})


def train(trainer: BatchTrainerLauncher, request_id: str = "req-1") -> dg.ExecuteInProcessResult:
    @dg.asset(partitions_def=dg.StaticPartitionsDefinition([MODEL]))
    def trained_model(context, trainer: TrainerLauncherResource) -> dg.MaterializeResult:
        invocation = trainer.run(context, model=context.partition_key, request_id=request_id, entrypoint="train", extras={"label_version": "v7"})
        return invocation.get_materialize_result()

    return dg.materialize([trained_model], resources={"trainer": trainer}, partition_key=MODEL, raise_on_error=False)


def materialization_metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [materialization] = result.asset_materializations_for_node("trained_model")
    return {key: value.value for key, value in materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.is_step_failure]
    return failure.step_failure_data.error.to_string()


def run_container(environment: dict[str, str], attempt: int = 1, crash: bool = False) -> None:
    environment = {**environment, "AWS_BATCH_JOB_ATTEMPT": str(attempt)}
    process = subprocess.run(
        [sys.executable, "-m", "data_engine_tests.batch_container", json.dumps(environment), *(["--crash"] if crash else [])],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == (137 if crash else 0), process.stderr


def write_log_events(stream: str, lines: list[str]) -> None:
    logs = boto3.client("logs")
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    now = int(time.time() * 1000)  # moto drops events older than 14 days
    logs.put_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream,
        logEvents=[{"timestamp": now + index, "message": line} for index, line in enumerate(lines)],
    )


def submitted_environment(submit_kwargs: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in submit_kwargs["containerOverrides"]["environment"]}


class MotoBatchPlayingContainer:
    """moto's Batch client; each submitted job's container is played right after submit_job (moto has
    already marked the job SUCCEEDED), its output written to the job's stream."""

    def __init__(self) -> None:
        self.client = boto3.client("batch")
        self.submitted: list[dict[str, Any]] = []

    def submit_job(self, **kwargs: Any) -> dict[str, Any]:
        response = self.client.submit_job(**kwargs)
        self.submitted.append(kwargs)
        run_container(submitted_environment(kwargs))
        [job] = self.client.describe_jobs(jobs=[response["jobId"]])["jobs"]
        write_log_events(job["container"]["logStreamName"], ["epoch 1 loss 0.9", "epoch 2 loss 0.5"])
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_job_definition_is_registered_from_config_only_when_it_changed(aws):
    jobs = BatchJobs(boto3.client("batch"))

    first = jobs.ensure_job_definition(job_definition_request(batch_config(shared_memory_mib=32_768)))
    again = jobs.ensure_job_definition(job_definition_request(batch_config(shared_memory_mib=32_768)))
    changed = jobs.ensure_job_definition(job_definition_request(batch_config(shared_memory_mib=32_768, image="trainer:2")))

    assert (first.registered, first.revision) == (True, 1)
    assert (again.registered, again.arn) == (False, first.arn)
    assert (changed.registered, changed.revision) == (True, 2)
    [latest] = [d for d in boto3.client("batch").describe_job_definitions(jobDefinitionName="detector-train")["jobDefinitions"] if d["revision"] == 2]
    container = latest["containerProperties"]
    assert container["image"] == "trainer:2"
    assert {r["type"]: r["value"] for r in container["resourceRequirements"]} == {"GPU": "4", "VCPU": "32", "MEMORY": "235000"}
    assert container["linuxParameters"] == {"sharedMemorySize": 32_768}
    assert container["logConfiguration"] == {"logDriver": "awslogs", "options": {"awslogs-group": LOG_GROUP}}
    assert SPEC_TAG in latest["tags"]


def test_training_job_on_moto_reports_through_pipes_and_a_retry_reattaches(aws, capsys):
    batch = MotoBatchPlayingContainer()
    trainer = launcher(batch_config(), batch)

    result = train(trainer)

    assert result.success, failure_message(result)
    [submitted] = batch.submitted
    metadata = materialization_metadata(result)
    # Reported by the container through the S3 message writer, and by the launcher.
    assert (metadata["attempt"], metadata["epochs"]) == (1, 2)
    [job] = batch.client.describe_jobs(jobs=[metadata["batch_job_id"]])["jobs"]
    assert metadata["batch_job_name"] == job["jobName"] == "train-municipals-req-1"
    assert metadata["batch_job_definition"] == job["jobDefinition"] == submitted["jobDefinition"]
    assert metadata["batch_job_definition_registered"] is True and metadata["batch_reattached"] is False
    assert metadata["batch_log_stream"] == f"{LOG_GROUP} {job['container']['logStreamName']}"
    assert job["container"]["command"] == ["train"]
    assert {"DAGSTER_PIPES_CONTEXT", "DAGSTER_PIPES_MESSAGES"} <= set(submitted_environment(submitted))
    assert len(json.dumps(submitted["containerOverrides"])) < 8192  # the overrides' size limit of the ECS task
    assert job["timeout"] == {"attemptDurationSeconds": 48 * 3600}
    assert job["tags"]["dagster/run_id"] == result.run_id
    assert (job["tags"]["dagster/asset"], job["tags"]["dagster/partition"]) == ("trained_model", MODEL)
    assert job["jobQueue"].endswith(f"job-queue/{QUEUE}")
    assert "epoch 1 loss 0.9\nepoch 2 loss 0.5\n" in capsys.readouterr().out  # the job's stream, forwarded
    # The Pipes context is removed once the session ends; the messages stay for a reattaching step.
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys and all(key.startswith(f"models/{MODEL}/pipes/train-municipals-req-1/") for key in keys)
    assert not any(key.endswith("context.json") for key in keys)

    retried = train(trainer)  # same request: the step of a retried run

    assert retried.success, failure_message(retried)
    assert len(batch.submitted) == 1  # no second job
    again = materialization_metadata(retried)
    assert (again["batch_job_id"], again["batch_reattached"], again["attempt"]) == (metadata["batch_job_id"], True, 1)
    assert again["batch_job_definition_registered"] is False


def job(status: str, *, stream: str | None = None, attempts: list[dict[str, Any]] | None = None, **fields: Any) -> dict[str, Any]:
    container = {"logStreamName": stream} if stream else {}
    return {"status": status, "container": {**container, **fields.pop("container", {})}, "attempts": attempts or [], **fields}


class ScriptedBatch:
    """A boto3-shaped Batch client whose describe_jobs walks a script (a step is a job description or
    a function returning one, which may play the container first). Job definitions go to moto."""

    def __init__(self, script: list[Any], existing: dict[str, Any] | None = None):
        self.moto = boto3.client("batch")
        self.meta = self.moto.meta
        self.script = script
        self.existing = existing
        self.submitted: list[dict[str, Any]] = []
        self.terminated: list[dict[str, Any]] = []
        self.describes = 0
        self.existing_described = False

    def register_job_definition(self, **kwargs: Any) -> dict[str, Any]:
        return self.moto.register_job_definition(**kwargs)

    def describe_job_definitions(self, **kwargs: Any) -> dict[str, Any]:
        return self.moto.describe_job_definitions(**kwargs)

    def list_jobs(self, **kwargs: Any) -> dict[str, Any]:
        assert kwargs["filters"] == [{"name": "JOB_NAME", "values": ["train-municipals-req-1"]}]
        if self.existing is None:
            return {"jobSummaryList": []}
        return {"jobSummaryList": [{"jobId": "job-0", "jobName": "train-municipals-req-1", "status": self.existing["status"], "createdAt": 1}]}

    def submit_job(self, **kwargs: Any) -> dict[str, Any]:
        self.submitted.append(kwargs)
        return {"jobId": "job-1", "jobName": kwargs["jobName"]}

    def environment(self) -> dict[str, str]:
        return submitted_environment(self.submitted[-1])

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        if jobs == ["job-0"] and not self.existing_described:  # the look-up for a job to reattach to
            self.existing_described = True
            described = self.existing
        else:
            step = self.script[min(self.describes, len(self.script) - 1)]
            self.describes += 1
            described = step() if callable(step) else step
        tags = self.existing["tags"] if self.existing else self.submitted[-1]["tags"]
        return {"jobs": [{"jobId": jobs[0], "jobName": "train-municipals-req-1", "tags": tags, **described}]}

    def terminate_job(self, jobId: str, reason: str) -> dict[str, Any]:
        self.terminated.append({"jobId": jobId, "reason": reason})
        return {}


def test_job_stuck_runnable_fails_fast_with_the_capacity_reason_and_is_cancelled(aws):
    batch = ScriptedBatch([job("SUBMITTED"), job("RUNNABLE", statusReason="CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY")])

    result = train(launcher(batch_config(runnable_timeout_s=0.3), batch))

    assert not result.success
    message = failure_message(result)
    assert "job-1" in message and "RUNNABLE" in message and "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY" in message
    assert "no capacity for 4 GPUs, 32 vCPUs and 235000 MiB" in message
    assert [t["jobId"] for t in batch.terminated] == ["job-1"]


def test_misconfigured_job_fails_at_once_with_batch_reason(aws):
    batch = ScriptedBatch([job("RUNNABLE", statusReason="MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - needs 4 GPUs")])

    result = train(launcher(batch_config(runnable_timeout_s=3600), batch))

    assert not result.success
    assert "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT - needs 4 GPUs" in failure_message(result)
    assert batch.describes == 1
    assert [t["jobId"] for t in batch.terminated] == ["job-1"]


def test_spot_interruption_is_retried_by_batch_and_logs_follow_the_new_attempt(aws, capsys):
    write_log_events("detector-train/default/task-1", ["attempt 1 epoch 1"])
    write_log_events("detector-train/default/task-2", ["attempt 2 epoch 1", "attempt 2 epoch 2"])
    spot = {"statusReason": "Host EC2 (instance i-0abc) terminated.", "container": {"logStreamName": "detector-train/default/task-1", "exitCode": None}}
    batch: ScriptedBatch

    def first_attempt_running() -> dict[str, Any]:
        run_container(batch.environment(), attempt=1, crash=True)
        return job("RUNNING", stream="detector-train/default/task-1")

    def reclaimed() -> dict[str, Any]:
        spot["stoppedAt"] = int(time.time() * 1000)
        time.sleep(1.1)  # S3 dates objects to the second: the next attempt writes in a later one
        return job("RUNNABLE", stream="detector-train/default/task-1", attempts=[spot])

    def second_attempt_running() -> dict[str, Any]:
        run_container(batch.environment(), attempt=2)
        return job("RUNNING", stream="detector-train/default/task-2", attempts=[spot])

    second = {"container": {"logStreamName": "detector-train/default/task-2", "exitCode": 0}, "stoppedAt": 2}
    batch = ScriptedBatch([
        job("RUNNABLE"), first_attempt_running, job("RUNNING", stream="detector-train/default/task-1"), reclaimed,
        second_attempt_running, job("SUCCEEDED", stream="detector-train/default/task-2", attempts=[spot, second], container={"exitCode": 0}),
    ])

    result = train(launcher(batch_config(), batch))

    assert result.success, failure_message(result)
    metadata = materialization_metadata(result)
    assert (metadata["attempt"], metadata["batch_attempts"]) == (2, 2)
    assert metadata["batch_log_stream"] == f"{LOG_GROUP} detector-train/default/task-2"
    assert "attempt 1 epoch 1\nattempt 2 epoch 1\nattempt 2 epoch 2\n" in capsys.readouterr().out
    [submitted] = batch.submitted
    assert submitted["retryStrategy"] == {
        "attempts": 3,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "CannotPullContainerError*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }
    assert submitted["containerOverrides"]["resourceRequirements"] == [
        {"type": "GPU", "value": "4"}, {"type": "VCPU", "value": "32"}, {"type": "MEMORY", "value": "235000"}
    ]
    assert batch.terminated == []


def test_failed_job_names_job_attempt_exit_code_reason_and_log_stream(aws):
    failed = job(
        "FAILED", stream="detector-train/default/task-9", statusReason="Essential container in task exited",
        attempts=[{"container": {"exitCode": 1, "logStreamName": "detector-train/default/task-9"}}],
        container={"exitCode": 1, "reason": "CUDA error: out of memory"},
    )
    batch = ScriptedBatch([job("RUNNING", stream="detector-train/default/task-9"), failed])

    result = train(launcher(batch_config(), batch))

    assert not result.success
    message = failure_message(result)
    for part in ("train-municipals-req-1 (job-1)", "attempt 1", "exit code 1", "CUDA error: out of memory",
                 "Essential container in task exited", f"{LOG_GROUP} detector-train/default/task-9"):
        assert part in message
    assert batch.terminated == []  # already over


def test_cancelled_run_terminates_the_job(aws):
    def interrupted() -> dict[str, Any]:
        raise DagsterExecutionInterruptedError()  # what Dagster raises in the step when the run is cancelled

    batch = ScriptedBatch([job("RUNNABLE"), job("RUNNING", stream="detector-train/default/task-1"), interrupted])

    result = train(launcher(batch_config(), batch))

    assert not result.success
    [terminated] = batch.terminated
    assert terminated["jobId"] == "job-1" and "DagsterExecutionInterruptedError" in terminated["reason"]


def test_retried_step_reattaches_to_the_running_job_instead_of_submitting_another(aws):
    prefix = f"models/{MODEL}/pipes/train-municipals-req-1/abc123"

    def running() -> dict[str, Any]:
        # The job an earlier step submitted is still running; its container talks Pipes where its tags say.
        run_container({
            "DAGSTER_PIPES_CONTEXT": encode_param({"bucket": BUCKET, "key": f"{prefix}/context.json"}),
            "DAGSTER_PIPES_MESSAGES": encode_param({"bucket": BUCKET, "key_prefix": f"{prefix}/messages"}),
        })
        return job("RUNNING", stream="detector-train/default/task-1")

    existing = job("RUNNING", stream="detector-train/default/task-1", tags={"data-engine/pipes-prefix": prefix})
    batch = ScriptedBatch([running, job("SUCCEEDED", stream="detector-train/default/task-1")], existing=existing)

    result = train(launcher(batch_config(), batch))

    assert result.success, failure_message(result)
    assert batch.submitted == []
    metadata = materialization_metadata(result)
    assert (metadata["batch_job_id"], metadata["batch_reattached"], metadata["attempt"]) == ("job-0", True, 1)


def test_job_name_is_stable_and_valid_for_batch():
    assert job_name("train", "municipals", "2026-12-01T00:40:00Z") == "train-municipals-2026-12-01T00_40_00Z"
    long_name = job_name("train", "m" * 100, "r" * 100)
    assert len(long_name) == 128 and long_name == job_name("train", "m" * 100, "r" * 100)
    assert long_name != job_name("train", "m" * 100, "r" * 99 + "s")


def test_prod_profile_trains_each_model_on_batch_with_the_storage_bucket_by_default(fleet_file, tmp_path):
    config = load_fleet_config(fleet_file)

    trainer = resources_for(Settings(profile="prod", home=tmp_path), config)["trainer"]

    assert isinstance(trainer, BatchTrainerLauncher)
    assert set(trainer.training) == set(config.models)
    assert config.models[MODEL].training.s3_bucket is None
    assert TrainingConfig.model_validate_json(trainer.training[MODEL]).s3_bucket == config.storage.s3_bucket


def test_model_without_a_batch_section_fails_with_what_to_add():
    trainer = BatchTrainerLauncher(training={MODEL: TrainingConfig(s3_bucket=BUCKET).model_dump_json()})

    result = train(trainer)

    assert not result.success
    assert "models.municipals.training.batch is missing" in failure_message(result)


def test_polling_benchmark_pollers_forward_the_same_lines():
    """Keeps the benchmark's baseline comparable with the product (no timing here)."""
    from data_engine_tests.benchmarks import batch_polling

    describes, log_calls, lines = batch_polling.product(minutes=30, log_every_s=30)
    naive = batch_polling.baseline(minutes=30, log_every_s=30)

    assert lines == naive[2] == 60  # a line every 30 s for 30 minutes
    assert describes > 0 and log_calls > 0
