"""Synthetic but realistic warehouse data for the local profile, demos and tests.

Every frame has hidden ground truth: the objects drawn into its image (one shape and colour family per
class, varied in size, tint and place, on a camera's belt background with clutter distractors), kept in
the `ground_truth` table. The demo model's predictions corrupt that truth at the rates of the config's
`demo:` block: missed objects, confused classes of the configured confusable pairs (class_overlap's
class_pairs), loose boxes and false positives on clutter. For every model of the fleet config and every
day: several cameras, busy days whose frames overrun the selection budgets, a re-ingested share of the
previous day's frames (the cross-day ledger drops those), a handful of malformed rows (NULL, NaN,
inverted or out-of-image boxes, scores outside [0, 1], unknown classes, absurd image sizes, rows without
a capture time) and repeated rows, as streaming inserts write them. Each frame's PNG lies under
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
from data_engine.config.models import DemoConfig

DEMO_BUCKET = "demo-frames"
# The hidden true boxes of the demo frames. The pipeline never reads it (production has no such table); the
# simulated reviewer and the loop's evaluation do.
GROUND_TRUTH_TABLE = "ground_truth"
IMAGE_SIZE = (320, 240)
# Each class is drawn as its shape in its colour family (tinted per object): with up to six classes no two
# classes share both, so a detector can tell them apart.
SHAPES = ("rectangle", "ellipse", "triangle", "diamond")
CLASS_COLOURS = ((225, 60, 50), (60, 95, 225), (240, 200, 40), (60, 190, 80), (200, 70, 210), (40, 200, 210))
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
    """Write `predictions`, `frames` and `ground_truth` tables (replacing the file atomically) and the frame images."""
    import duckdb
    import pyarrow as pa

    demo = config.demo
    frames: list[dict] = []
    predictions: list[dict] = []
    truth: list[dict] = []
    for model_name, model in config.models.items():
        partners = _partners(_confusable_pairs(model))
        previous_day: list[tuple[dict, list[dict]]] = []
        for offset in range(days):
            day = end_date - dt.timedelta(days=days - 1 - offset)
            rng = random.Random(f"{model_name}/{day.isoformat()}")
            per_camera = frames_per_camera_per_day * (demo.busy_day_factor if is_busy_day(day, demo) else 1)
            predictions.extend(_reingested(previous_day, day, demo.reingested_fraction, rng))
            today: list[tuple[dict, list[dict]]] = []
            for client, client_config in model.clients.items():
                for camera in client_config.cameras:
                    for index in range(per_camera):
                        frame = _frame(model_name, client, camera, day, index, per_camera, rng)
                        objects, clutter = _scene(model.classes, demo, rng)
                        boxes = _predicted(objects, clutter, model.classes, partners, demo, rng)
                        frames.append(frame)
                        today.append((frame, boxes))
                        truth.extend({"model": model_name, "frame_uri": frame["frame_uri"]} | box for box in objects)
                        predictions.extend(frame | box for box in boxes)
                        if write_images:
                            _write_image(objects_root, frame["frame_uri"], objects, clutter, model.classes)
            # Streaming inserts repeat rows: the day's last frame row and its first detection, written twice.
            frame, boxes = today[-1]
            frames.append(dict(frame))
            predictions.extend(frame | box for box in boxes[:1])
            predictions.extend(_malformed_rows(model_name, model, day, rng))
            frames.append(_huge_image_frame(model_name, model, day, rng))
            previous_day = today
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
    return {"frames": len(frames), "predictions": len(predictions), "true_objects": len(truth)}


def is_busy_day(day: dt.date, demo: DemoConfig) -> bool:
    """Busy days are fixed by date, so a day is busy (or not) whatever window the demo data covers."""
    return demo.busy_day_every > 0 and day.toordinal() % demo.busy_day_every == 0


def _reingested(previous_day: list[tuple[dict, list[dict]]], day: dt.date, fraction: float, rng: random.Random) -> list[dict]:
    """Predictions of some of the previous day's frames written again on `day` (the frames table keeps
    their first row): the ledger drops them when the earlier day was selected, else they lack a frame row."""
    rows = []
    for frame, boxes in previous_day:
        if boxes and rng.random() < fraction:
            again = frame | {"captured_at": frame["captured_at"] + dt.timedelta(days=1), "model_version": _model_version(frame["model"], day)}
            rows.extend(again | box for box in boxes)
    return rows


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
        "model_version": _model_version(model, day),
        "captured_at": captured_at,
        "image_width": IMAGE_SIZE[0],
        "image_height": IMAGE_SIZE[1],
    }


def _model_version(model: str, day: dt.date) -> str:
    return f"{model.lower()}-2026.11.{1 + day.toordinal() % 3}"


def _confusable_pairs(model) -> list[tuple[str, str]]:
    pairs = [tuple(p) for f in model.selection.filters for p in (getattr(f, "class_pairs", None) or [])]
    return pairs or [(model.classes[0], model.classes[1])]


def _partners(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    partners: dict[str, list[str]] = {}
    for first, second in pairs:
        partners.setdefault(first, []).append(second)
        partners.setdefault(second, []).append(first)
    return partners


def _scene(classes: list[str], demo: DemoConfig, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """The objects drawn in a frame (its ground truth: class_name and box) and its clutter distractors (boxes)."""
    objects = [] if rng.random() < demo.empty_frame_rate else [
        {"class_name": rng.choice(classes)} | _random_box(rng, large=rng.random() < 0.12) for _ in range(rng.randint(1, 5))
    ]
    clutter = [_random_box(rng, large=False) for _ in range(rng.randint(0, demo.max_clutter_per_frame))]
    return objects, clutter


def _random_box(rng: random.Random, large: bool) -> dict:
    width, height = IMAGE_SIZE
    low, high = (0.3, 0.6) if large else (0.06, 0.2)
    box_w, box_h = rng.uniform(low, high) * width, rng.uniform(low, high) * height
    x_min, y_min = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
    return _corners(x_min, y_min, x_min + box_w, y_min + box_h)


def _predicted(
    objects: list[dict], clutter: list[dict], classes: list[str], partners: dict[str, list[str]], demo: DemoConfig, rng: random.Random
) -> list[dict]:
    """What the demo model predicts for a frame: its truth, corrupted at the `demo:` rates."""
    boxes = []
    for item in objects:
        if rng.random() < demo.miss_rate:
            continue
        corners = _loosened(item, demo, rng) if rng.random() < demo.loose_box_rate else item
        class_name = item["class_name"]
        if class_name in partners and rng.random() < demo.confusion_rate:
            if rng.random() < 0.5:  # both classes, overlapping: the pair class_overlap flags
                boxes.append(_box(class_name, rng.uniform(0.3, 0.7), **_corners_of(corners)))
            class_name = rng.choice(partners[class_name])
            score = rng.uniform(0.3, 0.7)
        else:
            score = min(0.99, max(0.05, rng.betavariate(5, 2)))
        boxes.append(_box(class_name, score, **_corners_of(corners)))
    boxes.extend(
        _box(rng.choice(classes), rng.uniform(0.15, 0.6), **_corners_of(item)) for item in clutter if rng.random() < demo.false_positive_rate
    )
    return boxes


def _loosened(box: dict, demo: DemoConfig, rng: random.Random) -> dict:
    """The box with each side moved by up to loose_box_error of the box's size, inside the image."""
    width, height = box["x_max"] - box["x_min"], box["y_max"] - box["y_min"]

    def off(size: float) -> float:
        return rng.uniform(-demo.loose_box_error, demo.loose_box_error) * size

    x_min, x_max = box["x_min"] + off(width), box["x_max"] + off(width)
    y_min, y_max = box["y_min"] + off(height), box["y_max"] + off(height)
    return _corners(min(x_min, x_max - 2), min(y_min, y_max - 2), x_max, y_max)


def _corners(x_min: float, y_min: float, x_max: float, y_max: float) -> dict:
    """A box clipped to the image, in pixels rounded to 0.01."""
    width, height = IMAGE_SIZE
    return {
        "x_min": round(max(0.0, x_min), 2),
        "y_min": round(max(0.0, y_min), 2),
        "x_max": round(min(float(width), x_max), 2),
        "y_max": round(min(float(height), y_max), 2),
    }


def _corners_of(box: dict) -> dict:
    return {corner: box[corner] for corner in ("x_min", "y_min", "x_max", "y_max")}


def _box(class_name: str, score: float, x_min: float, y_min: float, x_max: float, y_max: float) -> dict:
    return {"class_name": class_name, "score": round(score, 4), "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


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


def _write_image(objects_root: Path, frame_uri: str, objects: list[dict], clutter: list[dict], classes: list[str]) -> None:
    """The frame as a camera over a belt would see it: the camera's belt colour with seams and stains,
    lit a little differently per frame; clutter in dull colours; each object as its class's shape in
    its class's colour family, tinted per object, with a darker outline."""
    from PIL import Image, ImageDraw

    path = frame_path(objects_root, frame_uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(frame_uri)
    camera = frame_uri.split("/")[-3]
    belt = random.Random(camera)
    light = rng.uniform(0.8, 1.2)
    base = tuple(int(belt.randint(50, 110) * light) for _ in range(3))
    image = Image.new("RGB", IMAGE_SIZE, base)
    draw = ImageDraw.Draw(image)
    width, height = IMAGE_SIZE
    for seam in range(belt.randint(2, 5)):
        y = (belt.randint(0, height) + int(rng.random() * 40)) % height
        draw.line([(0, y), (width, y)], fill=tuple(max(0, c - 25) for c in base), width=2)
    for _ in range(rng.randint(2, 6)):
        x, y, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(4, 18)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(max(0, c - rng.randint(8, 20)) for c in base))
    for box in clutter:
        grey = rng.randint(90, 170)
        dull = (grey, grey - rng.randint(0, 30), grey - rng.randint(10, 50))
        draw.polygon(_jagged(box, rng), fill=dull)
    for box in objects:
        index = classes.index(box["class_name"])
        colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in CLASS_COLOURS[index % len(CLASS_COLOURS)])
        outline = tuple(c // 2 for c in colour)
        corners = [box["x_min"], box["y_min"], max(box["x_min"] + 1, box["x_max"] - 1), max(box["y_min"] + 1, box["y_max"] - 1)]
        shape = SHAPES[index % len(SHAPES)]
        if shape == "ellipse":
            draw.ellipse(corners, fill=colour, outline=outline, width=2)
        elif shape == "triangle":
            x_min, y_min, x_max, y_max = corners
            draw.polygon([((x_min + x_max) / 2, y_min), (x_max, y_max), (x_min, y_max)], fill=colour, outline=outline)
        elif shape == "diamond":
            x_min, y_min, x_max, y_max = corners
            middle = ((x_min + x_max) / 2, (y_min + y_max) / 2)
            draw.polygon([(middle[0], y_min), (x_max, middle[1]), (middle[0], y_max), (x_min, middle[1])], fill=colour, outline=outline)
        else:
            draw.rectangle(corners, fill=colour, outline=outline, width=2)
    image.save(path, format="PNG", optimize=False, compress_level=1)


def _jagged(box: dict, rng: random.Random) -> list[tuple[float, float]]:
    """An irregular polygon inside the box: clutter has no class's clean shape."""
    centre_x, centre_y = (box["x_min"] + box["x_max"]) / 2, (box["y_min"] + box["y_max"]) / 2
    half_w, half_h = (box["x_max"] - box["x_min"]) / 2, (box["y_max"] - box["y_min"]) / 2
    points = []
    for step in range(7):
        angle = 2 * math.pi * step / 7
        reach = rng.uniform(0.5, 1.0)
        points.append((centre_x + math.cos(angle) * half_w * reach, centre_y + math.sin(angle) * half_h * reach))
    return points


def demo_label_set(warehouse_path: Path, model: str, classes: list[str], frames: int = 200, days: list[dt.date] | None = None) -> dict:
    """A COCO label set (file_name = frame URI) of `frames` demo frames of `model` (captured on one of `days`,
    default any day), labelled with the objects drawn into them (the `ground_truth` table, not the demo
    model's corrupted predictions), so the local profile can train before any review."""
    import duckdb

    with duckdb.connect(str(warehouse_path), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")  # days are UTC days
        chosen = connection.execute(
            # Only well-formed frame rows, one per frame: the demo also writes the malformed and repeated
            # rows the selection must drop.
            "SELECT frame_uri, camera_id, captured_at, image_width, image_height FROM frames WHERE model = ?"
            " AND captured_at IS NOT NULL AND image_width BETWEEN 1 AND 100000 AND image_height BETWEEN 1 AND 100000"
            " AND (?::DATE[] IS NULL OR CAST(captured_at AS DATE) IN (SELECT unnest(?::DATE[])))"
            " QUALIFY row_number() OVER (PARTITION BY frame_uri ORDER BY captured_at) = 1"
            " ORDER BY hash(frame_uri) LIMIT ?",
            [model, days, days, frames],
        ).fetchall()
    truth = read_ground_truth(warehouse_path, model, [row[0] for row in chosen])
    images = [
        {"id": index, "file_name": uri, "camera_id": camera, "captured_at": captured_at.isoformat(), "width": width, "height": height}
        for index, (uri, camera, captured_at, width, height) in enumerate(chosen, start=1)
    ]
    return coco_label_set(images, truth, classes)


def coco_label_set(images: list[dict], truth: dict[str, list[dict]], classes: list[str]) -> dict:
    """COCO of `images` (with ids; file_name = frame URI) annotated with their true boxes from `read_ground_truth`."""
    annotations = []
    for image in images:
        for box in truth.get(image["file_name"], []):
            x_min, y_min, x_max, y_max = (box[corner] for corner in ("x_min", "y_min", "x_max", "y_max"))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": classes.index(box["class_name"]) + 1,
                    "bbox": [x_min, y_min, x_max - x_min, y_max - y_min],
                    "area": (x_max - x_min) * (y_max - y_min),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": index, "name": name} for index, name in enumerate(classes, start=1)]
    return {"images": images, "annotations": annotations, "categories": categories}
