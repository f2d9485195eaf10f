"""The install works on Python >= 3.11 despite pyodi's ancient pins (see [tool.uv] in pyproject.toml)."""

from __future__ import annotations

import json


def test_pyodi_coco_merge_imports_and_merges(tmp_path):
    from pyodi.apps.coco import coco_merge

    def coco(image_name: str, category: str) -> dict:
        return {
            "images": [{"id": 1, "file_name": image_name, "width": 10, "height": 10}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}],
            "categories": [{"id": 1, "name": category}],
        }

    first, second, output = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "out.json"
    first.write_text(json.dumps(coco("s3://f/1.png", "PET")))
    second.write_text(json.dumps(coco("s3://f/2.png", "HDPE")))
    coco_merge(str(first), str(second), str(output))
    merged = json.loads(output.read_text())
    assert [image["file_name"] for image in merged["images"]] == ["s3://f/1.png", "s3://f/2.png"]
    assert sorted(c["name"] for c in merged["categories"]) == ["HDPE", "PET"]
    assert len(merged["annotations"]) == 2
