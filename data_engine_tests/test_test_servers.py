"""The test-server helpers start real servers that behave as our code expects, and the repo's
production dagster.yaml loads and works against a real PostgreSQL."""

from __future__ import annotations


import boto3
import dagster as dg
import psycopg2
import pytest
from botocore.exceptions import ClientError

from data_engine_tests.servers.seaweedfs import running_seaweedfs




def _error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


# --- SeaweedFS -------------------------------------------------------------------------------------


def test_seaweedfs_put_get(s3_server):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="roundtrip")
    s3.put_object(Bucket="roundtrip", Key="a/b.json", Body=b'{"x": 1}', Metadata={"model": "m1"})
    got = s3.get_object(Bucket="roundtrip", Key="a/b.json")
    assert got["Body"].read() == b'{"x": 1}'
    assert got["Metadata"] == {"model": "m1"}


def test_seaweedfs_conditional_writes(s3_server):
    """The real server enforces If-None-Match / If-Match, which our manifest writes rely on."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="conditional")

    first = s3.put_object(Bucket="conditional", Key="k", Body=b"v1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="conditional", Key="k", Body=b"v2", IfNoneMatch="*")
    assert _error_code(exc.value) == "PreconditionFailed"

    second = s3.put_object(Bucket="conditional", Key="k", Body=b"v2", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as exc:  # first ETag is stale now
        s3.put_object(Bucket="conditional", Key="k", Body=b"v3", IfMatch=first["ETag"])
    assert _error_code(exc.value) == "PreconditionFailed"

    got = s3.get_object(Bucket="conditional", Key="k")
    assert got["Body"].read() == b"v2"
    assert got["ETag"] == second["ETag"]


def test_seaweedfs_env_points_boto3_at_server(s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3")
    assert s3.meta.endpoint_url == s3_server.endpoint_url
    s3.create_bucket(Bucket="from-env")
    assert "from-env" in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_two_seaweedfs_instances_do_not_collide(s3_server, tmp_path):
    with running_seaweedfs(tmp_path) as other:
        assert other.endpoint_url != s3_server.endpoint_url
        other.client().create_bucket(Bucket="only-here")
        assert "only-here" not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


# --- PostgreSQL + the production dagster.yaml ----------------------------------------------------


def test_prod_dagster_yaml_uses_postgres(prod_instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    assert isinstance(prod_instance.run_storage, PostgresRunStorage)
    assert isinstance(prod_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(prod_instance.schedule_storage, PostgresScheduleStorage)


def test_prod_dagster_yaml_run_settings(prod_instance):
    from dagster._core.run_coordinator import QueuedRunCoordinator

    coordinator = prod_instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert queue.max_concurrent_runs > 1
    assert {"key": "data_engine/label_merge", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        queue.tag_concurrency_limits
    )
    assert prod_instance.run_retries_enabled
    assert prod_instance.run_retries_max_retries == 2
    assert not prod_instance.run_retries_retry_on_asset_or_op_failure  # a failed step is a mistake, not bad luck
    assert not prod_instance.telemetry_enabled


@dg.asset
def trivial_asset() -> int:
    return 1


def test_materialize_against_postgres(prod_instance, pg_server):
    result = dg.materialize([trivial_asset], instance=prod_instance)
    assert result.success

    event = prod_instance.get_latest_materialization_event(trivial_asset.key)
    assert event is not None and event.run_id == result.run_id
    # And it really is in PostgreSQL, not some fallback storage.
    with psycopg2.connect(pg_server.url()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchone()[0] == 1
    conn.close()


# --- moto ----------------------------------------------------------------------------------------


def test_moto_batch_and_ssm(moto_server):
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    batch = session.client("batch", endpoint_url=moto_server.endpoint_url)
    assert batch.describe_job_queues()["jobQueues"] == []

    ssm = session.client("ssm", endpoint_url=moto_server.endpoint_url)
    ssm.put_parameter(Name="/data-engine/models/m1/production", Value="run-123", Type="String")
    got = ssm.get_parameter(Name="/data-engine/models/m1/production")
    assert got["Parameter"]["Value"] == "run-123"


def test_moto_env_and_reset(moto_server, monkeypatch):
    for key, value in moto_server.env().items():
        monkeypatch.setenv(key, value)
    ssm = boto3.client("ssm")
    ssm.put_parameter(Name="/tmp/p", Value="v", Type="String")
    moto_server.reset()
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name="/tmp/p")
    assert _error_code(exc.value) == "ParameterNotFound"


def test_dev_dagster_yaml_is_the_prod_one_without_storage(tmp_path):
    """`dagster dev` reads ./dagster.yaml; it must load without any server and stay in step with prod."""
    import yaml
    from dagster._core.instance.ref import InstanceRef

    from data_engine_tests.conftest import PROD_DAGSTER_YAML, REPO_ROOT

    dev = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    prod = yaml.safe_load(PROD_DAGSTER_YAML.read_text())
    assert "storage" not in dev
    assert {k: v for k, v in prod.items() if k != "storage"} == dev
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path), config_dir=str(REPO_ROOT))) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert instance.run_retries_enabled and not instance.run_retries_retry_on_asset_or_op_failure
