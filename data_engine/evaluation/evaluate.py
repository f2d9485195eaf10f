"""One evaluation, from the trainer's detection files to the report: the candidate and production (when
there is one) scored on the same test split, clean and under each perturbation, then compared.

The trainer's evaluate entrypoint (DESIGN.md, Trainer contract) writes an index, `detections.json`:
[{checkpoint_uri, perturbation (null when clean), detections_uri, detections}], and one COCO file per
entry; `documents` maps (checkpoint_uri, perturbation) to that file's content.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from data_engine.evaluation.mltest import run_mltest
from data_engine.evaluation.report import ModelScores, align_detections, build_report, score_model

INDEX = "detections.json"


def evaluation_extras(checkpoint_uris: list[str], ground_truth: Mapping[str, Any], output_uri: str, perturbations: list[Any]) -> dict[str, Any]:
    """The evaluate entrypoint's extras: every checkpoint predicts on every test frame, clean and perturbed."""
    return {
        "checkpoint_uris": checkpoint_uris,
        "frames": [image["file_name"] for image in ground_truth["images"]],
        "output_uri": output_uri,
        "perturbations": [{"name": p.name, "kind": p.kind, "strength": p.strength} for p in perturbations],
    }


def read_detections(objects: Any, folder: str) -> dict[tuple[str, str | None], dict[str, Any]] | None:
    """The detection files the evaluate entrypoint wrote under `folder` of an ObjectStore, by
    (checkpoint_uri, perturbation); None until its index exists (it is written last)."""
    try:
        index = json.loads(objects.get(f"{folder}/{INDEX}"))
    except KeyError:
        return None
    return {
        (entry["checkpoint_uri"], entry.get("perturbation")): json.loads(objects.get(f"{folder}/{entry['detections_uri'].rsplit('/', 1)[-1]}"))
        for entry in index
    }


def run_external_test(mltest: Any, candidate_uri: str, ground_truth: Mapping[str, Any]) -> dict[str, Any]:
    """The `evaluation.mltest` suite on the candidate, given the test split as a COCO file."""
    with tempfile.TemporaryDirectory(prefix="mltest-") as workdir:
        test_set = Path(workdir) / "test_split.json"
        test_set.write_text(json.dumps(ground_truth))
        return run_mltest(mltest.command, mltest.timeout_seconds, candidate_uri=candidate_uri, test_set=test_set, workdir=Path(workdir))


def evaluate(
    *,
    model: str,
    model_config: Any,
    candidate: Mapping[str, Any],
    production: Mapping[str, Any] | None,
    label_version: str,
    ground_truth: Mapping[str, Any],
    documents: Mapping[tuple[str, str | None], Mapping[str, Any]],
    mltest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report.json content. `candidate` / `production`: {candidate_id, checkpoint_uri, label_version}."""
    evaluation = model_config.evaluation
    thresholds = {name: evaluation.threshold(name) for name in model_config.classes}
    camera_clients = {camera: client for client, settings in model_config.clients.items() for camera in settings.cameras}

    def scores(who: str, checkpoint_uri: str) -> ModelScores:
        def detections(perturbation: str | None) -> list[dict[str, Any]]:
            document = documents.get((checkpoint_uri, perturbation))
            if document is None:
                raise KeyError(f"the evaluation wrote no {perturbation or 'clean'} detections for the {who} ({checkpoint_uri})")
            return align_detections(ground_truth, document, f"{who} ({perturbation or 'clean'})")

        return score_model(
            ground_truth,
            detections(None),
            thresholds=thresholds,
            camera_clients=camera_clients,
            slice_min_support=evaluation.slice_min_support,
            perturbed={p.name: detections(p.name) for p in evaluation.perturbations},
        )

    return build_report(
        model=model,
        candidate=candidate,
        production=production,
        label_version=label_version,
        candidate_scores=scores("candidate", candidate["checkpoint_uri"]),
        production_scores=scores("production model", production["checkpoint_uri"]) if production else None,
        thresholds=thresholds,
        class_names={category["id"]: category["name"] for category in ground_truth["categories"]},
        bootstrap_resamples=evaluation.bootstrap_resamples,
        bootstrap_seed=evaluation.bootstrap_seed,
        mltest=mltest,
    )
