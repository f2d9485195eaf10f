"""The `evaluate` entrypoint: COCO-format detections of each checkpoint on a list of frames.

Extras: `checkpoint_uris`, `frames` (frame URIs), `output_uri` (a folder), optional `frames_root`.
Writes `<output_uri>/detections-NNN.json` per checkpoint (in the order given): a COCO file whose
`images` are the frames (file_name = frame URI), `categories` the checkpoint's classes and
`annotations` its boxes with a `score`; then `<output_uri>/detections.json`, the index, last.
"""

from __future__ import annotations

import json
from typing import Any

from data_engine_trainer import storage
from data_engine_trainer.data import load_image
from data_engine_trainer.distributed import Processes
from data_engine_trainer.model import build_detector
from data_engine_trainer.predict import categories, coco_detections, predict
from data_engine_trainer.reporting import Reporter
from data_engine_trainer.train import load_checkpoint

BATCH_SIZE = 8


def evaluate(extras: dict[str, Any], reporter: Reporter, processes: Processes) -> None:
    frames: list[str] = extras["frames"]
    output_uri: str = extras["output_uri"]
    pixels = [load_image(frame, extras.get("frames_root")) for frame in frames]
    images = [
        {"id": index + 1, "file_name": frame, "width": image.shape[2], "height": image.shape[1]}
        for index, (frame, image) in enumerate(zip(frames, pixels))
    ]
    index = []
    for position, checkpoint_uri in enumerate(extras["checkpoint_uris"]):
        state = load_checkpoint(checkpoint_uri, processes.device)
        model = build_detector(len(state["classes"]), state["hyperparameters"]).to(processes.device)
        model.load_state_dict(state["model"])
        detections = coco_detections([image["id"] for image in images], predict(model, pixels, processes.device, BATCH_SIZE))
        annotations = [
            {"id": number + 1, "area": detection["bbox"][2] * detection["bbox"][3], "iscrowd": 0, **detection}
            for number, detection in enumerate(detections)
        ]
        uri = storage.join(output_uri, f"detections-{position:03d}.json")
        document = {"checkpoint_uri": checkpoint_uri, "images": images, "categories": categories(state["classes"]), "annotations": annotations}
        storage.write_bytes(uri, json.dumps(document).encode())
        entry = {"checkpoint_uri": checkpoint_uri, "detections_uri": uri, "detections": len(annotations)}
        index.append(entry)
        reporter.log(f"{checkpoint_uri}: {len(annotations)} detections on {len(frames)} frames")
        reporter.message({"type": "detections", **entry})
    storage.write_bytes(storage.join(output_uri, "detections.json"), json.dumps(index, indent=2).encode())
    reporter.finish({"checkpoints": len(index), "frames": len(frames), "detections": sum(e["detections"] for e in index)})
