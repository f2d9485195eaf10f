"""Benchmark: the evaluation step's scoring against pycocotools, and the paired bootstrap's cost.

1. COCO scoring of one model's detections on a synthetic test split: the product's `coco_evaluation`
   (faster-coco-eval) against pycocotools' COCO/loadRes/evaluate/accumulate/summarize on the same
   ground truth and detections, best of `--repeat` runs each; the 12 summary numbers must be equal.
   Goal (issue 10): at least 4x faster.
2. The paired bootstrap: matching both models once per image (`match_test_set`), then 1,000 resamples
   of the AP difference (`paired_bootstrap`), on 5,000 test images. The baseline it replaces is one
   COCO evaluation per model per resample; its cost is estimated from the measured time of one
   faster-coco-eval evaluation of the full split (a resample has as many images), times 2 x resamples.

    uv run python -m data_engine_tests.benchmarks.evaluation [--images 2000] [--bootstrap-images 5000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_engine.evaluation.coco_metrics import SUMMARY_METRICS, coco_evaluation
from data_engine.evaluation.comparison import paired_bootstrap
from data_engine.evaluation.matching import match_test_set
from data_engine_tests.evaluation_fixtures import detections, synthetic_split


def pycocotools_stats(ground_truth, results) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        # Shallow copies of the records, as the product makes (loadRes adds fields to them).
        gt.dataset = {key: [dict(record) for record in ground_truth[key]] for key in ("images", "annotations", "categories")}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes([dict(result) for result in results]), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def best_of(repeat: int, function, *args):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), value


def scoring(images: int, boxes: int, repeat: int) -> None:
    ground_truth = synthetic_split(images, boxes_per_image=boxes, seed=0)
    results = detections(ground_truth, seed=1, false_positives=boxes)
    print(f"scoring: {images} images, {len(ground_truth['annotations'])} boxes, {len(results)} detections, best of {repeat}")
    coco_evaluation(ground_truth, results)  # warm up: the C++ extension's first load is not the scoring's cost
    product_seconds, product = best_of(repeat, coco_evaluation, ground_truth, results)
    baseline_seconds, baseline = best_of(repeat, pycocotools_stats, ground_truth, results)
    equal = [product[name] for name in SUMMARY_METRICS] == list(baseline)
    ratio = baseline_seconds / product_seconds
    print(f"  pycocotools        {baseline_seconds:8.2f} s")
    print(f"  faster-coco-eval   {product_seconds:8.2f} s   {ratio:.1f}x faster; 12 summary numbers equal: {equal}")
    print(f"  goal >= 4x with equal numbers: {'met' if ratio >= 4 and equal else 'NOT met'}")


def bootstrap(images: int, resamples: int) -> None:
    ground_truth = synthetic_split(images, seed=2)
    candidate, production = detections(ground_truth, seed=3, quality=0.82), detections(ground_truth, seed=4, quality=0.8)
    print(f"bootstrap: {images} images, {len(candidate) + len(production)} detections of two models, {resamples} resamples")
    start = time.perf_counter()
    matched = match_test_set(ground_truth, candidate), match_test_set(ground_truth, production)
    matching_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = paired_bootstrap(*matched, resamples=resamples, seed=0)
    resampling_seconds = time.perf_counter() - start
    one_evaluation, _ = best_of(1, coco_evaluation, ground_truth, candidate)
    naive = one_evaluation * 2 * resamples
    total = matching_seconds + resampling_seconds
    print(f"  matching once per image (both models)  {matching_seconds:8.2f} s")
    print(f"  {resamples} resamples                        {resampling_seconds:8.2f} s   ({1000 * resampling_seconds / resamples:.1f} ms per resample)")
    print(f"  ΔAP {result['mean']:+.4f}, 95% CI [{result['ci95'][0]:+.4f}, {result['ci95'][1]:+.4f}]")
    print(f"  baseline: one faster-coco-eval evaluation per model and resample ~ {one_evaluation:.2f} s x {2 * resamples} = {naive:.0f} s"
          f" (estimated); the product takes {total:.0f} s, {naive / total:.1f}x less")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--boxes", type=int, default=8, help="mean ground-truth boxes per image (and false positives)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bootstrap-images", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    scoring(args.images, args.boxes, args.repeat)
    bootstrap(args.bootstrap_images, args.resamples)


if __name__ == "__main__":
    main()
