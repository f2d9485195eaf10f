"""YOLO export and grouped, deterministic, leakage-free splits; the `labels:` config section."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from data_engine.config.models import LabelsConfig
from data_engine.labels import SplitSettings, assign_splits, export_yolo, group_key, write_yolo_dataset
from data_engine.labels.splits import camera_and_time
from data_engine.labels.yolo import image_name, yolo_line
from data_engine_tests.labels_fixtures import CLASSES, coco_export, frame


def many_frames(cameras=8, hours=24, per_hour=5) -> dict:
    frames = {}
    for c in range(cameras):
        for h in range(hours):
            for i in range(per_hour):
                frames[frame(camera=f"cam-{c:02d}", time=f"{h:02d}{i * 10:02d}00", index=i)] = [("PET", [10, 20, 100, 50])]
    return frames


def test_yolo_line_is_normalised_center_and_size():
    assert yolo_line(2, [10, 20, 100, 50], 200, 100) == "2 0.300000 0.450000 0.500000 0.500000"
    assert yolo_line(0, [-10, 0, 20, 10], 100, 100) == "0 0.050000 0.050000 0.100000 0.100000"  # clipped


def test_export_yolo_files():
    a, b = frame(index=0), frame(index=1)
    coco = coco_export({a: [("HDPE", [64, 48, 64, 48]), ("Metal Can", [0, 0, 640, 480])], b: []})
    files = export_yolo(coco, CLASSES, splits={a: "train", b: "val"})
    name_a, name_b = image_name(a), image_name(b)
    assert name_a.endswith(".png")
    assert files[f"labels/train/{name_a[:-4]}.txt"] == b"2 0.150000 0.150000 0.100000 0.100000\n5 0.500000 0.500000 1.000000 1.000000\n"
    assert files[f"labels/val/{name_b[:-4]}.txt"] == b""
    assert files["train.txt"] == f"./images/train/{name_a}\n".encode() and files["test.txt"] == b""
    data = yaml.safe_load(files["data.yaml"])
    assert data == {"train": "train.txt", "val": "val.txt", "test": "test.txt", "nc": 6, "names": dict(enumerate(CLASSES))}
    assert f"train,images/train/{name_a},{a},640,480" in files["frames.csv"].decode()


def test_frames_of_one_camera_and_hour_share_a_split():
    coco = coco_export(many_frames())
    settings = SplitSettings(ratios={"train": 0.6, "val": 0.2, "test": 0.2}, seed=7)
    splits = assign_splits(coco["images"], settings)
    groups: dict[str, set[str]] = {}
    for image in coco["images"]:
        groups.setdefault(group_key(image, settings.window), set()).add(splits[image["file_name"]])
    assert len(groups) == 8 * 24
    assert all(len(s) == 1 for s in groups.values())  # no group straddles splits
    shares = {s: sum(v == s for v in splits.values()) / len(splits) for s in ("train", "val", "test")}
    assert 0.5 < shares["train"] < 0.7 and 0.1 < shares["val"] < 0.3 and 0.1 < shares["test"] < 0.3


def test_splits_are_deterministic_across_processes_and_seeds():
    coco = coco_export(many_frames(cameras=3, hours=10, per_hour=2))
    splits = assign_splits(coco["images"], SplitSettings(seed=1))
    code = (
        "from data_engine.labels import assign_splits, SplitSettings\n"
        "from data_engine_tests.labels_fixtures import coco_export\n"
        "from data_engine_tests.test_labels_yolo import many_frames\n"
        "import json; print(json.dumps(assign_splits(coco_export(many_frames(cameras=3, hours=10, per_hour=2))['images'], SplitSettings(seed=1))))"
    )
    import json

    other = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert other == splits
    assert assign_splits(coco["images"], SplitSettings(seed=2)) != splits


def test_adding_frames_never_moves_existing_ones():
    settings = SplitSettings(seed=3)
    small = coco_export(many_frames(cameras=2, hours=6))
    large = coco_export(many_frames(cameras=4, hours=12))
    before, after = assign_splits(small["images"], settings), assign_splits(large["images"], settings)
    assert all(after[uri] == split for uri, split in before.items())


def test_camera_and_time_come_from_fields_then_the_uri():
    window = dt.timedelta(hours=1)
    uri = frame(camera="cam-02", day="20260301", time="101500")
    assert camera_and_time({"file_name": uri}) == ("cam-02", dt.datetime(2026, 3, 1, 10, 15, tzinfo=dt.timezone.utc))
    fields = {"file_name": "s3://b/x.png", "camera_id": "cam-09", "captured_at": "2026-03-01T10:59:00+00:00"}
    assert camera_and_time(fields) == ("cam-09", dt.datetime(2026, 3, 1, 10, 59, tzinfo=dt.timezone.utc))
    assert group_key(fields, window) == group_key({**fields, "captured_at": "2026-03-01T10:01:00Z"}, window)
    assert group_key(fields, window) != group_key({**fields, "captured_at": "2026-03-01T11:01:00Z"}, window)
    assert group_key({"file_name": "s3://b/site/x.png"}, window) == "s3://b/site|undated"


def test_split_settings_from_config_and_dataset_on_disk(tmp_path):
    config = LabelsConfig(split_ratios={"train": 0.5, "val": 0.5, "test": 0}, split_seed=4, split_window_minutes=30)
    settings = SplitSettings.from_config(config)
    assert settings.window == dt.timedelta(minutes=30) and settings.seed == 4
    coco = coco_export(many_frames(cameras=2, hours=4))
    data_yaml = write_yolo_dataset(coco, CLASSES, tmp_path / "ds", settings)
    assert yaml.safe_load(data_yaml.read_text())["nc"] == len(CLASSES)
    assert (tmp_path / "ds" / "test.txt").read_text() == ""
    listed = (tmp_path / "ds" / "train.txt").read_text().splitlines() + (tmp_path / "ds" / "val.txt").read_text().splitlines()
    assert len(listed) == len(coco["images"])


@pytest.mark.parametrize(
    "section, message",
    [
        ({"unknown_label": "map"}, "needs a label_mapping"),
        ({"label_mapping": {"bottle": "PET"}}, "only used with unknown_label: map"),
        ({"split_ratios": {"train": 0.9, "val": 0.2, "test": 0}}, "must add up to 1"),
        ({"unknown_label": "drop"}, "unknown_label"),
        ({"split_window_minutes": 0}, "split_window_minutes"),
        ({"bucket": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_labels_config_rejects_bad_values(section, message):
    with pytest.raises(ValidationError, match=message):
        LabelsConfig(**section)


def test_label_mapping_must_target_a_model_class():
    from data_engine.config.models import ModelConfig

    model = {
        "classes": CLASSES,
        "clients": {"acme": {"cameras": ["cam-01"]}},
        "selection": {"start_date": "2026-01-01", "max_frames_per_day": 1, "max_frames_per_camera_per_day": 1},
    }
    assert ModelConfig(**model).labels == LabelsConfig()  # the section is optional
    bad = {**model, "labels": {"unknown_label": "map", "label_mapping": {"bottle": "Glass"}}}
    with pytest.raises(ValidationError, match="'bottle' maps to 'Glass', which is not one of the model's classes"):
        ModelConfig(**bad)
    shadow = {**model, "labels": {"unknown_label": "map", "label_mapping": {"PET": "HDPE"}}}
    with pytest.raises(ValidationError, match="'PET' is already one of the model's classes"):
        ModelConfig(**shadow)
