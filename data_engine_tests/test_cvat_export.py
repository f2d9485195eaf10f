"""Reading CVAT COCO 1.0 export zips: the annotations inside, and clear errors for broken ones."""

from __future__ import annotations

import io
import zipfile

import pytest

from data_engine.annotation.cvat_export import read_export
from data_engine.labels import ExportError
from data_engine_tests.cvat_server.coco import export_zip
from data_engine_tests.labels_fixtures import coco_export, frame

GOOD = coco_export({frame(index=0): [("PET", [10, 10, 50, 40])], frame(index=1): []})


def test_reads_a_cvat_export():
    assert read_export(export_zip(GOOD), task=7) == GOOD


def test_reads_an_export_from_a_path(tmp_path):
    path = tmp_path / "task_7.zip"
    path.write_bytes(export_zip(GOOD))
    assert read_export(path, task=7) == GOOD


@pytest.mark.parametrize(
    "archive, expected",
    [
        (export_zip(GOOD, corruption="truncated"), r"task 7: the export is not a readable zip .*truncated"),
        (export_zip(GOOD, corruption="invalid_json"), r"task 7: annotations/instances_default.json is not valid JSON"),
        (b"<html>502 Bad Gateway</html>", r"task 7: the export is not a readable zip"),
        (b"", r"task 7: the export is not a readable zip"),
    ],
    ids=["truncated", "invalid_json", "not_a_zip", "empty"],
)
def test_broken_exports_name_the_task_and_the_fault(archive, expected):
    with pytest.raises(ExportError, match=expected):
        read_export(archive, task=7)


def test_export_without_the_coco_file():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("annotations.xml", "<annotations/>")
    with pytest.raises(ExportError, match=r"task 7: the export has no annotations/instances_default.json .*COCO 1.0"):
        read_export(buffer.getvalue(), task=7)
