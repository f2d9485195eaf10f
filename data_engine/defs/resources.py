"""Resources, chosen per profile. Each external system sits behind one interface resource with a local
and a production implementation, so the same assets run on a laptop and in production.

Heavy clients (duckdb, google-cloud-bigquery, boto3) are imported inside methods, never at load time.

Where a resource reads and writes (folders, buckets, tables, the byte cap) is derived from the profile
and the fleet config when the code location loads (`defs/profiles.py`), never taken from run config:
those fields are `dg.ResourceDependency` values, which stay out of Dagster's config schema, so the
launchpad cannot redirect a store or a warehouse (run config naming them is refused). Dagster reads
these annotations at class creation, hence no `from __future__ import annotations` in this module.
"""

import datetime as dt
import fcntl
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from data_engine.config import load_fleet_config
from data_engine.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore

if TYPE_CHECKING:
    from data_engine.labels import LabelStore
    from data_engine.training import ModelStore
    from data_engine.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource, ABC):
    """The prediction warehouse the selection queries run on."""

    @abstractmethod
    def open(self) -> "Warehouse": ...


class DuckDBWarehouseResource(WarehouseResource):
    """The local profile's DuckDB file. Missing on first use, it is written with demo data."""

    path: dg.ResourceDependency[str]
    objects_root: dg.ResourceDependency[str]
    demo_days: int = 7

    def open(self) -> "Warehouse":
        from data_engine.warehouse.duckdb_engine import DuckDBWarehouse

        path = Path(self.path)
        if not path.exists():
            from data_engine.demo import demo_window, write_demo_warehouse  # pandas and more: only when needed

            path.parent.mkdir(parents=True, exist_ok=True)
            # Parallel steps of a first run would all write the demo data; one writes, the others wait.
            with open(path.with_name(path.name + ".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.exists():
                    end_date, days = demo_window(dt.datetime.now(dt.timezone.utc).date(), self.demo_days)
                    objects = Path(self.objects_root)
                    write_demo_warehouse(load_fleet_config(), path, objects, end_date=end_date, days=days)
        return DuckDBWarehouse(path)


class BigQueryWarehouseResource(WarehouseResource):
    """BigQuery through application default credentials (or BIGQUERY_EMULATOR_HOST in tests)."""

    project: str | None = None
    location: str | None = None
    predictions_table: dg.ResourceDependency[str]
    frames_table: dg.ResourceDependency[str]
    selections_table: dg.ResourceDependency[str]
    max_bytes_billed: dg.ResourceDependency[int]

    def open(self) -> "Warehouse":
        from data_engine.warehouse.bigquery_engine import BigQueryWarehouse, make_client

        tables = {"predictions": self.predictions_table, "frames": self.frames_table, "review_selections": self.selections_table}
        return BigQueryWarehouse(make_client(self.project, self.location), tables, self.max_bytes_billed)


class ObjectStoreResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def open(self) -> ObjectStore: ...


class LocalObjectStoreResource(ObjectStoreResource):
    """A folder; keys that would resolve outside it are refused (LocalObjectStore)."""

    root: dg.ResourceDependency[str]

    def open(self) -> ObjectStore:
        return LocalObjectStore(Path(self.root))


class S3ObjectStoreResource(ObjectStoreResource):
    """An S3 bucket and prefix; credentials and AWS_ENDPOINT_URL come from boto3's standard chain."""

    bucket: dg.ResourceDependency[str]
    prefix: dg.ResourceDependency[str] = ""

    def open(self) -> ObjectStore:
        return S3ObjectStore(self.bucket, self.prefix)


class LabelStoreResource(dg.ConfigurableResource):
    """The versioned training-label stores, one location per model: a folder (local profile) or
    `s3://bucket/prefix` (prod), as `data_engine.labels.label_store_uri` derives them from the config.
    S3 credentials and AWS_ENDPOINT_URL come from boto3's standard chain, never from this config."""

    locations: dg.ResourceDependency[dict[str, str]]

    def open(self, model: str) -> "LabelStore":
        from data_engine.labels import LabelStore

        if model not in self.locations:
            raise dg.Failure(f"no label store is configured for model {model!r} (known: {', '.join(sorted(self.locations))})")
        return LabelStore.from_uri(self.locations[model])


class ModelStoreResource(dg.ConfigurableResource):
    """The model stores (training runs, checkpoints, candidates), one location per model: a folder (local
    profile) or `s3://bucket/prefix` (prod), as `data_engine.training.model_store_uri` derives them."""

    locations: dg.ResourceDependency[dict[str, str]]

    def open(self, model: str) -> "ModelStore":
        from data_engine.training import ModelStore

        if model not in self.locations:
            raise dg.Failure(f"no model store is configured for model {model!r} (known: {', '.join(sorted(self.locations))})")
        return ModelStore.from_uri(self.locations[model])
