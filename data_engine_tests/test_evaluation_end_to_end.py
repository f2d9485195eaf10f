"""The whole stage on the local profile with the reference trainer (torch on CPU, its own environment):
train, select, evaluate clean and under every perturbation, gate, promote; then a second training is
evaluated against the first as production."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml

from data_engine.config import load_fleet_config
from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
from data_engine.defs.profiles import resources_for
from data_engine.labels import LabelStore
from data_engine.labels.versioning import import_label_set
from data_engine.settings import current_settings
from data_engine.training.trainer_env import ensure_trainer_env
from data_engine_tests.conftest import TEST_FLEET
from data_engine_tests.training_fixtures import CLASSES, write_synthetic_label_set

MODEL = "toy"
FLEET = {
    "warehouse": TEST_FLEET["warehouse"],
    "models": {
        MODEL: {
            "classes": CLASSES,
            "clients": {"line": {"cameras": ["cam-00", "cam-01"]}, "yard": {"cameras": ["cam-02", "cam-03"]}},
            "selection": {"start_date": "2026-01-01", "max_frames_per_day": 10, "max_frames_per_camera_per_day": 10},
            "labels": {"split_ratios": {"train": 0.6, "val": 0.2, "test": 0.2}},
            # Small images, two threads, two epochs: enough to learn something in a few seconds.
            "training": {"hyperparameters": {"epochs": 2, "batch_size": 4, "min_size": 96, "max_size": 128, "threads": 2, "seed": 0}},
            "evaluation": {"bootstrap_resamples": 100, "slice_min_support": 10},
        }
    },
}


@pytest.fixture(scope="session")
def trainer_python():
    return ensure_trainer_env()


def test_trained_checkpoint_is_evaluated_under_perturbations_gated_and_promoted(tmp_path, monkeypatch, trainer_python):
    from data_engine.definitions import build_definitions

    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(FLEET, sort_keys=False))
    (tmp_path / "dagster_home").mkdir()
    home = tmp_path / "home"
    for name, value in {
        "DATA_ENGINE_PROFILE": "local", "DATA_ENGINE_HOME": str(home), "DATA_ENGINE_CONFIG": str(tmp_path / "fleet.yaml"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"), TRAINER_PYTHON_ENV: str(trainer_python), "OMP_WAIT_POLICY": "PASSIVE",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CVAT_URL", raising=False)
    coco = write_synthetic_label_set(home / "objects", MODEL, frames=120)
    import_label_set(LabelStore.local(home / "labels"), MODEL, coco, CLASSES)
    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    stage = [defs.get_assets_def(name) for name in ("trained_model", "selected_checkpoint", "evaluation_report", "promoted_model")]
    resources = resources_for(current_settings(), load_fleet_config())

    first = dg.materialize(stage, partition_key=MODEL, instance=instance, resources=resources)
    assert first.success
    candidate = first.asset_materializations_for_node("selected_checkpoint")[0].metadata["candidate_id"].value
    report = json.loads((home / "models" / MODEL / "evaluations" / candidate / "report.json").read_text())
    scores = report["scores"]["candidate"]
    assert set(scores["robustness"]) == {"brightness-0.6", "blur-2", "jpeg-30", "noise-0.05"}
    assert scores["images"] > 10 and scores["ap50"] > 0  # it learnt something on two epochs
    assert all(evaluation.passed for evaluation in first.get_asset_check_evaluations())
    assert json.loads((home / "models" / MODEL / "production.json").read_text())["candidate"] == candidate

    second = dg.materialize(stage[:3], partition_key=MODEL, instance=instance, resources=resources)
    assert second.success
    challenger = second.asset_materializations_for_node("selected_checkpoint")[0].metadata["candidate_id"].value
    report = json.loads((home / "models" / MODEL / "evaluations" / challenger / "report.json").read_text())
    assert report["production"]["candidate_id"] == candidate
    assert set(report["scores"]["production"]["robustness"]) == set(scores["robustness"])
    assert report["test_split"]["images"] == scores["images"]  # the same frozen test frames
    assert -1 <= report["comparison"]["bootstrap"]["ci95"][0] <= report["comparison"]["bootstrap"]["ci95"][1] <= 1
