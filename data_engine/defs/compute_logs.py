"""The instance's compute log manager, chosen by the environment: S3 when a bucket is named, else local files.

A dagster.yaml cannot branch, and one instance file serves every deployment (docker/dagster.yaml; the
top-level dagster.yaml mirrors it). Production sets DAGSTER_COMPUTE_LOGS_BUCKET and gets Dagster's own
S3ComputeLogManager (credentials from the standard AWS chain, AWS_ENDPOINT_URL included); the local stack,
`dagster dev` and the tests leave it unset and keep stdout/stderr under $DAGSTER_HOME/storage.
"""

from __future__ import annotations

import os
import tempfile

from dagster._core.storage.compute_log_manager import ComputeLogManager
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._serdes import ConfigurableClass, ConfigurableClassData

BUCKET_ENV = "DAGSTER_COMPUTE_LOGS_BUCKET"
PREFIX_ENV = "DAGSTER_COMPUTE_LOGS_PREFIX"
DEFAULT_PREFIX = "dagster/compute-logs"


class ComputeLogsFromEnv(ComputeLogManager, ConfigurableClass):
    """Never instantiated: `from_config_value` returns the manager the environment asks for. Every process
    (webserver, daemon, code server, run worker) builds it from its own environment, so give them the same.
    It subclasses ComputeLogManager only because Dagster checks the configured class's type."""

    @classmethod
    def config_type(cls) -> dict:
        return {}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value) -> ComputeLogManager:
        bucket = os.environ.get(BUCKET_ENV, "").strip()
        if bucket:
            from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

            prefix = os.environ.get(PREFIX_ENV, "").strip() or DEFAULT_PREFIX
            return S3ComputeLogManager(bucket=bucket, prefix=prefix, inst_data=inst_data, skip_empty_files=True)
        home = os.environ.get("DAGSTER_HOME") or os.path.join(tempfile.gettempdir(), "dagster")
        return LocalComputeLogManager(base_dir=os.path.join(home, "storage"), inst_data=inst_data)
