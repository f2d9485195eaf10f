"""The prod profile's trainer launcher: the trainer as a container on AWS Batch, through Dagster Pipes.

dagster-aws has Pipes clients for ECS, EMR, Glue and Lambda, none for Batch; this one is modelled on
`PipesECSClient` and built from dagster-aws's S3 context injector and message reader. The Batch calls
themselves live in data_engine.training.batch.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field

from data_engine.config import FleetConfig
from data_engine.config.models import TrainingConfig
from data_engine.defs.trainer_launcher import Entrypoint, TrainerLauncherResource
from data_engine.training import batch

# Job tag holding the S3 prefix of the job's Pipes context and messages, so a reattached step finds them.
PIPES_PREFIX_TAG = "data-engine/pipes-prefix"


class BatchTrainerLauncher(TrainerLauncherResource):
    """Runs the trainer on the AWS Batch queue of the model's `training.batch` config.

    The job is named after the entrypoint, model and request id, so a retried step or run attaches to
    the job still running (or already succeeded) instead of submitting a second 4-GPU job. A cancelled
    run or a failed step terminates the job.
    """

    training: dict[str, str] = Field(
        description="Each model's `training:` section as JSON (TrainingConfig), its s3_bucket filled in."
    )
    region_name: str | None = None

    @classmethod
    def for_fleet(cls, config: FleetConfig) -> BatchTrainerLauncher:
        """The models' training sections; a model without its own bucket uses the `storage:` bucket."""
        default_bucket = config.storage.s3_bucket if config.storage else None
        return cls(
            training={
                model: model_config.training.model_copy(
                    update={"s3_bucket": model_config.training.s3_bucket or default_bucket}
                ).model_dump_json()
                for model, model_config in config.models.items()
            }
        )

    def client(self, service: str) -> Any:
        """A boto3 client from the standard chain (AWS_ENDPOINT_URL included), retrying throttling."""
        import boto3
        from botocore.config import Config

        return boto3.client(service, region_name=self.region_name, config=Config(retries={"mode": "standard", "max_attempts": 10}))

    def run(
        self,
        context: dg.AssetExecutionContext,
        *,
        model: str,
        request_id: str,
        entrypoint: Entrypoint,
        extras: dict[str, Any],
    ) -> dg.PipesClientCompletedInvocation:
        from data_engine.defs.batch_pipes import JobS3ContextInjector, JobS3MessageReader

        training = self._training_of(model)
        config = training.batch
        assert config is not None and training.s3_bucket is not None  # checked by _training_of
        jobs = batch.BatchJobs(self.client("batch"))
        name = batch.job_name(entrypoint, model, request_id)
        definition = jobs.ensure_job_definition(batch.job_definition_request(config))
        if definition.registered:
            context.log.info(f"Registered AWS Batch job definition {definition.arn}")

        existing = jobs.find_job(config.job_queue, name)
        prefix = (existing or {}).get("tags", {}).get(PIPES_PREFIX_TAG) or (
            f"{training.prefix.strip('/')}/{model}/pipes/{name}/{secrets.token_hex(8)}"
        )
        s3 = self.client("s3")
        reader = JobS3MessageReader(bucket=training.s3_bucket, client=s3, key_prefix=prefix, interval=config.message_poll_interval_s)
        injector = JobS3ContextInjector(bucket=training.s3_bucket, client=s3, key_prefix=prefix)
        follower = batch.LogFollower(self.client("logs"), config.log_group, write=_forward_line)
        observer = _JobObserver(context, config.attempts, reader, follower, last_seen=existing)

        with dg.open_pipes_session(context=context, message_reader=reader, context_injector=injector, extras=extras) as session:
            if existing is not None:
                job_id = existing["jobId"]
                context.log.info(f"Reattaching to AWS Batch job {name} ({job_id}), {existing['status']}")
            else:
                job_id = jobs.submit(
                    name=name,
                    config=config,
                    job_definition_arn=definition.arn,
                    command=[*config.command, entrypoint],
                    environment=dict(session.get_bootstrap_env_vars()),
                    tags=_job_tags(context, model, request_id, prefix),
                )
                context.log.info(f"Submitted AWS Batch job {name} ({job_id}) on queue {config.job_queue}")
            try:
                job = jobs.watch(job_id, config, observer)
            except BaseException as error:  # a cancelled run, a failed or stuck job, a failed poll
                _terminate_unless_finished(jobs, observer.last_seen, job_id, error, context)
                if isinstance(error, batch.BatchJobError):
                    raise dg.Failure(description=str(error), metadata={"batch_job_id": job_id}) from error
                raise
        follower.drain()  # lines CloudWatch ingested after the last poll
        metadata = {
            "batch_job_id": job_id,
            "batch_job_name": name,
            "batch_job_url": dg.MetadataValue.url(_console_url(jobs.client.meta.region_name, job_id)),
            "batch_job_definition": job.get("jobDefinition", definition.arn),  # a reattached job's own
            "batch_job_definition_registered": definition.registered,
            "batch_attempts": batch.attempt_number(job),
            "batch_log_stream": f"{config.log_group} {batch.current_log_stream(job)}",
            "batch_reattached": existing is not None,
        }
        return dg.PipesClientCompletedInvocation(session, metadata=metadata)

    def _training_of(self, model: str) -> TrainingConfig:
        if model not in self.training:
            raise dg.Failure(f"model {model!r} is not in the fleet config this code location loaded; reload the code location")
        training = TrainingConfig.model_validate_json(self.training[model])
        if training.batch is None:
            raise dg.Failure(
                f"models.{model}.training.batch is missing: the prod profile trains on AWS Batch; add job_queue,"
                " job_definition and image (README, Training on AWS Batch)"
            )
        if training.s3_bucket is None:
            raise dg.Failure(f"models.{model}.training.s3_bucket is missing, and there is no storage.s3_bucket to fall back on")
        return training


@dataclass
class _JobObserver:
    """Sees each description of the job: when Batch starts a new attempt, the Pipes messages are read
    from that attempt's first chunk again; the logs follow the attempt's stream."""

    context: dg.AssetExecutionContext
    attempts: int
    reader: Any  # batch_pipes.JobS3MessageReader
    follower: batch.LogFollower
    last_seen: dict[str, Any] | None = None
    attempt: int = 0

    def __call__(self, job: dict[str, Any]) -> None:
        attempt = batch.attempt_number(job)
        if attempt != self.attempt:
            if self.attempt:
                self.context.log.warning(f"AWS Batch retries job {job['jobId']}: attempt {attempt} of {self.attempts}")
            self.reader.start_attempt(batch.previous_attempt_stopped_at(job))
            self.attempt = attempt
        self.last_seen = job
        self.follower.follow(batch.current_log_stream(job))


def _forward_line(line: str) -> None:
    """The container's output goes to the step's stdout, which Dagster keeps as the step's logs."""
    sys.stdout.write(line if line.endswith("\n") else line + "\n")


def _job_tags(context: dg.AssetExecutionContext, model: str, request_id: str, pipes_prefix: str) -> dict[str, str]:
    """Tags for finding the job from Dagster and back; Batch allows 256 characters a value."""
    tags = {
        "dagster/run_id": context.run.run_id,
        "dagster/asset": context.asset_key.to_user_string(),
        "dagster/partition": context.partition_key if context.has_partition_key else "",
        "data-engine/model": model,
        "data-engine/request-id": request_id,
        PIPES_PREFIX_TAG: pipes_prefix,
    }
    return {key: value[:256] for key, value in tags.items() if value}


def _terminate_unless_finished(jobs: Any, last_seen: dict[str, Any] | None, job_id: str, error: BaseException, context: dg.AssetExecutionContext) -> None:
    if last_seen is not None and last_seen["status"] in ("SUCCEEDED", "FAILED"):
        return
    reason = f"Dagster run {context.run.run_id} stopped: {type(error).__name__}: {error}"
    context.log.warning(f"Terminating AWS Batch job {job_id}: {reason}")
    try:
        jobs.terminate(job_id, reason)
    except Exception as terminate_error:  # the original error is the one to report
        context.log.error(f"Could not terminate AWS Batch job {job_id}: {terminate_error}")


def _console_url(region: str, job_id: str) -> str:
    return f"https://{region}.console.aws.amazon.com/batch/home?region={region}#jobs/detail/{job_id}"
