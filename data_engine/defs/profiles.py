"""Which resource implementation each profile uses (DESIGN.md, Profiles)."""

from __future__ import annotations

import os

import dagster as dg

from data_engine.config import FleetConfig
from data_engine.defs.batch_launcher import BatchTrainerLauncher
from data_engine.defs.cvat_resource import AnnotationResource, CvatResource, LabelStudioResource
from data_engine.defs.io_manager import REVIEWED_TASKS_IO_MANAGER, ArrowParquetIOManager, ReviewedTasksIOManager
from data_engine.defs.local_launcher import TRAINER_PYTHON_ENV, LocalTrainerLauncher
from data_engine.defs.resources import (
    BigQueryWarehouseResource,
    DuckDBWarehouseResource,
    LabelStoreResource,
    LocalObjectStoreResource,
    ModelStoreResource,
    ObjectStoreResource,
    S3ObjectStoreResource,
    WarehouseResource,
)
from data_engine.labels.store import label_store_uri
from data_engine.settings import Settings
from data_engine.training.store import model_store_uri
from data_engine.training.trainer_env import TRAINER_DIR


def resources_for(settings: Settings, config: FleetConfig) -> dict[str, object]:
    if settings.profile == "local":
        store: ObjectStoreResource = LocalObjectStoreResource(root=str(settings.objects_root))
        warehouse: WarehouseResource = DuckDBWarehouseResource(
            path=str(settings.warehouse_path), objects_root=str(settings.objects_root)
        )
    else:
        if config.storage is None:
            raise ValueError("the prod profile needs a `storage:` section (s3_bucket, s3_prefix) in the fleet config")
        store = S3ObjectStoreResource(bucket=config.storage.s3_bucket, prefix=config.storage.s3_prefix)
        warehouse = BigQueryWarehouseResource(
            project=dg.EnvVar("GOOGLE_CLOUD_PROJECT"),
            predictions_table=config.warehouse.predictions_table,
            frames_table=config.warehouse.frames_table,
            selections_table=config.warehouse.selections_table,
            max_bytes_billed=config.warehouse.max_bytes_billed,
        )
    resources: dict[str, object] = {
        "warehouse": warehouse,
        "object_store": store,
        "io_manager": ArrowParquetIOManager(store=store),
        REVIEWED_TASKS_IO_MANAGER: ReviewedTasksIOManager(store=store),
        "annotation": annotation_resource(settings),
        "label_stores": label_stores(settings, config),
        "model_stores": ModelStoreResource(locations={model: model_store_uri(settings, config, model) for model in config.models}),
    }
    if settings.profile == "prod":
        resources["trainer"] = BatchTrainerLauncher.for_fleet(config)
    else:
        resources["trainer"] = local_trainer_launcher(settings, config)
    return resources


def label_stores(settings: Settings, config: FleetConfig) -> LabelStoreResource:
    """`$DATA_ENGINE_HOME/labels` locally; each model's `labels:` bucket and prefix in prod."""
    return LabelStoreResource(locations={model: label_store_uri(settings, config, model) for model in config.models})


def annotation_resource(settings: Settings) -> AnnotationResource:
    """CVAT in prod, and in the local profile when CVAT_URL is set (DESIGN.md); otherwise the local
    profile's Label Studio (`data-engine annotation-server`, or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY).
    The local profile uploads (or serves) frames from its files; prod attaches them through each model's
    CVAT cloud storage."""
    if settings.profile == "local" and not os.environ.get("CVAT_URL"):
        from data_engine.annotation.label_studio_server import credentials_path

        other_server = bool(os.environ.get("LABEL_STUDIO_URL"))
        return LabelStudioResource(
            credentials_file=str(credentials_path(settings.home)),
            url=dg.EnvVar("LABEL_STUDIO_URL") if other_server else None,
            api_key=dg.EnvVar("LABEL_STUDIO_API_KEY") if other_server else None,
            objects_root=str(settings.objects_root),
        )
    return CvatResource(
        url=os.environ.get("CVAT_URL", ""),
        access_token=dg.EnvVar("CVAT_ACCESS_TOKEN"),
        org=os.environ.get("CVAT_ORG", ""),
        objects_root=str(settings.objects_root) if settings.profile == "local" else "",
    )


def local_trainer_launcher(settings: Settings, config: FleetConfig) -> LocalTrainerLauncher:
    """The trainer as a subprocess in its own environment, reading frames from the local object store."""
    return LocalTrainerLauncher(
        trainer_dir=str(TRAINER_DIR),
        frames_root=str(settings.objects_root),
        python=os.environ.get(TRAINER_PYTHON_ENV) or None,
        model_pythons={m: c.training.local_python for m, c in config.models.items() if c.training.local_python},
    )
