"""The loop runs by itself once the profile has an annotation server: review_tasks follows
review_candidates (declarative automation, per model's `review_automation`) and the review sensor is on
by default; without a server neither runs. Evaluated through the code location's own definitions."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import yaml

from data_engine_tests.conftest import REVIEW_PARTITION, TEST_FLEET

SELECTION = ["predictions", "empty_frames", "review_candidates"]


def definitions():
    from data_engine.definitions import build_definitions

    return build_definitions()


def test_without_an_annotation_server_nothing_runs_by_itself(local_env, monkeypatch):
    for name in ("CVAT_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    defs = definitions()
    assert defs.resolve_assets_def("review_tasks").automation_conditions_by_key.get(dg.AssetKey("review_tasks")) is None
    assert defs.resolve_sensor_def("cvat_review_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_sensor_def("review_automation_sensor").default_status == dg.DefaultSensorStatus.STOPPED


@pytest.mark.parametrize("automation", [True, False])
def test_review_tasks_follow_new_review_candidates_unless_the_model_turns_it_off(
    local_env, prepared_home, fleet_file, monkeypatch, automation
):
    fleet = yaml.safe_load(yaml.safe_dump(TEST_FLEET))
    fleet["models"]["municipals"]["review_automation"] = automation
    fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
    shutil.copytree(prepared_home, local_env)
    monkeypatch.delenv("CVAT_URL", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # an annotation server is configured
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "unused")
    defs = definitions()
    assert defs.resolve_sensor_def("cvat_review_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    # on without a click: Dagster's implicit automation sensor would start stopped in a fresh instance
    assert defs.resolve_sensor_def("review_automation_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.get_num_requested(dg.AssetKey("review_tasks")) == 0  # no candidates yet
        result = dg.materialize(assets, selection=SELECTION, partition_key=REVIEW_PARTITION, resources=defs.resources, instance=instance)
        assert result.success
        second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = second.get_requested_partitions(dg.AssetKey("review_tasks"))
    assert requested == ({REVIEW_PARTITION} if automation else set())
