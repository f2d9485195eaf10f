"""AWS Batch for training jobs, in plain boto3: register the job definition, submit, watch, terminate.

Knows nothing of Dagster (data_engine.defs.batch_launcher wires it to Pipes). boto3 ships no Batch
waiters, so the watch loop is ours: jittered backoff, fail fast on a misconfigured queue and on a job
starved of capacity, and the log stream of the attempt that is running (each Batch retry writes a new
one).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data_engine.config.models import BatchTrainingConfig

ACTIVE_STATUSES = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"})
# The hash of the registration request, carried as a tag by each revision we register, so "has the
# config changed?" does not depend on the defaults AWS adds when it echoes a job definition back.
SPEC_TAG = "data-engine/spec-sha256"
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


class BatchJobError(RuntimeError):
    """The job failed, or cannot start; the message names the job and what to look at."""


def job_name(entrypoint: str, model: str, request_id: str) -> str:
    """The job's name, a function of what it does: a retried step finds its job again by this name.

    Characters Batch does not accept become `_`; a name over Batch's 128 characters keeps a hash of
    the whole, so two requests never share a name.
    """
    name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{entrypoint}-{model}-{request_id}")
    if len(name) > 128:
        name = f"{name[:111]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    assert _JOB_NAME.fullmatch(name), name
    return name


def resource_requirements(config: BatchTrainingConfig) -> list[dict[str, str]]:
    requirements = [{"type": "VCPU", "value": str(config.vcpus)}, {"type": "MEMORY", "value": str(config.memory_mib)}]
    if config.gpus:
        requirements.insert(0, {"type": "GPU", "value": str(config.gpus)})
    return requirements


def job_definition_request(config: BatchTrainingConfig) -> dict[str, Any]:
    """`register_job_definition` arguments built from the model's `training.batch` config."""
    container: dict[str, Any] = {
        "image": config.image,
        "resourceRequirements": resource_requirements(config),
        "linuxParameters": {"sharedMemorySize": config.shared_memory_mib},
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": config.log_group}},
    }
    if config.command:
        container["command"] = list(config.command)
    if config.job_role_arn:
        container["jobRoleArn"] = config.job_role_arn
    request: dict[str, Any] = {
        "jobDefinitionName": config.job_definition,
        "type": "container",
        "platformCapabilities": ["EC2"],
        "containerProperties": container,
    }
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    return {**request, "tags": {SPEC_TAG: digest}}


def retry_strategy(config: BatchTrainingConfig) -> dict[str, Any]:
    """Retry host and spot failures (and what else config names), end every other failure: Batch
    retries an attempt no rule matches, hence the final catch-all EXIT."""
    rules = [{"onStatusReason": pattern, "action": "RETRY"} for pattern in config.retry_on_status_reasons]
    rules += [{"onReason": pattern, "action": "RETRY"} for pattern in config.retry_on_reasons]
    return {"attempts": config.attempts, "evaluateOnExit": [*rules, {"onReason": "*", "action": "EXIT"}]}


@dataclass(frozen=True)
class JobDefinition:
    arn: str
    revision: int
    registered: bool  # False: the latest ACTIVE revision already matched the config


def current_log_stream(job: dict[str, Any]) -> str | None:
    """The stream of the attempt running now (or of the last one); it exists once an attempt starts."""
    return (job.get("container") or {}).get("logStreamName")


def attempt_number(job: dict[str, Any]) -> int:
    """1-based number of the attempt running now, or of the last one when the job is finished."""
    finished = len(job.get("attempts") or [])
    return max(finished, 1) if job["status"] in ("SUCCEEDED", "FAILED") else finished + 1


def previous_attempt_stopped_at(job: dict[str, Any]) -> int | None:
    """When the attempt before the current one stopped (epoch ms), or None on the first attempt."""
    attempts = job.get("attempts") or []
    earlier = attempts[:-1] if job["status"] in ("SUCCEEDED", "FAILED") else attempts
    return earlier[-1].get("stoppedAt") if earlier else None


def failure_message(job: dict[str, Any], log_group: str) -> str:
    container = job.get("container") or {}
    last_attempt = (job.get("attempts") or [{}])[-1].get("container") or {}
    exit_code = container.get("exitCode", last_attempt.get("exitCode"))
    reason = container.get("reason") or last_attempt.get("reason")
    stream = current_log_stream(job) or last_attempt.get("logStreamName")
    logs = f"logs: {log_group} {stream}" if stream else "no log stream (the container never started)"
    return (
        f"AWS Batch job {job.get('jobName')} ({job['jobId']}) failed on attempt {attempt_number(job)}:"
        f" exit code {exit_code}, reason {reason!r}, status reason {job.get('statusReason')!r}; {logs}"
    )


class BatchJobs:
    """One Batch client's training jobs. `clock`, `sleep` and `rng` are injectable so the polling
    can be driven by simulated time (the state-machine tests and the polling benchmark)."""

    def __init__(
        self,
        client: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()

    def ensure_job_definition(self, request: dict[str, Any]) -> JobDefinition:
        """Register a new revision only when the config changed since the latest ACTIVE one."""
        latest = self._latest_active_revision(request["jobDefinitionName"])
        if latest is not None and (latest.get("tags") or {}).get(SPEC_TAG) == request["tags"][SPEC_TAG]:
            return JobDefinition(latest["jobDefinitionArn"], latest["revision"], registered=False)
        response = self.client.register_job_definition(**request)
        return JobDefinition(response["jobDefinitionArn"], response["revision"], registered=True)

    def _latest_active_revision(self, name: str) -> dict[str, Any] | None:
        definitions: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"jobDefinitionName": name, "status": "ACTIVE"}
        while True:
            page = self.client.describe_job_definitions(**kwargs)
            definitions += page.get("jobDefinitions", [])
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return max(definitions, key=lambda d: d["revision"], default=None)

    def find_job(self, queue: str, name: str) -> dict[str, Any] | None:
        """The newest job of this name that is still active or has succeeded (one being terminated
        or cancelled does not count): a retried step attaches to it instead of submitting again."""
        summaries: list[dict[str, Any]] = []
        # With a filter, list_jobs ignores jobStatus and returns jobs in every status.
        kwargs: dict[str, Any] = {"jobQueue": queue, "filters": [{"name": "JOB_NAME", "values": [name]}]}
        while True:
            page = self.client.list_jobs(**kwargs)
            summaries += [s for s in page.get("jobSummaryList", []) if s.get("jobName") == name]
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        candidates = [s for s in summaries if s.get("status") != "FAILED"]
        for summary in sorted(candidates, key=lambda s: s.get("createdAt", 0), reverse=True):
            job = self.describe(summary["jobId"])
            if not (job.get("isTerminated") or job.get("isCancelled")) and job["status"] != "FAILED":
                return job
        return None

    def submit(
        self,
        *,
        name: str,
        config: BatchTrainingConfig,
        job_definition_arn: str,
        command: list[str],
        environment: dict[str, str],
        tags: dict[str, str],
    ) -> str:
        response = self.client.submit_job(
            jobName=name,
            jobQueue=config.job_queue,
            jobDefinition=job_definition_arn,
            containerOverrides={
                "command": command,
                "environment": [{"name": key, "value": value} for key, value in environment.items()],
                "resourceRequirements": resource_requirements(config),
            },
            retryStrategy=retry_strategy(config),
            timeout={"attemptDurationSeconds": config.attempt_timeout_s},
            tags=tags,
            propagateTags=True,
        )
        return response["jobId"]

    def describe(self, job_id: str) -> dict[str, Any]:
        jobs = self.client.describe_jobs(jobs=[job_id])["jobs"]
        if not jobs:
            raise BatchJobError(f"AWS Batch job {job_id} is unknown to describe_jobs (deleted, or another region?)")
        return jobs[0]

    def terminate(self, job_id: str, reason: str) -> None:
        """terminate_job, not cancel_job: cancel does nothing to a STARTING or RUNNING job."""
        self.client.terminate_job(jobId=job_id, reason=reason[:1024])

    def watch(
        self, job_id: str, config: BatchTrainingConfig, on_update: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Poll until the job succeeds (returned) or fails (BatchJobError), calling `on_update` with
        every description. Raises early, leaving the job to the caller to terminate, when Batch says
        the job cannot run (MISCONFIGURATION:*) or it waits for capacity past `runnable_timeout_s`.
        """
        status = None
        runnable_since = 0.0
        delay = config.poll_interval_s
        while True:
            job = self.describe(job_id)
            on_update(job)
            if job["status"] != status:
                status = job["status"]
                runnable_since = self.clock()
                delay = config.poll_interval_s  # look closely again after each change
            if status == "SUCCEEDED":
                return job
            if status == "FAILED":
                raise BatchJobError(failure_message(job, config.log_group))
            reason = job.get("statusReason") or ""
            if reason.startswith("MISCONFIGURATION:"):
                raise BatchJobError(
                    f"AWS Batch job {job.get('jobName')} ({job_id}) cannot run on queue {config.job_queue}: {reason}."
                    " Fix the queue's compute environment or the resources in training.batch (gpus, vcpus, memory_mib)."
                )
            waited = self.clock() - runnable_since
            if status == "RUNNABLE" and waited > config.runnable_timeout_s:
                raise BatchJobError(
                    f"AWS Batch job {job.get('jobName')} ({job_id}) waited {waited:.0f} s in RUNNABLE on queue"
                    f" {config.job_queue} (status reason: {reason or 'none'}): no capacity for {config.gpus} GPUs,"
                    f" {config.vcpus} vCPUs and {config.memory_mib} MiB. Check the compute environment's max vCPUs"
                    " and instance types, or raise training.batch.runnable_timeout_s."
                )
            self.sleep(self.rng.uniform(delay / 2, delay))
            delay = min(delay * 2, config.max_poll_interval_s)


class LogFollower:
    """Forwards the new events of the current attempt's log stream, oldest first, on each call.

    Called from the watch loop rather than from a thread of its own: CloudWatch Logs allows a few
    GetLogEvents per second per account, and a tail that asks without pause would use them all.
    """

    def __init__(self, client: Any, log_group: str, write: Callable[[str], None]):
        self.client = client
        self.log_group = log_group
        self.write = write
        self.stream: str | None = None
        self._token: str | None = None

    def follow(self, stream: str | None) -> None:
        """One page of the current stream per call: a training logs far less than a page (10,000
        events) between polls, and a backlog is caught up over the next polls, nothing lost."""
        if stream != self.stream:
            self.drain()  # the rest of the previous attempt's stream, then the new one
            self.stream, self._token = stream, None
        self._read_page()

    def drain(self) -> None:
        """Everything not yet read (when the attempt has ended)."""
        while self._read_page():
            pass

    def _read_page(self) -> bool:
        """Forward one page; True when it had events (more may follow)."""
        if self.stream is None:
            return False
        kwargs: dict[str, Any] = {"logGroupName": self.log_group, "logStreamName": self.stream, "startFromHead": True}
        if self._token:
            kwargs["nextToken"] = self._token
        try:
            page = self.client.get_log_events(**kwargs)
        except self.client.exceptions.ResourceNotFoundException:
            return False  # the stream appears a moment after the attempt starts
        for event in page.get("events", []):
            self.write(event["message"])
        # At the end of a stream the same token comes back (with no events).
        self._token = page.get("nextForwardToken") or self._token
        return bool(page.get("events"))
