"""Training labels: COCO exports of reviewed tasks merged (pyodi) into immutable, versioned label sets.

The Dagster asset `training_labels` stays thin: it collects reviewed tasks' exports
(`data_engine.annotation.reviewed_exports`; this package never calls an annotation tool), calls `merge_reviewed_tasks`, and reports the outcome; the asset
checks call `validate_label_set` and `change_problems`; trainers get `export_yolo` over `assign_splits`.
"""

from data_engine.labels.coco import ExportError, TaskExport, empty_label_set
from data_engine.labels.merge import LabelPolicy, MergeCounts, MergeResult, merge_label_sets
from data_engine.labels.splits import SplitSettings, assign_splits, group_key, split_summary
from data_engine.labels.store import LabelStore, LabelStoreError, Pointer, PointerMoved, label_store_uri
from data_engine.labels.validation import change_problems, validate_label_set
from data_engine.labels.versioning import (
    ConcurrentMergeError,
    MergeOutcome,
    import_label_set,
    merge_reviewed_tasks,
    rollback_labels,
)
from data_engine.labels.yolo import export_yolo, write_yolo_dataset, yolo_zip

__all__ = [
    "ConcurrentMergeError",
    "ExportError",
    "LabelPolicy",
    "LabelStore",
    "LabelStoreError",
    "MergeCounts",
    "MergeOutcome",
    "MergeResult",
    "Pointer",
    "PointerMoved",
    "SplitSettings",
    "TaskExport",
    "assign_splits",
    "change_problems",
    "empty_label_set",
    "export_yolo",
    "group_key",
    "import_label_set",
    "label_store_uri",
    "merge_label_sets",
    "merge_reviewed_tasks",
    "rollback_labels",
    "split_summary",
    "validate_label_set",
    "write_yolo_dataset",
    "yolo_zip",
]
