"""Benchmark: review-candidate selection of one model-day, the product's DuckDB path vs plain pandas.

    uv run python -m data_engine_tests.benchmarks.selection [--detections 10000000 --frames 2000000]

Generates one model-day of synthetic warehouse data in a DuckDB file (see `selection_data`), then runs,
each in a fresh subprocess so that peak memory is measured on its own:

- duckdb: the product, `DuckDBWarehouse(path).run(review_candidates_query(...))` (the `sql/` files
  transpiled by sqlglot, every filter kind on, scoped filters and budgets);
- pandas: `selection_pandas`, the same selection semantics in idiomatic pandas, loading the day's rows
  from the same DuckDB file (its load time counts, as the DuckDB path's scan does).

Both must flag the same frames with the same status and filters, or the benchmark fails. Targets (from the
issue): DuckDB at least 10x faster and at most 1/4 of the pandas peak memory. They are reported, not
asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEEDUP_TARGET = 10.0
MEMORY_RATIO_TARGET = 0.25
KEY_COLUMNS = ["frame_uri", "status", "filter_mask"]


def run_duckdb(path: Path):
    """The product's path: the composed `sql/review_candidates.sql` on the DuckDB warehouse (a pyarrow Table)."""
    from data_engine.selection.queries import review_candidates_query
    from data_engine.warehouse.duckdb_engine import DuckDBWarehouse
    from data_engine_tests.benchmarks.selection_data import DAY, MODEL, model_config

    warehouse = DuckDBWarehouse(path)
    warehouse.ensure_selection_ledger()
    return warehouse.run(review_candidates_query(MODEL, model_config(), DAY)).table


def run_pandas(path: Path):
    """The baseline: load the model-day into DataFrames, select in pandas (a DataFrame)."""
    from data_engine_tests.benchmarks.selection_data import DAY, MODEL, model_config
    from data_engine_tests.benchmarks.selection_pandas import load_day, select_candidates

    predictions, frames, ledger = load_day(path, MODEL, DAY)
    return select_candidates(predictions, frames, ledger, model_config(), DAY)


def keys(result):
    """(frame_uri, status, filter_mask) of a result, sorted by frame_uri, as a pandas DataFrame."""
    import pandas as pd

    frame = result.select(KEY_COLUMNS).to_pandas() if not isinstance(result, pd.DataFrame) else result[KEY_COLUMNS]
    return frame.astype({"frame_uri": str, "status": str, "filter_mask": "int64"}).sort_values("frame_uri", ignore_index=True)


def compare(duckdb_keys, pandas_keys) -> list[str]:
    """Differences between the two results' (frame_uri, status, filter_mask), as lines; empty when equal."""
    merged = duckdb_keys.merge(pandas_keys, on="frame_uri", how="outer", suffixes=("_duckdb", "_pandas"), indicator=True)
    problems = []
    only = merged[merged["_merge"] != "both"]
    for side in ("left_only", "right_only"):
        rows = only[only["_merge"] == side]
        if len(rows):
            engine = "duckdb" if side == "left_only" else "pandas"
            problems.append(f"{len(rows)} frames only in the {engine} result, e.g. {rows['frame_uri'].head(3).tolist()}")
    both = merged[merged["_merge"] == "both"]
    for column in ("status", "filter_mask"):
        differ = both[both[f"{column}_duckdb"] != both[f"{column}_pandas"]]
        if len(differ):
            example = differ.head(3)[["frame_uri", f"{column}_duckdb", f"{column}_pandas"]].to_dict("records")
            problems.append(f"{len(differ)} frames with a different {column}, e.g. {example}")
    return problems


def _child(engine: str, path: Path, keys_out: Path) -> None:
    """Run one engine once in this (fresh) process and print its time and peak RSS as JSON."""
    import pandas  # noqa: F401  (both children import the same libraries before the clock starts)
    import pyarrow  # noqa: F401
    import sqlglot.dialects.bigquery  # noqa: F401  (sqlglot imports a dialect's module on its first use)
    import sqlglot.dialects.duckdb  # noqa: F401

    import data_engine.selection.queries  # noqa: F401
    import data_engine.warehouse.duckdb_engine  # noqa: F401
    import data_engine_tests.benchmarks.selection_pandas  # noqa: F401

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = run_duckdb(path) if engine == "duckdb" else run_pandas(path)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rows = result.num_rows if engine == "duckdb" else len(result)
    keys(result).to_parquet(keys_out)
    print(
        json.dumps(
            {
                "engine": engine,
                "seconds": seconds,
                "peak_rss_kib": peak,
                "rss_after_imports_kib": rss_before,
                "vm_hwm_kib": _vm_hwm_kib(),
                "rows": rows,
            }
        )
    )


def _vm_hwm_kib() -> int | None:
    """The kernel's high-water mark of this process's RSS (a cross-check of ru_maxrss), where /proc has it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _generate_child(path: Path, detections: int, frames: int) -> None:
    from data_engine_tests.benchmarks.selection_data import generate

    print(json.dumps(generate(path, detections, frames)))


def _python(*args: str) -> str:
    """Run this module in a fresh interpreter; its last stdout line (JSON) is the answer.

    Everything heavy runs in children: ru_maxrss survives fork and exec on Linux, so a child started by a
    parent that had grown (say, by generating the data) would report the parent's peak as its own.
    """
    completed = subprocess.run(
        [sys.executable, "-m", "data_engine_tests.benchmarks.selection", *args], capture_output=True, text=True
    )
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"benchmark step {' '.join(args[:2])} failed (exit {completed.returncode})")
    return completed.stdout.strip().splitlines()[-1]


def _measure(engine: str, path: Path, workdir: Path) -> dict:
    keys_out = workdir / f"{engine}-keys.parquet"
    measurement = json.loads(_python("--child", engine, "--db", str(path), "--keys-out", str(keys_out)))
    measurement["keys"] = keys_out
    return measurement


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detections", type=int, default=10_000_000)
    parser.add_argument("--frames", type=int, default=2_000_000, help="frames with detections (a fifth more are empty)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each engine (median time, largest peak RSS)")
    parser.add_argument("--workdir", type=Path, help="keep the DuckDB file here instead of a temporary folder")
    parser.add_argument("--child", choices=["duckdb", "pandas", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--keys-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "generate":
        _generate_child(args.db, args.detections, args.frames)
        return 0
    if args.child:
        _child(args.child, args.db, args.keys_out)
        return 0

    with tempfile.TemporaryDirectory(prefix="selection-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "warehouse.duckdb"
        started = time.perf_counter()
        counts = json.loads(
            _python("--child", "generate", "--db", str(path), "--detections", str(args.detections), "--frames", str(args.frames))
        )
        print(
            f"generated {counts['predictions']:,} predictions, {counts['frames']:,} frames and "
            f"{counts['review_selections']:,} ledger rows in {time.perf_counter() - started:.1f} s"
            f" ({path.stat().st_size / 2**20:,.0f} MiB DuckDB file; {os.cpu_count()} CPUs)",
            flush=True,
        )
        runs: dict[str, list[dict]] = {"duckdb": [], "pandas": []}
        for _ in range(args.repeat):  # interleaved, so that both engines see the same machine state
            for engine in runs:
                runs[engine].append(_measure(engine, path, workdir))
        # The median time of each engine; its peak memory is the largest of its runs.
        results = {}
        for engine, measured in runs.items():
            results[engine] = dict(sorted(measured, key=lambda r: r["seconds"])[len(measured) // 2])
            results[engine]["all_seconds"] = [r["seconds"] for r in measured]
            results[engine]["peak_rss_kib"] = max(r["peak_rss_kib"] for r in measured)

        import pandas as pd  # only now: the parent stays small while the children run

        problems = compare(pd.read_parquet(results["duckdb"]["keys"]), pd.read_parquet(results["pandas"]["keys"]))
        if problems:
            print("MISMATCH between the DuckDB path and the pandas baseline:\n  " + "\n  ".join(problems))
            return 1
        statuses = pd.read_parquet(results["duckdb"]["keys"])["status"].value_counts().to_dict()
        print(f"both flag {results['duckdb']['rows']:,} frames with identical status and filters: {statuses}")

    print(f"\n{'engine':<8} {'seconds':>9} {'peak RSS MiB':>13} {'(VmHWM MiB)':>12} {'RSS after imports MiB':>22}")
    for engine, r in results.items():
        hwm = f"{r['vm_hwm_kib'] / 1024:.0f}" if r.get("vm_hwm_kib") else "n/a"
        print(
            f"{engine:<8} {r['seconds']:>9.2f} {r['peak_rss_kib'] / 1024:>13.0f} {hwm:>12}"
            f" {r['rss_after_imports_kib'] / 1024:>22.0f}"
            + (f"   runs: {', '.join(f'{x:.2f}' for x in r['all_seconds'])} s" if len(r["all_seconds"]) > 1 else "")
        )
    speedup = results["pandas"]["seconds"] / results["duckdb"]["seconds"]
    memory_ratio = results["duckdb"]["peak_rss_kib"] / results["pandas"]["peak_rss_kib"]
    speed_ok, memory_ok = speedup >= SPEEDUP_TARGET, memory_ratio <= MEMORY_RATIO_TARGET
    print(f"\nspeedup (pandas s / duckdb s):        {speedup:6.2f}x  target >= {SPEEDUP_TARGET:.0f}x   {'MET' if speed_ok else 'MISSED'}")
    print(f"memory ratio (duckdb RSS / pandas RSS): {memory_ratio:6.3f}   target <= {MEMORY_RATIO_TARGET}  {'MET' if memory_ok else 'MISSED'}")
    if not (speed_ok and memory_ok):
        print("At least one target is missed at this size on this machine.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
