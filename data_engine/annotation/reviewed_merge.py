"""Reviewed tasks into a label version, without Dagster: the tasks not yet merged are exported from the
annotation tool (`reviewed_exports`) and handed to `data_engine.labels`, which merges them. The asset
`training_labels` adds the checks and the metadata."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from data_engine.annotation.backend import AnnotationBackend
from data_engine.annotation.reviewed_exports import collect_reviewed_exports
from data_engine.annotation.reviewed_record import ReviewedTask
from data_engine.labels import ExportError, LabelPolicy, LabelStore, MergeOutcome, merge_reviewed_tasks
from data_engine.labels.reviewed import pending_tasks
from data_engine.labels.versioning import Gate


@dataclass
class ReviewedMerge:
    """What a merge of a model's reviewed tasks did."""

    recorded: int  # reviewed tasks in the record
    pending: list[ReviewedTask]  # not merged before this run
    version: str | None  # the latest version afterwards, or the one its checks refused (None: no labels yet)
    manifest: dict[str, Any]  # of `version` ({} without one)
    outcome: MergeOutcome | None = None  # None: nothing was mergeable, nothing written
    skipped: list[dict[str, Any]] = field(default_factory=list)  # task_id, name, reason
    note: str | None = None  # a sentence for the run's log and metadata


def merge_reviewed(
    open_backend: Callable[[], AbstractContextManager[AnnotationBackend]],
    store: LabelStore,
    model: str,
    reviewed: Sequence[ReviewedTask],
    classes: Sequence[str],
    policy: LabelPolicy,
    *,
    created_by: str,
    gate: Gate,
    logger: logging.Logger | None = None,
) -> ReviewedMerge:
    """Merges the reviewed tasks that the latest version does not hold (or holds from an older review).

    The tool is opened only when a task is pending. Tasks that cannot be merged are skipped and reported;
    when none can be, ExportError names each and its fix. `gate` sees a new version before it is published.
    """
    head = store.latest(model)
    manifest = store.manifest(model, head.version) if head else {}
    pending = pending_tasks(reviewed, manifest.get("tasks", {}))
    exports, skipped, errors = [], [], []
    if pending:
        with open_backend() as backend:
            exports, skipped, errors = collect_reviewed_exports(backend, store.objects, model, pending, logger=logger)
    if errors and not exports:
        raise ExportError("; ".join(errors))
    if not exports:
        version = head.version if head else None
        note = (
            f"nothing to merge: the {len(reviewed)} reviewed task(s) recorded are in label version {version}"
            if version
            else "nothing to merge: no reviewed task recorded yet, and no label version exists"
        )
        if skipped:
            note += f"; {len(skipped)} recorded task(s) are no longer accepted in the annotation tool"
        return ReviewedMerge(len(reviewed), pending, version, manifest, skipped=skipped, note=note)

    outcome = merge_reviewed_tasks(store, model, exports, classes, policy, created_by=created_by, gate=gate)
    note = None
    if not outcome.published:
        again = " again (the same merge as a run before: nothing new written)" if outcome.reused else ""
        note = (
            f"label version {outcome.version} failed its checks{again} and was not published: latest still names"
            f" {outcome.parent or 'no version'}; fix the reviews (or the config bounds) and re-run"
        )
    if outcome.version is not None and outcome.version != (head.version if head else None):
        manifest = store.manifest(model, outcome.version)
    return ReviewedMerge(len(reviewed), pending, outcome.version, manifest, outcome, skipped, note)
