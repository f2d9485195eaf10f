"""Pydantic models of the fleet YAML. The shape is a contract: names may grow, never silently change.

Every cross-field rule lives here, so a bad config fails when it is loaded, not halfway through a run.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from data_engine.annotation import naming

# Model keys are path segments, S3 key parts, CVAT names and Dagster partition keys at once (DESIGN.md):
# only these characters, so a key can never climb out of its folder (`..`, `/`) or split a partition key
# (`|`, `,`). A test checks that nothing Dagster forbids in a partition key can match.
MODEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
# A prefix under which keys are written (S3 or a folder): relative, no `.`/`..` segment, no empty segment.
_KEY_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]+$")

# BigQuery table ids: [project.]dataset.table. Identifiers cannot be query parameters, so they are
# validated here and later quoted by sqlglot; nothing from config is pasted into SQL as text.
_TABLE_ID = re.compile(r"^(?:[a-z][a-z0-9-]{4,28}[a-z0-9]\.)?[A-Za-z_][A-Za-z0-9_]{0,1023}\.[A-Za-z_][A-Za-z0-9_-]{0,1023}$")


def _check_table_id(value: str) -> str:
    if not _TABLE_ID.match(value):
        raise ValueError(
            f"invalid table identifier {value!r}: expected [project.]dataset.table with letters, digits,"
            " '_' (and '-' in the project or table name)"
        )
    return value


TableId = Annotated[str, AfterValidator(_check_table_id)]


def _check_key_prefix(value: str) -> str:
    segments = value.split("/") if value else []
    if any(not _KEY_PREFIX_SEGMENT.match(s) or s in (".", "..") for s in segments):
        raise ValueError(
            f"invalid prefix {value!r}: expected a relative path like 'data-engine' or 'team/labels' whose"
            " segments use letters, digits, '_', '-' and '.' (no leading or double '/', no '.' or '..' segment)"
        )
    return value


KeyPrefix = Annotated[str, AfterValidator(_check_key_prefix)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
# AWS Batch job queue and job definition names (the queue may also be given by its ARN).
_BATCH_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
_BATCH_QUEUE = r"^(?:arn:aws[a-z-]*:batch:[a-z0-9-]+:\d{12}:job-queue/)?[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseConfig(_Strict):
    """Where production predictions live, and what one query may cost."""

    predictions_table: TableId
    frames_table: TableId
    # Ledger of frames already selected for review, so a frame is never sent twice.
    selections_table: TableId
    max_bytes_billed: int = Field(gt=0)


class StorageConfig(_Strict):
    """Object store for asset outputs in the prod profile (the local profile uses DATA_ENGINE_HOME)."""

    s3_bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")]
    s3_prefix: KeyPrefix = "data-engine"


class ClientConfig(_Strict):
    cameras: list[Name] = Field(min_length=1)


class _FilterBase(_Strict):
    """Fields every filter shares: an optional name (defaults to the kind), a scope and a budget."""

    name: Name | None = None
    clients: list[Name] | None = None
    cameras: list[Name] | None = None
    max_frames: int | None = Field(default=None, ge=0)

    @property
    def reason(self) -> str:
        """The name recorded in a candidate's `reasons`."""
        return self.name or self.kind  # type: ignore[attr-defined]


class SizeClassFilter(_FilterBase):
    """Detections of some classes whose box covers a given fraction of the image."""

    kind: Literal["size_class"]
    classes: list[Name] = Field(min_length=1)
    min_area_fraction: float = Field(default=0.0, ge=0, le=1)
    max_area_fraction: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> SizeClassFilter:
        if self.min_area_fraction > self.max_area_fraction:
            raise ValueError(
                f"min_area_fraction ({self.min_area_fraction}) is greater than max_area_fraction ({self.max_area_fraction})"
            )
        return self


class ClassOverlapFilter(_FilterBase):
    """Two detections of different classes overlapping in one frame (models without class-agnostic NMS)."""

    kind: Literal["class_overlap"]
    min_iou: float = Field(gt=0, le=1)
    class_pairs: list[tuple[Name, Name]] | None = None

    @model_validator(mode="after")
    def _distinct_pairs(self) -> ClassOverlapFilter:
        for first, second in self.class_pairs or []:
            if first == second:
                raise ValueError(f"class pair [{first}, {second}] names the same class twice; pairs are of different classes")
        return self


class ConfidenceBandFilter(_FilterBase):
    """Detections the model is unsure about."""

    kind: Literal["confidence_band"]
    min_score: float = Field(ge=0, le=1)
    max_score: float = Field(ge=0, le=1)
    classes: list[Name] | None = None

    @model_validator(mode="after")
    def _band(self) -> ConfidenceBandFilter:
        if self.min_score > self.max_score:
            raise ValueError(f"min_score ({self.min_score}) is greater than max_score ({self.max_score})")
        return self


class EmptyFramesFilter(_FilterBase):
    """A deterministic sample of frames with no detection at all (missed objects hide there)."""

    kind: Literal["empty_frames"]
    max_frames: int = Field(ge=0)


SelectionFilter = Annotated[
    Union[SizeClassFilter, ClassOverlapFilter, ConfidenceBandFilter, EmptyFramesFilter],
    Field(discriminator="kind"),
]


class SelectionConfig(_Strict):
    start_date: dt.date
    max_frames_per_day: int = Field(ge=0)
    max_frames_per_camera_per_day: int = Field(ge=0)
    # A frame's filters come back from the warehouse as the bits of one INT64 (bit i: the i-th filter).
    filters: list[SelectionFilter] = Field(default_factory=list, max_length=62)


class SplitRatios(_Strict):
    train: float = Field(default=0.8, ge=0, le=1)
    val: float = Field(default=0.1, ge=0, le=1)
    test: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitRatios:
        total = self.train + self.val + self.test
        if abs(total - 1) > 1e-6:
            raise ValueError(f"split_ratios must add up to 1 (train + val + test = {total:g})")
        return self


class LabelsConfig(_Strict):
    """The model's versioned training labels: where they live, how a merge treats labels, and its bounds."""

    # None: the fleet's `storage.s3_bucket`. Layout under it: <prefix>/<model>/versions/..., latest.json.
    s3_bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")] | None = None
    prefix: KeyPrefix = "labels"
    # A reviewed label that is not one of the model's classes: fail the merge (naming label and task),
    # skip its annotations, or map it to a class through `label_mapping`.
    unknown_label: Literal["fail", "skip", "map"] = "fail"
    label_mapping: dict[Name, Name] = Field(default_factory=dict)
    # Asset-check bounds on what one merge takes from the labels its parent already had, as fractions
    # of the parent's counts: frames removed, and annotations deleted or altered. Added ones never count.
    max_removed_image_fraction: float = Field(default=0.01, ge=0, le=1)
    max_changed_annotation_fraction: float = Field(default=0.25, ge=0, le=1)
    split_ratios: SplitRatios = Field(default_factory=SplitRatios)
    split_seed: int = 0
    # Frames of one camera within one window go to the same split, so near-duplicates never straddle.
    split_window_minutes: int = Field(default=60, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _renamed_bound(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_annotation_change_fraction" in data:
            raise ValueError(
                "max_annotation_change_fraction was replaced by max_changed_annotation_fraction, which bounds only the"
                " parent's annotations that a merge deletes or alters (added ones, the loop's growth, no longer count):"
                " rename the key (the default is 0.25)"
            )
        return data

    @model_validator(mode="after")
    def _mapping_only_with_map(self) -> LabelsConfig:
        if self.unknown_label == "map" and not self.label_mapping:
            raise ValueError("unknown_label: map needs a label_mapping {reviewed label: model class}")
        if self.unknown_label != "map" and self.label_mapping:
            raise ValueError(f"label_mapping is only used with unknown_label: map (it is {self.unknown_label!r})")
        return self


_TASK_NAME_PREFIX = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}$"


def _check_pattern(value: str | None) -> str | None:
    """Compile the pattern with the engine that matches it (sql/task_models.sql on DuckDB, whose
    regexes are RE2 like BigQuery's), so a Python-only regex fails here and not on every sensor tick.
    DuckDB is imported only when a pattern is configured, to keep loading the code location cheap."""
    if value is not None:
        import duckdb

        try:
            with duckdb.connect(":memory:") as connection:
                connection.execute("SELECT regexp_matches('', ?)", [value]).fetchall()
        except duckdb.Error as error:
            reason = str(error).removeprefix("Invalid Input Error: ")
            raise ValueError(
                f"task_name_pattern {value!r} is not an RE2 regular expression ({reason}); RE2 has no lookahead,"
                " lookbehind or backreferences: rewrite the pattern without them, or remove the key to use the default"
            ) from None
    return value


class CvatSettings(_Strict):
    """What only CVAT has: jobs, assignees, cloud storage, upload settings."""

    segment_size: int = Field(default=50, ge=1, le=10_000)  # frames per CVAT job
    assignees: list[Name] = Field(default_factory=list)  # CVAT usernames, round robin over jobs
    # Frames in S3/GCS are attached through this CVAT cloud storage (prod); the local profile uploads files.
    cloud_storage_id: int | None = Field(default=None, ge=1)
    # Key of a manifest (.jsonl) in the cloud storage, sent with tasks of at least manifest_min_frames frames.
    manifest: str | None = Field(default=None, pattern=r"\.jsonl$")
    manifest_min_frames: int = Field(default=100, ge=1)
    image_quality: int = Field(default=70, ge=1, le=100)
    annotation_batch_size: int = Field(default=500, ge=1, le=10_000)  # shapes per PATCH


# Keys of the deprecated `cvat:` section that now sit under `annotation.cvat`.
_CVAT_ONLY_KEYS = tuple(CvatSettings.model_fields)


class AnnotationConfig(_Strict):
    """How a model's review tasks look in the annotation tool (all optional; defaults suit a small team).

    Task names (`data_engine.annotation.naming`) read `<task_name_prefix>-<model>-<YYYY-MM-DD>-<NNN>` (a
    day's candidates) or `<task_name_prefix>-<model>-rereview-<label>` (frames of a label version sent back
    for review); they are the idempotency key of
    task creation, and `task_name_pattern` (RE2 syntax, matched with REGEXP_CONTAINS) tells the review
    sensor which model a task belongs to. Its default matches exactly the names this model creates.
    `backend`, when set, is the tool this model's tasks must go to (a profile with the other one refuses
    to make them); unset, the profile's tool is used.
    """

    backend: Literal["cvat", "label_studio"] | None = None
    project_name: Name | None = None  # default: "<task_name_prefix> <model>"
    task_name_prefix: Annotated[str, Field(pattern=_TASK_NAME_PREFIX)] = "data-engine"
    task_name_pattern: Annotated[str | None, AfterValidator(_check_pattern)] = None
    max_frames_per_task: int = Field(default=200, ge=1, le=10_000)
    frame_order: Literal["priority", "captured_at"] = "priority"
    cvat: CvatSettings = Field(default_factory=CvatSettings)

    def project_name_for(self, model: str) -> str:
        return self.project_name or naming.project_name(self.task_name_prefix, model)

    def task_name_pattern_for(self, model: str) -> str:
        if self.task_name_pattern is not None:
            return self.task_name_pattern
        return naming.batch_name_pattern(self.task_name_prefix, model)

    def task_name(self, model: str, day: dt.date, sequence: int) -> str:
        return naming.day_batch_name(self.task_name_prefix, model, day, sequence)

    def rereview_name(self, model: str, label: str) -> str:
        return naming.rereview_batch_name(self.task_name_prefix, model, label)


class BatchTrainingConfig(_Strict):
    """Training on AWS Batch (the prod profile): the queue, and the job definition registered from here.

    Owned by the Batch launcher (data_engine.defs.batch_launcher). The defaults fit the 4x V100 queue
    (p3.8xlarge: 4 GPUs, 32 vCPUs, 244 GiB of which the ECS agent and OS keep some; a job asking for it
    all stays RUNNABLE forever).
    """

    job_queue: Annotated[str, Field(pattern=_BATCH_QUEUE)]
    job_definition: Annotated[str, Field(pattern=_BATCH_NAME)]
    image: Annotated[str, Field(min_length=1)]
    # The container's command is `command + [entrypoint]` ("train" or "evaluate"); empty runs the
    # image's ENTRYPOINT with the entrypoint name as its argument.
    command: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    gpus: int = Field(default=4, ge=0, le=16)
    vcpus: int = Field(default=32, ge=1)
    memory_mib: int = Field(default=235_000, ge=4)
    shared_memory_mib: int = Field(default=65_536, ge=1)  # /dev/shm for the data loaders' workers
    job_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")] | None = None
    log_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_/.#-]{1,512}$")] = "/aws/batch/job"
    attempts: int = Field(default=3, ge=1, le=10)
    # Batch retries an attempt whose status reason / container reason matches one of these globs
    # (spot reclaims and host failures, image pulls); anything else ends the job (a final EXIT rule).
    retry_on_status_reasons: list[str] = Field(default_factory=lambda: ["Host EC2*"], max_length=2)
    retry_on_reasons: list[str] = Field(default_factory=lambda: ["CannotPullContainerError*"], max_length=2)
    attempt_timeout_s: int = Field(default=48 * 3600, ge=60)
    # A job waiting for capacity longer than this is cancelled and the step fails with the reason.
    runnable_timeout_s: float = Field(default=3600, gt=0)
    poll_interval_s: float = Field(default=10, gt=0)  # first describe_jobs delay; grows to the max
    max_poll_interval_s: float = Field(default=120, gt=0)
    # Pipes message chunks on S3: one read per interval, faster than a writer uploading every 10 s
    # (dagster-pipes' default), so a backlog is caught up before the session closes.
    message_poll_interval_s: float = Field(default=5, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> BatchTrainingConfig:
        if self.shared_memory_mib >= self.memory_mib:
            raise ValueError(
                f"training.batch.shared_memory_mib ({self.shared_memory_mib}) must be below memory_mib ({self.memory_mib})"
            )
        if self.max_poll_interval_s < self.poll_interval_s:
            raise ValueError("training.batch.max_poll_interval_s must be at least poll_interval_s")
        return self


class AutoTrainingConfig(_Strict):
    """Training that starts by itself: when the latest label version has `min_new_reviewed_images` more
    images than the version the model's current candidate (or production model) was trained on."""

    min_new_reviewed_images: int = Field(default=200, ge=1)
    paused: bool = False


class TrainingConfig(_Strict):
    """How the model trains: where runs and checkpoints live, the trainer's inputs, how a checkpoint is chosen.

    The model store (DESIGN.md, Model store) lives under `s3://<s3_bucket or storage.s3_bucket>/<prefix>/`
    in prod and `$DATA_ENGINE_HOME/models/` locally. `batch` is required by the prod profile.
    """

    s3_bucket: Annotated[str, Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")] | None = None
    prefix: str = "models"
    batch: BatchTrainingConfig | None = None
    # Passed as they are to the trainer (the `hyperparameters` extra); the reference trainer's are in README.
    hyperparameters: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], int | float | str | bool] = Field(
        default_factory=dict
    )
    # The key of each checkpoint's validation `metrics` (checkpoints.json) that selected_checkpoint maximises.
    selection_metric: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")] = "map"
    # Weights to start from (an s3:// URI, or a file path in the local profile); none: train from scratch.
    initial_weights_uri: Name | None = None
    # The local profile's trainer interpreter, in the trainer's own environment. DATA_ENGINE_TRAINER_PYTHON
    # overrides it; with neither, the environment made by `data-engine trainer-env` is used.
    local_python: Name | None = None
    auto: AutoTrainingConfig = Field(default_factory=AutoTrainingConfig)


class Perturbation(_Strict):
    """A label-preserving change applied to every test image by the trainer's evaluate entrypoint.

    `strength`: brightness, the factor on pixel values (0.6 darkens); blur, the Gaussian sigma in pixels;
    jpeg, the JPEG quality (1-100); noise, the standard deviation of Gaussian noise on [0, 1] pixels.
    """

    kind: Literal["brightness", "blur", "jpeg", "noise"]
    strength: float = Field(gt=0)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.strength:g}"


def _default_perturbations() -> list[Perturbation]:
    return [
        Perturbation(kind="brightness", strength=0.6),
        Perturbation(kind="blur", strength=2.0),
        Perturbation(kind="jpeg", strength=30),
        Perturbation(kind="noise", strength=0.05),
    ]


class MLTestConfig(_Strict):
    """An external test suite run on the candidate (the role Lakera's MLTest had).

    `command` is run without a shell; `{candidate}`, `{test_set}` and `{report}` in its arguments become
    the candidate checkpoint's URI, the test split's COCO file and the path where it must write its JSON
    report. Exit status 0 passes, anything else fails; the report is attached either way.
    """

    command: list[Name] = Field(min_length=1)
    timeout_seconds: int = Field(default=3600, ge=1)


class EvaluationConfig(_Strict):
    """How evaluation_report scores a candidate against production on the test split."""

    # The deployed score threshold per class (precision, recall and false positives per image are read there).
    score_thresholds: dict[Name, float] = Field(default_factory=dict)
    default_score_threshold: float = Field(default=0.5, ge=0, le=1)
    # A slice (client, camera) with fewer ground-truth boxes than this is reported but not gated.
    slice_min_support: int = Field(default=50, ge=1)
    bootstrap_resamples: int = Field(default=1000, ge=100, le=100_000)
    bootstrap_seed: int = 0
    perturbations: list[Perturbation] = Field(default_factory=_default_perturbations)
    mltest: MLTestConfig | None = None

    def threshold(self, class_name: str) -> float:
        return self.score_thresholds.get(class_name, self.default_score_threshold)

    @model_validator(mode="after")
    def _thresholds_in_range(self) -> EvaluationConfig:
        for class_name, value in self.score_thresholds.items():
            if not 0 <= value <= 1:
                raise ValueError(f"evaluation.score_thresholds: {class_name!r} is {value}; a score threshold lies in [0, 1]")
        _no_duplicates([p.name for p in self.perturbations], "evaluation.perturbations entry")
        return self


class GatesConfig(_Strict):
    """What a candidate must show before it becomes production (AP values are fractions, 0.01 = 1 AP point)."""

    # Overall AP@[.50:.95]: candidate >= production - ap_tolerance, and the bootstrap CI's lower bound > -ap_tolerance.
    ap_tolerance: float = Field(default=0.005, ge=0, le=1)
    # No class with at least class_min_support test boxes may lose more than class_max_drop AP.
    class_max_drop: float = Field(default=0.02, ge=0, le=1)
    class_min_support: int = Field(default=20, ge=1)
    # No reliable slice (evaluation.slice_min_support) may lose more AP than its kind's drop.
    slice_max_drop: dict[Literal["client", "camera"], float] = Field(default_factory=lambda: {"client": 0.03, "camera": 0.05})
    # Per perturbation: the candidate's AP drop from clean may exceed production's by at most this.
    robustness_max_extra_drop: float = Field(default=0.02, ge=0, le=1)
    # With no production model yet, the candidate must reach these instead.
    min_ap: float = Field(default=0.0, ge=0, le=1)
    min_ap50: float = Field(default=0.0, ge=0, le=1)


class PromotionConfig(_Strict):
    """Where a promotion or rollback publishes the production model besides production.json."""

    # An SSM parameter (String) set to production.json's record on every move, e.g. /data-engine/municipals/production.
    ssm_parameter: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]{1,1000}$")] | None = None


class ModelConfig(_Strict):
    classes: list[Name] = Field(min_length=1)
    clients: dict[Name, ClientConfig] = Field(min_length=1)
    selection: SelectionConfig
    annotation: AnnotationConfig = Field(default_factory=AnnotationConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    # With an annotation server configured, review_tasks follows review_candidates by itself (declarative
    # automation); false: review tasks are made only when someone materializes review_tasks.
    review_automation: bool = True

    @property
    def cameras(self) -> list[str]:
        return [camera for client in self.clients.values() for camera in client.cameras]

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        _no_duplicates(self.classes, "class")
        for class_name in self.classes:
            if "|" in class_name:  # class pairs travel to the warehouse as "first|second"
                raise ValueError(f"class {class_name!r} contains '|', which class names cannot contain")
            if naming.is_prediction_label(class_name):  # a re-review's prediction group; exports drop it
                raise ValueError(f"class {class_name!r} starts with {naming.prediction_label('')!r}, which names model predictions in reviews")
        owner: dict[str, str] = {}
        for client_name, client in self.clients.items():
            for camera in client.cameras:
                if camera in owner:
                    raise ValueError(f"camera {camera!r} is listed under two clients: {owner[camera]!r} and {client_name!r}")
                owner[camera] = client_name
        reasons = [f.reason for f in self.selection.filters]
        _no_duplicates(reasons, "filter name (give filters of the same kind distinct `name`s)")
        for index, selection_filter in enumerate(self.selection.filters):
            _check_filter(selection_filter, index, self)
        return self

    @model_validator(mode="after")
    def _evaluation_names_classes(self) -> ModelConfig:
        for class_name in self.evaluation.score_thresholds:
            if class_name not in self.classes:
                raise ValueError(f"evaluation.score_thresholds: {class_name!r} is not one of the model's classes {self.classes}")
        return self

    @model_validator(mode="after")
    def _label_mapping_targets_classes(self) -> ModelConfig:
        for label, target in self.labels.label_mapping.items():
            if target not in self.classes:
                raise ValueError(
                    f"labels.label_mapping: {label!r} maps to {target!r}, which is not one of the model's classes {self.classes}"
                )
            if label in self.classes:
                raise ValueError(f"labels.label_mapping: {label!r} is already one of the model's classes; map only unknown labels")
        return self


class DemoConfig(_Strict):
    """The local profile's demo warehouse (`data-engine demo-data`, or written on first use): how its
    demo model's predictions corrupt the frames' hidden truth, and how its days vary, so review, training
    and every selection count have something real to work on. Rates are probabilities per object."""

    miss_rate: float = Field(default=0.1, ge=0, le=1)  # a true object with no detection
    # An object of a configured confusable pair (class_overlap's class_pairs) predicted as its partner
    # class; half of those also keep a box of the true class, the overlapping pair class_overlap flags.
    confusion_rate: float = Field(default=0.3, ge=0, le=1)
    loose_box_rate: float = Field(default=0.25, ge=0, le=1)  # a detection whose box is off ...
    loose_box_error: float = Field(default=0.3, gt=0, le=1)  # ... by up to this fraction of its size per side
    false_positive_rate: float = Field(default=0.35, ge=0, le=1)  # a clutter distractor detected as some class
    max_clutter_per_frame: int = Field(default=3, ge=0, le=20)
    empty_frame_rate: float = Field(default=0.15, ge=0, le=1)  # frames with no object (clutter only)
    # Every busy_day_every-th day (by date; 0: never) has busy_day_factor times the frames, so the
    # per-camera and per-day budgets drop frames on those days.
    busy_day_every: int = Field(default=5, ge=0)
    busy_day_factor: int = Field(default=6, ge=1, le=50)
    # Of each day's frames, this fraction is inferred again with the next day's predictions (a re-ingested
    # backlog): selected on both days, the cross-day ledger drops them the second time.
    reingested_fraction: float = Field(default=0.1, ge=0, le=1)


class FleetConfig(_Strict):
    warehouse: WarehouseConfig
    storage: StorageConfig | None = None
    models: dict[str, ModelConfig] = Field(min_length=1)
    demo: DemoConfig = Field(default_factory=DemoConfig)

    @model_validator(mode="before")
    @classmethod
    def _deprecated_cvat_sections(cls, data: Any) -> Any:
        """Configs written before the annotation section keep working: `models.<m>.cvat` becomes
        `models.<m>.annotation` (its CVAT-only keys under `annotation.cvat`), with a warning saying so."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            return data
        models = {}
        for key, model in data["models"].items():
            if isinstance(model, dict) and "cvat" in model:
                if "annotation" in model:
                    raise ValueError(f"models.{key} has both `cvat:` and `annotation:`; move the `cvat:` keys into `annotation:`")
                warnings.warn(
                    f"models.{key}.cvat is deprecated: rename it to `annotation:` and move {', '.join(_CVAT_ONLY_KEYS)}"
                    " (those present) into `annotation.cvat:`",
                    FutureWarning,
                    stacklevel=2,
                )
                old = dict(model["cvat"] or {})
                section = {k: v for k, v in old.items() if k not in _CVAT_ONLY_KEYS}
                cvat_only = {k: v for k, v in old.items() if k in _CVAT_ONLY_KEYS}
                model = {k: v for k, v in model.items() if k != "cvat"} | {"annotation": section | ({"cvat": cvat_only} if cvat_only else {})}
            models[key] = model
        return {**data, "models": models}

    @model_validator(mode="after")
    def _model_keys(self) -> FleetConfig:
        for key in self.models:
            if not MODEL_KEY.match(key):
                raise ValueError(
                    f"model key {key!r} may contain only letters, digits, '_' and '-' (starting with a letter or digit,"
                    " at most 100): it becomes a folder and S3 key part, a CVAT name and a Dagster partition key;"
                    " rename the model"
                )
        return self

    @property
    def partitions_start_date(self) -> dt.date:
        """The daily partitions start at the earliest model's start date."""
        return min(model.selection.start_date for model in self.models.values())


def _no_duplicates(values: list[str], what: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what}: {value!r}")
        seen.add(value)


def _check_filter(selection_filter: SelectionFilter, index: int, model: ModelConfig) -> None:
    where = f"selection.filters[{index}] ({selection_filter.kind})"
    named_classes: list[str] = list(getattr(selection_filter, "classes", None) or [])
    for pair in getattr(selection_filter, "class_pairs", None) or []:
        named_classes.extend(pair)
    for class_name in named_classes:
        if class_name not in model.classes:
            raise ValueError(f"{where}: class {class_name!r} is not one of the model's classes {model.classes}")
    for client in selection_filter.clients or []:
        if client not in model.clients:
            raise ValueError(f"{where}: client {client!r} is not one of the model's clients {sorted(model.clients)}")
    for camera in selection_filter.cameras or []:
        if camera not in model.cameras:
            raise ValueError(f"{where}: camera {camera!r} is not one of the model's cameras {model.cameras}")
