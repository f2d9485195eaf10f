"""Loop effectiveness: does each turn of the loop make the model better, and better than reviewing the
same number of frames picked at random (the baseline every active-learning claim is measured against)?

    uv run python -m data_engine_tests.benchmarks.loop [--model ENS] [--turns 3] [--frames-per-turn 40] [--epochs 20]

On the demo data of one model (`data_engine.demo`, hidden truth included), both arms start from the same
label version (`--start-frames` random frames of the first day, labelled with their truth) and the same
production model trained on it. Then, per turn and arm, on the next day:

- **selection**: the product's selection assets for the model-day (`predictions`, `empty_frames`,
  `review_candidates` through `dg.materialize`; filters, budgets and the cross-day ledger as configured,
  `max_frames_per_day` = `--frames-per-turn`);
- **random**: as many of that day's frames as the selection arm reviewed, drawn uniformly at random
  (`random_frames`, the benchmark's own sampler: the product has no random selection);

then the reviewed frames get their true boxes (`read_ground_truth`, a perfect reviewer) and go through the
product's label merge and versioning (`merge_reviewed_tasks`, one reviewed task per turn), and
`trained_model`, `selected_checkpoint`, `evaluation_report` (with its gates) and `promoted_model` run in
process with the local launcher and the reference trainer. A candidate that fails a gate is not promoted.

Each arm's label versions split their frames as configured, so the evaluation reports of the two arms (and
of successive turns) score different test frames. The benchmark's AP is therefore measured on one fixed
held-out set, the same for every model: `--test-frames` random frames of a later day that neither arm
reviews, labelled with their truth, on which the trainer's evaluate entrypoint predicts (one invocation
through the local launcher for every promoted checkpoint) and the product's COCO scoring counts AP.
Printed per turn: frames reviewed, label-set size and the held-out AP of the production model, for both
arms; then the AP gain per reviewed frame of each arm.
"""

import argparse
import datetime as dt
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from data_engine.config import FleetConfig, load_fleet_config
from data_engine.defs.evaluation import build_evaluation_defs
from data_engine.defs.partitions import model_partitions
from data_engine.defs.profiles import resources_for
from data_engine.defs.resources import ModelStoreResource
from data_engine.defs.selection import build_selection_defs
from data_engine.defs.trainer_launcher import TrainerLauncherResource
from data_engine.defs.training import build_training_defs
from data_engine.demo_loop import DEMO_GATES, DEMO_HYPERPARAMETERS
from data_engine.settings import Settings

ARMS = ("selection", "random")
FIRST_DAY = dt.date(2026, 11, 2)
STAGE = ("trained_model", "selected_checkpoint", "evaluation_report", "promoted_model")
# The demo's tiny, quick-learning detector (data_engine/demo_loop.py), with both cores for one training.
HYPERPARAMETERS = {**DEMO_HYPERPARAMETERS, "threads": 2}


@dataclass
class Turn:
    frames_reviewed: int
    label_images: int
    production: str  # candidate id of the production model after the turn
    promoted: bool  # this turn's candidate passed the gates and became production
    checkpoint_uri: str
    ap: float | None = None  # held-out AP of the production model


@dataclass
class Arm:
    name: str
    home: Path
    turns: list[Turn] = field(default_factory=list)


def benchmark_fleet(model: str, frames_per_turn: int, hyperparameters: dict[str, Any], source: FleetConfig | None = None) -> FleetConfig:
    """The shipped fleet config's `model` alone (classes, cameras, filters), reviewing at most
    `frames_per_turn` frames a day, with tiny training and an evaluation without perturbations. The
    per-class and per-slice gates need more test boxes than a tiny split has (their supports are raised
    out of reach); the overall-AP gate against production has the demo's tolerance for small test splits
    (`DEMO_GATES`) unless the model's config sets its own. Splits of 60/20/20%. No busy days in the demo data."""
    source = source or load_fleet_config(Path(__file__).resolve().parents[2] / "data_engine" / "config" / "fleet.yaml")
    block = source.models[model].model_dump(mode="json")
    block["selection"]["max_frames_per_day"] = frames_per_turn
    block["training"] = {"hyperparameters": hyperparameters}
    # Larger val and test splits than shipped, so that a small starting label set has frames in both.
    block["labels"]["split_ratios"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    block["evaluation"] = {"perturbations": [], "bootstrap_resamples": 200, "slice_min_support": 100_000}
    block["gates"] = {**DEMO_GATES, **source.models[model].gates.model_dump(mode="json", exclude_unset=True), "class_min_support": 100_000}
    return FleetConfig.model_validate(
        {"warehouse": source.warehouse.model_dump(), "models": {model: block}, "demo": {"busy_day_every": 0}}
    )


def random_frames(warehouse: Path, model: str, day: dt.date, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` of the model-day's frames drawn uniformly at random (valid frame rows, each frame once)."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT frame_uri, camera_id, captured_at, image_width, image_height FROM frames"
            " WHERE model = ? AND captured_at >= ? AND captured_at < ? AND image_width BETWEEN 1 AND 100000"
            " AND image_height BETWEEN 1 AND 100000 ORDER BY frame_uri",
            [model, day, day + dt.timedelta(days=1)],
        ).fetchall()
    keys = ("frame_uri", "camera_id", "captured_at", "image_width", "image_height")
    return [dict(zip(keys, row)) for row in random.Random(f"{seed}/{day}").sample(rows, min(count, len(rows)))]


def selected_frames(arm: Arm, config: FleetConfig, model: str, day: dt.date, instance: dg.DagsterInstance) -> list[dict[str, Any]]:
    """The product's selection for the model-day: its `review_candidates` rows."""
    result = dg.materialize(
        build_selection_defs(config).assets,
        partition_key=dg.MultiPartitionKey({"date": day.isoformat(), "model": model}),
        resources=resources_for(Settings("local", arm.home), config),
        instance=instance,
    )
    return result.output_for_node("selection", "review_candidates").to_pylist()


def labelled_images(warehouse: Path, model: str, classes: list[str], frames: list[dict[str, Any]]) -> dict[str, Any]:
    """COCO of the frames (rows with frame_uri, camera_id, captured_at, image_width, image_height) with their
    true boxes: what a perfect reviewer returns."""
    from data_engine.demo import coco_label_set, read_ground_truth

    images = [
        {"id": index, "file_name": row["frame_uri"], "camera_id": row["camera_id"], "captured_at": row["captured_at"].isoformat(),
         "width": row["image_width"], "height": row["image_height"]}
        for index, row in enumerate(frames, start=1)
    ]
    return coco_label_set(images, read_ground_truth(warehouse, model, [image["file_name"] for image in images]), classes)


def merge_reviewed(home: Path, config: FleetConfig, model: str, frames: list[dict[str, Any]], task: str) -> int:
    """The frames, labelled with their truth, merged into the model's label set as one reviewed task through
    the product's merge and versioning; returns the new label set's image count."""
    from data_engine.labels import LabelPolicy, TaskExport, merge_reviewed_tasks

    model_config = config.models[model]
    coco = labelled_images(home / "warehouse.duckdb", model, list(model_config.classes), frames)
    export = TaskExport(task_id=task, updated_date=dt.datetime.now(dt.timezone.utc).isoformat(), coco=coco)
    store = resources_for(Settings("local", home), config)["label_stores"].open(model)
    outcome = merge_reviewed_tasks(store, model, [export], model_config.classes, LabelPolicy.from_config(model_config.labels), created_by="loop benchmark")
    return len(store.label_set(model, outcome.version)["images"])


def train_evaluate_promote(home: Path, config: FleetConfig, model: str, instance: dg.DagsterInstance) -> tuple[dict[str, Any], bool]:
    """One training, checkpoint selection, evaluation with its gates and promotion, as the product runs them:
    the production record afterwards, and whether this run's candidate became production."""
    from data_engine.evaluation.promotion import ProductionPointer

    settings = Settings("local", home)
    resources = resources_for(settings, config)
    defs = dg.Definitions.merge(build_training_defs(config), build_evaluation_defs(config, settings))
    # A candidate that fails a gate stops the run before promoted_model: not an error here.
    result = dg.materialize([defs.get_assets_def(name) for name in STAGE], partition_key=model, instance=instance, resources=resources, raise_on_error=False)
    evaluated = result.asset_materializations_for_node("evaluation_report")
    if not evaluated:
        failures = [event.step_failure_data.error.message for event in result.all_events if event.is_step_failure]
        raise RuntimeError(f"training or evaluating {model} in {home} failed: {failures}")
    current = ProductionPointer(resources["model_stores"].open(model).objects).current(model)
    if current is None:
        raise RuntimeError(f"{model} in {home} has no production model: its first candidate failed a gate")
    return current.record, current.record["candidate"] == evaluated[0].metadata["candidate_id"].value


def held_out_scores(home: Path, config: FleetConfig, model: str, checkpoint_uris: list[str], test_frames: list[dict[str, Any]], instance) -> dict[str, float]:
    """AP of each checkpoint on the held-out frames: one run of the trainer's evaluate entrypoint through
    the local launcher, scored by the product's COCO evaluation against the frames' truth."""
    from data_engine.evaluation.coco_metrics import coco_evaluation
    from data_engine.evaluation.evaluate import evaluation_extras, read_detections
    from data_engine.evaluation.report import align_detections

    truth = labelled_images(home / "warehouse.duckdb", model, list(config.models[model].classes), test_frames)
    folder = f"{model}/benchmark/held-out"

    @dg.asset(partitions_def=model_partitions(config))
    def held_out_detections(context: dg.AssetExecutionContext, trainer: TrainerLauncherResource, model_stores: ModelStoreResource) -> dg.MaterializeResult:
        objects = model_stores.open(model).objects
        extras = evaluation_extras(checkpoint_uris, truth, objects.describe(folder), [])
        trainer.run(context, model=model, request_id=f"{model}-held-out", entrypoint="evaluate", extras=extras)
        return dg.MaterializeResult(metadata={"frames": len(test_frames), "checkpoints": len(checkpoint_uris)})

    resources = resources_for(Settings("local", home), config)
    dg.materialize([held_out_detections], partition_key=model, instance=instance, resources=resources)
    documents = read_detections(resources["model_stores"].open(model).objects, folder)
    return {uri: coco_evaluation(truth, align_detections(truth, documents[(uri, None)], uri))["ap"] for uri in checkpoint_uris}


def run_loop(
    root: Path,
    *,
    model: str = "ENS",
    turns: int = 3,
    frames_per_turn: int = 40,
    start_frames: int = 40,
    test_frames: int = 120,
    frames_per_camera: int = 24,
    hyperparameters: dict[str, Any] = HYPERPARAMETERS,
    seed: int = 0,
    arms: tuple[str, ...] = ARMS,
    source: FleetConfig | None = None,
    log=print,
) -> dict[str, Any]:
    """The arms (both by default; "selection" alone for a quick check) over `turns` turns under `root`
    (needs the trainer's interpreter: DATA_ENGINE_TRAINER_PYTHON or `data-engine trainer-env`); returns the
    starting model's and each arm's turns, with held-out AP. `source`: the fleet config `model` comes from
    (default: the shipped one)."""
    from data_engine.demo import write_demo_warehouse
    from data_engine.labels import import_label_set

    config = benchmark_fleet(model, frames_per_turn, hyperparameters, source)
    days = [FIRST_DAY + dt.timedelta(days=offset) for offset in range(turns + 2)]  # start, turns, held out
    shared = root / "start"
    started = time.perf_counter()
    write_demo_warehouse(config, shared / "warehouse.duckdb", shared / "objects", end_date=days[-1], days=len(days),
                         frames_per_camera_per_day=frames_per_camera)
    log(f"demo data: {len(days)} days of {model} ({time.perf_counter() - started:.0f} s)")

    classes = list(config.models[model].classes)
    start = random_frames(shared / "warehouse.duckdb", model, days[0], start_frames, seed)
    coco = labelled_images(shared / "warehouse.duckdb", model, classes, start)
    import_label_set(resources_for(Settings("local", shared), config)["label_stores"].open(model), model, coco, classes, created_by="loop benchmark")
    with dg.instance_for_test() as instance:
        production, _ = train_evaluate_promote(shared, config, model, instance)
    start_uri = production["checkpoint_uri"]
    log(f"starting model {production['candidate']}: {len(start)} frames ({time.perf_counter() - started:.0f} s)")

    arm_runs = []
    for name in arms:
        home = root / name
        shutil.copytree(shared, home, ignore=shutil.ignore_patterns("demo-frames"))
        (home / "objects" / "demo-frames").symlink_to(shared / "objects" / "demo-frames", target_is_directory=True)
        arm_runs.append(Arm(name, home))
    for number, day in enumerate(days[1:-1], start=1):
        reviewed = frames_per_turn  # the random arm alone reviews as many as the selection may
        for arm in arm_runs:
            with dg.instance_for_test() as instance:
                if arm.name == "selection":
                    frames = selected_frames(arm, config, model, day, instance)
                    reviewed = len(frames)
                else:
                    frames = random_frames(arm.home / "warehouse.duckdb", model, day, reviewed, seed + number)
                size = merge_reviewed(arm.home, config, model, frames, f"{arm.name}-{day}")
                production, promoted = train_evaluate_promote(arm.home, config, model, instance)
            arm.turns.append(Turn(len(frames), size, production["candidate"], promoted, production["checkpoint_uri"]))
            log(f"turn {number} {arm.name}: {len(frames)} frames reviewed, {size} labelled, "
                f"{'promoted' if promoted else 'not promoted'} ({time.perf_counter() - started:.0f} s)")

    held_out = random_frames(shared / "warehouse.duckdb", model, days[-1], test_frames, seed)
    uris = list(dict.fromkeys([start_uri] + [turn.checkpoint_uri for arm in arm_runs for turn in arm.turns]))
    with dg.instance_for_test() as instance:
        scores = held_out_scores(shared, config, model, uris, held_out, instance)
    for arm in arm_runs:
        for turn in arm.turns:
            turn.ap = scores[turn.checkpoint_uri]
    log(f"held-out AP of {len(uris)} models on {len(held_out)} frames ({time.perf_counter() - started:.0f} s)")
    return {"model": model, "start": {"frames": len(start), "ap": scores[start_uri]}, "held_out_frames": len(held_out),
            "arms": {arm.name: arm.turns for arm in arm_runs}}


def gain_per_frame(result: dict[str, Any], arm: str) -> float:
    """(final held-out AP - starting AP) / frames reviewed over all turns."""
    turns = result["arms"][arm]
    reviewed = sum(turn.frames_reviewed for turn in turns)
    return (turns[-1].ap - result["start"]["ap"]) / reviewed if reviewed else 0.0


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"model {result['model']}: starting model on {result['start']['frames']} frames, held-out AP {result['start']['ap']:.4f}"
        f" ({result['held_out_frames']} held-out frames)",
        "| turn | arm | frames reviewed | label-set images | promoted | held-out AP of production |",
        "|---:|---|---:|---:|---|---:|",
    ]
    arms = result["arms"]
    for number in range(1, 1 + max(len(turns) for turns in arms.values())):
        for name, turns in arms.items():
            turn = turns[number - 1]
            lines.append(f"| {number} | {name} | {turn.frames_reviewed} | {turn.label_images} | {'yes' if turn.promoted else 'no'} | {turn.ap:.4f} |")
    for name in arms:
        lines.append(f"AP gain per reviewed frame, {name}: {gain_per_frame(result, name) * 1000:+.3f} per 1000 frames")
    if set(arms) == set(ARMS) and gain_per_frame(result, "random") > 0:
        lines.append(f"selection / random: {gain_per_frame(result, 'selection') / gain_per_frame(result, 'random'):.2f}x")
    return "\n".join(lines)


def main() -> int:
    from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
    from data_engine.training.trainer_env import ensure_trainer_env

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ENS")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--frames-per-turn", type=int, default=40, help="the selection's max_frames_per_day")
    parser.add_argument("--start-frames", type=int, default=40)
    parser.add_argument("--test-frames", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=HYPERPARAMETERS["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault(TRAINER_PYTHON_ENV, str(ensure_trainer_env()))
    with tempfile.TemporaryDirectory(prefix="loop-benchmark-") as temporary:
        root = args.workdir or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        result = run_loop(
            root, model=args.model, turns=args.turns, frames_per_turn=args.frames_per_turn, start_frames=args.start_frames,
            test_frames=args.test_frames, hyperparameters={**HYPERPARAMETERS, "epochs": args.epochs, "seed": args.seed}, seed=args.seed,
        )
    print(summary(result))
    print(json.dumps({"start": result["start"], "arms": {k: [vars(t) for t in v] for k, v in result["arms"].items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
