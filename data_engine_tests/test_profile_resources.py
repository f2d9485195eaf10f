"""Where the resources read and write comes from the profile and the fleet config, never from run
config: a launchpad (or any launch) cannot point the stores or the warehouse somewhere else."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from data_engine.definitions import build_definitions

# (profile, resource, run config that would redirect it)
REDIRECTS = {
    "object store (local folder)": ("local", "object_store", {"root": "/tmp/elsewhere"}),
    "DuckDB warehouse file": ("local", "warehouse", {"path": "/tmp/other.duckdb"}),
    "demo frames folder": ("local", "warehouse", {"objects_root": "/etc"}),
    "label stores": ("local", "label_stores", {"locations": {"municipals": "/tmp/elsewhere"}}),
    "S3 bucket of asset outputs": ("prod", "object_store", {"bucket": "someone-elses-bucket"}),
    "S3 prefix of asset outputs": ("prod", "object_store", {"prefix": "../other"}),
    "BigQuery tables": ("prod", "warehouse", {"predictions_table": "other.predictions"}),
    "BigQuery byte cap": ("prod", "warehouse", {"max_bytes_billed": 10**15}),
}


@pytest.mark.parametrize("case", sorted(REDIRECTS))
def test_run_config_cannot_redirect_a_location(local_env: Path, monkeypatch, case: str):
    profile, resource, config = REDIRECTS[case]
    monkeypatch.setenv("DATA_ENGINE_PROFILE", profile)
    job = build_definitions().resolve_job_def("selection_job")
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as raised:
        job.execute_in_process(
            partition_key="2026-11-24|municipals", instance=instance, run_config={"resources": {resource: {"config": config}}}
        )
    [field] = config
    assert f'unexpected config entry "{field}"' in str(raised.value)
    assert not local_env.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("field, value", [("url", "http://elsewhere.example"), ("org", "other-org"), ("objects_root", "/etc")])
def test_run_config_cannot_redirect_cvat(local_env: Path, monkeypatch, field: str, value: str):
    """Where the CVAT token goes, which organization it acts in, and which files are uploaded."""
    monkeypatch.setenv("CVAT_URL", "http://cvat.invalid")
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "unused")
    job = build_definitions().resolve_job_def("label_merge_job")
    with dg.instance_for_test() as instance, pytest.raises(dg.DagsterInvalidConfigError) as raised:
        job.execute_in_process(partition_key="municipals", instance=instance, run_config={"resources": {"annotation": {"config": {field: value}}}})
    assert f'unexpected config entry "{field}"' in str(raised.value)
