"""Benchmark: the whole selection job for one model-day, as users run it, vs one hand-written DuckDB query.

    uv run python -m data_engine_tests.benchmarks.selection_job [--detections 10000000 --frames 2000000]

Generates the selection benchmark's model-day (`selection_data`) in a DuckDB file under a local-profile
`DATA_ENGINE_HOME`, with the benchmark fleet as `DATA_ENGINE_CONFIG`, then measures, each as its own
process tree after one untimed warm-up (wall time; CPU time of the tree; peak memory as the largest sum
of the tree's resident sizes, sampled every 20 ms):

- import: `python -c "import dagster"`, the start-up every Dagster command pays before it does anything;
- job: `dagster asset materialize -m data_engine.definitions --select predictions,empty_frames,review_candidates
  --partition <day>|municipals`, the documented command (one step, in the command's process);
- query: `selection_job_query.sql`, one DuckDB query written by hand for this fleet config, in a bare
  Python process (duckdb and pyarrow only), returning the same candidates with their predictions;
- product query: the job's own `sql/selected_candidates.sql` for the day, rendered for DuckDB and run
  once in a bare process (no Dagster, no summaries): a second single-query baseline.

The job's figures are taken net of the import's (time and memory), and compared with the faster single
query of the same round (time; the median over rounds) and the smaller (memory). All must return the same frames in the same priority order with the
same predictions, or the benchmark fails. Target (issue 14): the job within 1.5x of the query in time and
memory. Reported, not asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RATIO_TARGET = 1.5
SAMPLE_S = 0.02


def _tree_rss_kib(root: int) -> int:
    """The summed resident size of process `root` and all its descendants (from /proc), in KiB."""
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(command: list[str], env: dict[str, str]) -> dict:
    """Run `command`; its wall time, CPU time and the peak summed RSS of its process tree. Fails on a
    non-zero exit. The CPU time (user + system of the tree: every process waited for by its parent)
    moves little with the machine's load, where the wall time stretches with it."""
    peak = 0
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    reader.join()
    if process.returncode != 0:
        sys.stderr.write("".join(output[-60:]))
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {process.returncode})")
    return {"seconds": seconds, "cpu_seconds": _children_cpu_s() - cpu_before, "peak_kib": peak}


def run_query(db: Path, sql: Path, out: Path) -> None:
    """A baseline, in this bare process (duckdb and pyarrow): the query in `sql` with its parameters from
    the JSON file beside it, its result written to `out` as Parquet."""
    import duckdb
    import pyarrow.parquet as pq

    with duckdb.connect(str(db), read_only=True) as connection:
        connection.execute("SET TimeZone = 'UTC'")
        table = connection.sql(sql.read_text(), params=_params(sql.with_suffix(".json"))).to_arrow_table()
    pq.write_table(table, out)


def write_queries(workdir: Path) -> tuple[Path, Path]:
    """The two single queries with their parameters: the hand-written one, and the job's own
    `selected_candidates` statement for the benchmark day rendered for DuckDB."""
    from data_engine.selection.queries import day_window, review_candidates_query
    from data_engine.warehouse.duckdb_engine import LOCAL_TABLES
    from data_engine_tests.benchmarks.selection_data import DAY, MODEL, model_config

    hand_written, product = workdir / "hand_written.sql", workdir / "product.sql"
    hand_written.write_text(Path(__file__).with_name("selection_job_query.sql").read_text())
    query = review_candidates_query(MODEL, model_config(), DAY, "selected_candidates")
    product.write_text(query.render("duckdb", LOCAL_TABLES))
    for path, params in ((hand_written, day_window(DAY)), (product, query.params)):
        path.with_suffix(".json").write_text(json.dumps(params, default=lambda v: v.isoformat()))
    return hand_written, product


def compare(job_output: Path, query_output: Path) -> list[str]:
    """Differences between the job's review_candidates and the query's result, as lines; empty when equal."""
    import pyarrow.parquet as pq

    from data_engine.selection.candidates import selected_candidates
    from data_engine_tests.benchmarks.selection_data import model_config

    job = pq.read_table(job_output).select(["frame_uri", "predictions"]).to_pylist()
    query = pq.read_table(query_output)
    if "status" in query.column_names:  # the product's statement: its selected rows, in priority order
        query = selected_candidates(query, [f.reason for f in model_config().selection.filters])
    query = query.select(["frame_uri", "predictions"]).to_pylist()
    for row in query:
        row["predictions"] = row["predictions"] or []
    problems = []
    if [r["frame_uri"] for r in job] != [r["frame_uri"] for r in query]:
        only_job = {r["frame_uri"] for r in job} - {r["frame_uri"] for r in query}
        only_query = {r["frame_uri"] for r in query} - {r["frame_uri"] for r in job}
        problems.append(
            f"frames differ: {len(job)} from the job, {len(query)} from the query; {len(only_job)} only in the job,"
            f" {len(only_query)} only in the query (or another order), e.g. {sorted(only_job | only_query)[:3]}"
        )
    elif job != query:
        differ = [a["frame_uri"] for a, b in zip(job, query) if a != b]
        problems.append(f"{len(differ)} frames with different predictions, e.g. {differ[:3]}")
    return problems


def paired_ratios(runs: dict[str, list[dict]], key: str) -> list[float]:
    """Per round, the job net of the import over the faster single query of the same round: the processes
    of a round run back to back, so they share the machine's load of the moment."""
    return [
        (job[key] - start[key]) / min(query[key], product[key])
        for start, job, query, product in zip(runs["import"], runs["job"], runs["query"], runs["product query"])
    ]


def _params(path: Path) -> dict:
    """A query's parameters back from JSON (the day and its bounds were written as ISO strings)."""
    import datetime as dt

    params = json.loads(path.read_text())
    for name in ("day_start", "day_end"):
        params[name] = dt.datetime.fromisoformat(params[name])
    params["day"] = dt.date.fromisoformat(params["day"])
    return params


def _environment(home: Path, fleet: Path, dagster_home: Path, bytecode: Path) -> dict[str, str]:
    """The local profile on the benchmark's data. Compiled modules are cached (in `bytecode`), as a user's
    Python does by default: with PYTHONDONTWRITEBYTECODE every start would compile each module again."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("DATA_ENGINE_", "DAGSTER_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    env |= {
        "DATA_ENGINE_PROFILE": "local",
        "DATA_ENGINE_HOME": str(home),
        "DATA_ENGINE_CONFIG": str(fleet),
        "DAGSTER_HOME": str(dagster_home),
        "PYTHONPYCACHEPREFIX": str(bytecode),
    }
    return env


def warm_up(commands: dict[str, list[str]], env: dict[str, str]) -> None:
    """One untimed run of each process's imports (file and bytecode caches): the import, the job on the
    next day (a few rows; its ledger rows are of a later day, which the benchmark day never reads) and
    the query children's imports."""
    from data_engine_tests.benchmarks import selection_data

    day_after = f"{selection_data.DAY + dt.timedelta(days=1)}|{selection_data.MODEL}"
    job = commands["job"][:-1] + [day_after]  # the partition is the last argument
    query_imports = [sys.executable, "-c", "import duckdb, pyarrow.parquet, data_engine_tests.benchmarks.selection_job"]
    for command in (commands["import"], job, query_imports):
        measure(command, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detections", type=int, default=10_000_000)
    parser.add_argument("--frames", type=int, default=2_000_000, help="frames with detections (a fifth more are empty)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (median time, largest peak)")
    parser.add_argument("--workdir", type=Path, help="keep the data here instead of a temporary folder")
    parser.add_argument("--child", choices=["query"], help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sql", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "query":
        run_query(args.db, args.sql, args.out)
        return 0

    import yaml

    from data_engine_tests.benchmarks import selection, selection_data

    with tempfile.TemporaryDirectory(prefix="selection-job-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        home, dagster_home = workdir / "home", workdir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        dagster_home.mkdir(exist_ok=True)
        db = home / "warehouse.duckdb"
        started = time.perf_counter()
        counts = json.loads(
            selection._python("--child", "generate", "--db", str(db), "--detections", str(args.detections),
                              "--frames", str(args.frames))
        )
        print(
            f"generated {counts['predictions']:,} predictions and {counts['frames']:,} frames in"
            f" {time.perf_counter() - started:.1f} s ({os.cpu_count()} CPUs, load average"
            f" {', '.join(f'{x:.1f}' for x in os.getloadavg())})",
            flush=True,
        )
        fleet = workdir / "fleet.yaml"
        fleet.write_text(yaml.safe_dump(selection_data.fleet_dict(), sort_keys=False))
        env = _environment(home, fleet, dagster_home, workdir / "bytecode")
        partition = f"{selection_data.DAY}|{selection_data.MODEL}"
        commands = {
            "import": [sys.executable, "-c", "import dagster"],
            "job": [
                str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "data_engine.definitions",
                "--select", "predictions,empty_frames,review_candidates", "--partition", partition,
            ],
        }
        for name, sql in zip(("query", "product query"), write_queries(workdir)):
            commands[name] = [sys.executable, "-m", "data_engine_tests.benchmarks.selection_job", "--child", "query",
                              "--db", str(db), "--sql", str(sql), "--out", str(sql.with_suffix(".parquet"))]
        warm_up(commands, env)
        runs: dict[str, list[dict]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # interleaved, so that all see the same machine state
            for name, command in commands.items():
                runs[name].append(measure(command, env))
        results = {
            name: {
                "seconds": statistics.median(r["seconds"] for r in measured),
                "cpu_seconds": statistics.median(r["cpu_seconds"] for r in measured),
                "peak_kib": max(r["peak_kib"] for r in measured),
                "all_seconds": [r["seconds"] for r in measured],
            }
            for name, measured in runs.items()
        }
        job_output = home / "objects" / "assets" / "review_candidates" / selection_data.MODEL / f"{selection_data.DAY}.parquet"
        problems = [p for name in ("hand_written", "product") for p in compare(job_output, workdir / f"{name}.parquet")]
        if problems:
            print("MISMATCH between the selection job and the hand-written query:\n  " + "\n  ".join(problems))
            return 1
        import pyarrow.parquet as pq

        selected = pq.read_table(job_output)
        boxes = sum(len(p) for p in selected["predictions"].to_pylist())
        print(f"all return the same {selected.num_rows:,} frames in the same order with the same {boxes:,} predictions")

    print(f"\n{'':<28} {'seconds':>9} {'CPU s':>9} {'peak MiB':>9}")
    for name, r in results.items():
        runs_note = f"   runs: {', '.join(f'{x:.2f}' for x in r['all_seconds'])} s" if len(r["all_seconds"]) > 1 else ""
        print(f"{name:<28} {r['seconds']:>9.2f} {r['cpu_seconds']:>9.2f} {r['peak_kib'] / 1024:>9.0f}{runs_note}")
    net = {key: results["job"][key] - results["import"][key] for key in ("seconds", "cpu_seconds", "peak_kib")}
    print(f"{'job net of import dagster':<28} {net['seconds']:>9.2f} {net['cpu_seconds']:>9.2f} {net['peak_kib'] / 1024:>9.0f}")
    time_ratios, cpu_ratios = (paired_ratios(runs, key) for key in ("seconds", "cpu_seconds"))
    memory_ratio = net["peak_kib"] / min(results[name]["peak_kib"] for name in ("query", "product query"))
    print(f"time ratio per round (job net / best single query of the round): {', '.join(f'{r:.2f}' for r in time_ratios)}")
    for label, ratio in (("time", statistics.median(time_ratios)), ("memory", memory_ratio)):
        verdict = "MET" if ratio <= RATIO_TARGET else "MISSED"
        print(f"{label} ratio (job net / best single query): {ratio:5.2f}x   target <= {RATIO_TARGET}x   {verdict}")
    print(f"CPU time ratio (job net / best single query): {statistics.median(cpu_ratios):5.2f}x"
          "   (no target; it moves less with the load)")
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
