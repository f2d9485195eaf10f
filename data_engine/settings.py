"""The only place that reads the environment to decide where the product runs (DESIGN.md, Profiles)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Profile = Literal["local", "prod"]
PROFILES: tuple[Profile, ...] = ("local", "prod")


@dataclass(frozen=True)
class Settings:
    profile: Profile
    home: Path

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance `data-engine dev` keeps (run history, schedules), next to the outputs."""
        return self.home / "dagster"

    @property
    def objects_root(self) -> Path:
        """Local stand-in for the object store: asset outputs, and frames under <bucket>/<key>."""
        return self.home / "objects"


def current_settings() -> Settings:
    profile = os.environ.get("DATA_ENGINE_PROFILE", "local")
    if profile not in PROFILES:
        raise ValueError(f"DATA_ENGINE_PROFILE={profile!r} is not a profile; use one of {', '.join(PROFILES)}")
    home = Path(os.environ.get("DATA_ENGINE_HOME", ".data_engine")).resolve()
    return Settings(profile=profile, home=home)
