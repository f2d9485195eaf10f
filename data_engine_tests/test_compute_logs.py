"""The instance's compute logs follow the environment: S3 in production, local files otherwise (both dagster.yaml)."""

from __future__ import annotations

import uuid

import dagster as dg


@dg.asset
def chatty() -> None:
    print("a line for the compute log")


def test_without_a_bucket_compute_logs_stay_under_dagster_home(prod_instance, monkeypatch):
    from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager

    assert isinstance(prod_instance.compute_log_manager, LocalComputeLogManager)


def test_with_a_bucket_a_run_uploads_its_step_logs_to_s3(pg_server, s3_server, prod_instance, monkeypatch):
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    bucket = f"logs-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=bucket)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_BUCKET", bucket)
    with dg.DagsterInstance.get() as instance:  # the same docker/dagster.yaml, read again with the bucket set
        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        result = dg.materialize([chatty], instance=instance)
        assert result.success
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys and all(key.startswith("dagster/compute-logs/") for key in keys), keys
    bodies = [s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys]
    assert any(b"a line for the compute log" in body for body in bodies)
