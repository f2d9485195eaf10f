"""Partitions come from the fleet config: adding a model to the YAML adds its partitions."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from data_engine.config import FleetConfig


def model_partitions(config: FleetConfig) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(list(config.models))


def daily_model_partitions(config: FleetConfig) -> dg.MultiPartitionsDefinition:
    """`date` x `model`; a key reads `2026-11-24|municipals`."""
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=config.partitions_start_date.isoformat(), timezone="UTC"),
            "model": model_partitions(config),
        }
    )


def as_multi_partition_key(partitions_def: dg.PartitionsDefinition | None, key: str | dg.MultiPartitionKey) -> str | dg.MultiPartitionKey:
    """The key as a MultiPartitionKey when the partitions are multi-dimensional. A run launched with only
    the `dagster/partition` tag (GraphQL, DagsterGraphQLClient) hands assets the plain string
    `2026-11-24|municipals`; the UI and the CLI hand them a MultiPartitionKey."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition) and not isinstance(key, dg.MultiPartitionKey):
        if not partitions_def.has_partition_key(key):
            raise dg.Failure(
                f"partition {key!r} is not one of this asset's partitions: expected `<YYYY-MM-DD>|<model>`, e.g."
                f" `2026-11-24|municipals`, with a day from {partitions_def.get_first_partition_key() or '(none yet)'}"
                " up to yesterday and a model of the fleet config; fix the `dagster/partition` tag of the launch"
            )
        return partitions_def.get_partition_key_from_str(key)
    return key


def model_and_day(context: dg.AssetExecutionContext) -> tuple[str, dt.date]:
    keys = as_multi_partition_key(context.assets_def.partitions_def, context.partition_key).keys_by_dimension
    return keys["model"], dt.date.fromisoformat(keys["date"])
