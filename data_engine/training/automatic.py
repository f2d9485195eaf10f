"""When a model trains by itself: its latest label version has at least `min_new_reviewed_images` more
images than the version it last trained on (or was last asked to train on, so a training still running
is not asked for twice). Label version ids sort by creation time, so the newest baseline is the max."""

from __future__ import annotations

from typing import Any


def training_due(labels: Any, model: str, baselines: list[str | None], min_new_reviewed_images: int) -> tuple[bool, str]:
    """(due, why) for `model`; `labels` is its LabelStore, `baselines` the label versions it trained on or was asked to."""
    head = labels.latest(model)
    if head is None:
        return False, "no label version yet"
    known = [version for version in baselines if version]
    baseline = max(known) if known else None
    if baseline is not None and baseline >= head.version:
        return False, f"the latest label version {head.version} is already trained on (or asked for)"
    new = _images(labels, model, head.version) - (_images(labels, model, baseline) if baseline else 0)
    since = f"label version {baseline}" if baseline else "no training yet"
    if new < min_new_reviewed_images:
        return False, f"{new} new reviewed images since {since}; training starts at {min_new_reviewed_images} (training.auto.min_new_reviewed_images)"
    return True, f"{new} new reviewed images since {since} (>= {min_new_reviewed_images}): training on {head.version}"


def _images(labels: Any, model: str, version: str) -> int:
    return int(labels.manifest(model, version)["counts"]["images"])
