"""`data-engine`: commands that are not Dagster runs (demo data for the local profile)."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from data_engine.config import ConfigError, load_fleet_config
from data_engine.settings import current_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="data-engine")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo-data", help="write the local profile's DuckDB warehouse with synthetic data")
    demo.add_argument("--home", type=Path, help="folder to write into (default: DATA_ENGINE_HOME or ./.data_engine)")
    demo.add_argument("--end-date", type=dt.date.fromisoformat, help="last day of data, YYYY-MM-DD (default: yesterday, UTC)")
    demo.add_argument("--days", type=int, default=7, help="number of days (default: 7)")
    demo.add_argument("--frames-per-camera", type=int, default=24, help="frames per camera per day (default: 24)")
    args = parser.parse_args(argv)

    try:
        config = load_fleet_config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "demo-data":
        from data_engine.demo import write_demo_warehouse

        settings = current_settings()
        home = args.home.resolve() if args.home else settings.home
        end_date = args.end_date or dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)
        counts = write_demo_warehouse(
            config,
            home / "warehouse.duckdb",
            home / "objects",
            end_date=end_date,
            days=args.days,
            frames_per_camera_per_day=args.frames_per_camera,
        )
        print(f"wrote {counts['frames']} frames and {counts['predictions']} prediction rows to {home / 'warehouse.duckdb'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
