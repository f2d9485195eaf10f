"""Reads the fleet YAML and turns every problem into one message naming the file, the key and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from data_engine.config.models import FleetConfig

SHIPPED_CONFIG = Path(__file__).with_name("fleet.yaml")


class ConfigError(ValueError):
    """The fleet config cannot be used; the message says where and why."""


def config_path() -> Path:
    """`DATA_ENGINE_CONFIG` when set, else the config shipped with the package."""
    return Path(os.environ.get("DATA_ENGINE_CONFIG") or SHIPPED_CONFIG)


def load_fleet_config(path: Path | str | None = None) -> FleetConfig:
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"fleet config {path}: file not found; set DATA_ENGINE_CONFIG to an existing YAML file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"fleet config {path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"fleet config {path}: expected a mapping with `warehouse` and `models`, got {type(raw).__name__}")
    try:
        return FleetConfig.model_validate(raw)
    except ValidationError as error:
        problems = "\n".join(f"  - {_key_path(e['loc'])}: {_describe(e)}" for e in error.errors())
        raise ConfigError(f"fleet config {path} is invalid:\n{problems}") from None


def _key_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("size_class", "class_overlap", "confidence_band", "empty_frames"):
            continue  # pydantic adds the union member's tag; the index already names the filter
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "union_tag_invalid":
        message = f"unknown filter kind {error['input'].get('kind')!r}; use one of size_class, class_overlap, confidence_band, empty_frames"
    elif error["type"] == "extra_forbidden":
        message = "unknown key; check its spelling against the documented config"
    return message
