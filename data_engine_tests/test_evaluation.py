"""Scoring a model on the test split: the numbers against pycocotools, slices, the bootstrap, churn,
the operating point, the report's tables and charts, and the external test step."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_engine.evaluation.charts import per_class_bar_png, pr_curve_png
from data_engine.evaluation.coco_metrics import SUMMARY_METRICS, coco_evaluation
from data_engine.evaluation.comparison import operating_point, paired_bootstrap, prediction_churn
from data_engine.evaluation.matching import match_test_set, mean_precision
from data_engine.evaluation.mltest import run_mltest
from data_engine.evaluation.report import (
    EvaluationError,
    align_detections,
    build_report,
    per_class_table,
    per_slice_table,
    robustness_table,
    score_model,
    summary_table,
    ground_truth_of_test_split,
)
from data_engine_tests.evaluation_fixtures import CAMERAS, CLASSES, detections, synthetic_split


def pycocotools_eval(ground_truth, results, image_ids=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(ground_truth)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


@pytest.fixture(scope="module")
def scored():
    ground_truth = synthetic_split(120, crowd_fraction=0.05, seed=3)
    return ground_truth, detections(ground_truth, seed=4), pycocotools_eval(ground_truth, detections(ground_truth, seed=4))


def test_summary_and_per_class_numbers_equal_pycocotools(scored):
    ground_truth, results, reference = scored
    metrics = coco_evaluation(ground_truth, results)
    assert [metrics[name] for name in SUMMARY_METRICS] == pytest.approx(list(reference.stats), abs=1e-12)
    precision = reference.eval["precision"][:, :, :, 0, 2]
    for k, name in enumerate(CLASSES):
        expected = precision[:, :, k][precision[:, :, k] > -1].mean()
        assert metrics["per_class"][name]["ap"] == pytest.approx(expected, abs=1e-12)
        assert metrics["per_class"][name]["support"] == sum(
            1 for a in ground_truth["annotations"] if a["category_id"] == k + 1 and not a["iscrowd"]
        )
    assert metrics["pr_curve"]["PET"] == pytest.approx(list(precision[0, :, 0]), abs=1e-12)


def test_matching_once_reproduces_pycocotools_precision_and_slices(scored):
    ground_truth, results, reference = scored
    matched = match_test_set(ground_truth, results)
    ones = np.ones(len(matched.image_ids))
    assert np.array_equal(matched.precision(ones)[0], reference.eval["precision"][:, :, :, 0, 2])
    # A slice (the images of one camera) is COCO restricted to those images.
    camera_images = [image["id"] for image in ground_truth["images"] if image["camera_id"] == "cam-02"]
    weights = np.isin(matched.image_ids, camera_images).astype(float)
    expected = pycocotools_eval(ground_truth, results, image_ids=camera_images).stats[0]
    assert matched.average_precision(weights)[0] == pytest.approx(expected, abs=1e-12)


def test_a_bootstrap_resample_scores_like_coco_on_the_resampled_test_set(scored):
    """Counting an image twice (and another not at all) gives what pycocotools gives on that multiset."""
    ground_truth, results, _ = scored
    matched = match_test_set(ground_truth, results)
    counts = np.random.default_rng(7).multinomial(len(matched.image_ids), np.full(len(matched.image_ids), 1 / len(matched.image_ids)))
    assert counts.max() >= 2 and (counts == 0).any()
    resampled = {"images": [], "annotations": [], "categories": ground_truth["categories"]}
    resampled_results = []
    by_image = {image["id"]: image for image in ground_truth["images"]}
    for image_id, count in zip(matched.image_ids, counts):
        for _ in range(count):
            new_id = len(resampled["images"]) + 1
            resampled["images"].append({**by_image[image_id], "id": new_id})
            for annotation in ground_truth["annotations"]:
                if annotation["image_id"] == image_id:
                    resampled["annotations"].append({**annotation, "id": len(resampled["annotations"]) + 1, "image_id": new_id})
            resampled_results += [{**r, "image_id": new_id} for r in results if r["image_id"] == image_id]
    expected = pycocotools_eval(resampled, resampled_results).stats[0]
    assert matched.average_precision(counts)[0] == pytest.approx(expected, abs=1e-12)


def test_paired_bootstrap_centres_on_the_difference_and_is_zero_for_the_same_model():
    ground_truth = synthetic_split(200, seed=5)
    better = match_test_set(ground_truth, detections(ground_truth, seed=6, quality=0.9))
    worse = match_test_set(ground_truth, detections(ground_truth, seed=7, quality=0.6))
    same = paired_bootstrap(better, better, resamples=200, seed=0)
    assert same["mean"] == 0 and same["ci95"] == [0, 0]
    result = paired_bootstrap(better, worse, resamples=200, seed=0)
    difference = better.average_precision(np.ones(200))[0] - worse.average_precision(np.ones(200))[0]
    low, high = result["ci95"]
    assert 0 < low < difference < high
    assert result["mean"] == pytest.approx(difference, abs=0.01)
    assert paired_bootstrap(better, worse, resamples=200, seed=0) == result  # seeded: reproducible


def test_operating_point_counts_at_the_class_threshold():
    ground_truth = {
        "images": [{"id": 1, "file_name": "a"}, {"id": 2, "file_name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "PET"}],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # hit
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.8},  # false positive
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.4},  # hit, below 0.5
    ]
    matched = match_test_set(ground_truth, results)
    assert operating_point(matched, {1: "PET"}, {"PET": 0.5})["PET"] == {
        "threshold": 0.5, "precision": 0.5, "recall": 0.5, "false_positives_per_image": 0.5,
    }
    assert operating_point(matched, {1: "PET"}, {"PET": 0.3})["PET"]["recall"] == 1.0


def test_churn_counts_images_whose_outcome_changed():
    ground_truth = synthetic_split(50, seed=8)
    results = detections(ground_truth, seed=9)
    names = {i + 1: name for i, name in enumerate(CLASSES)}
    thresholds = dict.fromkeys(CLASSES, 0.5)
    base = match_test_set(ground_truth, results)
    assert prediction_churn(base, match_test_set(ground_truth, copy.deepcopy(results)), names, thresholds)["changed"] == 0
    # One more confident false positive on one image: that image, and only it, changed.
    extra = results + [{"image_id": 7, "category_id": 1, "bbox": [600, 450, 5, 5], "score": 0.99}]
    churn = prediction_churn(base, match_test_set(ground_truth, extra), names, thresholds)
    assert churn == {"images": 50, "changed": 1, "fraction": 1 / 50}


def trainer_document(ground_truth, results, reverse_categories=False):
    """Detections as the trainer's evaluate entrypoint writes them: its own image ids and category numbering."""
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(reversed(CLASSES) if reverse_categories else CLASSES)]
    renumber = {c["id"]: next(t["id"] for t in categories if t["name"] == c["name"]) for c in ground_truth["categories"]}
    images = [{"id": 1000 + image["id"], "file_name": image["file_name"]} for image in ground_truth["images"]]
    annotations = [{**r, "image_id": 1000 + r["image_id"], "category_id": renumber[r["category_id"]]} for r in results]
    return {"images": images, "categories": categories, "annotations": annotations}


def test_trainer_detections_are_aligned_by_frame_and_class_name():
    ground_truth = synthetic_split(30, seed=10)
    results = detections(ground_truth, seed=11)
    aligned = align_detections(ground_truth, trainer_document(ground_truth, results, reverse_categories=True), "candidate")
    assert coco_evaluation(ground_truth, aligned)["ap"] == coco_evaluation(ground_truth, results)["ap"]
    partial = trainer_document(ground_truth, results)
    partial["images"] = partial["images"][1:]
    with pytest.raises(EvaluationError, match="cover 29 of the 30 test frames"):
        align_detections(ground_truth, partial, "candidate")
    foreign = trainer_document(ground_truth, results)
    foreign["categories"][0]["name"] = "Glass"
    with pytest.raises(EvaluationError, match=r"classes \['Glass'\]"):
        align_detections(ground_truth, foreign, "candidate")


def test_test_split_keeps_only_test_frames_and_refuses_an_empty_one():
    label_set = synthetic_split(10, seed=12)
    splits = {image["file_name"]: ("test" if image["id"] <= 3 else "train") for image in label_set["images"]}
    test = ground_truth_of_test_split(label_set, splits)
    assert [image["id"] for image in test["images"]] == [1, 2, 3]
    assert {a["image_id"] for a in test["annotations"]} <= {1, 2, 3}
    with pytest.raises(EvaluationError, match="test split is empty"):
        ground_truth_of_test_split(label_set, dict.fromkeys(splits, "train"))


def make_report(candidate_quality=0.85, production_quality=0.8, images=150):
    ground_truth = synthetic_split(images, seed=13)
    thresholds = dict.fromkeys(CLASSES, 0.5)

    def scores(seed, quality):
        return score_model(
            ground_truth,
            detections(ground_truth, seed=seed, quality=quality),
            thresholds=thresholds,
            camera_clients=CAMERAS,
            slice_min_support=40,
            perturbed={"blur-2": detections(ground_truth, seed=seed + 1, quality=quality - 0.1)},
        )

    candidate, production = scores(20, candidate_quality), scores(30, production_quality)
    return build_report(
        model="municipals",
        candidate={"candidate_id": "run-2--epoch-3", "checkpoint_uri": "s3://m/c.pt", "label_version": "v2"},
        production={"candidate_id": "run-1--epoch-5", "checkpoint_uri": "s3://m/p.pt", "label_version": "v1"},
        label_version="v2",
        candidate_scores=candidate,
        production_scores=production,
        thresholds=thresholds,
        class_names={i + 1: name for i, name in enumerate(CLASSES)},
        bootstrap_resamples=100,
        bootstrap_seed=0,
    )


def test_report_holds_both_models_slices_robustness_and_renders_tables_and_charts():
    report = make_report()
    json.dumps(report)  # report.json is JSON
    candidate = report["scores"]["candidate"]
    assert set(candidate["slices"]) == {"client", "camera"}
    assert set(candidate["slices"]["client"]) == {"acme", "bravo"}
    assert sum(s["images"] for s in candidate["slices"]["camera"].values()) == 150
    assert candidate["robustness"]["blur-2"]["drop"] == pytest.approx(candidate["ap"] - candidate["robustness"]["blur-2"]["ap"])
    assert report["comparison"]["bootstrap"]["resamples"] == 100
    assert {"precision", "recall", "false_positives_per_image", "support"} <= set(candidate["per_class"]["PET"])
    assert "| PET |" in per_class_table(report) and "| camera cam-01 |" in per_slice_table(report)
    assert "blur-2" in robustness_table(report) and "ΔAP bootstrap" in summary_table(report)
    for png in (pr_curve_png(report), per_class_bar_png(report)):
        assert png.startswith(b"\x89PNG")


def test_mltest_passes_fails_and_attaches_its_report(tmp_path):
    writer = "import json,sys; json.dump({'cases': 3, 'candidate': sys.argv[1]}, open(sys.argv[2], 'w')); sys.exit(int(sys.argv[3]))"
    test_set = tmp_path / "test.json"
    ok = run_mltest([sys.executable, "-c", writer, "{candidate}", "{report}", "0"], 60, candidate_uri="s3://m/c.pt", test_set=test_set, workdir=tmp_path)
    assert ok["passed"] and ok["report"] == {"cases": 3, "candidate": "s3://m/c.pt"}
    failing = run_mltest([sys.executable, "-c", writer, "{candidate}", "{report}", "3"], 60, candidate_uri="c", test_set=test_set, workdir=tmp_path)
    assert not failing["passed"] and failing["exit_code"] == 3 and failing["report"]["cases"] == 3
    missing = run_mltest(["no-such-mltest-binary"], 60, candidate_uri="c", test_set=test_set, workdir=tmp_path)
    assert not missing["passed"] and "was not found" in missing["error"]
    slow = run_mltest([sys.executable, "-c", "import time; time.sleep(5)"], 1, candidate_uri="c", test_set=test_set, workdir=tmp_path)
    assert not slow["passed"] and "timeout_seconds" in slow["error"]


def test_mean_precision_ignores_classes_without_ground_truth():
    precision = np.array([[0.5, -1.0], [0.7, -1.0]])
    assert list(mean_precision(precision, axes=(0,))) == [pytest.approx(0.6), -1.0]


def test_slices_take_the_camera_from_the_frame_uri_when_the_image_has_no_camera_id():
    from data_engine.evaluation.comparison import slice_members

    ground_truth = synthetic_split(12, seed=14)
    for image in ground_truth["images"]:
        del image["camera_id"]
    members = slice_members(ground_truth["images"], [image["id"] for image in ground_truth["images"]], CAMERAS)
    assert {name: int(mask.sum()) for name, mask in members["camera"].items()} == {"cam-01": 4, "cam-02": 4, "cam-03": 4}
    assert {name: int(mask.sum()) for name, mask in members["client"].items()} == {"acme": 8, "bravo": 4}
