"""Training through Dagster's public surfaces in the local profile: the reference trainer (its own
environment, installed once per session from docker/trainer/requirements.txt) trains for real on CPU
on a tiny synthetic label version through the LocalTrainerLauncher, then a checkpoint is selected.

One training run (module fixture, about half a minute) is shared by the tests that need one."""

# No `from __future__ import annotations`: Dagster reads the config and context annotations.

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from data_engine import cli
from data_engine.annotation.tasks import frame_path
from data_engine.config import load_fleet_config
from data_engine.config.loader import ConfigError
from data_engine.definitions import build_definitions
from data_engine.demo import read_ground_truth
from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
from data_engine.defs.trainer_launcher import TrainerLauncherResource
from data_engine.labels import LabelStore
from data_engine.labels.versioning import import_label_set
from data_engine.training import SelectionError, select_checkpoint
from data_engine.training.trainer_env import ensure_trainer_env
from data_engine_tests.conftest import TEST_FLEET
from data_engine_tests.training_fixtures import (
    CLASSES,
    HYPERPARAMETERS,
    MODEL,
    TRAINING_FLEET,
    training_environment,
    write_synthetic_label_set,
)

# Measured with TRAINING_FLEET's hyperparameters (seed 0): val map 0.39, map50 0.87 after four epochs; 0.0 untrained.
MIN_MAP50, MIN_MAP = 0.5, 0.15


@pytest.fixture(scope="session")
def trainer_python() -> Path:
    """The reference trainer's environment: made once (minutes), then reused from the cache folder."""
    return ensure_trainer_env()


@dataclass
class Trained:
    home: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    run_id: str
    label_version: str
    coco: dict[str, Any]

    @property
    def run_folder(self) -> Path:
        return self.home / "models" / MODEL / "runs" / self.run_id

    def checkpoints(self) -> list[dict[str, Any]]:
        return json.loads((self.run_folder / "checkpoints.json").read_text())

    def latest(self, asset: str) -> dg.AssetMaterialization:
        return self.instance.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization


def materialize_training_labels(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """training_labels with nothing to merge: it reports the latest label version (its data version)."""
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        asset_selection=[dg.AssetKey("training_labels")], partition_key=MODEL, instance=instance
    )
    assert result.success


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trainer_python) -> Trained:
    with training_environment(tmp_path_factory.mktemp("training"), trainer_python) as (home, version, coco):
        defs = build_definitions()
        with dg.DagsterInstance.get() as instance:
            materialize_training_labels(defs, instance)
            result = defs.resolve_job_def("training_job").execute_in_process(partition_key=MODEL, instance=instance)
            assert result.success
            yield Trained(home, instance, defs, result.run_id, version, coco)


def test_local_profile_trains_and_selects_a_checkpoint(trained):
    run = trained.instance.get_run_by_id(trained.run_id)
    assert run.tags["data_engine/training"] == MODEL  # the tag the per-model concurrency limit keys on

    request = json.loads((trained.run_folder / "request.json").read_text())
    assert request["label_version"] == trained.label_version
    assert request["hyperparameters"] == HYPERPARAMETERS
    assert request["launcher"] == "LocalTrainerLauncher"
    splits = json.loads((trained.run_folder / "splits.json").read_text())
    assert set(splits) == {image["file_name"] for image in trained.coco["images"]}

    checkpoints = trained.checkpoints()
    assert [entry["epoch"] for entry in checkpoints] == [1, 2, 3, 4]
    assert all(Path(entry["uri"]).is_file() for entry in checkpoints)
    # The detector learned: an untrained one scores 0.
    assert checkpoints[-1]["metrics"]["map50"] >= MIN_MAP50, checkpoints
    assert max(entry["metrics"]["map"] for entry in checkpoints) >= MIN_MAP, checkpoints

    model = trained.latest("trained_model")
    assert model.partition == MODEL
    assert model.metadata["label_version"].value == trained.label_version
    assert model.metadata["epochs"].value == 4
    assert model.metadata["launched_now"].value is True
    assert model.metadata["gpus"].value == 0  # reported by the trainer through Pipes
    assert model.metadata["val_images"].value == sum(1 for split in splits.values() if split == "val")
    table = model.metadata["checkpoints"].value
    assert all(entry["name"] in table for entry in checkpoints) and "map50" in table

    selected = trained.latest("selected_checkpoint")
    best = select_checkpoint(checkpoints, "map")
    candidate_id = selected.metadata["candidate_id"].value
    candidate = json.loads((trained.home / "models" / MODEL / "candidates" / f"{candidate_id}.json").read_text())
    assert candidate["checkpoint"]["uri"] == best["uri"] == selected.metadata["checkpoint_uri"].value
    assert candidate["metrics"]["map"] == max(entry["metrics"]["map"] for entry in checkpoints)
    assert candidate["label_version"] == trained.label_version and candidate["run_id"] == trained.run_id


def test_selection_takes_the_best_metric_and_the_later_checkpoint_on_a_tie():
    def entry(name: str, map_: float) -> dict[str, Any]:
        return {"name": name, "uri": f"/runs/r/{name}", "epoch": int(name[-1]), "step": 10 * int(name[-1]), "metrics": {"map": map_}}

    checkpoints = [entry("e1", 0.2), entry("e2", 0.5), entry("e3", 0.5), entry("e4", 0.4), entry("e5", float("nan"))]
    assert select_checkpoint(checkpoints, "map")["name"] == "e3"
    assert select_checkpoint(checkpoints[:2], "map")["name"] == "e2"
    with pytest.raises(SelectionError, match="no validation metric 'map50'.*training.selection_metric"):
        select_checkpoint(checkpoints, "map50")


class _TrainerCall(dg.Config):
    entrypoint: str
    extras_json: str


@dg.asset
def _trainer_call(context: dg.AssetExecutionContext, config: _TrainerCall, trainer: TrainerLauncherResource) -> dg.MaterializeResult:
    """One trainer invocation through the profile's launcher, as the next issue's evaluation step makes it."""
    invocation = trainer.run(
        context, model=MODEL, request_id=f"test-{config.entrypoint}", entrypoint=config.entrypoint, extras=json.loads(config.extras_json)
    )
    return invocation.get_materialize_result()


def call_trainer(trained: Trained, entrypoint: str, extras: dict[str, Any]) -> dict[str, Any]:
    """The trainer's final materialization metadata, as plain values."""
    config = {"entrypoint": entrypoint, "extras_json": json.dumps(extras)}
    result = dg.materialize([_trainer_call], resources=trained.defs.resources, run_config={"ops": {"_trainer_call": {"config": config}}})
    assert result.success
    return {key: value.value for key, value in result.asset_materializations_for_node("_trainer_call")[0].metadata.items()}


def train_extras(trained: Trained, run_folder: Path, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The extras trained_model gives the trainer, for another run folder (splits.json copied there)."""
    request = json.loads((trained.run_folder / "request.json").read_text())
    run_folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trained.run_folder / "splits.json", run_folder / "splits.json")
    return {
        "model": MODEL,
        "classes": CLASSES,
        "label_version_uri": request["label_version_uri"],
        "splits_uri": str(run_folder / "splits.json"),
        "run_uri": str(run_folder),
        "hyperparameters": hyperparameters,
    }


def test_evaluate_entrypoint_writes_coco_detections_that_reproduce_the_val_metrics(trained, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    checkpoints = trained.checkpoints()
    splits = json.loads((trained.run_folder / "splits.json").read_text())
    frames = [image["file_name"] for image in trained.coco["images"] if splits[image["file_name"]] == "val"]
    chosen = [checkpoints[0], checkpoints[-1]]
    config = {"checkpoint_uris": [entry["uri"] for entry in chosen], "frames": frames, "output_uri": str(tmp_path / "evaluation")}
    assert call_trainer(trained, "evaluate", config)["checkpoints"] == 2

    index = json.loads((tmp_path / "evaluation" / "detections.json").read_text())
    assert [item["checkpoint_uri"] for item in index] == config["checkpoint_uris"]
    truth_by_uri = {image["file_name"]: image["id"] for image in trained.coco["images"]}
    for item, entry in zip(index, chosen):
        detections = json.loads(Path(item["detections_uri"]).read_text())
        assert [image["file_name"] for image in detections["images"]] == frames
        assert [category["name"] for category in detections["categories"]] == CLASSES
        # Scored independently with pycocotools against the label version's boxes, the detections give
        # the validation map the trainer recorded for that checkpoint.
        image_of = {image["id"]: truth_by_uri[image["file_name"]] for image in detections["images"]}
        truth = COCO()
        truth.dataset = {
            "images": [image for image in trained.coco["images"] if image["file_name"] in set(frames)],
            "annotations": [a for a in trained.coco["annotations"] if a["image_id"] in set(image_of.values())],
            "categories": trained.coco["categories"],
        }
        truth.createIndex()
        category_of = {c["id"]: next(t["id"] for t in trained.coco["categories"] if t["name"] == c["name"]) for c in detections["categories"]}
        results = [
            {"image_id": image_of[d["image_id"]], "category_id": category_of[d["category_id"]], "bbox": d["bbox"], "score": d["score"]}
            for d in detections["annotations"]
        ]
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        assert evaluation.stats[0] == pytest.approx(entry["metrics"]["map"], abs=0.002)


def test_a_batch_retry_resumes_after_the_last_checkpoint(trained, tmp_path, monkeypatch):
    """A crash during the last epoch, then AWS Batch's second attempt: the trainer loads the last
    checkpoint of progress.json and trains only the missing epoch, to the same weights."""
    original = trained.checkpoints()
    resumed_run = tmp_path / "run"
    shutil.copytree(trained.run_folder, resumed_run)
    (resumed_run / "checkpoints.json").unlink()
    (resumed_run / "checkpoints" / original[-1]["name"]).unlink()
    progress = [
        {**entry, "uri": str(resumed_run / "checkpoints" / entry["name"])} for entry in original[:-1]
    ]
    (resumed_run / "progress.json").write_text(json.dumps(progress))

    monkeypatch.setenv("AWS_BATCH_JOB_ATTEMPT", "2")
    assert call_trainer(trained, "train", train_extras(trained, resumed_run, HYPERPARAMETERS))["resumed_after_epoch"] == 3

    checkpoints = json.loads((resumed_run / "checkpoints.json").read_text())
    assert checkpoints[:-1] == progress
    assert checkpoints[-1]["epoch"] == 4 and checkpoints[-1]["step"] == original[-1]["step"]
    assert checkpoints[-1]["metrics"] == pytest.approx(original[-1]["metrics"], abs=1e-4)


def test_two_processes_train_with_distributed_data_parallel_on_cpu(trained, tmp_path, monkeypatch):
    """The multi-GPU path without a GPU: torchrun starts two gloo ranks that split each epoch's batches."""
    monkeypatch.setenv("DATA_ENGINE_TRAINER_CPU_PROCESSES", "2")
    metadata = call_trainer(trained, "train", train_extras(trained, tmp_path / "run", {**HYPERPARAMETERS, "epochs": 1, "threads": 1}))
    assert metadata["processes"] == 2
    assert metadata["steps"] == math.ceil(math.ceil(metadata["train_images"] / 2) / HYPERPARAMETERS["batch_size"])
    assert [entry["epoch"] for entry in json.loads((tmp_path / "run" / "checkpoints.json").read_text())] == [1]


def test_an_unknown_label_version_fails_before_anything_is_written(trained):
    run_config = {"ops": {"trained_model": {"config": {"label_version": "20990101T000000000000Z-0000abcd"}}}}
    result = trained.defs.resolve_job_def("training_job").execute_in_process(
        partition_key=MODEL, instance=trained.instance, run_config=run_config, raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "label version '20990101T000000000000Z-0000abcd' of model 'toy' does not exist" in str(failure.event_specific_data.error)
    assert not (trained.home / "models" / MODEL / "runs" / result.run_id).exists()


def test_a_missing_trainer_interpreter_names_the_fix(trained, monkeypatch, tmp_path):
    monkeypatch.setenv(TRAINER_PYTHON_ENV, str(tmp_path / "no-such-python"))
    result = build_definitions().resolve_job_def("training_job").execute_in_process(
        partition_key=MODEL, instance=trained.instance, raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    assert "data-engine trainer-env" in str(failure.event_specific_data.error)


def test_bad_training_config_is_rejected_when_loaded(tmp_path, monkeypatch):
    fleet = json.loads(json.dumps(TRAINING_FLEET))
    fleet["models"][MODEL]["training"]["selection_metric"] = "map; drop"
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    monkeypatch.setenv("DATA_ENGINE_CONFIG", str(path))
    with pytest.raises(ConfigError, match="selection_metric"):
        load_fleet_config()


def _training_job() -> dg.JobDefinition:
    return build_definitions().resolve_job_def("training_job")


def test_a_newer_label_version_makes_the_model_stale_and_a_retry_reuses_its_request(trained):
    """Last in the module: it moves the label store's latest version."""
    from dagster._utils.test.data_versions import get_stale_status_resolver  # the UI's staleness, as Dagster tests it

    from dagster._core.definitions.data_version import StaleStatus

    keys = ("reviewed_tasks", "training_labels", "trained_model", "selected_checkpoint")  # training_labels reads reviewed_tasks
    assets = [trained.defs.resolve_assets_def(key) for key in keys]
    assert get_stale_status_resolver(trained.instance, assets).get_status(dg.AssetKey("trained_model"), MODEL) == StaleStatus.FRESH

    newer = write_synthetic_label_set(trained.home / "objects", MODEL, frames=20, seed=1)
    import_label_set(LabelStore.local(trained.home / "labels"), MODEL, newer, CLASSES)
    materialize_training_labels(trained.defs, trained.instance)
    assert get_stale_status_resolver(trained.instance, assets).get_status(dg.AssetKey("trained_model"), MODEL) == StaleStatus.STALE

    # Re-executing the training run with its tags (what the daemon's run retry does): same root run, so
    # the recorded request (old label version) and the finished checkpoints are reused; no second training.
    retry = dg.execute_job(
        dg.reconstructable(_training_job),
        trained.instance,
        tags=trained.instance.get_run_by_id(trained.run_id).tags,
        reexecution_options=dg.ReexecutionOptions(parent_run_id=trained.run_id, step_selection=["trained_model"]),
    )
    assert retry.success
    assert trained.instance.get_run_by_id(retry.run_id).root_run_id == trained.run_id
    again = trained.latest("trained_model")
    assert again.metadata["run_id"].value == trained.run_id
    assert again.metadata["label_version"].value == trained.label_version
    assert again.metadata["launched_now"].value is False
    assert [entry["uri"] for entry in trained.checkpoints()] == [
        str(trained.run_folder / "checkpoints" / f"epoch-{epoch:04d}.pt") for epoch in range(1, 5)
    ]


def test_cli_prints_the_trainer_environment_it_made(trainer_python, capsys):
    assert cli.main(["trainer-env"]) == 0
    assert capsys.readouterr().out.strip() == str(trainer_python)


def test_demo_frames_become_a_label_version_to_train_on(local_env, capsys):
    """`labels import-demo`: the local profile can train before any review (see README, Training)."""
    assert cli.main(["labels", "import-demo", "--model", "municipals"]) == 1
    assert "run `data-engine demo-data` first" in capsys.readouterr().err
    assert cli.main(["demo-data", "--days", "1", "--end-date", "2026-11-24"]) == 0
    assert cli.main(["labels", "import-demo", "--model", "municipals", "--frames", "30"]) == 0

    coco = LabelStore.local(local_env / "labels").label_set("municipals")
    classes = TEST_FLEET["models"]["municipals"]["classes"]
    assert len(coco["images"]) == 30 and [c["name"] for c in coco["categories"]] == classes
    assert all(frame_path(local_env / "objects", image["file_name"]).is_file() for image in coco["images"])
    size = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    assert len(coco["annotations"]) >= 30  # the demo draws one to a few boxes per frame
    for annotation in coco["annotations"]:
        x, y, width, height = annotation["bbox"]
        assert width > 0 and height > 0 and x + width <= size[annotation["image_id"]][0] and y + height <= size[annotation["image_id"]][1]
    # The labels are the objects drawn into the frames, not the demo model's (corrupted) predictions.
    truth = read_ground_truth(local_env / "warehouse.duckdb", "municipals", [image["file_name"] for image in coco["images"]])
    uri = {image["id"]: image["file_name"] for image in coco["images"]}
    labelled = sorted((uri[a["image_id"]], classes[a["category_id"] - 1], *a["bbox"]) for a in coco["annotations"])
    assert labelled == sorted(
        (frame, box["class_name"], box["x_min"], box["y_min"], box["x_max"] - box["x_min"], box["y_max"] - box["y_min"])
        for frame, boxes in truth.items() for box in boxes
    )
