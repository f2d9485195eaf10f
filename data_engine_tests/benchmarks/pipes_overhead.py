"""Seconds the Dagster Pipes path adds to a training run: the reference trainer launched by the
LocalTrainerLauncher inside a trained_model materialization (request.json and splits.json written
first, the Pipes context and messages exchanged through temporary files, checkpoints.json read back),
against the same trainer command run directly with the same extras from a file (`--extras`).

    uv run python -m data_engine_tests.benchmarks.pipes_overhead [--repeat 3] [--epochs 1]

Both paths train the same synthetic label version with the same hyperparameters in a fresh run folder;
runs alternate, and the median of each is reported. The code location is loaded once, outside the
timing, as a deployment loads it once.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg

from data_engine.definitions import build_definitions
from data_engine.training.trainer_env import TRAINER_DIR, ensure_trainer_env
from data_engine_tests.training_fixtures import CLASSES, HYPERPARAMETERS, MODEL, training_environment


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: on a shared machine, wall time swings with
    other people's load, CPU time much less."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def direct_run(python: Path, home: Path, version: str, run_folder: Path, hyperparameters: dict, splits: Path) -> tuple[float, float, float]:
    """The trainer command alone, its inputs in an extras file (what the Pipes extras carry): wall
    seconds in all, the training's own seconds as the trainer reports them, and CPU seconds."""
    extras = {
        "model": MODEL,
        "classes": CLASSES,
        "label_version": version,
        "label_version_uri": str(home / "labels" / MODEL / "versions" / version),
        "splits_uri": str(splits),
        "run_uri": str(run_folder),
        "hyperparameters": hyperparameters,
        "initial_weights_uri": None,
        "frames_root": str(home / "objects"),
    }
    extras_file = run_folder.with_suffix(".extras.json")
    extras_file.write_text(json.dumps(extras))
    env = {**os.environ, "PYTHONPATH": str(TRAINER_DIR), "OMP_WAIT_POLICY": "PASSIVE"}
    started, cpu = time.perf_counter(), cpu_seconds()
    process = subprocess.run(
        [str(python), "-m", "data_engine_trainer", "train", "--extras", str(extras_file)], env=env, check=True, capture_output=True, text=True
    )
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    final = json.loads(process.stdout.strip().splitlines()[-1])["materialization"]
    return elapsed, final["training_seconds"], cpu


def pipes_run(job: dg.JobDefinition, instance: dg.DagsterInstance) -> tuple[float, float, float, str]:
    started, cpu = time.perf_counter(), cpu_seconds()
    result = job.execute_in_process(partition_key=MODEL, instance=instance, asset_selection=[dg.AssetKey("trained_model")])
    elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    assert result.success
    metadata = result.asset_materializations_for_node("trained_model")[0].metadata
    return elapsed, metadata["training_seconds"].value, cpu, result.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training (the overhead does not depend on it)")
    args = parser.parse_args()
    python = ensure_trainer_env()
    hyperparameters = {**HYPERPARAMETERS, "epochs": args.epochs}
    with (
        tempfile.TemporaryDirectory() as workdir,
        training_environment(Path(workdir), python, hyperparameters) as (home, version, _coco),
    ):
        job = build_definitions().resolve_job_def("training_job")
        # Per run: (wall seconds in all, the trainer's own training seconds, CPU seconds in all)
        direct: list[tuple[float, float, float]] = []
        pipes: list[tuple[float, float, float]] = []
        with dg.DagsterInstance.get() as instance:
            for attempt in range(args.repeat):
                *measured, run_id = pipes_run(job, instance)
                pipes.append(tuple(measured))
                splits = home / "models" / MODEL / "runs" / run_id / "splits.json"
                direct.append(direct_run(python, home, version, Path(workdir) / f"direct-{attempt}", hyperparameters, splits))
                for name, (wall, training, cpu) in (("direct", direct[-1]), ("through Pipes", pipes[-1])):
                    print(f"run {attempt + 1} {name}: {wall:.2f} s wall ({training:.1f} s training), {cpu:.2f} s CPU", flush=True)
    median = statistics.median
    direct_wall, pipes_wall = median(w for w, _, _ in direct), median(w for w, _, _ in pipes)
    direct_rest, pipes_rest = median(w - t for w, t, _ in direct), median(w - t for w, t, _ in pipes)
    direct_cpu, pipes_cpu = median(c for _, _, c in direct), median(c for _, _, c in pipes)
    print(f"median of {args.repeat} runs of {args.epochs} epoch(s) each:")
    print(f"  wall:             direct {direct_wall:.2f} s, through Pipes {pipes_wall:.2f} s (ratio {pipes_wall / direct_wall:.3f})")
    print(f"  wall outside the training loop: direct {direct_rest:.2f} s, through Pipes {pipes_rest:.2f} s")
    print(f"  CPU:              direct {direct_cpu:.2f} s, through Pipes {pipes_cpu:.2f} s (ratio {pipes_cpu / direct_cpu:.3f})")
    print(f"Pipes adds {pipes_rest - direct_rest:+.2f} s wall and {pipes_cpu - direct_cpu:+.2f} s CPU per run")


if __name__ == "__main__":
    main()
