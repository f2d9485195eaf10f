"""What the simulated reviewer draws for one frame: the pre-annotations corrected toward the hidden truth,
with mistakes of its own at a configured rate. Pure: boxes and a random generator in, boxes and the
mistakes made out, so the same frame and seed always get the same review.

A careful reviewer turns the predictions into the truth: it keeps a prediction that matches a true
object, fixes its class or box when they are off, adds objects the model missed and deletes boxes on
nothing. With probability `error_rate` per true object (and per false positive) it errs instead:
- `missed_correction`: a wrong prediction of the object is left as predicted;
- `wrong_class`: the object is labelled with another class of the model;
- `sloppy_box`: the object's box is drawn loosely (IoU with the truth below ~0.8);
- `missed_object`: an object the model missed is not added;
- `kept_false_positive`: a box on nothing is not deleted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# A prediction belongs to a true object when their boxes overlap at least this much (any class).
MATCH_IOU = 0.3
# A prediction that overlaps its object this much, with the right class, needs no correction.
CORRECT_IOU = 0.9


@dataclass(frozen=True)
class PixelBox:
    class_name: str
    x_min: float
    y_min: float
    x_max: float
    y_max: float

    def iou(self, other: PixelBox) -> float:
        width = min(self.x_max, other.x_max) - max(self.x_min, other.x_min)
        height = min(self.y_max, other.y_max) - max(self.y_min, other.y_min)
        if width <= 0 or height <= 0:
            return 0.0
        overlap = width * height
        return overlap / (self.area + other.area - overlap)

    @property
    def area(self) -> float:
        return max(0.0, self.x_max - self.x_min) * max(0.0, self.y_max - self.y_min)

    def as_dict(self) -> dict:
        return {"class_name": self.class_name, "box": [round(v, 2) for v in (self.x_min, self.y_min, self.x_max, self.y_max)]}


@dataclass(frozen=True)
class Mistake:
    kind: str
    truth: PixelBox | None  # the true object (None for a kept false positive)
    submitted: PixelBox | None  # what the reviewer drew instead (None for a missed object)

    def details(self) -> dict:
        return {
            "truth": self.truth.as_dict() if self.truth else None,
            "submitted": self.submitted.as_dict() if self.submitted else None,
        }


def match(predicted: list[PixelBox], truth: list[PixelBox]) -> dict[int, int]:
    """truth index -> prediction index, greedily by IoU (each used once), pairs of IoU >= MATCH_IOU."""
    pairs = sorted(
        ((t.iou(p), ti, pi) for ti, t in enumerate(truth) for pi, p in enumerate(predicted)), key=lambda pair: (-pair[0], pair[1], pair[2])
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for iou, ti, pi in pairs:
        if iou < MATCH_IOU:
            break
        if ti not in matched and pi not in used:
            matched[ti] = pi
            used.add(pi)
    return matched


def sloppy(box: PixelBox, rng: random.Random, width: int, height: int) -> PixelBox:
    """The box drawn loosely: each side moved outward by 15-35% of the box's size, within the image."""
    w, h = box.x_max - box.x_min, box.y_max - box.y_min
    return PixelBox(
        box.class_name,
        max(0.0, box.x_min - rng.uniform(0.15, 0.35) * w),
        max(0.0, box.y_min - rng.uniform(0.15, 0.35) * h),
        min(float(width), box.x_max + rng.uniform(0.15, 0.35) * w),
        min(float(height), box.y_max + rng.uniform(0.15, 0.35) * h),
    )


def review_frame(
    predicted: list[PixelBox],
    truth: list[PixelBox],
    classes: list[str],
    error_rate: float,
    rng: random.Random,
    size: tuple[int, int],
) -> tuple[list[PixelBox], list[Mistake]]:
    """The boxes the reviewer submits for a frame, and the mistakes among them."""
    matched = match(predicted, truth)
    submitted: list[PixelBox] = []
    mistakes: list[Mistake] = []
    for ti, true_box in enumerate(truth):
        prediction = predicted[matched[ti]] if ti in matched else None
        if rng.random() >= error_rate:
            submitted.append(true_box)
            continue
        kinds = ["wrong_class", "sloppy_box"] if len(classes) > 1 else ["sloppy_box"]
        if prediction is None:
            kinds.append("missed_object")
        elif prediction.class_name != true_box.class_name or prediction.iou(true_box) < CORRECT_IOU:
            kinds.append("missed_correction")
        kind = rng.choice(kinds)
        if kind == "missed_object":
            drawn = None
        elif kind == "missed_correction":
            drawn = prediction
        elif kind == "wrong_class":
            drawn = PixelBox(rng.choice([c for c in classes if c != true_box.class_name]), true_box.x_min, true_box.y_min, true_box.x_max, true_box.y_max)
        else:
            drawn = sloppy(true_box, rng, *size)
        if drawn is not None:
            submitted.append(drawn)
        mistakes.append(Mistake(kind, true_box, drawn))
    for pi in sorted(set(range(len(predicted))) - set(matched.values())):
        if rng.random() < error_rate:
            submitted.append(predicted[pi])
            mistakes.append(Mistake("kept_false_positive", None, predicted[pi]))
    return submitted, mistakes
