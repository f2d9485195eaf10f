"""Benchmark: merging 20k reviewed images into a 500k-image / 5M-annotation label set.

Compares the product's whole merge (`merge_reviewed_tasks` on a local label store: read the export
zip, read and verify the latest version, drop replaced frames, pyodi's coco_merge, write the new
version, move the pointer) against pyodi's `coco_merge` alone on the same base and reviewed files.
Each side runs in its own subprocess so its seconds and peak RSS are its own; the data is generated
in a third one. Half the reviewed frames replace frames already in the set, half are new.

    uv run python -m data_engine_tests.benchmarks.label_merge [--images 500000] [--reviewed 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

CLASSES = ["PET", "Other PET", "HDPE", "Cardboard", "Film", "Metal Can"]
MODEL = "municipals"
WIDTH, HEIGHT = 1920, 1080


def _uri(index: int) -> str:
    camera, minute = index % 40, index // 40
    return f"s3://frames/{MODEL}/cam-{camera:02d}/2026{1 + minute // 40000 % 12:02d}01/{minute % 24:02d}{minute % 60:02d}00-{index:07d}.png"


def _coco_text(image_indexes: list[int], per_image: int, categories: list[tuple[int, str]], seed: int) -> str:
    """CVAT-shaped COCO JSON, built as text (fast, and the parent never holds the dicts)."""
    rng = random.Random(seed)
    images, annotations = [], []
    for image_id, index in enumerate(image_indexes, start=1):
        images.append(
            f'{{"id":{image_id},"width":{WIDTH},"height":{HEIGHT},"file_name":"{_uri(index)}","license":0,'
            f'"flickr_url":"","coco_url":"","date_captured":0}}'
        )
        for _ in range(per_image):
            w, h = rng.uniform(20, 400), rng.uniform(20, 400)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            annotations.append(
                f'{{"id":{len(annotations) + 1},"image_id":{image_id},"category_id":{rng.choice(categories)[0]},'
                f'"segmentation":[],"area":{w * h:.2f},"bbox":[{x:.2f},{y:.2f},{w:.2f},{h:.2f}],"iscrowd":0,'
                f'"attributes":{{"occluded":false,"rotation":0.0}}}}'
            )
    cats = ",".join(f'{{"id":{i},"name":"{n}","supercategory":""}}' for i, n in categories)
    return (
        f'{{"licenses":[{{"name":"","id":0,"url":""}}],"info":{{"description":""}},"categories":[{cats}],'
        f'"images":[{",".join(images)}],"annotations":[{",".join(annotations)}]}}'
    )


def generate(workdir: Path, images: int, per_image: int, reviewed: int) -> None:
    from data_engine.annotation.cvat_export import ANNOTATIONS_PATH
    from data_engine.labels import LabelStore

    canonical = list(enumerate(CLASSES, start=1))
    base = _coco_text(list(range(images)), per_image, canonical, seed=1).encode()
    (workdir / "base.json").write_bytes(base)
    # Reviewed: half re-reviews of frames in the set, half new frames; CVAT numbers labels its own way.
    replaced = random.Random(2).sample(range(images), reviewed // 2)
    new = list(range(images, images + reviewed - reviewed // 2))
    cvat_categories = list(enumerate(reversed(CLASSES), start=1))
    add = _coco_text(replaced + new, per_image, cvat_categories, seed=3).encode()
    (workdir / "add.json").write_bytes(add)
    with zipfile.ZipFile(workdir / "task.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ANNOTATIONS_PATH, add)
    # The product's store holds the base as its latest version (written like any version).
    store = LabelStore.local(workdir / "store")
    version = store.write_version(MODEL, base, {"parent": None, "source": "import", "tasks": {}, "counts": {}})
    store.move_latest(MODEL, version, None, reason="benchmark base")
    print(f"generated: base {len(base) / 1e6:.0f} MB, reviewed {len(add) / 1e6:.0f} MB", file=sys.stderr)


def run_ours(workdir: Path) -> dict:
    from data_engine.annotation.cvat_export import read_export
    from data_engine.labels import LabelStore, TaskExport, merge_reviewed_tasks

    start = time.perf_counter()
    export = TaskExport(task_id=1, updated_date="2026-03-02T10:00:00Z", coco=read_export(workdir / "task.zip", 1))
    outcome = merge_reviewed_tasks(LabelStore.local(workdir / "store"), MODEL, [export], CLASSES)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "counts": outcome.counts.as_dict()}


def run_pyodi(workdir: Path) -> dict:
    from loguru import logger
    from pyodi.apps.coco import coco_merge

    logger.disable("pyodi")
    start = time.perf_counter()
    coco_merge(str(workdir / "base.json"), str(workdir / "add.json"), str(workdir / "pyodi_out.json"))
    return {"seconds": time.perf_counter() - start}


def _child(mode: str, workdir: Path, args: list[str]) -> dict:
    command = [sys.executable, "-m", "data_engine_tests.benchmarks.label_merge", "--child", mode, "--workdir", str(workdir), *args]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500_000)
    parser.add_argument("--annotations-per-image", type=int, default=10)
    parser.add_argument("--reviewed", type=int, default=20_000)
    parser.add_argument("--child", choices=["generate", "ours", "pyodi"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help="keep the generated files here (default: a temp folder)")
    args = parser.parse_args()

    if args.child:
        if args.child == "generate":
            generate(args.workdir, args.images, args.annotations_per_image, args.reviewed)
            result: dict = {}
        else:
            result = (run_ours if args.child == "ours" else run_pyodi)(args.workdir)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="label-merge-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        sizes = ["--images", str(args.images), "--annotations-per-image", str(args.annotations_per_image), "--reviewed", str(args.reviewed)]
        print(f"label set: {args.images} images, {args.images * args.annotations_per_image} annotations; reviewed: {args.reviewed} images")
        _child("generate", workdir, sizes)
        pyodi = _child("pyodi", workdir, [])
        ours = _child("ours", workdir, [])
        counts = ours["counts"]
        expected = args.images + args.reviewed - args.reviewed // 2
        assert counts["images"] == expected, f"our merge has {counts['images']} images, expected {expected}"
        print(f"{'':34}{'seconds':>10}{'peak RSS MB':>14}")
        print(f"{'pyodi coco_merge alone':34}{pyodi['seconds']:>10.1f}{pyodi['peak_rss_mb']:>14.0f}")
        print(f"{'merge_reviewed_tasks (end to end)':34}{ours['seconds']:>10.1f}{ours['peak_rss_mb']:>14.0f}")
        print(f"ratio ours / pyodi: time {ours['seconds'] / pyodi['seconds']:.2f}x, peak RSS {ours['peak_rss_mb'] / pyodi['peak_rss_mb']:.2f}x")
        print(
            f"ours: {counts['images']} images ({counts['images_added']} added, {counts['images_replaced']} replaced),"
            f" {counts['annotations']} annotations; pyodi alone duplicates the {counts['images_replaced']} replaced frames"
        )


if __name__ == "__main__":
    main()
