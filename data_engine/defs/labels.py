"""Stage 4 of the loop: reviewed tasks merged into versioned training labels, their checks, and the
trainer-ready YOLO export.

Thin: the merge is `data_engine.annotation.reviewed_merge` (exports from the tool, handed to
`data_engine.labels`), and labels, checks, splits and YOLO come from `data_engine.labels`. This module adds
partitions, the record of reviewed tasks as a real input, metadata, the asset checks, the merge job and its
concurrency tag.
"""

# No `from __future__ import annotations`: Dagster reads the context annotation at definition time.
import json
import warnings
from typing import TYPE_CHECKING, Any

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.cvat_resource import AnnotationResource
from data_engine.defs.metadata import markdown_table
from data_engine.defs.partitions import model_partitions
from data_engine.defs.resources import LabelStoreResource

if TYPE_CHECKING:
    from data_engine.annotation.reviewed_merge import ReviewedMerge
    from data_engine.labels import LabelStore

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


def _merge_metadata(merge: "ReviewedMerge", store: "LabelStore", model: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"reviewed_tasks_recorded": merge.recorded}
    if merge.skipped:
        metadata["tasks_skipped"] = markdown_table(merge.skipped)
    if merge.note:
        metadata["note"] = merge.note
    outcome = merge.outcome
    if outcome is None:
        metadata |= {"merged_now": False, "tasks_merged": 0}
    else:
        names = {str(task.task_id): task for task in merge.pending}
        merged_rows = [
            {"task_id": t, "name": names[t].name, "updated_date": names[t].updated_date.isoformat()} for t in outcome.merged_tasks
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
    if merge.version is None:
        return metadata
    manifest, counts = merge.manifest, merge.manifest["counts"]
    return metadata | {
        "label_version": merge.version,
        "parent_version": manifest.get("parent") or "none",
        "location": store.describe(model, merge.version),
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
        "counts": markdown_table([{"count": k, "value": v} for k, v in counts.items() if not isinstance(v, dict)], ["count", "value"]),
    }


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

    @dg.asset(partitions_def=partitions, group_name=GROUP, kinds={"json"}, check_specs=check_specs)
    def training_labels(
        context: dg.AssetExecutionContext,
        reviewed_tasks: list,
        annotation: AnnotationResource,
        label_stores: LabelStoreResource,
    ) -> dg.MaterializeResult:
        """The model's training labels: a new immutable COCO version in the label store for every run that
        merges reviewed tasks (`<root>/<model>/versions/<id>/annotations.json` + `manifest.json`, then the
        `latest.json` pointer moves by a conditional write). Tasks recorded in `reviewed_tasks` and not yet
        in the latest manifest (or accepted again since) are exported from the annotation tool as COCO
        without images, their frames mapped back to frame URIs through each batch's own record, and merged:
        a re-reviewed frame replaces its old annotations. Nothing pending: the materialization says so and
        writes nothing. A task that cannot be merged is skipped and reported; when none can be, the run
        fails naming each. The blocking checks run on a new version before the pointer moves: a version that
        fails them stays unpublished (trainers never read it) and the run fails; otherwise they run on the
        version the pointer names."""
        from data_engine.annotation.backend import AnnotationError
        from data_engine.annotation.batch_record import BatchRecordError
        from data_engine.annotation.reviewed_merge import merge_reviewed
        from data_engine.labels import ConcurrentMergeError, ExportError, LabelPolicy, LabelStoreError, empty_label_set
        from data_engine.objectstore import ObjectStoreError

        model = context.partition_key
        model_config = fleet.models[model]
        classes = list(model_config.classes)
        store = label_stores.open(model)
        gated: list[dg.AssetCheckResult] = []

        def passes_checks(new_version: str, annotations_json: bytes, new_manifest: dict) -> bool:
            """The checks run on the new version before `latest` moves to it."""
            gated[:] = _check_results(json.loads(annotations_json), new_manifest["counts"], classes, model_config.labels, new_version)
            return all(result.passed for result in gated)

        try:
            merge = merge_reviewed(
                lambda: annotation.open(logger=context.log),
                store,
                model,
                reviewed_tasks,
                classes,
                LabelPolicy.from_config(model_config.labels),
                created_by=f"dagster run {context.run.run_id}",
                gate=passes_checks,
                logger=context.log,
            )
            if merge.outcome is not None and merge.outcome.created:
                check_results = gated  # the merge's gate checked the new version before publishing it
            else:
                coco = store.label_set(model, merge.version) if merge.version else empty_label_set(classes)
                check_results = _check_results(coco, merge.manifest.get("counts", {}), classes, model_config.labels, merge.version)
        except (AnnotationError, BatchRecordError, ExportError, LabelStoreError, ConcurrentMergeError, ObjectStoreError) as error:
            raise dg.Failure(description=str(error)) from error
        if merge.note:
            (context.log.info if merge.outcome is None else context.log.error)(merge.note)
        return dg.MaterializeResult(
            metadata=_merge_metadata(merge, store, model),
            check_results=check_results,
            data_version=dg.DataVersion(merge.version) if merge.version else None,
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
