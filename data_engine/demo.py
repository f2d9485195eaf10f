"""Synthetic but realistic warehouse data for the local profile, demos and tests.

For every model of the fleet config and every day: several cameras, frames with a few detections,
confusable class pairs drawn as overlapping boxes of different classes, large boxes, low-confidence
detections, frames with no detection, and a handful of malformed rows (NULL, NaN, inverted or
out-of-image boxes, scores outside [0, 1], unknown classes, absurd image sizes, rows without a capture
time) and repeated rows, as streaming inserts write them. Each frame also gets a small PNG under
`<objects_root>/demo-frames/...`, the local stand-in for the `s3://demo-frames/...` URI it carries.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
from pathlib import Path

from data_engine.annotation.tasks import frame_path
from data_engine.config import FleetConfig

DEMO_BUCKET = "demo-frames"
# The hidden true boxes of the demo frames. The pipeline never reads it (production has no such table); the
# simulated reviewer and the loop's evaluation do.
GROUND_TRUTH_TABLE = "ground_truth"
IMAGE_SIZE = (320, 240)
MALFORMED_KINDS = (
    "null_box", "nan_score", "inverted_box", "outside_image", "score_above_one", "unknown_class", "huge_image"
)
# Larger than any camera's image, as a corrupt or overflowed value reads (sql/checked_frames.sql bounds it).
HUGE_IMAGE_SIDE = 2**62


def demo_window(today: dt.date, past_days: int) -> tuple[dt.date, int]:
    """The (end_date, days) of the demo data written on first use: `past_days` up to yesterday (the
    latest partition the UI offers) and the coming week, so the partitions a user clicks in the days
    after have data too."""
    return today + dt.timedelta(days=6), past_days + 7


def write_demo_warehouse(
    config: FleetConfig,
    warehouse_path: Path,
    objects_root: Path,
    end_date: dt.date,
    days: int = 7,
    frames_per_camera_per_day: int = 24,
    write_images: bool = True,
) -> dict[str, int]:
    """Write `predictions` and `frames` tables (replacing the file atomically) and the frame images."""
    import duckdb
    import pyarrow as pa

    frames: list[dict] = []
    predictions: list[dict] = []
    truth: list[dict] = []
    for model_name, model in config.models.items():
        confusable = _confusable_pairs(model)
        for offset in range(days):
            day = end_date - dt.timedelta(days=days - 1 - offset)
            rng = random.Random(f"{model_name}/{day.isoformat()}")
            for client, client_config in model.clients.items():
                for camera in client_config.cameras:
                    for index in range(frames_per_camera_per_day):
                        frame = _frame(model_name, client, camera, day, index, frames_per_camera_per_day, rng)
                        objects = _objects(model.classes, rng)
                        boxes = _predicted(objects, confusable, rng)
                        frames.append(frame)
                        truth.extend({"model": model_name, "frame_uri": frame["frame_uri"]} | box for box in objects)
                        predictions.extend(frame | box for box in boxes)
                        if write_images:
                            _write_image(objects_root, frame["frame_uri"], objects, model.classes)
            # Streaming inserts repeat rows: the day's last frame row and its first detection, written twice.
            frames.append(dict(frame))
            predictions.extend(frame | box for box in boxes[:1])
            predictions.extend(_malformed_rows(model_name, model, day, rng))
            frames.append(_huge_image_frame(model_name, model, day, rng))
        predictions.extend(_rows_without_capture_time(model_name, model, end_date, rng))
        frames.extend(_rows_without_capture_time(model_name, model, end_date, rng, with_box=False))

    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    partial = warehouse_path.with_name(f"{warehouse_path.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    with duckdb.connect(str(partial)) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("frames_rows", pa.Table.from_pylist(frames))
        connection.register("prediction_rows", pa.Table.from_pylist(predictions, schema=_prediction_schema()))
        connection.execute("CREATE TABLE frames AS SELECT * FROM frames_rows")
        connection.execute("CREATE TABLE predictions AS SELECT * FROM prediction_rows")
        connection.register("truth_rows", pa.Table.from_pylist(truth, schema=_truth_schema()))
        connection.execute(f"CREATE TABLE {GROUND_TRUTH_TABLE} AS SELECT * FROM truth_rows")
    os.replace(partial, warehouse_path)
    return {"frames": len(frames), "predictions": len(predictions)}


def _truth_schema():
    import pyarrow as pa

    return pa.schema(
        [("model", pa.string()), ("frame_uri", pa.string()), ("class_name", pa.string())]
        + [(corner, pa.float64()) for corner in ("x_min", "y_min", "x_max", "y_max")]
    )


def read_ground_truth(warehouse_path: Path, model: str, frame_uris: list[str]) -> dict[str, list[dict]]:
    """The true boxes (class_name, x_min, y_min, x_max, y_max in pixels) of some demo frames, by frame URI:
    what the simulated reviewer corrects toward and what the loop's test AP is measured against. Frames
    without an object map to []; frames that are not demo frames are left out."""
    import duckdb

    with duckdb.connect(str(warehouse_path), read_only=True) as connection:
        known = connection.execute(
            "SELECT DISTINCT frame_uri FROM frames WHERE model = ? AND frame_uri IN (SELECT unnest(?::VARCHAR[]))",
            [model, frame_uris],
        ).fetchall()
        rows = connection.execute(
            f"SELECT frame_uri, class_name, x_min, y_min, x_max, y_max FROM {GROUND_TRUTH_TABLE}"
            " WHERE model = ? AND frame_uri IN (SELECT unnest(?::VARCHAR[])) ORDER BY frame_uri, x_min, y_min",
            [model, frame_uris],
        ).fetchall()
    truth: dict[str, list[dict]] = {uri: [] for (uri,) in known}
    for uri, class_name, *corners in rows:
        truth[uri].append(dict(zip(("class_name", "x_min", "y_min", "x_max", "y_max"), [class_name, *corners])))
    return truth


def _prediction_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("frame_uri", pa.string()),
            ("client", pa.string()),
            ("camera_id", pa.string()),
            ("model", pa.string()),
            ("model_version", pa.string()),
            ("captured_at", pa.timestamp("us", tz="UTC")),
            ("image_width", pa.int64()),
            ("image_height", pa.int64()),
            ("class_name", pa.string()),
            ("score", pa.float64()),
            ("x_min", pa.float64()),
            ("y_min", pa.float64()),
            ("x_max", pa.float64()),
            ("y_max", pa.float64()),
        ]
    )


def _frame(model: str, client: str, camera: str, day: dt.date, index: int, per_day: int, rng: random.Random) -> dict:
    seconds = int((index + rng.random() * 0.9) * 86_400 / per_day)
    captured_at = dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return {
        "frame_uri": f"s3://{DEMO_BUCKET}/{model}/{camera}/{day:%Y%m%d}/{captured_at:%H%M%S}-{index:03d}.png",
        "client": client,
        "camera_id": camera,
        "model": model,
        "model_version": f"{model.lower()}-2026.11.{1 + day.toordinal() % 3}",
        "captured_at": captured_at,
        "image_width": IMAGE_SIZE[0],
        "image_height": IMAGE_SIZE[1],
    }


def _confusable_pairs(model) -> list[tuple[str, str]]:
    pairs = [tuple(p) for f in model.selection.filters for p in (getattr(f, "class_pairs", None) or [])]
    return pairs or [(model.classes[0], model.classes[1])]


def _objects(classes: list[str], rng: random.Random) -> list[dict]:
    """The objects drawn in a frame: its ground truth."""
    if rng.random() < 0.15:
        return []  # a frame with nothing in it
    width, height = IMAGE_SIZE
    boxes = []
    for _ in range(rng.randint(1, 5)):
        large = rng.random() < 0.12
        box_w = rng.uniform(0.3, 0.6) * width if large else rng.uniform(0.05, 0.2) * width
        box_h = rng.uniform(0.3, 0.6) * height if large else rng.uniform(0.05, 0.2) * height
        x_min, y_min = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
        score = min(0.99, max(0.05, rng.betavariate(5, 2)))
        boxes.append(_box(rng.choice(classes), score, x_min, y_min, x_min + box_w, y_min + box_h))
    return [_clip(box) for box in boxes]


def _predicted(objects: list[dict], confusable: list[tuple[str, str]], rng: random.Random) -> list[dict]:
    """What the production model predicts for a frame's objects."""
    boxes = list(objects)
    if boxes and rng.random() < 0.2:  # the same object predicted as two confusable classes
        first, second = rng.choice(confusable)
        base = boxes[0]
        jitter = rng.uniform(-3, 3)
        boxes[0] = base | {"class_name": first}
        boxes.append(
            _box(second, rng.uniform(0.3, 0.7), base["x_min"] + jitter, base["y_min"], base["x_max"] + jitter, base["y_max"])
        )
    return [_clip(box) for box in boxes]


def _box(class_name: str, score: float, x_min: float, y_min: float, x_max: float, y_max: float) -> dict:
    return {"class_name": class_name, "score": round(score, 4), "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


def _clip(box: dict) -> dict:
    width, height = IMAGE_SIZE
    return box | {
        "x_min": round(max(0.0, box["x_min"]), 2),
        "y_min": round(max(0.0, box["y_min"]), 2),
        "x_max": round(min(float(width), box["x_max"]), 2),
        "y_max": round(min(float(height), box["y_max"]), 2),
    }


def _malformed_rows(model_name: str, model, day: dt.date, rng: random.Random) -> list[dict]:
    client, client_config = next(iter(model.clients.items()))
    rows = []
    for index, kind in enumerate(MALFORMED_KINDS):
        frame = _frame(model_name, client, client_config.cameras[0], day, 900 + index, 1000, rng)
        box = _box(model.classes[0], 0.5, 10.0, 10.0, 50.0, 50.0)
        if kind == "null_box":
            box["x_max"] = None
        elif kind == "nan_score":
            box["score"] = math.nan
        elif kind == "inverted_box":
            box["x_min"], box["x_max"] = 50.0, 10.0
        elif kind == "outside_image":
            box["x_max"] = IMAGE_SIZE[0] + 40.0
        elif kind == "score_above_one":
            box["score"] = 1.4
        elif kind == "unknown_class":
            box["class_name"] = "Banana Peel"
        elif kind == "huge_image":
            frame["image_width"] = HUGE_IMAGE_SIDE
        rows.append(frame | box)
    return rows


def _huge_image_frame(model_name: str, model, day: dt.date, rng: random.Random) -> dict:
    client, client_config = next(iter(model.clients.items()))
    return _frame(model_name, client, client_config.cameras[0], day, 950, 1000, rng) | {"image_height": HUGE_IMAGE_SIDE}


def _rows_without_capture_time(
    model_name: str, model, day: dt.date, rng: random.Random, with_box: bool = True
) -> list[dict]:
    """One row of the model with a NULL captured_at: it belongs to no day, so every day's summary counts it."""
    client, client_config = next(iter(model.clients.items()))
    frame = _frame(model_name, client, client_config.cameras[0], day, 990, 1000, rng) | {"captured_at": None}
    return [frame | _box(model.classes[0], 0.5, 10.0, 10.0, 50.0, 50.0) if with_box else frame]


def _write_image(objects_root: Path, frame_uri: str, boxes: list[dict], classes: list[str]) -> None:
    from PIL import Image, ImageDraw

    path = frame_path(objects_root, frame_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = sum(map(ord, frame_uri))
    image = Image.new("RGB", IMAGE_SIZE, (90 + seed % 40, 85 + seed % 30, 80 + seed % 20))
    draw = ImageDraw.Draw(image)
    for box in boxes:
        hue = classes.index(box["class_name"]) * 47 % 255
        draw.rectangle([box["x_min"], box["y_min"], box["x_max"], box["y_max"]], fill=(hue, 255 - hue, (hue * 3) % 255))
    image.save(path, format="PNG", optimize=False)


def demo_label_set(warehouse_path: Path, model: str, classes: list[str], frames: int = 200) -> dict:
    """A COCO label set (file_name = frame URI) of `frames` demo frames of `model`, labelled with the boxes
    the demo drew into them (its well-formed predictions), so the local profile can train before any review."""
    import duckdb

    with duckdb.connect(str(warehouse_path), read_only=True) as connection:
        chosen = connection.execute(
            # Only well-formed frame rows, one per frame: the demo also writes the malformed and repeated
            # rows the selection must drop.
            "SELECT frame_uri, camera_id, captured_at, image_width, image_height FROM frames WHERE model = ?"
            " AND captured_at IS NOT NULL AND image_width BETWEEN 1 AND 100000 AND image_height BETWEEN 1 AND 100000"
            " QUALIFY row_number() OVER (PARTITION BY frame_uri ORDER BY captured_at) = 1"
            " ORDER BY hash(frame_uri) LIMIT ?",
            [model, frames],
        ).fetchall()
        boxes = connection.execute(
            "SELECT frame_uri, class_name, x_min, y_min, x_max, y_max FROM predictions"
            " WHERE model = ? AND frame_uri IN (SELECT unnest(?::VARCHAR[]))",
            [model, [row[0] for row in chosen]],
        ).fetchall()
    images = [
        {"id": index, "file_name": uri, "camera_id": camera, "captured_at": captured_at.isoformat(), "width": width, "height": height}
        for index, (uri, camera, captured_at, width, height) in enumerate(chosen, start=1)
    ]
    image_of = {image["file_name"]: image for image in images}
    annotations = []
    for uri, class_name, *corners in boxes:
        image = image_of[uri]
        if class_name not in classes or any(value is None or not math.isfinite(value) for value in corners):
            continue  # the demo's malformed rows
        x_min, y_min, x_max, y_max = corners
        if not (0 <= x_min < x_max <= image["width"] and 0 <= y_min < y_max <= image["height"]):
            continue
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image["id"],
                "category_id": classes.index(class_name) + 1,
                "bbox": [x_min, y_min, x_max - x_min, y_max - y_min],
                "area": (x_max - x_min) * (y_max - y_min),
                "iscrowd": 0,
            }
        )
    categories = [{"id": index, "name": name} for index, name in enumerate(classes, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}
