"""Benchmark: the CVAT review sensor on 10,000 tasks, against a baseline that lists every task.

    uv run python -m data_engine_tests.benchmarks.cvat_sensor [--tasks 10000] [--accepted 50]

Both run against the fake CVAT server (data_engine_tests.cvat_server) on loopback, through the real
cvat-sdk. The product is `cvat_review_sensor` evaluated by Dagster (build_sensor_context +
evaluate_tick) with its cursor; the baseline is the straightforward sensor: `client.tasks.list()` over
all pages (the SDK's default page size), keeping the tasks whose jobs are all completed. Two ticks each:
idle (nothing changed since the last tick) and busy (`--accepted` tasks accepted since the last tick).
Printed, never asserted: HTTP requests and seconds per tick. `test_cvat_review.py` asserts the idle
tick's request count (counting is not timing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import dagster as dg

from data_engine.annotation.backend import TaskPosition
from data_engine.annotation.review_scan import ReviewCursor
from data_engine.config import load_fleet_config
from data_engine.defs.cvat_resource import CvatResource
from data_engine.defs.labels import build_label_defs
from data_engine.defs.profiles import resources_for
from data_engine.defs.review import build_review_defs
from data_engine.defs.selection import build_selection_defs
from data_engine.settings import Settings
from data_engine_tests.cvat_server import running_cvat_server


def product_tick(defs, resources, instance, cursor):
    sensor = defs.resolve_sensor_def("cvat_review_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs) as context:
        result = sensor.evaluate_tick(context)
    reviewed = sum(len(r.run_config["ops"]["reviewed_tasks"]["config"]["tasks"]) for r in result.run_requests)
    return result.cursor, reviewed


def baseline_tick(server, seen: set[tuple[int, str]]):
    """List every task, and report the completed ones not reported before (same task + updated_date)."""
    with server.make_client() as client:
        tasks = client.tasks.list()
    new = {(t.id, t.updated_date.isoformat()) for t in tasks if t.jobs.count and t.jobs.completed == t.jobs.count}
    fresh = new - seen
    seen |= new
    return len(fresh)


def measure(server, run):
    server.state.clear_log()
    started = time.perf_counter()
    outcome = run()
    return outcome, server.state.count_requests(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--accepted", type=int, default=50)
    args = parser.parse_args()

    config = load_fleet_config()
    model = next(iter(config.models))
    with running_cvat_server() as server, tempfile.TemporaryDirectory() as home, dg.instance_for_test() as instance:
        state = server.state
        project = state.create_project(config.models[model].annotation.project_name_for(model))
        started = time.perf_counter()
        state.bulk_create_tasks(
            args.tasks,
            name=config.models[model].annotation.task_name(model, dt.date(2026, 11, 24), 0)[:-3] + "{i:05d}",
            project_id=project.id, frames=[f"frame_{i:03d}.jpg" for i in range(4)], segment_size=2,
        )
        print(f"{args.tasks} tasks of 4 frames (2 jobs each) in the fake CVAT: {time.perf_counter() - started:.1f}s")

        resources = {
            **resources_for(Settings(profile="local", home=Path(home)), config),
            "annotation": CvatResource(url=server.url, access_token=server.token),
        }
        defs = dg.Definitions.merge(
            build_selection_defs(config), build_review_defs(config), build_label_defs(config), dg.Definitions(resources=resources)
        )
        last = max(state.tasks.values(), key=lambda t: (t.updated_date, t.id))
        cursor = ReviewCursor(TaskPosition(last.updated_date, last.id)).dumps()  # the sensor has caught up
        seen: set[tuple[int, str]] = set()
        baseline_tick(server, seen)

        rows = []
        (cursor, reviewed), requests, seconds = measure(server, lambda: product_tick(defs, resources, instance, cursor))
        rows.append(("idle", "cvat_review_sensor", requests, seconds, reviewed))
        reviewed, requests, seconds = measure(server, lambda: baseline_tick(server, seen))
        rows.append(("idle", "baseline: list all tasks", requests, seconds, reviewed))

        # twice: the first busy tick also pays one-time imports (duckdb, sqlglot parse of the SQL file)
        for round_ in (1, 2):
            for task_id in range((round_ - 1) * args.accepted + 1, round_ * args.accepted + 1):
                state.complete_task(task_id)
            label = f"{args.accepted} accepted" + (" (2nd)" if round_ == 2 else "")
            (cursor, reviewed), requests, seconds = measure(server, lambda: product_tick(defs, resources, instance, cursor))
            rows.append((label, "cvat_review_sensor", requests, seconds, reviewed))
            reviewed, requests, seconds = measure(server, lambda: baseline_tick(server, seen))
            rows.append((label, "baseline: list all tasks", requests, seconds, reviewed))

    print(f"\n{'tick':<20} {'implementation':<26} {'HTTP requests':>13} {'seconds':>8} {'newly reviewed':>15}")
    for tick, name, requests, seconds, reviewed in rows:
        print(f"{tick:<20} {name:<26} {requests:>13} {seconds:>8.3f} {reviewed:>15}")


if __name__ == "__main__":
    main()
