"""evaluation_report, its blocking gate checks, promoted_model, rollback_model_job, the automation that
follows a new checkpoint and the sensor that starts training, through Dagster on the local profile.

The trainer is the stand-in in data_engine_tests/stand_in_trainer (the evaluate entrypoint of the
trainer contract without torch), started by the real LocalTrainerLauncher through Dagster Pipes."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest
import yaml

from data_engine.config import load_fleet_config
from data_engine.defs.evaluation import build_evaluation_defs
from data_engine.defs.local_launcher import LocalTrainerLauncher
from data_engine.defs.profiles import resources_for
from data_engine.defs.training import build_training_defs
from data_engine.demo_loop import GATE_FAILURE
from data_engine.evaluation.promotion import ProductionPointer
from data_engine.labels import LabelStore
from data_engine.labels.versioning import import_label_set
from data_engine.settings import current_settings
from data_engine.training import ModelStore
from data_engine_tests.conftest import TEST_FLEET
from data_engine_tests.evaluation_fixtures import CLASSES, detections, synthetic_split

MODEL = "toy"
STAND_IN_TRAINER = Path(__file__).parent / "stand_in_trainer"
FLEET = {
    "warehouse": TEST_FLEET["warehouse"],
    "models": {
        MODEL: {
            "classes": CLASSES,
            "clients": {"acme": {"cameras": ["cam-01", "cam-02"]}, "bravo": {"cameras": ["cam-03"]}},
            "selection": {"start_date": "2026-01-01", "max_frames_per_day": 10, "max_frames_per_camera_per_day": 10},
            "training": {"auto": {"min_new_reviewed_images": 50}},
            "evaluation": {"bootstrap_resamples": 200, "slice_min_support": 40, "perturbations": [{"kind": "blur", "strength": 2}]},
            "gates": {"class_min_support": 20, "class_max_drop": 0.02},
        }
    },
}


class Loop:
    """The local profile on FLEET with one label version, and helpers standing in for training."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, fleet: dict[str, Any] = FLEET):
        fleet_file = root / "fleet.yaml"
        fleet_file.write_text(yaml.safe_dump(fleet, sort_keys=False))
        (root / "dagster_home").mkdir()
        self.home = root / "home"
        monkeypatch.setenv("DATA_ENGINE_PROFILE", "local")
        monkeypatch.setenv("DATA_ENGINE_HOME", str(self.home))
        monkeypatch.setenv("DATA_ENGINE_CONFIG", str(fleet_file))
        monkeypatch.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        self.config = load_fleet_config()
        self.coco = synthetic_split(160, seed=21)
        self.labels = LabelStore.local(self.home / "labels")
        self.label_version = import_label_set(self.labels, MODEL, self.coco, CLASSES)
        self.models = ModelStore.from_uri(str(self.home / "models"))
        self.instance = dg.DagsterInstance.get()
        settings = current_settings()
        self.resources = {
            **resources_for(settings, self.config),
            "trainer": LocalTrainerLauncher(trainer_dir=str(STAND_IN_TRAINER), frames_root=str(settings.objects_root), python=sys.executable),
        }
        self.defs = with_resources(self.config, settings, self.resources)

    def select(self, candidate_id: str, found: list[dict[str, Any]], perturbed: list[dict[str, Any]]) -> None:
        """What trained_model and selected_checkpoint leave behind: the run's splits (every frame in test
        here), a checkpoint, the candidate record, and selected_checkpoint's materialization."""
        run_id = candidate_id.split("--")[0]
        run = self.home / "models" / MODEL / "runs" / run_id
        run.mkdir(parents=True)
        (run / "splits.json").write_text(json.dumps({image["file_name"]: "test" for image in self.coco["images"]}))
        checkpoint = run / "checkpoints" / "best.json"
        checkpoint.parent.mkdir()
        checkpoint.write_text(json.dumps({"classes": CLASSES, "detections": self._by_frame(found), "perturbed": {"blur-2": self._by_frame(perturbed)}}))
        record = {"candidate_id": candidate_id, "model": MODEL, "run_id": run_id, "label_version": self.label_version, "checkpoint": {"name": "best.json", "uri": str(checkpoint), "epoch": 3, "step": 30}}
        assert self.models.write_candidate(MODEL, record)
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="selected_checkpoint", partition=MODEL, metadata={"candidate_id": candidate_id})
        )

    def _by_frame(self, found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        uri = {image["id"]: image["file_name"] for image in self.coco["images"]}
        frames: dict[str, list] = {}
        for detection in found:
            frames.setdefault(uri[detection["image_id"]], []).append({"class": CLASSES[detection["category_id"] - 1], "bbox": detection["bbox"], "score": detection["score"]})
        return frames

    def evaluate_and_promote(self, run_config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
        assets = [self.defs.get_assets_def("evaluation_report"), self.defs.get_assets_def("promoted_model")]
        return dg.materialize(assets, partition_key=MODEL, resources=self.resources, instance=self.instance, run_config=run_config, raise_on_error=False)

    def production(self) -> str | None:
        current = ProductionPointer(self.models.objects).current(MODEL)
        return current.record["candidate"] if current else None


def with_resources(config, settings, resources) -> dg.Definitions:
    """The training and evaluation definitions (the sensor targets training_job) with the test's resources."""
    return dg.Definitions.merge(build_training_defs(config), build_evaluation_defs(config, settings), dg.Definitions(resources=resources))


@pytest.fixture
def loop(tmp_path, monkeypatch) -> Loop:
    return Loop(tmp_path, monkeypatch)


def good(loop: Loop, seed: int, quality: float = 0.85) -> tuple[list, list]:
    return detections(loop.coco, seed=seed, quality=quality), detections(loop.coco, seed=seed + 1, quality=quality - 0.05)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}


def test_a_first_candidate_is_scored_alone_and_becomes_production(loop):
    loop.select("run-a--best", *good(loop, seed=1))
    result = loop.evaluate_and_promote()
    assert result.success
    assert all(evaluation.passed for evaluation in checks(result).values()) and len(checks(result)) == 5
    report = json.loads((loop.home / "models" / MODEL / "evaluations" / "run-a--best" / "report.json").read_text())
    assert report["production"] is None and report["comparison"] is None
    assert report["test_split"] == {"label_version": loop.label_version, "images": 160, "boxes": len(loop.coco["annotations"])}
    assert set(report["scores"]["candidate"]["robustness"]) == {"blur-2"}
    metadata = result.asset_materializations_for_node("evaluation_report")[0].metadata
    assert metadata["production"].value == "none yet" and "| PET |" in metadata["per_class"].value
    assert metadata["pr_curve"].value.startswith("![PR curves at IoU 0.5](data:image/png;base64,")
    assert (loop.home / "models" / MODEL / "evaluations" / "run-a--best" / "pr_curve.png").read_bytes().startswith(b"\x89PNG")
    assert loop.production() == "run-a--best"
    assert result.asset_materializations_for_node("promoted_model")[0].metadata["action"].value == "promote"


def test_a_candidate_losing_a_class_is_blocked_by_its_check_and_a_good_one_is_promoted(loop):
    loop.select("run-a--best", *good(loop, seed=1))
    assert loop.evaluate_and_promote().success
    automation = dg.evaluate_automation_conditions(defs=loop.defs, instance=loop.instance)
    # Better everywhere except PET, whose detections it mostly lost.
    found, perturbed = good(loop, seed=3, quality=0.9)
    rng = np.random.default_rng(0)
    found = [d for d in found if d["category_id"] != 1 or rng.random() < 0.3]
    loop.select("run-b--best", found, perturbed)
    blocked = loop.evaluate_and_promote()
    per_class = checks(blocked)["per_class"]
    assert not per_class.passed and per_class.blocking
    assert "AP of class 'PET'" in per_class.description and "look at class 'PET'" in per_class.description
    assert not blocked.asset_materializations_for_node("promoted_model")  # the blocking check stopped it
    # the demo tells a gate that kept production from a fault by this error class (demo_loop.GATE_FAILURE)
    assert blocked.failure_data_for_node("evaluation_report").error.cls_name == GATE_FAILURE
    assert loop.production() == "run-a--best"
    report = json.loads((loop.home / "models" / MODEL / "evaluations" / "run-b--best" / "report.json").read_text())
    assert report["production"]["candidate_id"] == "run-a--best" and report["comparison"]["bootstrap"]["resamples"] == 200
    # Automation does not launch a promotion of it either (one that would only fail).
    after = dg.evaluate_automation_conditions(defs=loop.defs, instance=loop.instance, cursor=automation.cursor)
    assert not after.get_requested_partitions(dg.AssetKey("promoted_model"))
    # Promoting it anyway is an explicit, recorded override with a reason.
    override = dg.materialize(
        [loop.defs.get_assets_def("promoted_model")], partition_key=MODEL, resources=loop.resources, instance=loop.instance,
        run_config={"ops": {"promoted_model": {"config": {"override_reason": "PET relabelled next week"}}}},
    )
    assert override.success and loop.production() == "run-b--best"
    assert "override of failed gates ['per_class']: PET relabelled next week" in ProductionPointer(loop.models.objects).current(MODEL).record["reason"]


def test_rollback_job_and_cli_move_production_back_with_a_reason(loop):
    loop.select("run-a--best", *good(loop, seed=1))
    assert loop.evaluate_and_promote().success
    loop.select("run-c--best", *good(loop, seed=5, quality=0.9))
    assert loop.evaluate_and_promote().success and loop.production() == "run-c--best"

    job = loop.defs.get_job_def("rollback_model_job")
    bad = job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": {"model": MODEL, "to_candidate": "run-x--best", "reason": "test"}}}},
        instance=loop.instance, raise_on_error=False,
    )
    assert not bad.success
    assert "never in production as 'run-x--best'; earlier production models: run-a--best, run-c--best" in str(bad.failure_data_for_node("rollback_model").error)
    result = job.execute_in_process(
        run_config={"ops": {"rollback_model": {"config": {"model": MODEL, "to_candidate": "run-a--best", "reason": "night frames regressed"}}}},
        instance=loop.instance,
    )
    assert result.success and loop.production() == "run-a--best"
    materialization = loop.instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("promoted_model"), asset_partitions=[MODEL]), limit=1).records[0]
    assert materialization.asset_materialization.metadata["action"].value == "rollback"

    from data_engine.cli import main

    assert main(["models", "rollback", "--model", MODEL, "--to", "run-c--best", "--reason", "false alarm"]) == 0
    assert loop.production() == "run-c--best"
    assert main(["models", "rollback", "--model", MODEL, "--to", "run-c--best", "--reason", "again"]) == 1
    assert main(["models", "production", "--model", MODEL]) == 0


def test_a_new_checkpoint_requests_evaluation_and_promotion_by_itself(loop):
    defs = loop.defs
    first = dg.evaluate_automation_conditions(defs=defs, instance=loop.instance)
    assert first.total_requested == 0
    loop.select("run-a--best", *good(loop, seed=1))
    result = dg.evaluate_automation_conditions(defs=defs, instance=loop.instance, cursor=first.cursor)
    assert result.get_requested_partitions(dg.AssetKey("evaluation_report")) == {MODEL}
    assert result.get_requested_partitions(dg.AssetKey("promoted_model")) == {MODEL}
    assert result.total_requested == 2


def test_training_starts_when_enough_new_reviewed_images_arrived_and_not_before(loop, tmp_path, monkeypatch):
    sensor = loop.defs.resolve_sensor_def("auto_training_sensor")
    resources = {"label_stores": loop.resources["label_stores"]}

    def tick(cursor=None):
        with dg.build_sensor_context(instance=loop.instance, cursor=cursor, resources=resources) as context:
            return sensor(context)

    first = tick()  # 160 images, nothing trained: due (>= 50)
    (request,) = first.run_requests
    assert request.partition_key == MODEL and request.run_key == f"{MODEL}:{loop.label_version}" and request.tags["data_engine/training"] == MODEL
    assert isinstance(tick(first.cursor), dg.SkipReason)  # asked for that version already
    # The model trained on that version; 49 more images are not enough, 50 are.
    loop.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="trained_model", partition=MODEL, metadata={"label_version": loop.label_version}))
    grown = copy.deepcopy(loop.coco)
    extra = synthetic_split(50, seed=22)
    for image in extra["images"][:49]:
        grown["images"].append({**image, "id": image["id"] + 1000, "file_name": image["file_name"].replace("/m/", "/new/")})
    import_label_set(loop.labels, MODEL, grown, CLASSES)
    skipped = tick(first.cursor)
    assert isinstance(skipped, dg.SkipReason) and "49 new reviewed images" in skipped.skip_message
    grown["images"].append({**extra["images"][49], "id": 2000, "file_name": "s3://frames/new/cam-01/20261120/000050-9.jpg"})
    newest = import_label_set(loop.labels, MODEL, grown, CLASSES)
    (request,) = tick(first.cursor).run_requests
    assert request.run_key == f"{MODEL}:{newest}"
    # Paused in config: no training, whatever the count.
    paused = copy.deepcopy(FLEET)
    paused["models"][MODEL]["training"]["auto"]["paused"] = True
    paused_config = load_fleet_config_from(paused, tmp_path)
    paused_loop_defs = with_resources(paused_config, current_settings(), loop.resources)
    with dg.build_sensor_context(instance=loop.instance, resources=resources) as context:
        result = paused_loop_defs.resolve_sensor_def("auto_training_sensor")(context)
    assert isinstance(result, dg.SkipReason) and "paused" in result.skip_message


def load_fleet_config_from(fleet: dict[str, Any], folder: Path):
    path = folder / "paused.yaml"
    path.write_text(yaml.safe_dump(fleet, sort_keys=False))
    return load_fleet_config(path)


def test_a_failing_external_test_blocks_promotion_and_its_report_is_attached(tmp_path, monkeypatch):
    suite = "import json, sys; json.dump({'failed': ['night-glare'], 'candidate': sys.argv[1]}, open(sys.argv[2], 'w')); sys.exit(1)"
    fleet = copy.deepcopy(FLEET)
    fleet["models"][MODEL]["evaluation"]["mltest"] = {"command": [sys.executable, "-c", suite, "{candidate}", "{report}"], "timeout_seconds": 60}
    loop = Loop(tmp_path, monkeypatch, fleet)
    loop.select("run-a--best", *good(loop, seed=1))
    result = loop.evaluate_and_promote()
    mltest = checks(result)["mltest"]
    assert not mltest.passed and "exit status 1" in mltest.description
    assert not result.asset_materializations_for_node("promoted_model") and loop.production() is None
    attached = result.asset_materializations_for_node("evaluation_report")[0].metadata["mltest"].value
    assert attached["report"]["failed"] == ["night-glare"] and attached["report"]["candidate"].endswith("best.json")
