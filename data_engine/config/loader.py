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


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping names one key twice; plain YAML loaders keep the last value without a word."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping, at any depth (merge keys `<<` still
    let a mapping override what it merges in: only keys written in the mapping itself are compared)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_seen: dict[object, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key; the base constructor reports it
                if earlier is not key_node:
                    raise DuplicateKeyError(
                        problem=f"key {key!r} is given twice in one mapping, on line {earlier.start_mark.line + 1}"
                        f" and on line {key_node.start_mark.line + 1}; keep one (YAML would silently keep the last)",
                        problem_mark=key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def config_path() -> Path:
    """`DATA_ENGINE_CONFIG` when set, else the config shipped with the package."""
    return Path(os.environ.get("DATA_ENGINE_CONFIG") or SHIPPED_CONFIG)


def load_fleet_config(path: Path | str | None = None) -> FleetConfig:
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"fleet config {path}: file not found; set DATA_ENGINE_CONFIG to an existing YAML file") from None
    except DuplicateKeyError as error:
        raise ConfigError(f"fleet config {path}: {error.problem}") from None
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
