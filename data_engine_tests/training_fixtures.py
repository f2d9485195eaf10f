"""A tiny synthetic label version a detector can learn in seconds: frames with one to three coloured
rectangles (one colour per class) on a plain background, written where the local profile keeps frames
(`<objects_root>/<bucket>/<key>`), and the COCO label set naming them by frame URI.

Each frame is captured in its own hour, so the split assignment (camera x hour groups) spreads frames
over the splits one by one."""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_engine.annotation.tasks import frame_path
from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV
from data_engine.labels import LabelStore
from data_engine.labels.versioning import import_label_set
from data_engine_tests.conftest import TEST_FLEET

BUCKET = "synthetic-frames"
MODEL = "toy"
CLASSES = ["PET", "Can"]
# Small images, two threads, four epochs: about 25 s of training on 2 busy cores.
HYPERPARAMETERS = {"epochs": 4, "batch_size": 4, "min_size": 96, "max_size": 128, "threads": 2, "seed": 0}
# One model trained on the synthetic frames; 30% of them validate (each frame is its own split group).
TRAINING_FLEET = {
    "warehouse": TEST_FLEET["warehouse"],
    "models": {
        MODEL: {
            "classes": CLASSES,
            "clients": {"line": {"cameras": ["cam-00", "cam-01", "cam-02", "cam-03"]}},
            "selection": {"start_date": "2026-01-01", "max_frames_per_day": 10, "max_frames_per_camera_per_day": 10},
            "labels": {"split_ratios": {"train": 0.7, "val": 0.3, "test": 0.0}},
            "training": {"hyperparameters": HYPERPARAMETERS},
        }
    },
}
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


@contextlib.contextmanager
def training_environment(
    root: Path, trainer_python: Path, hyperparameters: dict[str, Any] = HYPERPARAMETERS
) -> Iterator[tuple[Path, str, dict[str, Any]]]:
    """The local profile on TRAINING_FLEET under `root` (DATA_ENGINE_HOME, DAGSTER_HOME, the trainer's
    interpreter), with the synthetic label set as the model's latest label version: (home, version, coco)."""
    fleet = root / "fleet.yaml"
    config = {**TRAINING_FLEET, "models": {MODEL: {**TRAINING_FLEET["models"][MODEL], "training": {"hyperparameters": hyperparameters}}}}
    fleet.write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "dagster_home").mkdir()
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_ENGINE_PROFILE", "local")
        mp.setenv("DATA_ENGINE_HOME", str(home))
        mp.setenv("DATA_ENGINE_CONFIG", str(fleet))
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        mp.setenv(TRAINER_PYTHON_ENV, str(trainer_python))
        mp.setenv("OMP_WAIT_POLICY", "PASSIVE")
        mp.delenv("CVAT_URL", raising=False)
        coco = write_synthetic_label_set(home / "objects", MODEL)
        version = import_label_set(LabelStore.local(home / "labels"), MODEL, coco, CLASSES)
        yield home, version, coco
