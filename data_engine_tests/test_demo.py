"""The demo warehouse: predictions are the hidden truth corrupted at the `demo:` block's rates, frames show
their objects as their class's shape and colour, and days vary so the selection has budgets to apply."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from data_engine.config.models import FleetConfig
from data_engine.demo import CLASS_COLOURS, DEMO_BUCKET, demo_label_set, read_ground_truth, write_demo_warehouse
from data_engine_tests.conftest import TEST_FLEET

DAY = dt.date(2026, 11, 24)  # not a busy day (busy_day_every 5 counts date ordinals)
NO_CORRUPTION = {"miss_rate": 0, "confusion_rate": 0, "loose_box_rate": 0, "false_positive_rate": 0, "reingested_fraction": 0}
BOX = "class_name, x_min, y_min, x_max, y_max"


def _warehouse(tmp_path: Path, demo: dict, days: int = 1, images: bool = False) -> Path:
    config = FleetConfig.model_validate({**TEST_FLEET, "demo": demo})
    path = tmp_path / "warehouse.duckdb"
    write_demo_warehouse(config, path, tmp_path / "objects", end_date=DAY, days=days, frames_per_camera_per_day=40, write_images=images)
    return path


def _rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


# The predictions of the day's frames (not the malformed rows, which name no frame of the frames table), each
# box once (the repeated last row is the same box).
PREDICTED = (
    f"SELECT DISTINCT frame_uri, {BOX} FROM predictions WHERE model = 'municipals' AND captured_at::DATE = DATE '{DAY}'"
    " AND frame_uri IN (SELECT frame_uri FROM frames WHERE image_height < 1000)"
)
TRUE = f"SELECT frame_uri, {BOX} FROM ground_truth WHERE model = 'municipals'"


def test_without_corruption_the_demo_model_predicts_the_truth(tmp_path):
    path = _warehouse(tmp_path, NO_CORRUPTION)
    truth = _rows(path, TRUE)
    assert len(truth) > 200
    assert sorted(_rows(path, PREDICTED)) == sorted(set(truth))


@pytest.mark.parametrize(
    "demo, check",
    [
        ({"miss_rate": 0.4}, "missed"),
        ({"confusion_rate": 1.0}, "confused"),
        ({"loose_box_rate": 1.0, "loose_box_error": 0.3}, "loose"),
        ({"false_positive_rate": 1.0, "max_clutter_per_frame": 3}, "false_positives"),
    ],
)
def test_each_corruption_happens_at_its_configured_rate(tmp_path, demo, check):
    path = _warehouse(tmp_path, NO_CORRUPTION | demo)
    truth, predicted = _rows(path, TRUE), _rows(path, PREDICTED)
    exact = set(predicted) & set(truth)
    if check == "missed":
        assert 0.33 < 1 - len(exact) / len(truth) < 0.47
        assert set(predicted) <= set(truth)
    elif check == "confused":
        pair = {"PET": "Other PET", "Other PET": "PET"}  # the test fleet's class_overlap pair
        boxes = {(uri, *corners) for uri, _, *corners in predicted}
        for uri, class_name, *corners in truth:
            if class_name in pair:
                assert (uri, pair[class_name], *corners) in predicted, "a confusable object is predicted as its partner"
            else:
                assert (uri, class_name, *corners) in predicted, "other classes are not confused"
            assert (uri, *corners) in boxes
        overlapping = [t for t in truth if t[1] in pair and t in set(predicted)]
        assert overlapping, "some confused objects keep a box of their true class too (the overlap class_overlap flags)"
    elif check == "loose":
        assert len(exact) < 0.05 * len(truth)
        by_frame = {}
        for uri, class_name, *corners in predicted:
            by_frame.setdefault((uri, class_name), []).append(corners)
        for uri, class_name, *corners in truth:
            best = max(_iou(corners, other) for other in by_frame[(uri, class_name)])
            assert best > 0.1, "a loose box still overlaps its object"
    else:
        assert set(truth) <= set(predicted)
        extra = len(predicted) - len(truth)
        frames = len(_rows(path, "SELECT DISTINCT frame_uri FROM frames WHERE model = 'municipals' AND image_height < 1000"))
        assert 1.2 * frames < extra < 1.8 * frames  # 0 to 3 clutter items a frame (1.5 on average), each detected


def _iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_busy_days_and_reingested_frames(tmp_path):
    busy = DAY + dt.timedelta(days=1)  # 2026-11-25: its ordinal is a multiple of 5
    config = FleetConfig.model_validate({**TEST_FLEET, "demo": {"busy_day_every": 5, "busy_day_factor": 3, "reingested_fraction": 0.2}})
    path = tmp_path / "warehouse.duckdb"
    write_demo_warehouse(config, path, tmp_path / "objects", end_date=busy, days=2, frames_per_camera_per_day=10, write_images=False)
    per_day = dict(_rows(path, "SELECT captured_at::DATE, COUNT(DISTINCT frame_uri) FROM frames WHERE model = 'ENS'"
                               " AND image_height < 1000 AND captured_at IS NOT NULL GROUP BY 1"))
    assert per_day == {DAY: 2 * 10, busy: 2 * 30}  # two cameras
    [(again, of_day_before)] = _rows(
        path,
        "SELECT COUNT(DISTINCT p.frame_uri), COUNT(DISTINCT p.frame_uri) FILTER (f.captured_at::DATE = p.captured_at::DATE - 1)"
        f" FROM predictions p JOIN frames f USING (frame_uri) WHERE p.model = 'ENS' AND p.captured_at::DATE = DATE '{busy}'"
        " AND f.captured_at::DATE <> p.captured_at::DATE",
    )
    assert 0 < again == of_day_before < 20, "some of the day before's frames are predicted again, with no new frame row"


def test_a_demo_label_set_of_given_days_holds_only_their_frames_with_their_true_boxes(tmp_path):
    config = FleetConfig.model_validate({**TEST_FLEET, "demo": {"busy_day_every": 0}})
    path = tmp_path / "warehouse.duckdb"
    write_demo_warehouse(config, path, tmp_path / "objects", end_date=DAY, days=3, frames_per_camera_per_day=10, write_images=False)
    classes = config.models["municipals"].classes
    earlier = [DAY - dt.timedelta(days=2), DAY]
    coco = demo_label_set(path, "municipals", classes, frames=10_000, days=earlier)
    assert {image["captured_at"][:10] for image in coco["images"]} == {day.isoformat() for day in earlier}
    assert len(coco["images"]) == len({image["file_name"] for image in coco["images"]}) == 2 * 3 * 10  # three cameras
    truth = read_ground_truth(path, "municipals", [image["file_name"] for image in coco["images"]])
    assert len(coco["annotations"]) == sum(len(boxes) for boxes in truth.values()) > 0
    assert len(demo_label_set(path, "municipals", classes, frames=30)["images"]) == 30  # any day


def test_frames_show_each_object_as_its_class_colour(tmp_path):
    from PIL import Image

    from data_engine.annotation.tasks import frame_path

    path = _warehouse(tmp_path, {}, images=True)
    classes = TEST_FLEET["models"]["municipals"]["classes"]
    uris = [uri for (uri,) in _rows(path, "SELECT frame_uri FROM ground_truth WHERE model = 'municipals' GROUP BY 1 HAVING COUNT(*) = 1")]
    truth = read_ground_truth(path, "municipals", uris)
    assert len(uris) > 10 and all(uri.startswith(f"s3://{DEMO_BUCKET}/") for uri in uris)
    for uri in uris:
        [box] = truth[uri]
        with Image.open(frame_path(tmp_path / "objects", uri)) as image:
            centre = image.convert("RGB").getpixel((int((box["x_min"] + box["x_max"]) / 2), int((box["y_min"] + box["y_max"]) / 2)))
        expected = CLASS_COLOURS[classes.index(box["class_name"])]
        assert all(abs(c - e) <= 25 for c, e in zip(centre, expected)), f"{uri}: {box} drawn in {centre}, not near {expected}"
