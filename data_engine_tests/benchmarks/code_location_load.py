"""Benchmark: the cost of loading the code location, compared with importing Dagster alone.

    uv run python -m data_engine_tests.benchmarks.code_location_load [--runs 5]

Each timing is a fresh interpreter (`sys.executable`, the project's venv) running
`python -c "import data_engine.definitions"` or `python -c "import dagster"`, measured from the parent
as wall-clock time of the whole process (interpreter start included, as a code server pays it). The
median of N runs of each, interleaved so that both see the same machine state, is compared with the
target from the issue: the code location loads in at most 1.25x the time of `import dagster`, i.e.
heavy clients (google-cloud-bigquery, boto3, cvat_sdk, torch) are not imported at module top level.
The children get a temporary DATA_ENGINE_HOME so that nothing is read or written in the checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_RATIO = 1.25
STATEMENTS = {"dagster": "import dagster", "data_engine.definitions": "import data_engine.definitions"}


def time_import(statement: str, env: dict[str, str]) -> float:
    """Seconds a fresh interpreter takes to run `statement` and exit; fails loudly if it fails."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", statement], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"`{statement}` failed (exit {completed.returncode})")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timings of each statement (the median is reported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="code-location-load-") as home:
        env = os.environ | {"DATA_ENGINE_HOME": home}
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        for statement in STATEMENTS.values():  # warm the OS file cache and the bytecode caches once
            time_import(statement, env)
        timings: dict[str, list[float]] = {name: [] for name in STATEMENTS}
        for _ in range(args.runs):
            for name, statement in STATEMENTS.items():
                timings[name].append(time_import(statement, env))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"{sys.executable}, {args.runs} fresh processes each (median; all runs in brackets)")
    for name, values in timings.items():
        print(f"  import {name:<24} {medians[name]:6.3f} s   [{', '.join(f'{v:.3f}' for v in values)}]")
    ratio = medians["data_engine.definitions"] / medians["dagster"]
    verdict = "MET" if ratio <= TARGET_RATIO else "MISSED"
    print(f"ratio data_engine.definitions / dagster: {ratio:.2f}x   target <= {TARGET_RATIO}x   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
