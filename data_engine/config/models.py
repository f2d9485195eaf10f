"""Pydantic models of the fleet YAML. The shape is a contract: names may grow, never silently change.

Every cross-field rule lives here, so a bad config fails when it is loaded, not halfway through a run.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Dagster rejects these in a static partition key used inside a MultiPartitionsDefinition
# (dagster._core.definitions.partitions.utils); a test keeps this list in step with Dagster's.
PARTITION_KEY_FORBIDDEN_CHARACTERS = ("|", ",", "[", "]")
PARTITION_KEY_FORBIDDEN_SUBSTRINGS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")

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
Name = Annotated[str, Field(min_length=1, max_length=200)]


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
    s3_prefix: str = "data-engine"


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
    filters: list[SelectionFilter] = Field(default_factory=list)


class ModelConfig(_Strict):
    classes: list[Name] = Field(min_length=1)
    clients: dict[Name, ClientConfig] = Field(min_length=1)
    selection: SelectionConfig

    @property
    def cameras(self) -> list[str]:
        return [camera for client in self.clients.values() for camera in client.cameras]

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        _no_duplicates(self.classes, "class")
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


class FleetConfig(_Strict):
    warehouse: WarehouseConfig
    storage: StorageConfig | None = None
    models: dict[str, ModelConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _partition_keys(self) -> FleetConfig:
        for key in self.models:
            bad = [c for c in PARTITION_KEY_FORBIDDEN_CHARACTERS if c in key]
            bad += [s for s in PARTITION_KEY_FORBIDDEN_SUBSTRINGS if s in key]
            if not key.strip() or key != key.strip() or bad:
                raise ValueError(
                    f"model key {key!r} cannot be a Dagster partition key"
                    f" (no leading/trailing spaces, none of {' '.join(PARTITION_KEY_FORBIDDEN_CHARACTERS)}, '...' or control characters)"
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
