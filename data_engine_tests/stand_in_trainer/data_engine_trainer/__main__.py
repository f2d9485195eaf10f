"""`python -m data_engine_trainer evaluate` under Dagster Pipes: writes detections per the contract
(detections-NNN[-<perturbation>].json, then the detections.json index, last)."""

import json
import sys
from pathlib import Path

from dagster_pipes import open_dagster_pipes


def main() -> None:
    if sys.argv[1:] != ["evaluate"]:
        raise SystemExit(f"the stand-in trainer only evaluates (got {sys.argv[1:]})")
    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        frames, output = extras["frames"], Path(extras["output_uri"])
        output.mkdir(parents=True, exist_ok=True)
        images = [{"id": index + 1, "file_name": frame, "width": 640, "height": 480} for index, frame in enumerate(frames)]
        index = []
        for position, checkpoint_uri in enumerate(extras["checkpoint_uris"]):
            checkpoint = json.loads(Path(checkpoint_uri).read_text())
            categories = [{"id": number + 1, "name": name} for number, name in enumerate(checkpoint["classes"])]
            for perturbation in [None] + [entry["name"] for entry in extras.get("perturbations", [])]:
                boxes = checkpoint["detections"] if perturbation is None else checkpoint["perturbed"][perturbation]
                found = [(image["id"], box) for image in images for box in boxes.get(image["file_name"], [])]
                annotations = [
                    {"id": number + 1, "image_id": image_id, "category_id": checkpoint["classes"].index(box["class"]) + 1,
                     "bbox": box["bbox"], "score": box["score"], "area": box["bbox"][2] * box["bbox"][3], "iscrowd": 0}
                    for number, (image_id, box) in enumerate(found)
                ]
                name = f"detections-{position:03d}" + (f"-{perturbation}" if perturbation else "") + ".json"
                document = {"checkpoint_uri": checkpoint_uri, "perturbation": perturbation, "images": images, "categories": categories, "annotations": annotations}
                (output / name).write_text(json.dumps(document))
                index.append({"checkpoint_uri": checkpoint_uri, "perturbation": perturbation, "detections_uri": str(output / name), "detections": len(annotations)})
                pipes.log.info(f"{checkpoint_uri} ({perturbation or 'clean'}): {len(annotations)} detections")
        (output / "detections.json").write_text(json.dumps(index))
        pipes.report_asset_materialization(metadata={"checkpoints": len(extras["checkpoint_uris"]), "frames": len(frames)})


main()
