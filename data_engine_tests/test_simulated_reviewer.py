"""The demo's simulated reviewer: its correction of one frame (pure), and its passes over open frames in
the real Label Studio through `data-engine reviewer run` and `simulated_reviewer_sensor`, whose submitted
batches the review sensor merges into a label version."""

from __future__ import annotations

import random
import re
from collections import Counter

import dagster as dg
import pytest

from data_engine import cli
from data_engine.annotation.label_studio import batch_id, frame_boxes
from data_engine.config import load_fleet_config
from data_engine.defs.reviewer import SimulatedReviewerResource, build_reviewer_defs
from data_engine.demo import read_ground_truth
from data_engine.labels import LabelStore
from data_engine.reviewer import read_mistakes
from data_engine.reviewer.correction import CORRECT_IOU, PixelBox, review_frame
from data_engine.settings import current_settings
from data_engine_tests.test_cvat_review import NAMES, materialize_review_tasks
from data_engine_tests.test_label_studio_review import CLASSES, MODEL, Reviewer, ls_env, ls_resources  # noqa: F401 (ls_env: a fixture)
from data_engine_tests.test_training_labels import all_defs, run_request, tick

SIZE = (320, 240)
TRUTH = [PixelBox("PET", 10, 10, 60, 50), PixelBox("HDPE", 100, 100, 160, 150), PixelBox("Film", 200, 20, 260, 90)]
# The model: the first object right, the second as the wrong class, the third missed, and a box on nothing.
PREDICTED = [PixelBox("PET", 11, 10, 60, 51), PixelBox("Cardboard", 100, 100, 160, 150), PixelBox("Metal Can", 250, 180, 300, 230)]


def test_a_careful_reviewer_submits_the_truth():
    submitted, mistakes = review_frame(PREDICTED, TRUTH, CLASSES, 0.0, random.Random(1), SIZE)
    assert submitted == TRUTH and mistakes == []


def test_every_object_of_an_always_wrong_reviewer_is_a_journaled_mistake_of_a_possible_kind():
    kinds = Counter()
    for seed in range(60):
        submitted, mistakes = review_frame(PREDICTED, TRUTH, CLASSES, 1.0, random.Random(seed), SIZE)
        assert len(mistakes) == len(TRUTH) + 1  # each object, and the false positive
        assert not set(submitted) & set(TRUTH)
        for mistake in mistakes:
            kinds[mistake.kind] += 1
            if mistake.kind == "kept_false_positive":
                assert mistake.truth is None and mistake.submitted == PREDICTED[2]
            elif mistake.kind == "missed_object":
                assert mistake.truth == TRUTH[2] and mistake.submitted is None  # only the object the model missed
            elif mistake.kind == "missed_correction":
                assert (mistake.truth, mistake.submitted) == (TRUTH[1], PREDICTED[1])  # only the wrong prediction
            elif mistake.kind == "wrong_class":
                assert mistake.submitted.class_name != mistake.truth.class_name and mistake.submitted.class_name in CLASSES
            else:
                assert mistake.kind == "sloppy_box" and mistake.submitted.class_name == mistake.truth.class_name
                assert mistake.submitted.iou(mistake.truth) < CORRECT_IOU
    assert set(kinds) == {"kept_false_positive", "missed_object", "missed_correction", "wrong_class", "sloppy_box"}
    # the same frame and seed: the same review
    assert review_frame(PREDICTED, TRUTH, CLASSES, 0.5, random.Random(3), SIZE) == review_frame(PREDICTED, TRUTH, CLASSES, 0.5, random.Random(3), SIZE)


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (["--error-rate", "1.5"], "error-rate is 1.5; a rate lies in [0, 1]"),
        (["--skip-rate", "0.7", "--reject-rate", "0.6"], "skip-rate + reject-rate is 1.3"),
        (["--max-frames", "0"], "max-frames is 0"),
    ],
)
def test_bad_reviewer_arguments_are_refused_naming_the_option(local_env, argument, message, capsys):
    assert cli.run(["reviewer", "run", "--model", MODEL, *argument]) == 2
    assert message in capsys.readouterr().err


def pixel_boxes(task: dict) -> list[tuple]:
    """The boxes of a frame's submitted annotation, in pixels, sorted."""
    annotation = next(a for a in task["annotations"] if not a["was_cancelled"])
    return sorted(frame_boxes({"data": task["data"], "predictions": [annotation]}))


def expected_boxes(truth: list[dict], mistakes: list[dict]) -> list[tuple]:
    """The truth, with each journaled mistake's true box replaced by what the reviewer drew, sorted."""
    boxes = [(t["class_name"], t["x_min"], t["y_min"], t["x_max"], t["y_max"]) for t in truth]
    for mistake in mistakes:
        true_box, drawn = mistake["details"]["truth"], mistake["details"]["submitted"]
        if true_box:
            boxes.remove(min((b for b in boxes if b[0] == true_box["class_name"]), key=lambda b: distance(b, true_box["box"])))
        if drawn:
            boxes.append((drawn["class_name"], *drawn["box"]))
    return sorted(boxes)


def distance(box: tuple, corners: list[float]) -> float:
    return sum(abs(a - b) for a, b in zip(box[1:], corners))


def same_boxes(actual: list[tuple], expected: list[tuple]) -> bool:
    """Equal up to the rounding of the journal (2 decimals) and of Label Studio's percentages."""
    return [b[0] for b in actual] == [b[0] for b in expected] and all(distance(a, b[1:]) < 0.05 for a, b in zip(actual, expected))


def requested_batches(tick_result) -> set[int]:
    return {t["task_id"] for r in tick_result.run_requests for t in r.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]}


def test_the_reviewer_works_through_open_frames_toward_the_truth_and_its_batches_merge(ls_env, label_studio, tmp_path_factory, capsys):
    resources = ls_resources(label_studio, ls_env, tmp_path_factory)
    config = load_fleet_config()
    careful = SimulatedReviewerResource(error_rate=0.0, frames_per_tick=100)
    defs = dg.Definitions.merge(
        all_defs(config, resources | {"simulated_reviewer": careful}),
        dg.Definitions(sensors=build_reviewer_defs(config, current_settings()).sensors),
    )
    reviewer = Reviewer(label_studio)
    with dg.instance_for_test() as instance:
        assert materialize_review_tasks(resources).success
        project = reviewer.project("data-engine municipals")
        uris = [t["data"]["frame_uri"] for t in reviewer.tasks(project["id"])]
        truth = read_ground_truth(ls_env / "warehouse.duckdb", MODEL, uris)
        before = tick(defs, instance, None)

        # First pass, through the command: some frames rejected, some skipped, the rest corrected and submitted.
        argv = ["reviewer", "run", "--model", MODEL, "--error-rate", "0.4", "--skip-rate", "0.2", "--reject-rate", "0.1", "--seed", "7"]
        assert cli.run(argv) == 0
        line = capsys.readouterr().out
        submitted, mistakes, skipped, rejected = (int(n) for n in re.findall(r"(\d+) (?:frames submitted|reviewer mistakes|skipped|rejected)", line))
        tasks = reviewer.tasks(project["id"])
        assert rejected > 0 and len(tasks) == 20 - rejected
        assert sorted(t["total_annotations"] for t in tasks) == [0] * skipped + [1] * submitted and skipped > 0
        journal = read_mistakes(ls_env, MODEL)
        assert len(journal) == mistakes > 0 and len({m["id"] for m in journal}) == mistakes
        for task in tasks:
            if task["total_annotations"]:
                uri = task["data"]["frame_uri"]
                actual, expected = pixel_boxes(task), expected_boxes(truth[uri], [m for m in journal if m["frame_uri"] == uri])
                assert same_boxes(actual, expected), (uri, actual, expected)
        # a batch is reviewed once all its frames are submitted: skipped frames keep theirs open
        open_batches = {batch_id(t["data"]["review_batch"]) for t in tasks if not t["total_annotations"]}
        first = tick(defs, instance, before.cursor)
        assert requested_batches(first) == {batch_id(name) for name in NAMES} - open_batches and open_batches

        # Second pass, through the sensor: the skipped frames are reviewed, so every batch is submitted.
        sensor = defs.resolve_sensor_def("simulated_reviewer_sensor")
        with dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs) as context:
            result = sensor.evaluate_tick(context)
        assert f"{MODEL}: {skipped} frames submitted (0 reviewer mistakes), 0 skipped, 0 rejected" in result.skip_message
        assert all(t["total_annotations"] == 1 for t in reviewer.tasks(project["id"]))
        assert read_mistakes(ls_env, MODEL) == journal  # nothing journaled twice
        assert cli.run(argv) == 0 and capsys.readouterr().out.startswith(f"{MODEL}: 0 frames submitted")

        second = tick(defs, instance, first.cursor)
        assert requested_batches(second) == open_batches
        for request in first.run_requests + second.run_requests:
            assert run_request(defs, instance, request).success
        labels = LabelStore.local(ls_env / "labels").label_set(MODEL)
        assert len(labels["images"]) == 20 - rejected
