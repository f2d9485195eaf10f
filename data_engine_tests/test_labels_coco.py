"""The COCO checks: malformed exports are refused with the problem, and the label-set checks."""

from __future__ import annotations

import json

import pytest

from data_engine.labels import ExportError, change_problems, validate_label_set
from data_engine.labels.coco import check_coco, empty_label_set
from data_engine.labels.validation import box_problems, category_problems, duplicate_image_problems, id_problems
from data_engine_tests.labels_fixtures import CLASSES, coco_export, frame

GOOD = coco_export({frame(index=0): [("PET", [10, 10, 50, 40])], frame(index=1): []})


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.pop("images"), "'images' is missing"),
        (lambda c: c["annotations"][0].pop("bbox"), "annotation 1 needs a 'bbox'"),
        (lambda c: c["annotations"][0].update(image_id=99), "annotation 1 refers to image 99"),
        (lambda c: c["annotations"][0].update(category_id=99), "annotation 1 refers to category 99"),
        (lambda c: c["images"][1].update(id=1), "image id 1 is used more than once"),
        (lambda c: c["images"][0].pop("width"), "needs a positive, finite 'width' and 'height' (has None x 480)"),
    ],
)
def test_malformed_coco_is_rejected_with_the_problem(mutate, expected):
    coco = json.loads(json.dumps(GOOD))
    mutate(coco)
    with pytest.raises(ExportError, match="task 3: the COCO annotations are malformed") as error:
        check_coco(coco, "task 3")
    assert expected in str(error.value)


def test_a_valid_label_set_has_no_problems():
    coco = coco_export({frame(index=i): [("PET", [0, 0, 640, 480])] for i in range(3)})
    assert validate_label_set(coco, CLASSES) == {
        "valid_coco": [],
        "boxes_inside_images": [],
        "no_duplicate_images": [],
        "categories_match_classes": [],
    }
    assert validate_label_set(empty_label_set(CLASSES), CLASSES)["categories_match_classes"] == []


def test_validation_finds_each_problem():
    coco = coco_export(
        {
            frame(index=0): [("PET", [600, 10, 50, 40]), ("PET", [10, 10, 0, 40])],
            frame(index=1): [("HDPE", [-5, 10, 20, 20])],
        },
        labels=["PET", "HDPE", "Glass"],
    )
    coco["images"].append({**coco["images"][0], "id": 3})
    coco["annotations"].append({**coco["annotations"][0], "id": 1, "image_id": 42})
    problems = validate_label_set(coco, CLASSES)
    assert "annotation id 1 is used more than once" in problems["valid_coco"]
    assert "annotation 1 refers to image 42, which does not exist" in problems["valid_coco"]
    assert any("annotation 1 box [600, 10, 50, 40] lies outside" in p for p in problems["boxes_inside_images"])
    assert any("annotation 2 has an empty box" in p for p in problems["boxes_inside_images"])
    assert any("annotation 3 box [-5, 10, 20, 20] lies outside" in p for p in problems["boxes_inside_images"])
    assert problems["no_duplicate_images"] == [f"frame {frame(index=0)} appears more than once"]
    assert problems["categories_match_classes"] == [
        "classes missing from the categories: ['Other PET', 'Cardboard', 'Film', 'Metal Can']",
        "categories that are not model classes: ['Glass']",
    ]


def test_problem_lists_are_capped():
    coco = coco_export({frame(index=i): [("PET", [0, 0, 0, 0])] for i in range(50)})
    problems = box_problems(coco)
    assert len(problems) == 21 and problems[-1] == "... and 30 more"
    assert id_problems(coco) == [] and duplicate_image_problems(coco) == []
    assert category_problems(coco, CLASSES) == []


def test_change_bounds():
    counts = {"parent_images": 1000, "parent_annotations": 10000, "images_removed": 20, "annotations": 13000,
              "annotations_changed": 3000, "changed_annotations_by_frame": {frame(index=1): 40, frame(index=2): 7}}
    assert change_problems(counts, max_removed_image_fraction=0.05, max_changed_annotation_fraction=0.5) == []
    problems = change_problems(counts, max_removed_image_fraction=0.01, max_changed_annotation_fraction=0.25)
    assert problems == [
        "20 of 1000 images removed (2.00%), more than the allowed labels.max_removed_image_fraction 1.00%",
        "3000 of the parent's 10000 annotations were deleted or altered (30.00%), more than the allowed"
        f" labels.max_changed_annotation_fraction 25.00%; most in {frame(index=1)} (40), {frame(index=2)} (7)",
    ]
    first = {"parent_images": 0, "parent_annotations": 0, "images_removed": 0, "annotations": 500, "annotations_changed": 0}
    assert change_problems(first, max_removed_image_fraction=0, max_changed_annotation_fraction=0) == []


def test_growth_is_no_change():
    """Tripling the annotations (new frames, boxes added to old ones) is the loop working, not a change."""
    grown = {"parent_images": 20, "parent_annotations": 76, "images_removed": 0, "annotations": 213, "annotations_changed": 0}
    assert change_problems(grown, max_removed_image_fraction=0.01, max_changed_annotation_fraction=0.25) == []
