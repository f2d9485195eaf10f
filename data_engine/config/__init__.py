"""The fleet config: which models run the loop, and how each one selects, reviews and trains."""

from data_engine.config.loader import ConfigError, load_fleet_config
from data_engine.config.models import (
    ClassOverlapFilter,
    ConfidenceBandFilter,
    EmptyFramesFilter,
    FleetConfig,
    ModelConfig,
    SelectionFilter,
    SizeClassFilter,
)

__all__ = [
    "ClassOverlapFilter",
    "ConfidenceBandFilter",
    "ConfigError",
    "EmptyFramesFilter",
    "FleetConfig",
    "ModelConfig",
    "SelectionFilter",
    "SizeClassFilter",
    "load_fleet_config",
]
