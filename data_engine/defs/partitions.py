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


def model_and_day(context: dg.AssetExecutionContext) -> tuple[str, dt.date]:
    keys = context.partition_key.keys_by_dimension
    return keys["model"], dt.date.fromisoformat(keys["date"])
