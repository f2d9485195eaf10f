"""Trainer-ready YOLO files derived from a label version.

Layout (relative to the dataset folder):

    data.yaml                 names, nc, train/val/test lists (no `path`: trainers resolve from the yaml's folder)
    train.txt, val.txt, ...   ./images/<split>/<name> per frame
    labels/<split>/<name>.txt one line per box: class cx cy w h, normalised to [0, 1]
    frames.csv                split,image,frame_uri,width,height: where the trainer fetches each image from

Images are not copied: `<name>` is a stable hash of the frame URI plus its extension, and the trainer
downloads each frame URI to images/<split>/<name> (labels/ mirrors images/, as YOLO expects).
"""

from __future__ import annotations

import csv
import hashlib
import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from data_engine.labels.splits import SPLITS, SplitSettings, assign_splits


def image_name(frame_uri: str) -> str:
    suffix = PurePosixPath(frame_uri.split("?")[0]).suffix.lower() or ".jpg"
    return hashlib.sha1(frame_uri.encode()).hexdigest()[:20] + suffix


def yolo_line(class_index: int, bbox: Sequence[float], width: float, height: float) -> str:
    x, y, w, h = bbox
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    return f"{class_index} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}"


def export_yolo(
    coco: Mapping[str, Any], classes: Sequence[str], splits: Mapping[str, str] | None = None, settings: SplitSettings = SplitSettings()
) -> dict[str, bytes]:
    """Every file of the YOLO dataset, by relative path (the caller writes them to disk or a bucket).

    `splits` (frame URI -> split) defaults to `assign_splits(coco["images"], settings)`.
    Category names map to class indexes in config order; boxes are clipped to the image.
    """
    if splits is None:
        splits = assign_splits(coco["images"], settings)
    class_index = {name: index for index, name in enumerate(classes)}
    category_index = {c["id"]: class_index[c["name"]] for c in coco["categories"] if c["name"] in class_index}
    lines: dict[int, list[str]] = {image["id"]: [] for image in coco["images"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in coco["images"]}
    for annotation in coco["annotations"]:
        index = category_index.get(annotation["category_id"])
        if index is None:
            raise ValueError(f"annotation {annotation['id']} has category {annotation['category_id']}, which is not a model class")
        lines[annotation["image_id"]].append(yolo_line(index, annotation["bbox"], *sizes[annotation["image_id"]]))

    files: dict[str, bytes] = {}
    lists: dict[str, list[str]] = {split: [] for split in SPLITS}
    frames = io.StringIO()
    table = csv.writer(frames, lineterminator="\n")
    table.writerow(["split", "image", "frame_uri", "width", "height"])
    for image in sorted(coco["images"], key=lambda i: i["file_name"]):
        split, name = splits[image["file_name"]], image_name(image["file_name"])
        stem = name.rsplit(".", 1)[0]
        files[f"labels/{split}/{stem}.txt"] = "".join(f"{line}\n" for line in lines[image["id"]]).encode()
        lists[split].append(f"./images/{split}/{name}")
        table.writerow([split, f"images/{split}/{name}", image["file_name"], image["width"], image["height"]])
    for split in SPLITS:
        files[f"{split}.txt"] = "".join(f"{path}\n" for path in lists[split]).encode()
    files["frames.csv"] = frames.getvalue().encode()
    data = {"train": "train.txt", "val": "val.txt", "test": "test.txt", "nc": len(classes), "names": dict(enumerate(classes))}
    files["data.yaml"] = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()
    return files


def write_yolo_dataset(
    coco: Mapping[str, Any], classes: Sequence[str], out_dir: str | Path, settings: SplitSettings = SplitSettings()
) -> Path:
    """Write `export_yolo`'s files under `out_dir`; returns the data.yaml path."""
    out_dir = Path(out_dir)
    for relative, data in export_yolo(coco, classes, settings=settings).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return out_dir / "data.yaml"


def yolo_zip(files: Mapping[str, bytes]) -> bytes:
    """`export_yolo`'s files as one zip, byte-for-byte the same for the same files (sorted names, fixed
    timestamps), so the same label version always gives the same archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()
