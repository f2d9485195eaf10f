"""The evaluation report (`evaluations/<candidate_id>/report.json`): a candidate and the production model
scored on the same frozen test split, and the comparisons the promotion gates read.

    {
      "model", "evaluated_at",
      "candidate":  {"candidate_id", "checkpoint_uri", "label_version"},
      "production": {"candidate_id", "checkpoint_uri", "label_version"} | null,
      "test_split": {"label_version", "images", "boxes"},
      "scores": {"candidate": SCORES, "production": SCORES | null},
      "comparison": {"bootstrap": {"resamples", "seed", "mean", "ci95"}, "churn": {...}} | null,
      "mltest": {"passed", "exit_code", "report", ...} | null
    }
    SCORES = {ap, ap50, ap75, ap_small, ap_medium, ap_large, ar1, ar10, ar100, ar_small, ar_medium, ar_large,
              images, boxes,
              per_class: {class: {ap, ap50, support, threshold, precision, recall, false_positives_per_image}},
              slices: {"client" | "camera": {name: {ap, ap50, images, boxes, reliable}}},
              robustness: {perturbation: {ap, drop}},      # drop = clean AP - perturbed AP
              pr_curve: {class: [precision at recall 0, 0.01, ..., 1] at IoU 0.5}}

Detections come from the trainer's evaluate entrypoint as COCO documents whose images are the frames
(file_name = frame URI) and whose categories are the classes by name; they are aligned to the ground
truth's ids here, so a trainer numbering its categories differently still scores right.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from data_engine.evaluation.coco_metrics import SUMMARY_METRICS, coco_evaluation
from data_engine.evaluation.comparison import operating_point, paired_bootstrap, prediction_churn, slice_members, slice_metrics
from data_engine.evaluation.matching import MatchedTestSet, match_test_set


class EvaluationError(ValueError):
    """The detections or the test split cannot be scored (missing frames, unknown classes, empty split)."""


@dataclass(frozen=True)
class ModelScores:
    scores: dict[str, Any]  # SCORES in the module docstring
    matched: MatchedTestSet  # kept for the comparison of two models


def ground_truth_of_test_split(label_set: Mapping[str, Any], splits: Mapping[str, str]) -> dict[str, Any]:
    """The label version's COCO restricted to the frames whose split is `test`."""
    images = [image for image in label_set["images"] if splits.get(image["file_name"]) == "test"]
    if not images:
        raise EvaluationError("the test split is empty: the label version has no frame assigned to `test`; label more frames")
    kept = {image["id"] for image in images}
    return {
        "images": images,
        "annotations": [a for a in label_set["annotations"] if a["image_id"] in kept],
        "categories": list(label_set["categories"]),
    }


def align_detections(ground_truth: Mapping[str, Any], document: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """The document's detections with the ground truth's image and category ids (matched by frame URI and class name)."""
    image_ids = {image["file_name"]: image["id"] for image in ground_truth["images"]}
    category_ids = {category["name"]: category["id"] for category in ground_truth["categories"]}
    covered = {image["file_name"] for image in document.get("images", [])}
    missing = sorted(set(image_ids) - covered)
    if missing:
        raise EvaluationError(
            f"{where}: detections cover {len(image_ids) - len(missing)} of the {len(image_ids)} test frames (missing e.g. {missing[0]});"
            " the evaluate entrypoint must predict on every frame it was given"
        )
    image_of = {image["id"]: image_ids.get(image["file_name"]) for image in document["images"]}
    unknown = sorted({c["name"] for c in document.get("categories", [])} - set(category_ids))
    if unknown:
        raise EvaluationError(f"{where}: detections name classes {unknown} that the label version does not have {sorted(category_ids)}")
    category_of = {category["id"]: category_ids[category["name"]] for category in document.get("categories", [])}
    aligned = []
    for detection in document.get("annotations", []):
        image_id = image_of.get(detection["image_id"])
        if image_id is None:
            continue  # a frame outside the test split
        aligned.append(
            {"image_id": image_id, "category_id": category_of[detection["category_id"]], "bbox": list(detection["bbox"]), "score": float(detection["score"])}
        )
    return aligned


def score_model(
    ground_truth: Mapping[str, Any],
    detections: list[dict[str, Any]],
    *,
    thresholds: Mapping[str, float],
    camera_clients: Mapping[str, str],
    slice_min_support: int,
    perturbed: Mapping[str, list[dict[str, Any]]] | None = None,
) -> ModelScores:
    """One model's SCORES; `perturbed` maps a perturbation name to the detections on the perturbed test images."""
    ground_truth = dict(ground_truth)
    scores = coco_evaluation(ground_truth, detections)
    matched = match_test_set(ground_truth, detections)
    names = {category["id"]: category["name"] for category in ground_truth["categories"]}
    points = operating_point(matched, names, thresholds)
    for name, metrics in scores["per_class"].items():
        metrics.update(points[name])
    members = slice_members(ground_truth["images"], matched.image_ids, camera_clients)
    scores["slices"] = {kind: slice_metrics(matched, groups, slice_min_support) for kind, groups in members.items()}
    scores["robustness"] = {
        name: {"ap": (ap := coco_evaluation(ground_truth, found)["ap"]), "drop": scores["ap"] - ap} for name, found in (perturbed or {}).items()
    }
    return ModelScores(scores=scores, matched=matched)


def build_report(
    *,
    model: str,
    candidate: Mapping[str, Any],
    production: Mapping[str, Any] | None,
    label_version: str,
    candidate_scores: ModelScores,
    production_scores: ModelScores | None,
    thresholds: Mapping[str, float],
    class_names: Mapping[int, str],
    bootstrap_resamples: int,
    bootstrap_seed: int,
    mltest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    comparison = None
    if production_scores is not None:
        comparison = {
            "bootstrap": paired_bootstrap(candidate_scores.matched, production_scores.matched, bootstrap_resamples, bootstrap_seed),
            "churn": prediction_churn(candidate_scores.matched, production_scores.matched, class_names, thresholds),
        }
    return {
        "model": model,
        "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "candidate": dict(candidate),
        "production": dict(production) if production is not None else None,
        "test_split": {"label_version": label_version, "images": candidate_scores.scores["images"], "boxes": candidate_scores.scores["boxes"]},
        "scores": {"candidate": candidate_scores.scores, "production": production_scores.scores if production_scores else None},
        "comparison": comparison,
        "mltest": dict(mltest) if mltest is not None else None,
    }


def summary_table(report: Mapping[str, Any]) -> str:
    """Markdown: the COCO summary of both models and the difference."""
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    rows = ["| metric | candidate | production | Δ |", "|---|---:|---:|---:|"]
    for name in SUMMARY_METRICS:
        rows.append(_row(name, candidate[name], production[name] if production else None))
    comparison = report.get("comparison")
    if comparison:
        low, high = comparison["bootstrap"]["ci95"]
        rows.append(f"| ΔAP bootstrap ({comparison['bootstrap']['resamples']} resamples) | | | {comparison['bootstrap']['mean']:+.4f} [{low:+.4f}, {high:+.4f}] |")
        churn = comparison["churn"]
        rows.append(f"| churn (images whose outcome changed) | | | {churn['changed']} / {churn['images']} ({churn['fraction']:.1%}) |")
    return "\n".join(rows)


def per_class_table(report: Mapping[str, Any]) -> str:
    """Markdown: per-class AP of both models, the delta, and the candidate's operating point."""
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    rows = [
        "| class | support | AP candidate | AP production | Δ | threshold | precision | recall | FP / image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, metrics in candidate["per_class"].items():
        before = production["per_class"].get(name, {}).get("ap") if production else None
        rows.append(
            f"| {name} | {metrics['support']} | {_number(metrics['ap'])} | {_number(before)} | {_delta(metrics['ap'], before)}"
            f" | {metrics['threshold']:g} | {_number(metrics['precision'])} | {_number(metrics['recall'])} | {metrics['false_positives_per_image']:.3f} |"
        )
    return "\n".join(rows)


def per_slice_table(report: Mapping[str, Any]) -> str:
    """Markdown: AP per client and camera for both models; slices below the minimum support are marked."""
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    rows = ["| slice | boxes | AP candidate | AP production | Δ | gated |", "|---|---:|---:|---:|---:|---|"]
    for kind, slices in candidate["slices"].items():
        for name, metrics in slices.items():
            before = production["slices"].get(kind, {}).get(name, {}).get("ap") if production else None
            gated = "yes" if metrics["reliable"] else "no (support)"
            rows.append(f"| {kind} {name} | {metrics['boxes']} | {_number(metrics['ap'])} | {_number(before)} | {_delta(metrics['ap'], before)} | {gated} |")
    return "\n".join(rows)


def robustness_table(report: Mapping[str, Any]) -> str:
    """Markdown: AP under each perturbation and its drop from the clean test set, for both models."""
    candidate, production = report["scores"]["candidate"], report["scores"]["production"]
    rows = ["| perturbation | AP candidate | drop | AP production | drop |", "|---|---:|---:|---:|---:|"]
    for name, metrics in candidate["robustness"].items():
        before = production["robustness"].get(name) if production else None
        rows.append(
            f"| {name} | {metrics['ap']:.4f} | {metrics['drop']:+.4f} | {_number(before and before['ap'])} | {_number(before and before['drop'], signed=True)} |"
        )
    return "\n".join(rows)


def _row(name: str, value: float, before: float | None) -> str:
    return f"| {name} | {_number(value)} | {_number(before)} | {_delta(value, before)} |"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _delta(value: float | None, before: float | None) -> str:
    if value is None or before is None or value < 0 or before < 0:  # COCO reports -1 where nothing can be measured
        return "–"
    return f"{value - before:+.4f}"
