"""Running a detector over images and writing its boxes as COCO detections (label i + 1 = class i)."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def predict(model: torch.nn.Module, pixels: list[torch.Tensor], device: torch.device, batch_size: int) -> list[dict[str, torch.Tensor]]:
    model.eval()
    outputs: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(pixels), batch_size):
        batch = [image.to(device) for image in pixels[start : start + batch_size]]
        outputs.extend({key: value.cpu() for key, value in output.items()} for output in model(batch))
    return outputs


def coco_detections(image_ids: list[int], outputs: list[dict[str, torch.Tensor]]) -> list[dict[str, Any]]:
    """COCO results (image_id, category_id = label, bbox as x, y, width, height, score)."""
    detections = []
    for image_id, output in zip(image_ids, outputs):
        for (x1, y1, x2, y2), score, label in zip(output["boxes"].tolist(), output["scores"].tolist(), output["labels"].tolist()):
            detections.append(
                {"image_id": image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": round(score, 5)}
            )
    return detections


def categories(classes: list[str]) -> list[dict[str, Any]]:
    return [{"id": index + 1, "name": name} for index, name in enumerate(classes)]
