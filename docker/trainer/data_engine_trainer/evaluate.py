"""The `evaluate` entrypoint: COCO-format detections of each checkpoint on a list of frames.

Extras: `checkpoint_uris`, `frames` (frame URIs), `output_uri` (a folder), optional `frames_root`, and
optional `perturbations` ([{name, kind, strength}], data_engine_trainer.perturb): each checkpoint also
predicts on the frames under each perturbation.
Writes `<output_uri>/detections-NNN.json` per checkpoint (in the order given) and
`<output_uri>/detections-NNN-<perturbation name>.json` per perturbation: a COCO file whose `images` are
the frames (file_name = frame URI), `categories` the checkpoint's classes and `annotations` its boxes
with a `score`; then `<output_uri>/detections.json`, the index ({checkpoint_uri, perturbation (null when
clean), detections_uri, detections}), last.
"""

from __future__ import annotations

import json
from typing import Any

from data_engine_trainer import storage
from data_engine_trainer.data import load_image
from data_engine_trainer.distributed import Processes
from data_engine_trainer.model import build_detector
from data_engine_trainer.perturb import check, perturb
from data_engine_trainer.predict import categories, coco_detections, predict
from data_engine_trainer.reporting import Reporter
from data_engine_trainer.train import load_checkpoint

BATCH_SIZE = 8


def evaluate(extras: dict[str, Any], reporter: Reporter, processes: Processes) -> None:
    frames: list[str] = extras["frames"]
    output_uri: str = extras["output_uri"]
    perturbations: list[dict[str, Any]] = extras.get("perturbations") or []
    check(perturbations)
    pixels = [load_image(frame, extras.get("frames_root")) for frame in frames]
    images = [
        {"id": index + 1, "file_name": frame, "width": image.shape[2], "height": image.shape[1]}
        for index, (frame, image) in enumerate(zip(frames, pixels))
    ]
    variants: list[tuple[str | None, list[Any]]] = [(None, pixels)]
    for entry in perturbations:
        variants.append((entry["name"], [perturb(image, entry["kind"], entry["strength"], seed) for seed, image in enumerate(pixels)]))
    index = []
    for position, checkpoint_uri in enumerate(extras["checkpoint_uris"]):
        state = load_checkpoint(checkpoint_uri, processes.device)
        model = build_detector(len(state["classes"]), state["hyperparameters"]).to(processes.device)
        model.load_state_dict(state["model"])
        for perturbation, variant in variants:
            detections = coco_detections([image["id"] for image in images], predict(model, variant, processes.device, BATCH_SIZE))
            annotations = [
                {"id": number + 1, "area": detection["bbox"][2] * detection["bbox"][3], "iscrowd": 0, **detection}
                for number, detection in enumerate(detections)
            ]
            name = f"detections-{position:03d}" + (f"-{perturbation}" if perturbation else "") + ".json"
            uri = storage.join(output_uri, name)
            document = {"checkpoint_uri": checkpoint_uri, "perturbation": perturbation, "images": images, "categories": categories(state["classes"]), "annotations": annotations}
            storage.write_bytes(uri, json.dumps(document).encode())
            entry = {"checkpoint_uri": checkpoint_uri, "perturbation": perturbation, "detections_uri": uri, "detections": len(annotations)}
            index.append(entry)
            reporter.log(f"{checkpoint_uri} ({perturbation or 'clean'}): {len(annotations)} detections on {len(frames)} frames")
            reporter.message({"type": "detections", **entry})
    storage.write_bytes(storage.join(output_uri, "detections.json"), json.dumps(index, indent=2).encode())
    reporter.finish({"checkpoints": len(extras["checkpoint_uris"]), "frames": len(frames), "detections": sum(e["detections"] for e in index)})
