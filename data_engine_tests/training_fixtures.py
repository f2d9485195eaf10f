"""A tiny synthetic label version a detector can learn in seconds: frames with one to three coloured
rectangles (one colour per class) on a plain background, written where the local profile keeps frames
(`<objects_root>/<bucket>/<key>`), and the COCO label set naming them by frame URI.

Each frame is captured in its own hour, so the split assignment (camera x hour groups) spreads frames
over the splits one by one."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

from data_engine.annotation.tasks import frame_path

BUCKET = "synthetic-frames"
CLASSES = ["PET", "Can"]
COLOURS = {"PET": (220, 40, 40), "Can": (40, 60, 220)}
SIZE = (128, 96)


def write_synthetic_label_set(objects_root: Path, model: str, frames: int = 200, seed: int = 0) -> dict[str, Any]:
    """Write the frames' PNGs and return their COCO label set (file_name = frame URI)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    start = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)
    images, annotations = [], []
    for index in range(frames):
        captured = start + dt.timedelta(hours=index)
        uri = f"s3://{BUCKET}/{model}/cam-{index % 4:02d}/{captured:%Y%m%d}/{captured:%H%M%S}-{index:03d}.png"
        shade = rng.randint(100, 160)
        image = Image.new("RGB", SIZE, (shade, shade, shade))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(1, 3)):
            class_name = rng.choice(CLASSES)
            width, height = rng.randint(16, 44), rng.randint(16, 40)
            x, y = rng.randint(0, SIZE[0] - width), rng.randint(0, SIZE[1] - height)
            draw.rectangle([x, y, x + width - 1, y + height - 1], fill=COLOURS[class_name])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": CLASSES.index(class_name) + 1,
                    "bbox": [x, y, width, height],
                    "area": width * height,
                    "iscrowd": 0,
                }
            )
        path = frame_path(objects_root, uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        images.append({"id": index + 1, "file_name": uri, "width": SIZE[0], "height": SIZE[1]})
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(CLASSES)]
    return {"images": images, "annotations": annotations, "categories": categories}
