"""Merging reviewed exports with pyodi: replace instead of duplicate, label policies, frame URIs."""

from __future__ import annotations

import json

import pytest

from data_engine.labels import ExportError, LabelPolicy, TaskExport, merge_label_sets, validate_label_set
from data_engine.labels.coco import dumps
from data_engine_tests.labels_fixtures import CLASSES, coco_export, frame, labels_of, task

A, B, C = frame(index=0), frame(index=1), frame(index=2)


def merged(result) -> dict:
    return json.loads(result.annotations_json)


def base_json(frames: dict) -> bytes:
    return dumps(coco_export(frames))


def test_first_merge_from_empty():
    result = merge_label_sets(None, [task(1, {A: [("PET", [1, 2, 3, 4])], B: []})], CLASSES)
    coco = merged(result)
    assert labels_of(coco) == {A: [("PET", [1, 2, 3, 4])], B: []}
    assert [c["name"] for c in coco["categories"]] == CLASSES
    assert not any(validate_label_set(coco, CLASSES).values())
    counts = result.counts
    assert (counts.images, counts.annotations, counts.images_added, counts.images_replaced) == (2, 1, 2, 0)


def test_a_reviewed_frame_replaces_its_old_annotations():
    base = base_json({A: [("PET", [1, 1, 10, 10]), ("HDPE", [5, 5, 10, 10])], B: [("Film", [0, 0, 5, 5])]})
    review = task(2, {A: [("Cardboard", [2, 2, 20, 20])], C: [("PET", [3, 3, 3, 3])]})
    result = merge_label_sets(base, [review], CLASSES)
    coco = merged(result)
    assert labels_of(coco) == {
        A: [("Cardboard", [2, 2, 20, 20])],
        B: [("Film", [0, 0, 5, 5])],
        C: [("PET", [3, 3, 3, 3])],
    }
    assert not any(validate_label_set(coco, CLASSES).values())
    c = result.counts
    assert (c.parent_images, c.parent_annotations) == (2, 3)
    assert (c.images, c.annotations) == (3, 3) == (len(coco["images"]), len(coco["annotations"]))
    assert (c.images_added, c.images_replaced, c.images_removed) == (1, 1, 0)
    assert (c.annotations_added, c.annotations_removed) == (2, 2)
    assert c.annotations_changed == 2 and c.changed_annotations_by_frame == {A: 2}


def test_only_boxes_a_review_deletes_or_alters_count_as_changed():
    """What the bound limits: the parent's boxes that are gone or different, per frame; added ones never count."""
    base = base_json({A: [("PET", [1, 1, 10, 10]), ("HDPE", [5, 5, 10, 10])], B: [("Film", [0, 0, 5, 5])], C: [("PET", [3, 3, 3, 3])]})
    review = task(2, {
        A: [("PET", [1, 1, 10, 10]), ("HDPE", [5, 5, 10, 10]), ("Film", [20, 20, 5, 5])],  # kept both, added one
        B: [("Cardboard", [0, 0, 5, 5])],  # the class altered
        frame(index=3): [("PET", [1, 1, 1, 1])] * 4,  # a new frame
    })
    review = TaskExport(task_id=2, updated_date=review.updated_date, coco=review.coco, removed_frames=[C])
    c = merge_label_sets(base, [review], CLASSES).counts
    assert (c.images_replaced, c.images_removed, c.images_added) == (2, 1, 1)
    assert c.annotations_changed == 2 and c.changed_annotations_by_frame == {B: 1, C: 1}
    assert (c.parent_annotations, c.annotations) == (4, 8)


def test_a_base_with_nan_from_before_the_checks_fails_the_merge_by_name():
    """Label JSON is never written with NaN: a version that holds it (imported before imports were checked)
    fails the merge naming the version and the way out, instead of a new version with NaN in it."""
    base = coco_export({A: [("PET", [1, 1, 10, 10])], B: [("PET", [float("nan"), 1, 1, 1])]})
    review = task(2, {A: [("HDPE", [2, 2, 2, 2])]})
    with pytest.raises(ExportError, match="label version 1 holds numbers that are not JSON .*data-engine labels rollback"):
        merge_label_sets(json.dumps(base).encode(), [review], CLASSES, base_name="label version 1")


def test_plain_pyodi_would_have_duplicated_the_frame(tmp_path):
    """The reason for dropping replaced frames first: pyodi alone appends blindly."""
    from pyodi.apps.coco import coco_merge

    (tmp_path / "base.json").write_bytes(base_json({A: [("PET", [1, 1, 10, 10])]}))
    (tmp_path / "add.json").write_bytes(dumps(coco_export({A: [("HDPE", [1, 1, 10, 10])]})))
    coco_merge(str(tmp_path / "base.json"), str(tmp_path / "add.json"), str(tmp_path / "out.json"))
    images = json.loads((tmp_path / "out.json").read_text())["images"]
    assert [i["file_name"] for i in images] == [A, A]


def test_the_later_review_of_a_frame_wins_whatever_the_order_given():
    early = task(1, {A: [("PET", [1, 1, 1, 1])]}, updated_date="2026-03-01T09:00:00Z")
    late = task(2, {A: [("HDPE", [2, 2, 2, 2])]}, updated_date="2026-03-01T10:00:00+00:00")
    for exports in ([early, late], [late, early]):
        assert labels_of(merged(merge_label_sets(None, exports, CLASSES))) == {A: [("HDPE", [2, 2, 2, 2])]}


def test_removed_frames_leave_the_label_set():
    base = base_json({A: [("PET", [1, 1, 1, 1])], B: [("PET", [1, 1, 1, 1])]})
    review = TaskExport(task_id=5, updated_date="2026-03-02T00:00:00Z", coco=coco_export({}), removed_frames=[B])
    result = merge_label_sets(base, [review], CLASSES)
    assert labels_of(merged(result)) == {A: [("PET", [1, 1, 1, 1])]}
    assert (result.counts.images_removed, result.counts.annotations_removed) == (1, 1)


def test_categories_are_matched_by_name_not_id():
    review = task(3, {A: [("Metal Can", [1, 1, 1, 1]), ("PET", [2, 2, 2, 2])]}, labels=["Metal Can", "PET"])
    coco = merged(merge_label_sets(None, [review], CLASSES))
    assert labels_of(coco) == {A: [("Metal Can", [1, 1, 1, 1]), ("PET", [2, 2, 2, 2])]}
    assert coco["categories"] == [{"id": i, "name": n, "supercategory": ""} for i, n in enumerate(CLASSES, start=1)]


def test_unknown_label_fails_by_default_naming_label_and_task():
    review = task(42, {A: [("Glass", [1, 1, 1, 1])]}, labels=["PET", "Glass"])
    with pytest.raises(ExportError, match=r"task 42: label 'Glass' is not one of the model's classes .*unknown_label"):
        merge_label_sets(None, [review], CLASSES)


def test_unknown_label_skip_drops_its_boxes_and_counts_them():
    review = task(42, {A: [("Glass", [1, 1, 1, 1]), ("PET", [2, 2, 2, 2])]}, labels=["PET", "Glass"])
    result = merge_label_sets(None, [review], CLASSES, LabelPolicy(unknown_label="skip"))
    assert labels_of(merged(result)) == {A: [("PET", [2, 2, 2, 2])]}
    assert result.counts.skipped_annotations == {"Glass": 1}


def test_unknown_label_map_renames_it_and_fails_on_an_unmapped_one():
    review = task(42, {A: [("PET bottle", [1, 1, 1, 1])]}, labels=["PET bottle"])
    policy = LabelPolicy(unknown_label="map", label_mapping={"PET bottle": "PET"})
    assert labels_of(merged(merge_label_sets(None, [review], CLASSES, policy))) == {A: [("PET", [1, 1, 1, 1])]}
    other = task(43, {A: [("Can", [1, 1, 1, 1])]}, labels=["Can"])
    with pytest.raises(ExportError, match="task 43: label 'Can' .*add 'Can' to labels.label_mapping"):
        merge_label_sets(None, [other], CLASSES, policy)


def test_an_unused_unknown_label_is_harmless():
    review = task(42, {A: [("PET", [1, 1, 1, 1])]}, labels=["PET", "Glass"])
    assert labels_of(merged(merge_label_sets(None, [review], CLASSES))) == {A: [("PET", [1, 1, 1, 1])]}


def test_frame_names_become_frame_uris_with_extra_fields():
    coco = coco_export({"000000.png": [("PET", [1, 1, 1, 1])], "000001.png": []})
    uris = {"000000.png": A, "000001.png": B}
    fields = {A: {"camera_id": "cam-01", "captured_at": "2026-03-01T10:15:00Z"}}
    for mapping in (uris, uris.__getitem__):
        export = TaskExport(task_id=1, updated_date="2026-03-02T00:00:00Z", coco=coco, frame_uris=mapping, frame_fields=fields)
        result = merged(merge_label_sets(None, [export], CLASSES))
        assert labels_of(result) == {A: [("PET", [1, 1, 1, 1])], B: []}
        image_a = next(i for i in result["images"] if i["file_name"] == A)
        assert image_a["camera_id"] == "cam-01" and image_a["captured_at"] == "2026-03-01T10:15:00Z"
    missing = TaskExport(task_id=9, updated_date="2026-03-02T00:00:00Z", coco=coco, frame_uris={"000000.png": A})
    with pytest.raises(ExportError, match="task 9: frame '000001.png' has no frame URI"):
        merge_label_sets(None, [missing], CLASSES)


def test_two_frames_mapping_to_one_uri_is_an_error():
    coco = coco_export({"0.png": [], "1.png": []})
    export = TaskExport(task_id=9, updated_date="2026-03-02T00:00:00Z", coco=coco, frame_uris=lambda name: A)
    with pytest.raises(ExportError, match="task 9: frame .* appears twice"):
        merge_label_sets(None, [export], CLASSES)


def test_a_base_with_other_category_ids_is_brought_onto_the_model_classes():
    base = dumps(coco_export({A: [("Film", [1, 1, 1, 1])]}, labels=["Film", "PET"]))
    result = merge_label_sets(base, [task(1, {B: [("PET", [2, 2, 2, 2])]})], CLASSES)
    coco = merged(result)
    assert labels_of(coco) == {A: [("Film", [1, 1, 1, 1])], B: [("PET", [2, 2, 2, 2])]}
    assert not any(validate_label_set(coco, CLASSES).values())


def test_bad_updated_date_is_an_export_error():
    with pytest.raises(ExportError, match="task 1: updated_date 'yesterday'"):
        merge_label_sets(None, [task(1, {A: []}, updated_date="yesterday")], CLASSES)
