"""Operations on a model's label history: merge reviewed tasks, import a base, roll back.

Each one reads `latest`, writes a new immutable version (or picks an existing one) and moves the
pointer with a conditional write. A merge that loses the race re-reads the new latest and merges on
top of it, so two concurrent merges never lose an update; a crash between writing a version and
moving the pointer leaves an orphan version that nothing points at, and a rerun merges again.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from data_engine.labels.coco import Coco, ExportError, TaskExport, dumps, parse_updated_date
from data_engine.labels.merge import LabelPolicy, MergeCounts, conform, merge_label_sets
from data_engine.labels.store import CorruptPointer, LabelStore, LabelStoreError, Pointer, PointerMoved, check_version_id, sha256
from data_engine.labels.validation import validate_label_set

DEFAULT_MAX_ATTEMPTS = 5


class ConcurrentMergeError(RuntimeError):
    """The pointer kept moving under us; another writer is busy. Rerun later."""


@dataclass(frozen=True)
class MergeOutcome:
    """What `merge_reviewed_tasks` did, for the asset's metadata."""

    version: str | None  # the latest version afterwards, or the refused one (None: still no labels)
    parent: str | None
    created: bool  # False: every task was already merged, nothing written
    # True: an earlier run's identical version (same parent, same content) was refused by its gate and
    # is gated again instead of written again (a re-run with raised bounds publishes it).
    reused: bool = False
    merged_tasks: list[str] = field(default_factory=list)
    already_merged_tasks: list[str] = field(default_factory=list)
    counts: MergeCounts | None = None
    attempts: int = 1
    location: str = ""
    # False: the new version was written but its gate refused it, so `latest` still names the parent.
    published: bool = True


# Decides, before the pointer moves, whether a new version may become latest:
# (version id, its annotations.json, its manifest) -> publish?
Gate = Callable[[str, bytes, dict[str, Any]], bool]


def merge_reviewed_tasks(
    store: LabelStore,
    model: str,
    exports: Sequence[TaskExport],
    classes: Sequence[str],
    policy: LabelPolicy = LabelPolicy(),
    *,
    created_by: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    gate: Gate | None = None,
) -> MergeOutcome:
    """Merge the reviewed tasks not yet in the model's latest version into a new version.

    A task counts as merged when the latest manifest lists its id with the same or a newer
    `updated_date`; a re-accepted task (newer updated_date) is merged again and replaces its frames.
    The first merge starts from an empty label set (or from one `import_label_set` wrote).
    `gate` sees the new version before the pointer moves: when it refuses, the version stays written
    but unpublished, so trainers reading `latest.json` never see a label set that failed its checks.
    A refused version is recorded; the same merge run again (same parent, same result) gates that
    version again instead of writing another copy, so failed re-runs do not pile up versions.
    """
    exports = _newest_per_task(exports)
    for attempt in range(1, max_attempts + 1):
        head = store.latest(model)
        manifest = store.manifest(model, head.version) if head else None
        merged_before: dict[str, Any] = manifest["tasks"] if manifest else {}
        pending = [e for e in exports if not _already_merged(e, merged_before)]
        done = [str(e.task_id) for e in exports if _already_merged(e, merged_before)]
        if not pending:
            return MergeOutcome(
                version=head.version if head else None,
                parent=manifest.get("parent") if manifest else None,
                created=False,
                already_merged_tasks=done,
                attempts=attempt,
                location=store.describe(model, head.version) if head else store.describe(model),
            )
        # The base bytes go straight into the merge (no name holds them here), so it can free them early.
        result = merge_label_sets(
            store.annotations(model, head.version) if head else None,
            pending,
            classes,
            policy,
            base_name=f"label version {head.version}" if head else "",
        )
        tasks = dict(merged_before)
        merged_tasks = [{"task_id": str(e.task_id), "updated_date": e.updated_date} for e in pending]
        for entry in merged_tasks:
            tasks[entry["task_id"]] = {"updated_date": entry["updated_date"]}
        parent = head.version if head else None
        digest = sha256(json.dumps([parent, sha256(result.annotations_json), merged_tasks]).encode())
        version = store.refused_version(model, digest)
        reused = version is not None
        if reused:
            manifest_of_version = store.manifest(model, version)
        else:
            manifest_of_version = {
                "parent": parent,
                "source": "merge",
                "created_by": created_by,
                "classes": list(classes),
                "merged_tasks": merged_tasks,
                "tasks": tasks,
                "counts": result.counts.as_dict(),
            }
            version = store.write_version(model, result.annotations_json, manifest_of_version)
        outcome = MergeOutcome(
            version=version,
            parent=parent,
            created=True,
            reused=reused,
            merged_tasks=[e["task_id"] for e in merged_tasks],
            already_merged_tasks=done,
            counts=result.counts,
            attempts=attempt,
            location=store.describe(model, version),
        )
        if gate is not None and not gate(version, result.annotations_json, manifest_of_version):
            store.record_refused(model, digest, version)
            return replace(outcome, published=False)
        try:
            store.move_latest(model, version, head, reason="merge", moved_by=created_by)
        except PointerMoved:
            # Someone merged meanwhile: our version is an orphan; merge again on top of theirs.
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
            continue
        return outcome
    raise ConcurrentMergeError(
        f"the latest label version of {model!r} moved {max_attempts} times while merging; another merge is running."
        " Limit merges of one model to one at a time (concurrency pool) and rerun"
    )


def import_label_set(
    store: LabelStore,
    model: str,
    coco: Coco,
    classes: Sequence[str],
    policy: LabelPolicy = LabelPolicy(),
    *,
    source_name: str = "imported label set",
    created_by: str | None = None,
) -> str:
    """Make an existing COCO label set (file_name = frame URI) the model's latest version.

    Its categories are matched to the model's classes by name, like a reviewed task's. It must pass
    the content checks a merge's version passes before it is published (ExportError naming each
    problem; nothing written). Fails with PointerMoved if the pointer moves meanwhile (an import is a
    one-off; rerun it).
    """
    conformed, skipped = conform(coco, classes, policy, source_name)
    if problems := {check: found for check, found in validate_label_set(conformed, classes).items() if found}:
        raise ExportError(
            f"{source_name} fails the label checks, nothing imported: "
            + "; ".join(f"{check}: {'; '.join(found)}" for check, found in problems.items())
        )
    head = store.latest(model)
    data = dumps(conformed)
    images, annotations = len(conformed["images"]), len(conformed["annotations"])
    counts = MergeCounts(
        parent_images=0, parent_annotations=0, images=images, annotations=annotations, images_added=images,
        images_replaced=0, images_removed=0, annotations_added=annotations, annotations_removed=0, annotations_changed=0,
        skipped_annotations=dict(skipped),
    )
    version = store.write_version(
        model,
        data,
        {
            "parent": head.version if head else None,
            "source": "import",
            "source_name": source_name,
            "created_by": created_by,
            "classes": list(classes),
            "merged_tasks": [],
            "tasks": {},
            "counts": counts.as_dict(),
        },
    )
    store.move_latest(model, version, head, reason=f"import {source_name}", moved_by=created_by)
    return version


def rollback_labels(
    store: LabelStore, model: str, version: str, *, rolled_back_by: str, reason: str = ""
) -> Pointer | None:
    """Point the model's latest at an existing version of that model (recording who and why).

    Only a version id listed by `store.versions(model)` is accepted (never a path to another model's
    version). A corrupt `latest.json` is replaced (this is how to repair it). The tasks merged after that
    version are no longer in the latest manifest, so the next merge merges them again if they are
    still offered; reject them in CVAT first if they were the problem. Returns the moved pointer, or
    None when `version` already was latest (nothing changed).
    """
    check_version_id(model, version)
    if version not in store.versions(model):
        raise LabelStoreError(
            f"label version {version!r} of model {model!r} does not exist (or is incomplete) at {store.describe(model)};"
            f" list the versions with `data-engine labels versions --model {model}`"
        )
    try:
        head = store.latest(model)
    except CorruptPointer as corrupt:
        head = Pointer(version="(corrupt latest.json)", etag=corrupt.etag, record={})
    if head is None:
        raise LabelStoreError(f"model {model!r} has no latest label version to roll back from")
    if head.version == version:
        return None
    return store.move_latest(model, version, head, reason=f"rollback: {reason}" if reason else "rollback", moved_by=rolled_back_by)


def _already_merged(export: TaskExport, merged: dict[str, Any]) -> bool:
    entry = merged.get(str(export.task_id))
    return entry is not None and parse_updated_date(entry["updated_date"], export.name) >= parse_updated_date(export.updated_date, export.name)


def _newest_per_task(exports: Sequence[TaskExport]) -> list[TaskExport]:
    newest: dict[str, TaskExport] = {}
    for export in exports:
        key = str(export.task_id)
        if key not in newest or parse_updated_date(export.updated_date, export.name) > parse_updated_date(newest[key].updated_date, export.name):
            newest[key] = export
    return list(newest.values())


