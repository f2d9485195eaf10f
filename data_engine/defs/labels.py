"""Stage 4 of the loop: reviewed CVAT tasks merged into versioned training labels, their checks, and
the trainer-ready YOLO export.

Thin: everything about labels comes from `data_engine.labels` (pending tasks, collecting their CVAT
exports, frame mapping, merge, store, validation, splits, YOLO). This module adds partitions, reading
asset outputs, metadata, the asset checks, the merge job and its concurrency tag.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import io
import json
import warnings
from typing import TYPE_CHECKING, Any

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import AnnotationResource
from data_engine.defs.io_manager import output_key
from data_engine.defs.metadata import markdown_table
from data_engine.defs.partitions import model_partitions
from data_engine.defs.resources import LabelStoreResource, ObjectStoreResource

if TYPE_CHECKING:
    from data_engine.objectstore import ObjectStore

GROUP = "labels"
LABEL_MERGE_JOB = "label_merge_job"
# Runs carrying this tag with the same value (the model) run one at a time: tag_concurrency_limits in
# dagster.yaml (applyLimitPerUniqueValue). The label store's conditional pointer write keeps a merge
# correct even without it; the limit keeps merges of one model from redoing each other's work.
MERGE_TAG = "data_engine/label_merge"
YOLO_ZIP = "yolo.zip"

# The checks on training_labels, in the order the UI lists them. All are blocking: a label version
# that fails one does not reach yolo_dataset (and so training) in the run.
CHECKS = {
    "valid_coco": "COCO structure, unique image / annotation / category ids, every reference resolves.",
    "boxes_inside_images": "Every box has positive width and height and lies inside its image.",
    "no_duplicate_images": "No frame URI appears twice (a re-reviewed frame replaces its old annotations).",
    "categories_match_classes": "The categories are exactly the model's classes from the fleet config.",
    "counts_within_bounds": "What this version takes from its parent's labels stays within labels.max_removed_image_fraction"
    " (frames removed) and labels.max_changed_annotation_fraction (annotations deleted or altered); growth never counts.",
}


def merge_tags(model: str) -> dict[str, str]:
    return {MERGE_TAG: model}


def _read_rows(store: "ObjectStore", key: str, columns: list[str] | None = None) -> list[dict[str, Any]] | None:
    """A Parquet asset output as rows, or None when that partition was never materialized."""
    import pyarrow.parquet as pq

    try:
        data = store.get(key)
    except KeyError:
        return None
    return pq.read_table(io.BytesIO(data), columns=columns).to_pylist()


def _check_results(coco: dict, counts: dict, classes: list[str], labels_config, version: str | None) -> list[dg.AssetCheckResult]:
    from data_engine.labels import change_problems, validate_label_set

    problems = validate_label_set(coco, classes)
    problems["counts_within_bounds"] = change_problems(
        counts,
        max_removed_image_fraction=labels_config.max_removed_image_fraction,
        max_changed_annotation_fraction=labels_config.max_changed_annotation_fraction,
    )
    return [
        dg.AssetCheckResult(
            check_name=name,
            passed=not problems[name],
            severity=dg.AssetCheckSeverity.ERROR,
            description=None if not problems[name] else "; ".join(problems[name])[:2000],
            metadata={
                "label_version": version or "none yet",
                "problems": len(problems[name]),
                "first_problems": dg.MetadataValue.json(problems[name]),
            },
        )
        for name in CHECKS
    ]


def build_label_defs(config: FleetConfig) -> dg.Definitions:
    fleet = config
    partitions = model_partitions(fleet)
    with warnings.catch_warnings():
        # Per-partition check results need a partitions_def on the spec, a preview API in Dagster 1.13.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check_specs = [
            dg.AssetCheckSpec(name, asset="training_labels", description=text, blocking=True, partitions_def=partitions)
            for name, text in CHECKS.items()
        ]

    @dg.asset(
        partitions_def=partitions,
        group_name=GROUP,
        kinds={"cvat", "json"},
        deps=[dg.AssetKey("reviewed_tasks")],
        check_specs=check_specs,
    )
    def training_labels(
        context: dg.AssetExecutionContext,
        annotation: AnnotationResource,
        object_store: ObjectStoreResource,
        label_stores: LabelStoreResource,
    ) -> dg.MaterializeResult:
        """The model's training labels: a new immutable COCO version in the label store for every run that
        merges reviewed tasks (`<root>/<model>/versions/<id>/annotations.json` + `manifest.json`, then the
        `latest.json` pointer moves by a conditional write). Tasks recorded in `reviewed_tasks` and not yet
        in the latest manifest (or accepted again since) are exported from CVAT as COCO 1.0 without images,
        their frames mapped back to frame URIs through that day's `review_tasks`, and merged: a re-reviewed
        frame replaces its old annotations. Nothing pending: the materialization says so and writes nothing.
        A failed or malformed export fails the run before anything is written. The blocking checks run on
        a new version before the pointer moves: a version that fails them stays unpublished (trainers never
        read it) and the run fails; otherwise they run on the version the pointer names."""
        from data_engine.annotation.backend import AnnotationError
        from data_engine.labels import (
            ConcurrentMergeError,
            ExportError,
            LabelPolicy,
            LabelStoreError,
            empty_label_set,
            merge_reviewed_tasks,
        )
        from data_engine.annotation.reviewed_exports import collect_reviewed_exports
        from data_engine.labels.reviewed import pending_tasks
        from data_engine.objectstore import ObjectStoreError

        model = context.partition_key
        model_config = fleet.models[model]
        classes = list(model_config.classes)
        store = label_stores.open(model)
        objects = object_store.open()
        reviewed_key = output_key(dg.AssetKey("reviewed_tasks"), model)
        try:
            reviewed = _read_rows(objects, reviewed_key) or []
            head = store.latest(model)
            manifest = store.manifest(model, head.version) if head else None
            pending = pending_tasks(reviewed, manifest["tasks"] if manifest else {})
            metadata: dict[str, Any] = {"reviewed_tasks_recorded": len(reviewed), "reviewed_tasks_path": objects.describe(reviewed_key)}
            exports, skipped, errors = [], [], []
            if pending:
                with annotation.open(logger=context.log) as backend:
                    exports, skipped, errors = collect_reviewed_exports(backend, store.objects, model, pending, logger=context.log)
            if skipped:
                metadata["tasks_skipped"] = markdown_table(skipped)
            if errors and not exports:
                raise ExportError("; ".join(errors))  # nothing mergeable: the run fails, naming each task and the fix
            if not exports:
                version = head.version if head else None
                note = (
                    f"nothing to merge: the {len(reviewed)} reviewed task(s) recorded are in label version {version}"
                    if version
                    else "nothing to merge: no reviewed task recorded yet, and no label version exists"
                )
                if skipped:
                    note += f"; {len(skipped)} recorded task(s) are no longer accepted in the annotation tool"
                context.log.info(note)
                metadata |= {"merged_now": False, "note": note, "tasks_merged": 0}
            else:
                gated: list[dg.AssetCheckResult] = []

                def passes_checks(new_version: str, annotations_json: bytes, new_manifest: dict) -> bool:
                    """The checks run on the new version before `latest` moves to it."""
                    gated[:] = _check_results(
                        json.loads(annotations_json), new_manifest["counts"], classes, model_config.labels, new_version
                    )
                    return all(result.passed for result in gated)

                outcome = merge_reviewed_tasks(
                    store,
                    model,
                    exports,
                    classes,
                    LabelPolicy.from_config(model_config.labels),
                    created_by=f"dagster run {context.run.run_id}",
                    gate=passes_checks,
                )
                version = outcome.version
                if not outcome.published:
                    again = " again (the same merge as a run before: nothing new written)" if outcome.reused else ""
                    note = (
                        f"label version {version} failed its checks{again} and was not published: latest still names"
                        f" {outcome.parent or 'no version'}; fix the reviews (or the config bounds) and re-run"
                    )
                    context.log.error(note)
                    metadata["note"] = note
                names = {str(task["task_id"]): task for task in pending}
                merged_rows = [
                    {"task_id": t, "name": names[t]["name"], "updated_date": names[t]["updated_date"]} for t in outcome.merged_tasks
                ]
                metadata |= {
                    "merged_now": outcome.created,
                    "reused_refused_version": outcome.reused,
                    "published": outcome.published,
                    "tasks_merged": len(outcome.merged_tasks),
                    "merged_tasks": markdown_table(merged_rows),
                    "merged_task_ids": dg.MetadataValue.json([int(t) for t in outcome.merged_tasks]),
                    "merge_attempts": outcome.attempts,
                }
                if outcome.counts and outcome.counts.skipped_annotations:
                    metadata["skipped_annotations"] = dg.MetadataValue.json(outcome.counts.skipped_annotations)
            if version is None:
                manifest, counts = {}, {}
            else:
                if version != (head.version if head else None):  # a version newer than the head read above
                    manifest = store.manifest(model, version)
                counts = manifest["counts"]
            if exports and outcome.created:
                check_results = gated  # the merge's gate checked the new version before publishing it
            else:
                coco = store.label_set(model, version) if version else empty_label_set(classes)
                check_results = _check_results(coco, counts, classes, model_config.labels, version)
        except (AnnotationError, ExportError, LabelStoreError, ConcurrentMergeError, ObjectStoreError) as error:
            raise dg.Failure(description=str(error)) from error

        if version is not None:
            metadata |= {
                "label_version": version,
                "parent_version": manifest.get("parent") or "none",
                "location": store.describe(model, version),
                "latest_pointer": store.objects.describe(f"{model}/latest.json"),
                "images": counts["images"],
                "annotations": counts["annotations"],
                "images_added": counts["images_added"],
                "images_replaced": counts["images_replaced"],
                "images_removed": counts["images_removed"],
                "annotations_added": counts["annotations_added"],
                "annotations_removed": counts["annotations_removed"],
                # What counts_within_bounds limits; versions older than the count do not have it.
                **({"annotations_changed": counts["annotations_changed"]} if "annotations_changed" in counts else {}),
                "tasks_in_version": len(manifest.get("tasks", {})),
                "counts": markdown_table(
                    [{"count": k, "value": v} for k, v in counts.items() if not isinstance(v, dict)], ["count", "value"]
                ),
            }
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=check_results,
            data_version=dg.DataVersion(version) if version else None,
        )

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"yolo"}, deps=[training_labels])
    def yolo_dataset(context: dg.AssetExecutionContext, label_stores: LabelStoreResource) -> dg.MaterializeResult:
        """The latest label version as a trainer-ready YOLO dataset: `<root>/<model>/versions/<id>/yolo.zip`
        with data.yaml, train/val/test lists, labels/<split>/*.txt and frames.csv (where each image is
        fetched from). Splits are deterministic (seeded hash) and grouped by camera and time window
        (labels.split_window_minutes), so near-duplicate frames never straddle splits. Written once per
        version: a re-run finds the zip there and writes nothing."""
        from data_engine.labels import LabelStoreError, SplitSettings, export_yolo, split_summary, yolo_zip
        from data_engine.objectstore import ObjectStoreError

        model = context.partition_key
        model_config = fleet.models[model]
        classes = list(model_config.classes)
        store = label_stores.open(model)
        try:
            head = store.latest(model)
            if head is None:
                raise dg.Failure(
                    f"model {model!r} has no label version yet at {store.describe(model)}, so there is nothing to export:"
                    " no reviewed task has been merged (accept review tasks in CVAT; cvat_review_sensor requests the merge),"
                    f" and no base was imported (`data-engine labels import --model {model} --coco FILE`)"
                )
            coco = store.label_set(model, head.version)
            settings = SplitSettings.from_config(model_config.labels)
            data = yolo_zip(export_yolo(coco, classes, settings=settings))
            written = store.write_version_file(model, head.version, YOLO_ZIP, data)
        except (LabelStoreError, ObjectStoreError) as error:
            raise dg.Failure(description=str(error)) from error
        summary = split_summary(coco, settings)
        path = store.objects.describe(f"{model}/versions/{head.version}/{YOLO_ZIP}")
        context.log.info(f"{path}: {'written' if written else 'already there, nothing written'}")
        return dg.MaterializeResult(
            metadata={
                "label_version": head.version,
                "path": path,
                "written_now": written,
                "bytes": len(data),
                "classes": len(classes),
                **{f"{split}_images": counts["images"] for split, counts in summary.items()},
                "groups": sum(counts["groups"] for counts in summary.values()),
                "splits": markdown_table(
                    [{"split": split, **counts} for split, counts in summary.items()], ["split", "images", "annotations", "groups"]
                ),
                "split_seed": settings.seed,
                "split_window_minutes": int(settings.window.total_seconds() // 60),
            },
            data_version=dg.DataVersion(head.version),
        )

    label_merge_job = dg.define_asset_job(
        LABEL_MERGE_JOB,
        selection=dg.AssetSelection.assets(dg.AssetKey("reviewed_tasks"), training_labels, yolo_dataset),
        # Every run of the job (sensor, launchpad, backfill) carries data_engine/label_merge=<model>.
        config=dg.PartitionedConfig(
            partitions_def=partitions,
            run_config_for_partition_key_fn=lambda _key: {},
            tags_for_partition_key_fn=merge_tags,
        ),
        description="Record the reviewed tasks of one model (run config from cvat_review_sensor), merge them into a"
        " new training-label version with its checks, and export it for training. One run per model at a time.",
    )

    return dg.Definitions(assets=[training_labels, yolo_dataset], jobs=[label_merge_job])
